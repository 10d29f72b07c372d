"""The streaming state update in the compiled CPU kernel (hummuss/csrc/state_step.cpp): the
formula in complex float64, in place, its refusals, and that streams use it (eagerly and
inside the compiled step) with the outputs of the PyTorch path."""


import pytest
import torch
from conftest import needs_kernels

from hummuss.model import HumMUSS, HumMUSSConfig
from hummuss.ssm import state_kernel


@pytest.fixture
def built():
    """The kernels built and loaded (`usable` does it; the op exists only after)."""
    assert state_kernel.usable("cpu", torch.float32), "the CPU kernels failed to build (see the warning)"


def _inputs(H, N, M, k, per_stream, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(2, H, N, M, generator=g)
    ab_shape = (2, H, N, M) if per_stream else (2, H, M)
    a, b = 0.9 * torch.randn(ab_shape, generator=g), torch.randn(ab_shape, generator=g)
    u = torch.randn(N, 2 * H, generator=g)[:, H:]  # a view with a row stride of 2H, as the step's
    return s, a, b, u, torch.randn(H, k, M, generator=g), torch.randn(H, k, M, generator=g), torch.randn(k, H, generator=g)


def _formula(s, a, b, u, Rr, Ri, D):
    """s <- a s + b u on complex numbers, y = sum_m (Rr Re s + Ri Im s) + D u, in float64."""
    s, a, b, u, Rr, Ri, D = (t.double() for t in (s, a, b, u, Rr, Ri, D))
    z = torch.complex(s[0], s[1])                                    # (H, N, M)
    za, zb = torch.complex(a[0], a[1]), torch.complex(b[0], b[1])    # (H, M) or (H, N, M)
    if za.dim() == 2:
        za, zb = za[:, None], zb[:, None]
    z = za * z + zb * u.t()[..., None]
    y = torch.einsum("hnm,hcm->nhc", z.real, Rr) + torch.einsum("hnm,hcm->nhc", z.imag, Ri) + (u[..., None] * D.t())
    return torch.stack([z.real, z.imag]), y


@needs_kernels
@pytest.mark.parametrize("H, N, M, k, per_stream", [
    (48, 17, 64, 2, False),   # a temporal block of paper-causal, fewer channels: 4 vectors of modes, 2 read-outs
    (5, 3, 19, 1, False),     # modes that fill one vector and a tail, one read-out
    (7, 4, 33, 3, True),      # a step per stream, a read-out count without its own specialisation
    (4, 2, 8, 8, False),      # the most read-outs, fewer modes than a vector
    (6, 5, 32, 2, None),      # a state whose Re and Im rows alternate in memory (strides, not contiguous)
])
def test_the_kernel_is_the_formula_and_updates_the_state_in_place(built, H, N, M, k, per_stream):
    s, a, b, u, Rr, Ri, D = _inputs(H, N, M, k, bool(per_stream), seed=H + M)
    if per_stream is None:
        s = s.permute(1, 2, 0, 3).contiguous().permute(2, 0, 1, 3)  # (2, H, N, M) over (H, N, 2, M)
    want_s, want_y = _formula(s, a, b, u, Rr, Ri, D)
    ptr = s.data_ptr()
    y = state_kernel.advance_state_kernel(s, a, b, u, Rr, Ri, D)
    assert s.data_ptr() == ptr and y.shape == (N, H, k) and y.dtype == torch.float32
    assert y.stride() == (H, 1, N * H)  # k planes (N, H): the mix after it reads contiguous channels
    assert (s.double() - want_s).abs().max() < 1e-5 * want_s.abs().max()
    assert (y.double() - want_y).abs().max() < 1e-5 * want_y.abs().max()


@needs_kernels
@pytest.mark.parametrize("H, N, M, k", [
    (48, 17, 64, 2),   # paper-causal's layout, fewer channels: two threads' chunks of 24, each 16 + a tail of 8
    (5, 3, 19, 1),     # fewer channels than a vector: the tail alone
    (37, 4, 33, 3),    # a run-time read-out count, a channel count that fills no vector
])
def test_the_kernel_with_the_mix_is_the_formula_then_gelu_and_the_weighted_sum(built, H, N, M, k):
    """x_nh = bias_h + sum_c w_ch GELU(y_nhc), GELU(v) = v (1 + erf(v / sqrt 2)) / 2, in float64;
    the state advances in place as without the mix."""
    s, a, b, u, Rr, Ri, D = _inputs(H, N, M, k, False, seed=H + k)
    g = torch.Generator().manual_seed(1)
    w, bias = torch.randn(k, H, generator=g), torch.randn(H, generator=g)
    want_s, y = _formula(s, a, b, u, Rr, Ri, D)  # y (N, H, k), float64
    gelu = y * (1 + torch.erf(y / 2 ** 0.5)) / 2
    want_x = bias.double() + (gelu * w.t().double()).sum(-1)  # (N, H)
    ptr = s.data_ptr()
    x = state_kernel.advance_state_mix_kernel(s, a, b, u, Rr, Ri, D, w, bias)
    assert s.data_ptr() == ptr and x.shape == (N, H) and x.dtype == torch.float32 and x.is_contiguous()
    assert (s.double() - want_s).abs().max() < 1e-5 * want_s.abs().max()
    assert (x.double() - want_x).abs().max() < 1e-5 * want_x.abs().max()
    with pytest.raises(RuntimeError, match=r"mix weights \(k, H\)"):
        state_kernel.advance_state_mix_kernel(s, a, b, u, Rr, Ri, D, w.t().contiguous() if k > 1 else w[:, :-1].contiguous(), bias)


@needs_kernels
def test_the_kernel_refuses_what_it_does_not_handle(built):
    s, a, b, u, Rr, Ri, D = _inputs(4, 2, 8, 2, False)
    step = state_kernel.advance_state_kernel
    with pytest.raises(RuntimeError, match="float32"):
        step(s.double(), a.double(), b.double(), u.double(), Rr.double(), Ri.double(), D.double())
    with pytest.raises(RuntimeError, match=r"a, b \(2, H, M\)"):
        step(s, a[:, :3].contiguous(), b[:, :3].contiguous(), u, Rr, Ri, D)
    with pytest.raises(RuntimeError, match="contiguous"):
        step(s.transpose(2, 3).contiguous().transpose(2, 3), a, b, u, Rr, Ri, D)
    s9, a9, b9, u9, Rr9, Ri9, D9 = _inputs(4, 2, 8, 9, False)
    with pytest.raises(RuntimeError, match="1 to 8 read-outs"):
        step(s9, a9, b9, u9, Rr9, Ri9, D9)
    assert not state_kernel.usable("cpu", torch.float64) and not state_kernel.usable("meta", torch.float32)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return HumMUSS(HumMUSSConfig.preset("smoke", causal=True)).eval()


def _stream_without_kernel(model, monkeypatch, **kwargs):
    with monkeypatch.context() as m:
        m.setattr(state_kernel, "usable", lambda device, dtype: False)
        return model.stream(**kwargs)


@needs_kernels
def test_an_eager_stream_advances_planar_states_in_place_like_the_complex_path(model, monkeypatch):
    x = torch.randn(2, 12, 17, 3)
    dts = [1.0, 2.0, torch.tensor([1.0, 3.0])] * 4
    kernel, reference = model.stream(batch_size=2, compile=False), _stream_without_kernel(model, monkeypatch, batch_size=2, compile=False)
    assert kernel.planar and not reference.planar and reference.states[0][0].is_complex()
    ptrs = [s.s.data_ptr() for pair in kernel.states for s in pair]  # staggered until the step changes
    got = torch.stack([kernel.step(x[:, t], dt=dts[t]) for t in range(12)])
    want = torch.stack([reference.step(x[:, t], dt=dts[t]) for t in range(12)])
    assert not kernel.staggered
    assert [s.data_ptr() for pair in kernel.states for s in pair] == ptrs  # no new state a frame
    assert (got - want).abs().max() < 1e-5


def test_first_order_hold_blocks_keep_the_pytorch_update():
    torch.manual_seed(0)
    foh = HumMUSS(HumMUSSConfig.preset("smoke", causal=True, discretization="foh")).eval()
    s = foh.stream(compile=False)
    assert not s.planar and not any(c[1]["kernel"] or c[2]["kernel"] for c in s._consts)
    x = torch.randn(1, 6, 17, 3)
    with torch.no_grad():
        assert (torch.stack([s.step(x[:, t]) for t in range(6)], 1) - foh(x)).abs().max() < 1e-5


@needs_kernels
def test_the_compiled_step_calls_the_kernel_in_place(model, monkeypatch):
    """torch.compile for real (Inductor): the states keep their memory, the outputs equal the
    eager complex path's."""
    import hummuss.stream

    monkeypatch.setattr(hummuss.stream, "_compiled_frame", None)
    x = torch.randn(1, 6, 17, 3)
    compiled, reference = model.stream(compile=True), _stream_without_kernel(model, monkeypatch, compile=False)
    got = [compiled.step(x[:, t]) for t in range(2)]
    assert compiled.compile, "torch.compile fell back to eager execution"
    assert compiled.staggered  # its state, last inputs, free responses and clock, all in place
    ptrs = [t.data_ptr() for t in compiled.state_tensors()]
    got += [compiled.step(x[:, t]) for t in range(2, 6)]
    assert [t.data_ptr() for t in compiled.state_tensors()] == ptrs
    want = [reference.step(x[:, t]) for t in range(6)]
    assert max((a - b).abs().max().item() for a, b in zip(got, want)) < 1e-5

"""The staggered streaming update (hummuss/ssm/stagger.py, hummuss/csrc/state_stagger.cpp):
frame by frame it gives the per-frame recurrence's outputs, computed here in complex float64;
`synchronise` gives its state after any number of frames; its refusals; and eager streams take
it while their step stays the first frame's, and leave it when it changes (the compiled step's
use of it: tests/test_state_kernel.py)."""

import pytest
import torch
import torch.nn.functional as F
from conftest import needs_kernels

from hummuss.model import HumMUSS, HumMUSSConfig
from hummuss.ssm import stagger, state_kernel

pytestmark = needs_kernels


@pytest.fixture(autouse=True)
def built():
    assert state_kernel.usable("cpu", torch.float32), "the CPU kernels failed to build (see the warning)"


def _block(H, M, k, seed=0):
    """A stable diagonal block: |a| in [0.45, 0.95], its read-out and mix."""
    g = torch.Generator().manual_seed(seed)
    r, th = 0.45 + 0.5 * torch.rand(H, M, generator=g), 3 * torch.rand(H, M, generator=g)
    a = torch.stack([r * torch.cos(th), r * torch.sin(th)])
    b = 0.3 * torch.randn(2, H, M, generator=g)
    Rr, Ri = torch.randn(H, k, M, generator=g), torch.randn(H, k, M, generator=g)
    D, mw, mb = torch.randn(k, H, generator=g), torch.randn(k, H, generator=g), torch.randn(H, generator=g)
    return a, b, Rr, Ri, D, mw, mb


def _recurrence(a, b, Rr, Ri, D, mw, mb, us):
    """The per-frame recurrence in complex float64: s <- a s + b u, y = 2 Re(C s) + D u with
    2 C = Rr - i Ri, x = mb + sum_c mw_c GELU(y_c). us (L, N, H) -> xs (L, N, H), states
    (L, H, N, M) complex."""
    za = torch.complex(a[0].double(), a[1].double())[:, None]  # (H, 1, M)
    zb = torch.complex(b[0].double(), b[1].double())[:, None]
    C2 = torch.complex(Rr.double(), -Ri.double())  # (H, k, M)
    z = torch.zeros(za.shape[0], us.shape[1], za.shape[-1], dtype=torch.complex128)
    xs, states = [], []
    for u in us.double():
        z = za * z + zb * u.t()[..., None]  # (H, N, M)
        y = torch.einsum("hnm,hcm->nhc", z, C2.to(z.dtype)).real + u[..., None] * D.double().t()
        xs.append(mb.double() + (mw.double().t() * F.gelu(y)).sum(-1))
        states.append(z)
    return torch.stack(xs), torch.stack(states)


@pytest.mark.parametrize("H, N, M, k, T", [
    (768, 17, 64, 2, 4),   # paper-causal's block (M = 64 known to the kernel at compile time)
    (64, 4, 16, 2, 8),     # the cpu preset's modes (M = 16 likewise)
    (10, 3, 5, 1, 4),      # M at run time, a tail of modes, H not a multiple of T
    (33, 5, 20, 2, 4),
    (6, 3, 20, 2, 2),
    (12, 2, 16, 1, 8),
    (9, 4, 64, 1, 2),
])
def test_the_staggered_frames_give_the_recurrences_outputs(H, N, M, k, T):
    a, b, Rr, Ri, D, mw, mb = _block(H, M, k)
    us = torch.randn(3 * T + 2, N, 2 * H)[..., :H]  # (N, H) views with a row stride of 2H, as the step's
    want, _ = _recurrence(a, b, Rr, Ri, D, mw, mb, us)
    state = stagger.initial_state(torch.full((2, H, N, M), float("nan")), k, T)  # zeroed
    coef, K = stagger.coefficients(a, b, Rr, Ri, T)
    got = torch.stack([stagger.advance_mix(state, coef, K, u, D, mw, mb) for u in us])
    assert (got - want).abs().max() < 2e-5 * want.abs().max()
    assert state.clock.item() == len(us) % T


@pytest.mark.parametrize("frames", [0, 1, 3, 4, 5, 9])
def test_synchronise_gives_the_recurrences_state_after_any_frame(frames):
    H, N, M, k, T = 13, 3, 8, 2, 4  # groups of 3, 3, 3 and 4 channels
    a, b, Rr, Ri, D, mw, mb = _block(H, M, k, seed=1)
    us = torch.randn(frames, N, H)
    state = stagger.initial_state(torch.zeros(2, H, N, M), k, T)
    coef, K = stagger.coefficients(a, b, Rr, Ri, T)
    for u in us:
        stagger.advance_mix(state, coef, K, u, D, mw, mb)
    s = stagger.synchronise(state, a, b)
    assert s.data_ptr() == state.s.data_ptr()  # in place
    if frames == 0:
        assert not s.any()
        return
    _, states = _recurrence(a, b, Rr, Ri, D, mw, mb, us)
    want = states[-1]  # (H, N, M)
    assert (torch.complex(s[0].double(), s[1].double()) - want).abs().max() < 1e-5 * want.abs().max()


def test_the_coefficients_are_the_powers_of_a():
    """Row by row against the definitions, for one channel and mode: E = a^T, P_l = a^l b,
    G_jc = 2 C_c a^j (its imaginary row negated), K_l = sum over modes of 2 Re(C a^l b)."""
    H, M, k, T = 3, 2, 2, 4
    a, b, Rr, Ri, *_ = _block(H, M, k, seed=2)
    coef, K = stagger.coefficients(a, b, Rr, Ri, T)
    assert coef.shape == (H, 1 + T + T * k, 2, M) and K.shape == (T, k, H)
    h, m = 1, 1
    za, zb = complex(a[0, h, m], a[1, h, m]), complex(b[0, h, m], b[1, h, m])
    c2 = [complex(Rr[h, c, m], -Ri[h, c, m]) for c in range(k)]
    want = [za ** T] + [za ** l * zb for l in range(T)] + [c2[c] * za ** j for j in range(T) for c in range(k)]
    got = [complex(coef[h, r, 0, m], coef[h, r, 1, m] * (-1 if r > T else 1)) for r in range(1 + T + T * k)]
    assert max(abs(g - w) for g, w in zip(got, want)) < 1e-6
    l, c = 2, 1
    terms = [complex(Rr[h, c, mm], -Ri[h, c, mm]) * complex(a[0, h, mm], a[1, h, mm]) ** l
             * complex(b[0, h, mm], b[1, h, mm]) for mm in range(M)]
    assert abs(K[l, c, h].item() - sum(t.real for t in terms)) < 1e-6


def test_the_kernel_refuses_what_it_has_no_update_for():
    H, N, M, k = 8, 2, 4, 2
    a, b, Rr, Ri, D, mw, mb = _block(H, M, k)
    u = torch.randn(N, H)
    with pytest.raises(RuntimeError, match="T .ring.size.0.. 2, 4 or 8"):
        coef, K = stagger.coefficients(a, b, Rr, Ri, 3)
        stagger.advance_mix(stagger.initial_state(torch.zeros(2, H, N, M), k, 3), coef, K, u, D, mw, mb)
    state = stagger.initial_state(torch.zeros(2, H, N, M), k, 4)
    coef, K = stagger.coefficients(a, b, Rr, Ri, 4)
    state.clock.fill_(4)
    with pytest.raises(RuntimeError, match="clock in"):
        stagger.advance_mix(state, coef, K, u, D, mw, mb)
    with pytest.raises(RuntimeError, match="clock in"):
        stagger.synchronise(state, a, b)
    state.clock.zero_()
    with pytest.raises(RuntimeError, match="coef"):
        stagger.advance_mix(state, coef[:, :-1].contiguous(), K, u, D, mw, mb)
    with pytest.raises(RuntimeError, match=r"s \(2, H, N, M\)"):
        stagger.synchronise(state._replace(s=state.s[:1]), a, b)
    with pytest.raises(RuntimeError, match="u overlaps ring"):  # u read while the ring is written
        stagger.advance_mix(state, coef, K, state.ring[1], D, mw, mb)
    assert state.clock.item() == 0
    assert not stagger.supported(3) and stagger.supported(2)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return HumMUSS(HumMUSSConfig.preset("smoke", causal=True)).eval()


def test_a_stream_at_one_step_stays_staggered_and_equals_the_whole_sequence(model):
    x = torch.randn(2, 11, 17, 3)
    s = model.stream(batch_size=2, compile=False)
    assert s.staggered and all(isinstance(st, stagger.StaggeredState) for pair in s.states for st in pair)
    online = torch.stack([s.step(x[:, t], dt=2.0) for t in range(11)], 1)
    assert s.staggered
    with torch.no_grad():
        assert (online - model(x, dt_scale=2.0)).abs().max() < 1e-5


def test_a_new_step_synchronises_the_states_and_leaves_the_stagger(model):
    """Frames at 1.0, then one at 2.0: from there the per-frame update, on the same memory,
    with the outputs of a stream that never staggered."""
    x = torch.randn(1, 9, 17, 3)
    dts = [1.0] * 6 + [2.0, 1.0, 0.5]
    s = model.stream(compile=False)
    reference = model.stream(compile=False)
    reference._unstagger()  # before any frame: the per-frame update throughout
    assert not reference.staggered
    memory = [st.s.data_ptr() for pair in s.states for st in pair]
    got = [s.step(x[:, t], dt=dts[t]) for t in range(6)]
    assert s.staggered
    got += [s.step(x[:, t], dt=dts[t]) for t in range(6, 9)]
    assert not s.staggered and [st.data_ptr() for pair in s.states for st in pair] == memory
    want = [reference.step(x[:, t], dt=dts[t]) for t in range(9)]
    assert max((g - w).abs().max().item() for g, w in zip(got, want)) < 1e-5
    s.reset()
    assert s.staggered


def test_a_block_steps_a_staggered_state_only_with_its_coefficients(model):
    block = model.layers[0].temporal_st
    consts = block.stream_constants(17)
    state = stagger.initial_state(torch.zeros(2, block.width, 17, block.ssm_f.modes), consts["planes"][0].shape[1])
    x = torch.randn(17, model.config.dim)
    with pytest.raises(ValueError, match="coefficients"):
        block.step(x, state, consts=consts)
    with pytest.raises(ValueError, match="consts"):
        block.step(x, state)


def test_per_stream_steps_that_are_one_step_keep_the_stagger(model):
    s = model.stream(batch_size=2, compile=False)
    x = torch.randn(2, 3, 17, 3)
    for t in range(3):
        s.step(x[:, t], dt=torch.tensor([2.0, 2.0]))
    assert s.staggered and s._stagger_dt == 2.0
    s.step(x[:, 0], dt=torch.tensor([2.0, 1.0]))
    assert not s.staggered


def test_the_cpu_preset_streams_staggered_with_vectors_of_modes():
    """The cpu preset's 16 modes a channel fill the kernel's vectors (the smoke preset's 4 do
    not): its stream equals the whole sequence."""
    torch.manual_seed(1)
    cpu = HumMUSS(HumMUSSConfig.preset("cpu", causal=True)).eval()
    x = torch.randn(1, 10, 17, 3)
    s = cpu.stream(compile=False)
    assert s.staggered and s.states[0][0].s.shape[-1] == 16
    online = torch.stack([s.step(x[:, t]) for t in range(10)], 1)
    with torch.no_grad():
        offline = cpu(x)
    assert (online - offline).abs().max() < 1e-4 * offline.abs().max()

"""A block's convolution, mix and gate by channel group (hummuss/conv_mix_gate.py; temporal
blocks: FFT, `ConvMixGate`; spatial blocks: Toeplitz, `ToeplitzMixGate`): output and every
gradient against the Toeplitz product and `MixGate` in float64, and where a block's training
pass takes it."""

import pytest
import torch
from conftest import needs_kernels

pytestmark = needs_kernels


@pytest.mark.parametrize("route, L, H", [("FFTMixGate", 30, 5), ("FFTMixGate", 27, 21), ("ConvMixGate", 40, 5),
                                         ("ToeplitzMixGate", 16, 5)])
@pytest.mark.parametrize("directions, k", [(2, 2), (1, 2), (2, 1)])
def test_conv_mix_gate_equals_the_toeplitz_product_then_mix_gate(route, L, H, directions, k, monkeypatch):
    """float32, by FFT (`FFTMixGate` where the transform's size is a power of two: 64 for L =
    30 and 27, 5 channels in one vector's lanes and 21 in two groups, both with spare lanes;
    `ConvMixGate` for L = 40, size 80, 5 channels in groups of 2, an uneven last group) and by
    the Toeplitz kernels (`ToeplitzMixGate`; up to 64 = R L columns): the gated paths and
    the gradients of u, K, D, w, b and x_id = autograd through the Toeplitz matrix product
    (`toeplitz`, built entry by entry) and `MixGate` (PyTorch operations) in float64."""
    from hummuss import conv_mix_gate as cmg
    from hummuss.conv_mix_gate import conv_mix_gate, conv_mix_gate_applies
    from hummuss.fusion import MixGate
    from hummuss.ssm import fft_conv
    from hummuss.ssm.conv import conv_operator, toeplitz

    P = 3
    method = "toeplitz" if route == "ToeplitzMixGate" else "fft"
    anticausal = tuple(d == 1 for d in range(directions) for _ in range(k))
    R = len(anticausal)
    monkeypatch.setattr(fft_conv, "FFT_CHUNK_BYTES", 2 * P * R * (fft_conv.fft_size(2 * L - 1) // 2 + 1) * 8)
    monkeypatch.setattr(cmg, "TOEPLITZ_GROUP_BYTES", 2 * P * R * L * 4)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # groups of 2, not rounded up to a multiple of threads
    calls = []
    for name in ("FFTMixGate", "ConvMixGate", "ToeplitzMixGate"):
        function = getattr(cmg, name)
        monkeypatch.setattr(function, "apply", lambda *a, name=name, original=function.apply: calls.append(name) or original(*a))
    torch.manual_seed(directions + 10 * k)
    u, x_id = torch.randn(H, P, L, 1, requires_grad=True), torch.randn(H, P, L, 1, requires_grad=True)
    K, D = (0.3 * torch.randn(R, H, L)).requires_grad_(), torch.randn(R, H, requires_grad=True)
    w, b = torch.randn(H, directions, k, requires_grad=True), torch.randn(H, directions, requires_grad=True)
    go = torch.randn(H, P, L, 1)
    op = conv_operator(K, D, anticausal, "cols", method)
    assert conv_mix_gate_applies(op, u, x_id)
    out = conv_mix_gate(op, u, w, b, x_id)
    out.backward(go)
    assert calls == [route]
    leaves = [t.detach().double().requires_grad_() for t in (u, K, D, w, b, x_id)]
    u64, K64, D64, w64, b64, x64 = leaves
    y64 = torch.einsum("hrij,hpjq->hpriq", toeplitz(K64, D64, anticausal), u64)
    want = MixGate.apply(y64, w64, b64, x64)
    want.backward(go.double())
    torch.testing.assert_close(out.double(), want, rtol=1e-4, atol=1e-4)
    for name, got, ref in zip("u K D w b x_id".split(), (u, K, D, w, b, x_id), leaves):
        torch.testing.assert_close(got.grad.double(), ref.grad, rtol=1e-4, atol=1e-4, msg=name)


def test_training_passes_of_blocks_take_it_and_evaluation_passes_do_not(monkeypatch):
    """A bidirectional temporal block's training pass (FFT route) and a spatial block's
    (Toeplitz route) run through conv_mix_gate once; an evaluation pass does not."""
    import hummuss.gdssm as gdssm
    from hummuss.gdssm import GDSSM

    calls = []
    real = gdssm.conv_mix_gate
    monkeypatch.setattr(gdssm, "conv_mix_gate", lambda *a: calls.append(1) or real(*a))
    torch.manual_seed(0)
    temporal = GDSSM(16, expand=2.0, state_size=8, ssm_channels=2, temporal=True)
    spatial = GDSSM(16, expand=2.0, state_size=8)
    x = torch.randn(2, 100, 16)

    def runs(block, inp):
        calls.clear()
        out = block(inp)
        return len(calls), out

    n, out = runs(temporal, x)
    assert n == 1 and out.grad_fn is not None
    n, out_spatial = runs(spatial, x[:, :17])
    assert n == 1 and out_spatial.grad_fn is not None
    with torch.no_grad():
        n, evaluated = runs(spatial, x[:, :17])
    assert n == 0
    torch.testing.assert_close(evaluated, out_spatial.detach(), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        n, evaluated = runs(temporal, x)
    assert n == 0  # evaluation: `_grouped`
    torch.testing.assert_close(evaluated, out.detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("L, H, directions, k", [(30, 21, 2, 2), (27, 5, 1, 2), (243, 16, 2, 1)])
def test_evaluation_kernel_equals_gelus_the_toeplitz_product_then_mix_gate(L, H, directions, k):
    """`fft_mix_gate_into` (evaluation: GELUs of both projections, FFT convolution of a
    power-of-two size, mix and gate in one kernel call) = GELU, the Toeplitz matrix product
    (`toeplitz`, built entry by entry) and `MixGate` in float64; 21 channels are two groups of
    a vector's lanes with spare lanes, 5 fewer than one vector's, 243 frames transforms of 512."""
    from hummuss.conv_mix_gate import fft_mix_gate_into
    from hummuss.fusion import MixGate
    from hummuss.ssm.conv import conv_operator, toeplitz

    P = 3
    anticausal = tuple(d == 1 for d in range(directions) for _ in range(k))
    R = len(anticausal)
    torch.manual_seed(L + H)
    pre = torch.randn(2 * H, P, L)
    K, D = 0.3 * torch.randn(R, H, L) / L ** 0.5, torch.randn(R, H)
    w, b = torch.randn(H, directions, k), torch.randn(H, directions)
    with torch.no_grad():
        op = conv_operator(K, D, anticausal, "cols", "fft")
        out = torch.full((H, P, L), float("nan"))
        assert fft_mix_gate_into(op, pre, w, b, out)
        g = torch.nn.functional.gelu(pre.double())
        y = torch.einsum("hrij,hpj->hpri", toeplitz(K.double(), D.double(), anticausal), g[H:])
        want = MixGate.apply(y.unsqueeze(-1), w.double(), b.double(), g[:H].unsqueeze(-1))
    torch.testing.assert_close(out.double(), want.view(H, P, L), rtol=1e-4, atol=1e-4)


def test_evaluation_of_a_temporal_block_takes_the_kernel_where_the_size_is_a_power_of_two(monkeypatch):
    """A temporal block's evaluation pass over 100 frames (transforms of 256) runs the
    evaluation kernel and equals its training pass; over 81 frames (transforms of 192) the
    kernel does not apply and the block goes channel group by group."""
    import hummuss.gdssm as gdssm
    from hummuss.gdssm import GDSSM

    taken = []
    real = gdssm.fft_mix_gate_into
    monkeypatch.setattr(gdssm, "fft_mix_gate_into", lambda *a: taken.append(real(*a)) or taken[-1])
    torch.manual_seed(1)
    block = GDSSM(16, expand=2.0, state_size=8, ssm_channels=2, temporal=True)
    for frames, applies in ((100, True), (81, False)):
        x = torch.randn(2, frames, 16)
        trained = block(x)
        taken.clear()
        with torch.no_grad():
            evaluated = block(x)
        assert taken == [applies]
        torch.testing.assert_close(evaluated, trained.detach(), rtol=1e-5, atol=1e-5)

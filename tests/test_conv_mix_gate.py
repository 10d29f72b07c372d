"""A block's convolution, mix and gate by channel group (hummuss/conv_mix_gate.py; temporal
blocks: FFT, `ConvMixGate`; spatial blocks: Toeplitz, `ToeplitzMixGate`): output and every
gradient against the Toeplitz product and `MixGate` in float64, and where a block's training
pass takes it."""

import pytest
import torch
from conftest import needs_kernels

pytestmark = needs_kernels


@pytest.mark.parametrize("method, L", [("fft", 30), ("toeplitz", 16)])
@pytest.mark.parametrize("directions, k", [(2, 2), (1, 2), (2, 1)])
def test_conv_mix_gate_equals_the_toeplitz_product_then_mix_gate(method, L, directions, k, monkeypatch):
    """float32, 5 channels in groups of 2 (an uneven last group), by FFT (`ConvMixGate`) and
    by the Toeplitz kernels (`ToeplitzMixGate`; up to 64 = R L columns): the gated paths and
    the gradients of u, K, D, w, b and x_id = autograd through the Toeplitz matrix product
    (`toeplitz`, built entry by entry) and `MixGate` (PyTorch operations) in float64."""
    from hummuss import conv_mix_gate as cmg
    from hummuss.conv_mix_gate import conv_mix_gate, conv_mix_gate_applies
    from hummuss.fusion import MixGate
    from hummuss.ssm import fft_conv
    from hummuss.ssm.conv import conv_operator, toeplitz

    H, P = 5, 3
    anticausal = tuple(d == 1 for d in range(directions) for _ in range(k))
    R = len(anticausal)
    monkeypatch.setattr(fft_conv, "FFT_CHUNK_BYTES", 2 * P * R * (fft_conv.fft_size(2 * L - 1) // 2 + 1) * 8)
    monkeypatch.setattr(cmg, "TOEPLITZ_GROUP_BYTES", 2 * P * R * L * 4)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # groups of 2, not rounded up to a multiple of threads
    route = cmg.ConvMixGate if method == "fft" else cmg.ToeplitzMixGate
    calls = []
    original = route.apply
    monkeypatch.setattr(route, "apply", lambda *a: calls.append(1) or original(*a))
    torch.manual_seed(directions + 10 * k)
    u, x_id = torch.randn(H, P, L, 1, requires_grad=True), torch.randn(H, P, L, 1, requires_grad=True)
    K, D = (0.3 * torch.randn(R, H, L)).requires_grad_(), torch.randn(R, H, requires_grad=True)
    w, b = torch.randn(H, directions, k, requires_grad=True), torch.randn(H, directions, requires_grad=True)
    go = torch.randn(H, P, L, 1)
    op = conv_operator(K, D, anticausal, "cols", method)
    assert conv_mix_gate_applies(op, u, x_id)
    out = conv_mix_gate(op, u, w, b, x_id)
    out.backward(go)
    assert calls == [1]
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

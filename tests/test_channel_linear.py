"""The GDSSM block's projections (hummuss/channel_linear.py): in column blocks and with the
compiled bias and GELU, values and gradients against the plain formulas in float64, where
the blocks apply, and a block's training step with and without them."""

import pytest
import torch
import torch.nn.functional as F
from conftest import needs_kernels

import hummuss.channel_linear as cl


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 48 tokens from 64 tokens on, so small inputs take the blocked route (with an
    uneven last block)."""
    monkeypatch.setattr(cl, "BLOCK_COLUMNS", 48)
    monkeypatch.setattr(cl, "BLOCK_MIN_TOKENS", 64)
    monkeypatch.setattr(cl, "BLOCK_MIN_INNER", 8)
    monkeypatch.setattr(cl, "blocks_pay", lambda: True)  # whatever this machine's CPU


def _leaves(*shapes):
    return [torch.randn(*s, requires_grad=True) for s in shapes]


def _float64(*ts):
    return [t.detach().double().requires_grad_() for t in ts]


def _check_layer(fn, formula, N, grad_fn, seed):
    """fn(z, w, b) for z (N, 16), w (24, 16), b (24,): its autograd node, and its output and
    the three gradients against `formula` in float64."""
    torch.manual_seed(seed)
    z, w, b = _leaves((N, 16), (24, 16), (24,))
    g = torch.randn(24, N)
    out = fn(z, w, b)
    assert type(out.grad_fn).__name__ == grad_fn
    out.backward(g)
    z64, w64, b64 = _float64(z, w, b)
    want = formula(z64, w64, b64)  # (H, N)
    want.backward(g.double())
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-5)
    for got, ref in ((z.grad, z64.grad), (w.grad, w64.grad), (b.grad, b64.grad)):
        torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-4)
    return z, w, b, want


@pytest.mark.parametrize("N", [150, 96])
def test_channel_major_in_blocks_is_w_z_plus_b_with_its_gradients(small_blocks, N):
    z, w, b, want = _check_layer(cl.channel_major, lambda z, w, b: w @ z.t() + b[:, None], N,
                                 "ChannelMajorLinearBackward", seed=N)
    with torch.no_grad():  # evaluation: the blocks without autograd
        torch.testing.assert_close(cl.channel_major(z, w, b).double(), want, rtol=1e-5, atol=1e-5)


def test_token_major_in_blocks_is_y_w_plus_b_with_its_gradients(small_blocks):
    torch.manual_seed(1)
    N = 150
    y, w, b = _leaves((24, N), (16, 24), (16,))
    g = torch.randn(N, 16)
    out = cl.token_major(y, w, b)
    assert type(out.grad_fn).__name__ == "TokenMajorLinearBackward"
    out.backward(g)
    y64, w64, b64 = _float64(y, w, b)
    want = y64.t() @ w64.t() + b64  # (N, D)
    want.backward(g.double())
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-5)
    for got, ref in ((y.grad, y64.grad), (w.grad, w64.grad), (b.grad, b64.grad)):
        torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-4)


def test_blocks_apply_only_to_wide_float32_cpu_products_of_a_wide_enough_model(monkeypatch):
    monkeypatch.setattr(cl, "blocks_pay", lambda: True)
    x = torch.zeros(1)
    wide, width = cl.BLOCK_MIN_TOKENS, cl.BLOCK_MIN_INNER
    assert cl._blocked(x, wide, width)
    assert not cl._blocked(x, wide - 1, width)
    assert not cl._blocked(x, wide, width // 2)  # the cpu preset's D = 64
    assert not cl._blocked(x.double(), wide, width)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not cl._blocked(x, wide, width)
    monkeypatch.setattr(cl, "blocks_pay", lambda: False)  # an Intel CPU: whole products
    assert not cl._blocked(x, wide, width)
    z, w, b = _leaves((100, 8), (12, 8), (12,))  # narrow: the plain addmm
    assert type(cl.channel_major(z, w, b).grad_fn).__name__ == "AddmmBackward0"
    assert type(cl.token_major(w.t(), z[:12], b).grad_fn).__name__ == "AddmmBackward0"


def test_a_block_trains_to_the_same_gradients_with_and_without_blocks(small_blocks, monkeypatch):
    """A bidirectional temporal GDSSM block (FFT route, 100 frames): loss and every parameter's
    gradient with the blocked projections = with plain addmm."""
    from hummuss.gdssm import GDSSM

    torch.manual_seed(0)
    block = GDSSM(16, expand=2.0, state_size=8, ssm_channels=2, temporal=True)
    x = torch.randn(2, 100, 16)

    def grads():
        block.zero_grad()
        loss = block(x).square().mean()
        loss.backward()
        return [loss.detach()] + [p.grad.clone() for p in block.parameters()]

    blocked = grads()
    monkeypatch.setattr(cl, "_blocked", lambda *a: False)
    plain = grads()
    for a, b in zip(blocked, plain):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_blocks_pay_where_mkl_runs_its_generic_code(monkeypatch):
    """MKL's wide products ran faster in blocks on an AMD EPYC with MKL's generic code, and
    slower on an Intel Xeon and on the EPYC with MKL's Intel code path (hummuss.mkl_vendor)."""
    from hummuss import mkl_vendor

    for vendor, preloaded, want in (("GenuineIntel", False, False), ("AuthenticAMD", False, True),
                                    ("AuthenticAMD", True, False), (None, False, True)):
        monkeypatch.setattr(mkl_vendor, "cpu_vendor", lambda v=vendor: v)
        monkeypatch.setattr(mkl_vendor, "mapped", lambda p=preloaded: p)
        cl.blocks_pay.cache_clear()
        assert cl.blocks_pay() is want, (vendor, preloaded)
    monkeypatch.undo()
    cl.blocks_pay.cache_clear()


@needs_kernels
@pytest.mark.parametrize("blocked", [False, True])
def test_channel_major_gelu_is_gelu_of_w_z_plus_b_with_its_gradients(small_blocks, monkeypatch, blocked):
    """The compiled bias and GELU (and their backward) against F.gelu of W z^T + b in float64,
    whole and in column blocks (150 tokens: blocks of 48 and a last of 6)."""
    monkeypatch.setattr(cl, "blocks_pay", lambda: blocked)
    _check_layer(cl.channel_major_gelu, lambda z, w, b: F.gelu(w @ z.t() + b[:, None]), 150,
                 "ChannelMajorGeluBackward", seed=3)


@needs_kernels
def test_bias_gelu_kernels_are_the_formulas_on_column_blocks():
    """The two ops on a block of columns of a wider tensor (rows spaced wider than they are
    long) write only that block: GELU's value and slope from torch.erf, the row sums."""
    from hummuss import cpu_kernels

    k = cpu_kernels.ops()
    torch.manual_seed(4)
    pre_all, g_all = 3 * torch.randn(5, 40), torch.randn(5, 40)
    b = torch.randn(5)
    pre, act_all = pre_all.clone(), torch.full((5, 40), 7.0)
    k.bias_gelu_(pre[:, 3:24], b, act_all[:, 3:24])
    x = pre_all[:, 3:24].double() + b.double()[:, None]
    cdf = 0.5 * (1 + torch.erf(x / 2 ** 0.5))
    torch.testing.assert_close(pre[:, 3:24].double(), x)
    torch.testing.assert_close(act_all[:, 3:24].double(), x * cdf, rtol=0, atol=2e-6)
    assert torch.equal(pre[:, :3], pre_all[:, :3]) and torch.equal(pre[:, 24:], pre_all[:, 24:])
    assert (act_all[:, :3] == 7).all() and (act_all[:, 24:] == 7).all()
    gp, gb = k.gelu_bias_backward(g_all[:, 3:24], pre[:, 3:24])
    slope = cdf + x * torch.exp(-x * x / 2) / (2 * torch.pi) ** 0.5
    torch.testing.assert_close(gp.double(), g_all[:, 3:24].double() * slope, rtol=0, atol=2e-6)
    torch.testing.assert_close(gb.double(), (g_all[:, 3:24].double() * slope).sum(1), rtol=0, atol=1e-5)

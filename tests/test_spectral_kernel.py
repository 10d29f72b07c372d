"""The FFT convolution's backward products in the compiled CPU kernel
(hummuss/csrc/spectral.cpp, `hummuss.ssm.fft_conv.FFTConv`): the kernel against the formula in
complex128, its refusals, and FFTConv's gradients through it against the Toeplitz product's
autograd in float64."""

import pytest
import torch
from conftest import needs_kernels

pytestmark = needs_kernels


def _ops():
    from hummuss.cpu_kernels import ops

    return ops()


@pytest.mark.parametrize("G, P, R, F", [(3, 5, 4, 257), (2, 1, 1, 5), (1, 3, 2, 16), (4, 34, 4, 9)])
@pytest.mark.parametrize("input_grad, kernel_grad", [(True, True), (True, False), (False, True)])
def test_spectral_backward_is_the_formula(G, P, R, F, input_grad, kernel_grad):
    """GU = sum_r Gf_r conj(W_r), S = sum_p Gf_p conj(U_p), worked in complex128 by einsum;
    frequency counts that fill whole vectors, a tail, or less than one vector."""
    torch.manual_seed(F)
    Gf, W, U = (torch.randn(*s, dtype=torch.complex64) for s in ((G, P, R, F), (G, R, F), (G, P, F)))
    GU, S = _ops().spectral_backward(Gf, W, U, input_grad, kernel_grad)
    d = [t.to(torch.complex128) for t in (Gf, W, U)]
    if input_grad:
        torch.testing.assert_close(GU.to(torch.complex128), torch.einsum("gprf,grf->gpf", d[0], d[1].conj()),
                                   rtol=1e-5, atol=1e-5)
    else:
        assert GU.numel() == 0
    if kernel_grad:
        torch.testing.assert_close(S.to(torch.complex128), torch.einsum("gprf,gpf->grf", d[0], d[2].conj()),
                                   rtol=1e-5, atol=1e-5)
    else:
        assert S.numel() == 0


def test_spectral_backward_refuses_what_it_does_not_handle():
    """(A lazy conjugate never reaches it: the dispatcher resolves it first.)"""
    Gf, W, U = (torch.randn(*s, dtype=torch.complex64) for s in ((2, 3, 4, 9), (2, 4, 9), (2, 3, 9)))
    ops = _ops()
    spaced = torch.randn(2, 3, 4, 18, dtype=torch.complex64)[..., ::2]
    for bad in ((spaced, W, U),  # the right shape, not contiguous
                (Gf.transpose(0, 1), W, U),  # P and G swapped
                (Gf.to(torch.complex128), W, U),  # not complex64
                (Gf, W[:, :3], U)):  # W's read-outs disagree with Gf's
        with pytest.raises(RuntimeError, match="spectral_backward"):
            ops.spectral_backward(*bad, True, True)


@pytest.mark.parametrize("Q", [1, 2])
def test_fft_conv_gradients_through_the_kernel_equal_the_toeplitz_product(Q, monkeypatch):
    """float32 FFTConv, both directions' kernels, 5 channels in groups of 2: its gradients (by
    the kernel where Q = 1, by PyTorch operations where Q = 2) = autograd through the
    Toeplitz matrix product in float64."""
    from hummuss.ssm import fft_conv as conv
    from hummuss.ssm.conv import toeplitz
    from hummuss.ssm.fft_conv import FFTConv, fft_size

    anticausal = (False, False, True, True)
    R, H, P, L = len(anticausal), 5, 3, 20
    n = fft_size(2 * L - 1)
    monkeypatch.setattr(conv, "FFT_CHUNK_BYTES", 2 * P * R * (n // 2 + 1) * Q * 8)  # 2 channels a group
    used = []
    real = conv.spectral_kernel
    monkeypatch.setattr(conv, "spectral_kernel", lambda gy, W: used.append(real(gy, W) is not None) or real(gy, W))
    torch.manual_seed(Q)
    u = torch.randn(H, P, L, Q, requires_grad=True)
    K = (0.3 * torch.randn(R, H, L)).requires_grad_()
    D = torch.randn(R, H, requires_grad=True)
    gy = torch.randn(H, P, R, L, Q)
    FFTConv.apply(u, K, D, anticausal, n).backward(gy)
    u64, K64, D64 = (t.detach().double().requires_grad_() for t in (u, K, D))
    torch.einsum("hrij,hpjq->hpriq", toeplitz(K64, D64, anticausal), u64).backward(gy.double())
    for got, want in ((u.grad, u64.grad), (K.grad, K64.grad), (D.grad, D64.grad)):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)
    assert used == [Q == 1]

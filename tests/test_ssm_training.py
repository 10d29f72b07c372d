"""Training fast paths (hand-written backwards of kernel and Toeplitz operator) agree with the plain math."""

import pytest
import torch

from hummuss.gdssm import GDSSM


@pytest.mark.parametrize("bidirectional,k", [(True, 1), (True, 2), (False, 2)])
@pytest.mark.parametrize("shape", [(6, 17, 1), (1, 27, 5)])
def test_block_training_path_matches_evaluation_path(bidirectional, k, shape):
    torch.manual_seed(0)
    blk = GDSSM(16, expand=2.0, state_size=8, ssm_channels=k, bidirectional=bidirectional, temporal=True)
    x = torch.randn(*shape, 16)
    with torch.no_grad():
        ref = blk(x)
    out = blk(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    out.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in blk.parameters())


@pytest.mark.parametrize("layout", ["rows", "cols"])
@pytest.mark.parametrize("anticausal", [(False,), (True,), (False, True), (False, False, True, True)])
def test_toeplitz_weight_matches_toeplitz_and_its_gradient(layout, anticausal):
    from hummuss.ssm.conv import ToeplitzWeight, toeplitz

    torch.manual_seed(0)
    R, H, L = len(anticausal), 3, 5
    K = torch.randn(R, H, L, dtype=torch.float64, requires_grad=True)
    D = torch.randn(R, H, dtype=torch.float64, requires_grad=True)
    T = toeplitz(K, D, anticausal)  # (H, R, L, L)
    ref = T.reshape(H, R * L, L) if layout == "rows" else T.permute(0, 3, 1, 2).reshape(H, L, R * L)
    torch.testing.assert_close(ToeplitzWeight.apply(K, D, anticausal, layout), ref)
    assert torch.autograd.gradcheck(lambda k, d: ToeplitzWeight.apply(k, d, anticausal, layout), (K, D))


@pytest.mark.parametrize("L", [1, 7, 30])
def test_vandermonde_training_path_matches_and_gradcheck(L):
    from hummuss.ssm.conv import VandermondeKernel, vandermonde

    torch.manual_seed(0)
    k, H, M = 2, 3, 4
    W = torch.randn(k, H, M, dtype=torch.complex128, requires_grad=True)
    dtlam = torch.complex(-torch.rand(H, M, dtype=torch.float64) * 0.3,
                          torch.randn(H, M, dtype=torch.float64)).requires_grad_()
    with torch.no_grad():
        ref = vandermonde(W, dtlam, L)
    torch.testing.assert_close(VandermondeKernel.apply(W, dtlam, L), ref)
    assert torch.autograd.gradcheck(lambda w, z: VandermondeKernel.apply(w, z, L), (W, dtlam))


@pytest.mark.parametrize("L", [17, 243])
def test_vandermonde_kernel_and_gradients_equal_the_direct_sum(L):
    """The factored kernel and its hand-written backward = autograd through the plain
    complex sum K_l = 2 Re(sum_n W_n exp(dtlam_n l)), in complex128."""
    from hummuss.ssm.conv import vandermonde

    g = torch.Generator().manual_seed(L)
    k, H, M = 2, 5, 6
    W = torch.randn(k, H, M, generator=g, dtype=torch.complex128)
    dtlam = torch.complex(-torch.rand(H, M, generator=g, dtype=torch.float64) * 0.05,
                          torch.randn(H, M, generator=g, dtype=torch.float64))
    gK = torch.randn(k, H, L, generator=g, dtype=torch.float64)
    grads = []
    for kernel in (vandermonde, lambda w, z, n: 2 * (w.unsqueeze(-1) * torch.exp(z.unsqueeze(-1) * torch.arange(n))).sum(-2).real):
        w, z = W.clone().requires_grad_(), dtlam.clone().requires_grad_()
        K = kernel(w, z, L)
        K.backward(gK)
        grads.append((K.detach(), w.grad, z.grad))
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want)


def _complex_factors(dtlam, length):
    """`power_factors` as complex (H, nq, M) and (H, M, b) tensors."""
    from hummuss.ssm.conv import power_factors

    Q, R = power_factors(dtlam, length)
    H, M2, b = R.shape
    return Q, torch.view_as_complex(R.view(H, M2 // 2, 2, b).transpose(2, 3).contiguous())


@pytest.mark.parametrize("length", [1, 2, 10, 12, 17, 64, 100, 243])
def test_kernel_power_factors_give_the_complex_exponential(length):
    """Q[l // b] R[l % b] (the factors dA^(q b) and dA^r) = exp(dtlam l), computed directly in complex128."""
    g = torch.Generator().manual_seed(length)
    dtlam = torch.complex(-torch.rand(3, 4, generator=g, dtype=torch.float64),
                          3 * torch.randn(3, 4, generator=g, dtype=torch.float64))
    direct = torch.exp(dtlam.unsqueeze(-1) * torch.arange(length, dtype=torch.float64))  # (H, M, L)
    Q, R = _complex_factors(dtlam, length)
    b, lags = R.shape[-1], torch.arange(length)
    assert Q.shape[1] * b >= length and (Q.shape[1] - 1) * b < length
    torch.testing.assert_close(Q.transpose(1, 2)[..., lags // b] * R[..., lags % b], direct)


def test_kernel_power_factors_below_float32_range_are_zero():
    dtlam = torch.tensor([[complex(-10.0, 1.0)]])  # |dA^l| = e^(-10 l): subnormal from l = 9
    Q, R = _complex_factors(dtlam, 100)  # b = 10: Q = dA^(10 q), R = dA^r, r < 10
    tiny = torch.finfo(torch.float32).tiny
    for f in (torch.view_as_real(Q), torch.view_as_real(R)):
        assert not ((f != 0) & (f.abs() < tiny)).any()
    # zero from e^-60 on (within e^30 of the normal range's end, POWER_MASK_MARGIN)
    assert (R[0, 0, 6:] == 0).all() and R[0, 0, 5] != 0 and (Q[0, 1:, 0] == 0).all() and Q[0, 0, 0] == 1


def test_kernel_power_factors_off_the_cpu_read_nothing_back():
    """Off the CPU the factors are masked unconditionally, with the same numbers, instead of
    reading the smallest step back to decide (a device-to-host wait per DSSM and step on a GPU).
    A meta tensor stands in for a device: reading one back raises."""
    from hummuss.ssm.conv import power_factors

    dtlam = torch.complex(-torch.rand(3, 4), torch.randn(3, 4))
    Q, R = power_factors(dtlam.to("meta"), 243)
    assert Q.device.type == R.device.type == "meta" and Q.shape == (3, 16, 4) and R.shape == (3, 8, 16)


@pytest.mark.parametrize("grouped", [False, True], ids=["one-group", "groups-of-2"])
@pytest.mark.parametrize("anticausal, P, Q", [((False,), 2, 1), ((False, True), 3, 1), ((True, False, True), 1, 2)])
def test_fft_convolution_training_path_matches_toeplitz_and_gradcheck(anticausal, P, Q, grouped, monkeypatch):
    """FFTConv (the training FFT convolution, hand-written backward) = the Toeplitz matrix
    product built entry by entry (`toeplitz`), and its gradients = finite differences; also
    when it works through the 3 channels in groups of 2 (an uneven last group)."""
    from hummuss.ssm import fft_conv as conv
    from hummuss.ssm.conv import toeplitz
    from hummuss.ssm.fft_conv import FFTConv, fft_size

    if grouped:  # spectra of one channel: P R (n/2 + 1) Q complex128 numbers of 16 bytes
        monkeypatch.setattr(conv, "FFT_CHUNK_BYTES", 2 * P * len(anticausal) * 9 * Q * 16)

    torch.manual_seed(len(anticausal))
    R, H, L = len(anticausal), 3, 6
    u = torch.randn(H, P, L, Q, dtype=torch.float64, requires_grad=True)
    K = torch.randn(R, H, L, dtype=torch.float64, requires_grad=True)
    D = torch.randn(R, H, dtype=torch.float64, requires_grad=True)
    n = fft_size(2 * L - 1)
    expected = torch.einsum("hrij,hpjq->hpriq", toeplitz(K, D, anticausal), u)
    torch.testing.assert_close(FFTConv.apply(u, K, D, anticausal, n), expected)
    assert torch.autograd.gradcheck(lambda a, k, d: FFTConv.apply(a, k, d, anticausal, n), (u, K, D))

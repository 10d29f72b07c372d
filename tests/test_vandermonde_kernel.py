"""The DSSM kernel's Vandermonde factors, the kernel from them and its backward's sums in the
compiled CPU kernels (hummuss/csrc/vandermonde.cpp; `hummuss.ssm.conv.power_factors`,
`VandermondeKernel`): the factors against exp(dtlam l) in complex128, the zeros below float32's
normal range, the kernel and the sums against the direct sums over lags in complex128, and
the float32 kernel and its gradients through the kernels against autograd through the direct
complex sum in complex128."""

import math

import pytest
import torch
from conftest import needs_kernels

pytestmark = needs_kernels


def _ops():
    from hummuss.cpu_kernels import ops

    return ops()


def _dtlam(H, M, seed, decay=1.0, turn=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.complex(-decay * torch.rand(H, M, generator=g), turn * torch.randn(H, M, generator=g))


@pytest.mark.parametrize("H, M, b, nq", [(3, 64, 16, 16), (2, 5, 5, 4), (1, 17, 1, 1), (4, 33, 20, 3)])
def test_power_factors_are_the_powers_of_exp_dtlam(H, M, b, nq):
    """Q[h, q, m] = exp(dtlam q b), R[h, m] = (Re, Im) of exp(dtlam r): mode counts that fill
    whole vectors, a tail, less than one vector; step counts below and above one vector."""
    dtlam = _dtlam(H, M, M)
    Q, R = _ops().power_factors(dtlam.real.contiguous(), dtlam.imag.contiguous(), b, nq, -math.inf)
    assert Q.shape == (H, nq, M, 2) and R.shape == (H, M, 2, b)
    z = dtlam.to(torch.complex128)
    want_q = torch.exp(z.unsqueeze(1) * (b * torch.arange(nq, dtype=torch.float64)).view(1, nq, 1))
    want_r = torch.exp(z.unsqueeze(-1) * torch.arange(b, dtype=torch.float64))  # (H, M, b)
    torch.testing.assert_close(torch.view_as_complex(Q).to(torch.complex128), want_q, rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(torch.complex(R[:, :, 0], R[:, :, 1]).to(torch.complex128), want_r,
                               rtol=2e-5, atol=2e-5)


def test_power_factors_below_the_floor_are_zero_and_none_subnormal():
    from hummuss.ssm.conv import LOG_POWER_FLOOR

    dtlam = torch.tensor([[complex(-10.0, 1.0), complex(-0.1, 2.0)]])  # |dA^r| = e^(-10 r) in the first mode
    Q, R = _ops().power_factors(dtlam.real.contiguous(), dtlam.imag.contiguous(), 10, 10, LOG_POWER_FLOOR)
    tiny = torch.finfo(torch.float32).tiny
    for f in (Q, R):
        assert not ((f != 0) & (f.abs() < tiny)).any()
    # the first mode's powers from e^-60 on are zero (-10 r < floor = -57.3 from r = 6), the second mode's none
    assert (R[0, 0, :, 6:] == 0).all() and (R[0, 0, 0, :6] != 0).all() and (R[0, 1, 0] != 0).all()
    assert (Q[0, 1:, 0] == 0).all() and (Q[0, :, 1, 0] != 0).all()


def _factors(H, M, L, seed):
    """power_factors' Q (H, nq, M) complex64 and R (H, 2M, b), and dtlam in complex128."""
    from hummuss.ssm.conv import power_factors

    dtlam = _dtlam(H, M, seed, decay=0.05)
    Q, R = power_factors(dtlam, L)
    return Q, R, dtlam.to(torch.complex128)


@pytest.mark.parametrize("k, H, M, L", [(2, 3, 64, 243), (1, 2, 5, 17), (3, 2, 33, 50), (2, 1, 7, 2187), (1, 2, 4, 1)])
def test_factored_kernel_is_the_vandermonde_sum(k, H, M, L):
    """K[c, h, l] = 2 Re(sum_m W[c, h, m] dA_m^l): whole tiles of q and a tail, modes in whole
    vectors and not, one lag."""
    Q, R, z = _factors(H, M, L, L + M)
    W = torch.randn(k, H, M, generator=torch.Generator().manual_seed(M), dtype=torch.complex64)
    got = _ops().factored_kernel(W, Q, R, L)
    powers = torch.exp(z.unsqueeze(-1) * torch.arange(L, dtype=torch.float64))  # (H, M, L)
    want = 2 * (W.to(torch.complex128).unsqueeze(-1) * powers).sum(-2).real
    assert got.shape == (k, H, L)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


@pytest.mark.parametrize("k, H, M, L", [(2, 3, 64, 243), (1, 2, 5, 17), (3, 2, 33, 50), (2, 1, 7, 2187)])
def test_kernel_sums_are_the_gradient_sums(k, H, M, L):
    """s[h, 0, c, m] = sum_l g dA_m^l and s[h, 1, c, m] = sum_l g l dA_m^l, g = 2 gK[c, h, l]."""
    Q, R, z = _factors(H, M, L, L + M)
    gK = torch.randn(k, H, L, generator=torch.Generator().manual_seed(L))
    got = _ops().kernel_sums(gK, Q, R)
    lags = torch.arange(L, dtype=torch.float64)
    powers = torch.exp(z.unsqueeze(-1) * lags)  # (H, M, L)
    g = 2 * gK.double().transpose(0, 1).unsqueeze(2)  # (H, k, 1, L)
    want = torch.stack([(g * powers.unsqueeze(1)).sum(-1), (g * lags * powers.unsqueeze(1)).sum(-1)], 1)
    assert got.shape == (H, 2, k, M) and got.dtype == torch.complex64
    for f in range(2):
        scale = want[:, f].abs().max().item()
        # float32 sums over L lags (the second weighted by l): errors to a few 1e-5 of the largest
        torch.testing.assert_close(got[:, f].to(torch.complex128), want[:, f], rtol=0, atol=5e-5 * scale)


def test_the_kernels_refuse_what_they_do_not_handle():
    ops = _ops()
    lr = torch.randn(3, 8)
    for bad in ((lr.double(), lr), (lr, lr[:, :4]), (lr.t(), lr.t())):  # float64; shapes disagree; not contiguous
        with pytest.raises(RuntimeError, match="power_factors"):
            ops.power_factors(*bad, 4, 2, 0.0)
    W, Q, R = torch.randn(2, 3, 8, dtype=torch.complex64), torch.randn(3, 4, 8, dtype=torch.complex64), torch.randn(3, 16, 5)
    for bad in ((W, Q[:, :, :4], R), (W, Q, R.double()), (W.to(torch.complex128), Q, R), (W, Q, R[:, :8]),
                (W, Q.transpose(1, 2).contiguous().transpose(1, 2), R)):  # modes disagree; dtypes; 2M; layout
        with pytest.raises(RuntimeError, match="factored_kernel"):
            ops.factored_kernel(*bad, 20)
    with pytest.raises(RuntimeError, match="factored_kernel"):
        ops.factored_kernel(W, Q, R, 21)  # more lags than nq b
    gK = torch.randn(2, 3, 20)
    for bad in ((gK, Q, R[:, :8]), (gK.double(), Q, R), (gK, Q.to(torch.complex128), R), (gK[:, :, :2].transpose(1, 2), Q, R),
                (torch.randn(2, 3, 21), Q, R)):
        with pytest.raises(RuntimeError, match="kernel_sums"):
            ops.kernel_sums(*bad)


@pytest.mark.parametrize("L", [17, 243])
def test_float32_kernel_and_gradients_through_the_kernels_equal_the_direct_sum(L, monkeypatch):
    """`vandermonde` in float32 (factors and backward sums by the kernels; the calls counted)
    = autograd through K_l = 2 Re(sum_n W_n exp(dtlam_n l)) in complex128."""
    from hummuss.ssm import conv

    calls = []
    ops = _ops()

    class Counting:
        def __getattr__(self, name):
            calls.append(name)
            return getattr(ops, name)

    monkeypatch.setattr(conv.cpu_kernels, "ops", lambda: Counting())
    k, H, M = 2, 5, 64
    g = torch.Generator().manual_seed(L)
    W = torch.randn(k, H, M, generator=g, dtype=torch.complex64)
    dtlam = _dtlam(H, M, L, decay=0.05)
    gK = torch.randn(k, H, L, generator=g)
    results = []
    for kernel, dtype in ((conv.vandermonde, torch.complex64), (lambda w, z, n: 2 * (
            w.unsqueeze(-1) * torch.exp(z.unsqueeze(-1) * torch.arange(n))).sum(-2).real, torch.complex128)):
        w, z = W.to(dtype).clone().requires_grad_(), dtlam.to(dtype).clone().requires_grad_()
        K = kernel(w, z, L)
        K.backward(gK.to(K.dtype))
        results.append([t.detach().to(torch.complex128) for t in (K, w.grad, z.grad)])
    assert {"power_factors", "factored_kernel", "kernel_sums"} <= set(calls)
    for got, want in zip(*results):
        scale = want.abs().max()
        torch.testing.assert_close(got / scale, want / scale, rtol=0, atol=2e-5)

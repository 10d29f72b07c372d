"""The DSSM kernel's Vandermonde factors and its backward's sum over them in the compiled CPU
kernel (hummuss/csrc/vandermonde.cpp; `hummuss.ssm.conv.power_factors`, `VandermondeKernel`):
the factors against exp(dtlam l) in complex128, the zeros below float32's normal range, the
sums against einsum, and the float32 kernel and its gradients through the kernels against the
direct complex sum in complex128."""

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


@pytest.mark.parametrize("H, F, nq, M", [(3, 4, 16, 64), (2, 2, 5, 5), (1, 1, 1, 9)])
def test_power_sums_are_the_formula(H, F, nq, M):
    torch.manual_seed(M)
    S = torch.randn(H, F, nq, M, dtype=torch.complex64)
    Q = torch.randn(H, nq, M, dtype=torch.complex64)
    want = torch.einsum("hfqm,hqm->hfm", S.to(torch.complex128), Q.to(torch.complex128))
    torch.testing.assert_close(_ops().power_sums(S, Q).to(torch.complex128), want, rtol=1e-5, atol=1e-5)


def test_the_kernels_refuse_what_they_do_not_handle():
    ops = _ops()
    lr = torch.randn(3, 8)
    for bad in ((lr.double(), lr), (lr, lr[:, :4]), (lr.t(), lr.t())):  # float64; shapes disagree; not contiguous
        with pytest.raises(RuntimeError, match="power_factors"):
            ops.power_factors(*bad, 4, 2, 0.0)
    S, Q = torch.randn(2, 4, 3, 8, dtype=torch.complex64), torch.randn(2, 3, 8, dtype=torch.complex64)
    for bad in ((S, Q[:, :2]), (S.to(torch.complex128), Q.to(torch.complex128)), (S, Q.transpose(1, 2))):
        with pytest.raises(RuntimeError, match="power_sums"):
            ops.power_sums(*bad)


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
    assert "power_factors" in calls and "power_sums" in calls
    for got, want in zip(*results):
        scale = want.abs().max()
        torch.testing.assert_close(got / scale, want / scale, rtol=0, atol=2e-5)

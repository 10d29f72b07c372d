"""A spatial block's Toeplitz product over the joints in the compiled CPU kernel
(hummuss/csrc/toeplitz_product.cpp, `hummuss.ssm.conv.ToeplitzProduct`): the product and its
two backward products against einsum in float64, its refusals, and a training block's
convolution through it against the Toeplitz matrix built entry by entry."""

import pytest
import torch
from conftest import needs_kernels

pytestmark = needs_kernels


def _ops():
    from hummuss.cpu_kernels import ops

    return ops()


# (H, P, L, C): the paper's joints (C = 2 L = 34: two whole AVX-512 vectors and a tail), rows
# not a multiple of the kernel's four, one column, 64 columns, L above one vector
SHAPES = [(3, 486, 17, 34), (2, 7, 5, 15), (1, 3, 1, 1), (2, 9, 30, 64), (4, 5, 64, 17)]


@pytest.mark.parametrize("H, P, L, C", SHAPES)
def test_product_and_backward_products_are_the_formula(H, P, L, C):
    torch.manual_seed(P + C)
    u, T, gy = torch.randn(H, P, L), torch.randn(H, L, C), torch.randn(H, P, C)
    d = [t.double() for t in (u, T, gy)]
    ops = _ops()
    for got, want in ((ops.toeplitz_product(u, T), torch.einsum("hpj,hjc->hpc", d[0], d[1])),
                      (ops.toeplitz_input_grad(gy, T), torch.einsum("hpc,hjc->hpj", d[2], d[1])),
                      (ops.toeplitz_weight_grad(u, gy), torch.einsum("hpj,hpc->hjc", d[0], d[2]))):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-4)


def test_the_kernels_refuse_what_they_do_not_handle():
    ops = _ops()
    u, T = torch.randn(2, 5, 4), torch.randn(2, 4, 8)
    for bad in ((u.double(), T.double()),  # float64
                (u, T[:, :3]),  # T's rows disagree with u's L
                (u.transpose(1, 2).contiguous().transpose(1, 2), T),  # not contiguous
                (torch.randn(2, 5, 4), torch.randn(2, 4, 65))):  # more than 64 columns
        with pytest.raises(RuntimeError, match="toeplitz"):
            ops.toeplitz_product(*bad)
    with pytest.raises(RuntimeError, match="toeplitz_input_grad"):
        ops.toeplitz_input_grad(torch.randn(2, 5, 7), T)
    with pytest.raises(RuntimeError, match="toeplitz_weight_grad"):
        ops.toeplitz_weight_grad(u, torch.randn(2, 6, 8))


def test_training_convolution_through_the_kernel_equals_the_toeplitz_matrix(monkeypatch):
    """apply_conv with a "cols" Toeplitz operator built with autograd, in float32: it goes
    through `ToeplitzProduct` (counted), and its output and gradients = autograd through the
    Toeplitz matrix built entry by entry (`toeplitz`), in float64."""
    from hummuss.ssm import conv

    calls = []
    original = conv.ToeplitzProduct.apply
    monkeypatch.setattr(conv.ToeplitzProduct, "apply", lambda *a: calls.append(1) or original(*a))
    torch.manual_seed(0)
    R, H, P, L = 2, 3, 6, 17
    anticausal = (False, True)
    K0, D0, u0 = torch.randn(R, H, L), torch.randn(R, H), torch.randn(H, P, L, 1)
    g = torch.randn(H, P, R, L, 1)
    grads = []
    for dtype in (torch.float32, torch.float64):
        K, D, u = (t.to(dtype).clone().requires_grad_() for t in (K0, D0, u0))
        if dtype == torch.float32:
            y = conv.apply_conv(conv.conv_operator(K, D, anticausal, "cols", "toeplitz"), u)
        else:
            T = conv.toeplitz(K, D, anticausal)  # (H, R, L, L): T[h, r, i, j], y_i = sum_j T u_j
            y = torch.einsum("hrij,hpj->hpri", T, u[..., 0]).unsqueeze(-1)
        y.backward(g.to(dtype))
        grads.append([t.detach().double() for t in (y, u.grad, K.grad, D.grad)])
    assert calls == [1]
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)

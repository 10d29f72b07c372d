"""hummuss.packed_linear: prepacked linear layers (the suite's few-rows kernel, oneDNN, dense)
equal nn.Linear, eagerly and compiled."""

import pytest
import torch
import torch.nn.functional as F

from hummuss.cpu_kernels import runs_on
from hummuss.packed_linear import PackedLinear, onednn_available, pack_linear


@pytest.fixture()
def layer():
    torch.manual_seed(0)
    return torch.nn.Linear(64, 96)


def _expected_kind(weight, kernel=True):
    if kernel and runs_on(weight.device, weight.dtype):
        return "kernel"
    return "onednn" if onednn_available(weight) else "dense"


@pytest.mark.parametrize("kernel", [True, False], ids=["kernel", "library"])
@pytest.mark.parametrize("rows", [1, 17, 40])
def test_packed_linear_equals_the_layer_with_and_without_gelu(layer, rows, kernel):
    lin = pack_linear(layer.weight, layer.bias, rows=17, kernel=kernel)  # packed for 17 rows, used with others
    assert lin.kind == _expected_kind(layer.weight, kernel) and lin.out_features == 96
    x = torch.randn(rows, 64)
    with torch.no_grad():
        ref = layer(x)
        assert lin(x).shape == (rows, 96)
        assert (lin(x) - ref).abs().max() < 1e-5
        assert (lin(x, gelu=True) - F.gelu(ref)).abs().max() < 1e-5
        assert (lin(x.t().contiguous().t()) - ref).abs().max() < 1e-5  # strided input


@pytest.mark.parametrize("kernel", [True, False], ids=["kernel", "library"])
def test_packed_linear_takes_leading_dims_like_the_layer(layer, kernel):
    """x (..., in) -> (..., out): the leading dims are rows of one product, as for nn.Linear."""
    lin = pack_linear(layer.weight, layer.bias, rows=17, kernel=kernel)
    x = torch.randn(2, 17, 64)
    with torch.no_grad():
        y = lin(x, gelu=True)
        assert y.shape == (2, 17, 96)
        assert (y - F.gelu(layer(x))).abs().max() < 1e-5


def test_packed_linear_is_a_copy_and_falls_back_to_dense(layer):
    if not (runs_on(layer.weight.device, layer.weight.dtype) or onednn_available(layer.weight)):
        pytest.skip("neither the suite's CPU kernels nor oneDNN (mkldnn) here: only the dense path exists")
    lin = pack_linear(layer.weight, layer.bias, rows=17)
    assert lin.kind != "dense"
    x = torch.randn(5, 64)
    with torch.no_grad():
        before = lin(x)
        layer.weight.mul_(2.0)  # a packed weight does not follow the parameter: repack
        assert torch.equal(lin(x), before)
        assert (pack_linear(layer.weight, layer.bias, 17)(x) - layer(x)).abs().max() < 1e-5
    dense = pack_linear(layer.weight.double(), layer.bias.double(), rows=17)  # float64: neither packing
    assert dense.kind == "dense"
    assert (dense(x.double()) - layer(x).double()).abs().max() < 1e-5


def test_bad_shapes_raise(layer):
    with pytest.raises(ValueError, match=r"weight must be \(out, in\) and bias \(out,\)"):
        pack_linear(layer.weight, layer.bias[:5], rows=17)
    with pytest.raises(ValueError, match="weight must be"):
        pack_linear(layer.weight[0], layer.bias, rows=17)


@pytest.mark.parametrize("kernel", [True, False], ids=["kernel", "library"])
def test_packed_linear_inside_torch_compile(layer, kernel):
    """The packed call stays one opaque call in a compiled graph and gives the eager result."""
    lin = pack_linear(layer.weight, layer.bias, rows=17, kernel=kernel)

    def f(x, lin: PackedLinear):
        return lin(x, gelu=True) * 2 + 1

    x = torch.randn(17, 64)
    with torch.no_grad():
        compiled = torch.compile(f, dynamic=False)(x, lin)
        assert (compiled - (F.gelu(layer(x)) * 2 + 1)).abs().max() < 1e-5

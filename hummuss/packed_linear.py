"""Linear layers with prepacked weights, for the streaming step's few-row matmuls.

A streaming step at batch 1 multiplies 17 rows (one frame's joints) by each of 60 weight
matrices. For so few rows MKL's sgemm (behind `torch.addmm`) spends about half its time
re-packing the weight on every call; oneDNN with the weight packed once runs the same 60
products 2.3x as fast (measured on a 2-core AVX-512 CPU: 5.1 ms against 2.2 ms, 86% of the
1024^3 matmul rate). `pack_linear` packs a weight for oneDNN where that is available (CPU,
float32, PyTorch built with mkldnn) and otherwise keeps it dense for `torch.addmm` (CUDA,
other dtypes), so callers need not care which.

    lin = pack_linear(layer.weight, layer.bias, rows=17)
    y = lin(x)                       # x (N, in) -> (N, out), = layer(x) within fp32 rounding
    h = lin(x, gelu=True)            # GELU(layer(x)), the activation fused into the matmul

The packed weight is a copy: repack after the parameters change. The oneDNN call is
wrapped in a custom op (`hummuss::onednn_linear`) so that torch.compile keeps it as one
opaque call instead of lowering it (Inductor's own lowering wants frozen weights); its
output is a buffer, so a compiled consumer reads GELU's result instead of recomputing it
(with scalar erf) inside its own loops.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

# One operator, hummuss::onednn_linear(x, packed, bias, out_features, gelu). Defined with
# torch.library.Library rather than torch.library.custom_op: the step calls it 40 times per
# frame, and this dispatch measured about 5 us less per call (15 against 20 us, eager).
_LIB = torch.library.Library("hummuss", "DEF")
_LIB.define("onednn_linear(Tensor x, Tensor packed, Tensor bias, int out_features, bool gelu) -> Tensor")


def _onednn_linear(x: Tensor, packed: Tensor, bias: Tensor, out_features: int, gelu: bool) -> Tensor:
    """x (N, in) @ W^T + b, then GELU (exact, erf) if `gelu`, with W prepacked by
    `torch.ops.mkldnn._reorder_linear_weight`."""
    if gelu:
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), packed, bias, "gelu", [], "none")
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), packed, bias, "none", [], "")


_LIB.impl("onednn_linear", _onednn_linear, "CompositeExplicitAutograd")


@torch.library.register_fake("hummuss::onednn_linear")
def _(x: Tensor, packed: Tensor, bias: Tensor, out_features: int, gelu: bool) -> Tensor:
    return x.new_empty(x.shape[0], out_features)


onednn_linear = torch.ops.hummuss.onednn_linear


def onednn_available(weight: Tensor) -> bool:
    """Whether `weight` can be packed for oneDNN: a float32 CPU tensor and a build with mkldnn."""
    return (weight.device.type == "cpu" and weight.dtype == torch.float32
            and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))


@dataclass(frozen=True, eq=False)
class PackedLinear:
    """y = x W^T + b for x (N, in). `weight` is oneDNN-packed when `packed`, else dense (out, in)."""

    weight: Tensor
    bias: Tensor
    out_features: int
    packed: bool

    def __call__(self, x: Tensor, gelu: bool = False) -> Tensor:
        """x (N, in) -> (N, out); GELU(x W^T + b) if `gelu` (fused into the matmul)."""
        if self.packed:
            return onednn_linear(x, self.weight, self.bias, self.out_features, gelu)
        y = torch.addmm(self.bias, x, self.weight.t())
        return F.gelu(y) if gelu else y


def pack_linear(weight: Tensor, bias: Tensor, rows: int) -> PackedLinear:
    """Pack weight (out, in) and bias (out,) for inputs of about `rows` rows (no autograd)."""
    if weight.dim() != 2 or bias.shape != weight.shape[:1]:
        raise ValueError(f"weight must be (out, in) and bias (out,), got {tuple(weight.shape)} and "
                         f"{tuple(bias.shape)}")
    with torch.no_grad():
        weight, bias = weight.detach(), bias.detach().contiguous()
        if onednn_available(weight):
            packed = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), max(1, int(rows)))
            return PackedLinear(packed, bias, weight.shape[0], True)
        return PackedLinear(weight, bias, weight.shape[0], False)

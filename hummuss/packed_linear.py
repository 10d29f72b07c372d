"""Linear layers with prepacked weights, for the streaming step's few-row matmuls.

A streaming step at batch 1 multiplies 17 rows (one frame's joints) by each of its 40 weight
matrices (paper-causal). For so few rows a library matmul spends much of its time outside
the arithmetic: MKL's sgemm (behind `torch.addmm`) re-packs the weight on every call, and
oneDNN with the weight packed once still pays about 30 us a call (a (17, 16) @ (16, 96)
product; 2-core AVX2 EPYC). `pack_linear` packs a weight once for the fastest path this
machine has, so callers need not care which:

- "kernel": the suite's own CPU kernel (`few_rows_linear` in hummuss/csrc, built by
  `hummuss.cpu_kernels`): column panels, a tile of rows x outputs held in registers, 7 us a
  call for that small product; on paper-causal's shapes 108-111 against 139-147 us (oneDNN)
  for (17, 256) @ (256, 1536) and 55-56 against 89 us for (17, 768) @ (768, 256);
- "onednn": the weight reordered for oneDNN (float32 CPU tensors where the kernels are not
  built; 2.3x as fast as torch.addmm on these shapes, measured on a 2-core AVX-512 CPU);
- "dense": the weight as it is, for `torch.addmm` (CUDA, other dtypes).

    lin = pack_linear(layer.weight, layer.bias, rows=17)
    y = lin(x)                       # x (..., in) -> (..., out), = layer(x) within fp32 rounding
    h = lin(x, gelu=True)            # GELU(layer(x)), the activation fused into the matmul

The packed weight is a copy: repack after the parameters change. Both packed calls are single
operators (the kernel's `hummuss_cpu::few_rows_linear`, and oneDNN's wrapped in
`hummuss::onednn_linear`), so torch.compile keeps each as one opaque call instead of lowering
it (Inductor's own lowering wants frozen weights); the output is a buffer, so a compiled
consumer reads GELU's result instead of recomputing it (with scalar erf) inside its own loops.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from hummuss import cpu_kernels

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
    return (weight.device.type == "cpu" and weight.dtype == torch.float32 and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))


@dataclass(frozen=True, eq=False)
class PackedLinear:
    """y = x W^T + b for x (N, in). `kind` says how `weight` (and `bias`) are held: "kernel",
    panels for `few_rows_linear`; "onednn", reordered for oneDNN; "dense", (out, in) as given."""

    weight: Tensor
    bias: Tensor
    out_features: int
    kind: str

    def __call__(self, x: Tensor, gelu: bool = False) -> Tensor:
        """x (N, in) -> (N, out); GELU(x W^T + b) if `gelu` (fused into the matmul). Any
        leading dims: x (..., in) -> (..., out), as rows of one product."""
        if x.dim() != 2:
            return self(x.reshape(-1, x.shape[-1]), gelu).view(*x.shape[:-1], self.out_features)
        if self.kind == "kernel":
            return torch.ops.hummuss_cpu.few_rows_linear(x, self.weight, self.bias, self.out_features, gelu)
        if self.kind == "onednn":
            return onednn_linear(x, self.weight, self.bias, self.out_features, gelu)
        y = torch.addmm(self.bias, x, self.weight.t())
        return F.gelu(y) if gelu else y


def pack_linear(weight: Tensor, bias: Tensor, rows: int, kernel: bool = True) -> PackedLinear:
    """Pack weight (out, in) and bias (out,) for inputs of about `rows` rows (no autograd):
    for the suite's kernel where it is built and `kernel`, else for oneDNN where it can, else dense."""
    if weight.dim() != 2 or bias.shape != weight.shape[:1]:
        raise ValueError(f"weight must be (out, in) and bias (out,), got {tuple(weight.shape)} and "
                         f"{tuple(bias.shape)}")
    with torch.no_grad():
        weight, bias = weight.detach(), bias.detach().contiguous()
        out = weight.shape[0]
        if kernel and cpu_kernels.runs_on(weight.device, weight.dtype):
            return PackedLinear(*torch.ops.hummuss_cpu.few_rows_pack(weight, bias), out, "kernel")
        if onednn_available(weight):
            packed = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), max(1, int(rows)))
            return PackedLinear(packed, bias, out, "onednn")
        return PackedLinear(weight, bias, out, "dense")

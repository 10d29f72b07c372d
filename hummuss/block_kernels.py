"""A causal GDSSM block's whole streaming step in one call of the CPU kernels.

The streaming step (`hummuss.stream`) runs each block of a frame with its `stream_constants`.
Op by op (`GDSSM.forward` for a spatial block, `GDSSM.step` for a temporal one, which stay the
reference and the path elsewhere), a block is a layer norm, the packed input projections with
their GELU, its core (the joints' convolution, mix and gate: `joint_conv_mix_gate`; or the
staggered state update and mix, then the gate: `hummuss.ssm.stagger`), the packed output
projection and the residual. Where the norm is a LayerNorm with its affine, both projections
are packed for the suite's kernel (`packed_linear` kind "kernel") and the aggregation is the
gate, `joint_block` and `stagger_block_` (hummuss/csrc) run all of it in one call, with the
same products (`few_rows.h`): what the step spends between the kernels (Python, dispatch, small
ATen operations, intermediate tensors) goes. Paper-causal on a 2-core Xeon, eager, alternated
processes: 5.26-5.40 -> 4.63-4.91 ms a frame; compiled, where Inductor had already fused the
operations between the kernels, level.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def applies(block: nn.Module, packed: dict) -> bool:
    """Whether `block` (a GDSSM) with its packed projections can run its streaming step in one
    call: a LayerNorm with weight and bias, the gate aggregation, both projections for the kernel."""
    norm = block.norm
    return (isinstance(norm, nn.LayerNorm) and norm.elementwise_affine and norm.bias is not None
            and block.aggregate.kind == "gate" and packed["proj"].kind == packed["out"].kind == "kernel")


def joint_args(block: nn.Module, consts: dict) -> tuple:
    """`joint_block`'s arguments after x for the spatial `block`: its norm, packed projections,
    convolution taps and mix rows."""
    norm, proj, out = block.norm, consts["proj"], consts["out"]
    return (norm.weight, norm.bias, norm.eps, proj.weight, proj.bias, *consts["taps"], *consts["mix_rows"],
            out.weight, out.bias)


def stagger_args(block: nn.Module, state, coefficients, consts: dict) -> tuple:
    """`stagger_block_`'s arguments after x for the temporal `block` with its
    `stagger.StaggeredState` (updated in place by the call) and the step size's
    `stagger.coefficients`."""
    norm, proj, out = block.norm, consts["proj"], consts["out"]
    return (norm.weight, norm.bias, norm.eps, proj.weight, proj.bias, *state, *coefficients, block.ssm_f.D,
            *consts["mix_rows"], out.weight, out.bias)


def joint_step(block: nn.Module, x: torch.Tensor, consts: dict) -> torch.Tensor:
    """A spatial block over one frame's joints: x (P, L, 1, D) -> (P, L, 1, D)."""
    P, L, _, D = x.shape
    return torch.ops.hummuss_cpu.joint_block(x.reshape(P * L, D), *joint_args(block, consts)).view(P, L, 1, D)


def stagger_step(block: nn.Module, x: torch.Tensor, state, coefficients, consts: dict) -> torch.Tensor:
    """A temporal block's frame with its `stagger.StaggeredState` (updated in place) and the
    step size's `stagger.coefficients`: x (N, D) -> (N, D)."""
    return torch.ops.hummuss_cpu.stagger_block_(x, *stagger_args(block, state, coefficients, consts))

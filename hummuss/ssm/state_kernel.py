"""The streaming step's state update in the compiled CPU kernel (hummuss/csrc/state_step.cpp).

`advance_state_kernel` is `recurrence.advance_state_planar` (zero-order hold) done in place:
the planar state (2, H, N, M) is read once and written back into the same memory, where the
PyTorch version (eager or compiled) writes a new state. At batch 1 the streaming step is bound
by that memory traffic; measured on a 2-core AVX-512 CPU for paper-causal's 20 temporal
blocks of (2, 768, 17, 64): about 12.4 ms a frame compiled in PyTorch, 5.5 ms for a bare
in-place pass over the same states, 9.4 ms for a copy into new ones.

Streams on the CPU take the staggered update (`hummuss.ssm.stagger`) while their step size stays
the first frame's, and this one after it changes.

`usable` says where the kernel applies: float32 on the CPU with the kernels built
(`hummuss.cpu_kernels`); elsewhere (CUDA, float64, first-order hold, HUMMUSS_CPU_KERNELS=0)
the caller keeps `advance_state_planar`. The op is `torch.ops.hummuss_cpu.state_step_`, with a
fake (meta) implementation, so torch.compile keeps it as one opaque call in the compiled step.

`advance_state_mix_kernel` (`state_step_mix_`) also runs what the streaming step does next,
the read-out's GELU and mix over its k read-outs, on each thread's channels while their
read-outs are in cache: one call instead of a GELU and k multiply-adds over (N, H, k)
tensors (eagerly, 48 us a block for paper-causal's (17, 768, 2) in PyTorch operations).
"""

from __future__ import annotations

import torch

from hummuss import cpu_kernels


def usable(device: torch.device | str, dtype: torch.dtype) -> bool:
    """Whether the kernel can run a state of this device and dtype (building it on first call)."""
    return cpu_kernels.runs_on(device, dtype)


def advance_state_kernel(s: torch.Tensor, a: torch.Tensor, b: torch.Tensor, u: torch.Tensor,
                         Rr: torch.Tensor, Ri: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """s (2, H, N, M) advanced in place: s = a s + b u (complex, planar); a, b (2, H, M) or
    (2, H, N, M); u (N, H); Rr, Ri (H, k, M) from `readout_planes`; D (k, H). Returns
    y = 2 Re(C s) + D u, (N, H, k) with strides (H, 1, N H) (k planes). The op exists once `usable` has returned True."""
    return torch.ops.hummuss_cpu.state_step_(s, a, b, u, Rr, Ri, D)


def advance_state_mix_kernel(s: torch.Tensor, a: torch.Tensor, b: torch.Tensor, u: torch.Tensor,
                             Rr: torch.Tensor, Ri: torch.Tensor, D: torch.Tensor, w: torch.Tensor,
                             bias: torch.Tensor) -> torch.Tensor:
    """`advance_state_kernel` followed by the read-out mix: returns x (N, H) with
    x_nh = bias_h + sum_c w_ch GELU(y_nhc) (the exact, erf GELU); w (k, H), bias (H,), both
    contiguous. The op exists once `usable` has returned True."""
    return torch.ops.hummuss_cpu.state_step_mix_(s, a, b, u, Rr, Ri, D, w, bias)

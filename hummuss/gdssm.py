"""GDSSM: the gated diagonal state-space block of HumMUSS.

Over a sequence X (B, L, D), where L is the 17 joints of one frame (spatial block) or
the frames of one joint's trajectory (temporal block):

    Z    = LayerNorm(X)
    x_id = GELU(Z W_id + b_id)                      (B, L, mD)  identity path
    u    = GELU(Z W_in + b_in)                      (B, L, mD)  SSM input, shared by both directions
    x_f  = mix_f(GELU(DSSM_f(u)))                   (B, L, mD)  forward path
    x_b  = flip(mix_b(GELU(DSSM_b(flip(u)))))       (B, L, mD)  backward path (bidirectional only)
    Y    = aggregate(x_f, x_b, x_id) W_o + b_o      (B, L, D)
    out  = X + Y

Our reading of the paper's hyper-parameters (the supplement only says they were tuned to
land both models at 16M parameters):
- `m` (expand) is the width expansion of the gated paths: x_id, u, x_f and x_b live in
  R^{mD}, and the DSSMs run on these mD channels;
- `k` (ssm_channels) is the number of SSM read-outs per channel (S4's `channels`): each
  DSSM gives (B, L, mD, k); `mix` combines them per channel after a GELU,
  sum_c w_{c,h} GELU(y_{c,h}) + b_h (a plain sum of k linear read-outs would be one
  read-out);
- the eigenvalues of each DSSM are shared across its channels (S4's n_ssm = 1); steps,
  C and D are per channel.

Parameters of one block (D model width, H = mD, M = N/2 modes, P = 1 or 2 directions):
    LayerNorm 2D; W_id and W_in 2 (D H + H); W_o H D + D;
    per direction: log_dt H, eigenvalues 2M, C 2 k H M, D k H, mix k H + H.
The paper's presets (D = 256, N = 128):
    bidirectional, m = 2.5 (H = 640): spatial (k=1) 662,784; temporal (k=2) 829,184
    causal, m = 3 (H = 768): spatial (k=1, bidirectional) 795,136; temporal (k=2,
    forward only) 793,472
Aggregation `gate` has no parameters; `learned` adds n (n mD + 1).

Spatial blocks ignore dt (the joint axis has no physical step). Temporal blocks take
`dt_scale` and per-frame `dt`; a forward-only (causal) block also runs one frame at a
time with `step`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from hummuss.fusion import Aggregate
from hummuss.ssm import DSSM


class ChannelMix(nn.Module):
    """(..., H, k) -> (..., H): per-channel weighted sum of GELU'd read-outs."""

    def __init__(self, channels: int, k: int):
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels, k), 1.0 / k))  # (H, k)
        self.bias = nn.Parameter(torch.zeros(channels))  # (H,)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return (F.gelu(y) * self.weight).sum(-1) + self.bias


class GDSSM(nn.Module):
    """Gated diagonal SSM block: (B, L, D) -> (B, L, D). See the module docstring."""

    def __init__(
        self,
        dim: int,
        expand: float = 2.5,
        state_size: int = 128,
        ssm_channels: int = 1,
        bidirectional: bool = True,
        aggregation: str = "gate",
        init: str = "lin",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        shared_modes: bool = True,
        temporal: bool = False,
        norm_eps: float = 1e-6,
    ):
        super().__init__()
        width = int(round(expand * dim))
        if width < 1:
            raise ValueError(f"expand * dim must be >= 1, got {expand} * {dim}")
        self.dim, self.width, self.bidirectional, self.temporal = dim, width, bidirectional, temporal
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.proj_id = nn.Linear(dim, width)
        self.proj_in = nn.Linear(dim, width)
        ssm = dict(state_size=state_size, out_channels=ssm_channels, init=init,
                   dt_min=dt_min, dt_max=dt_max, shared_modes=shared_modes)
        self.ssm_f = DSSM(width, **ssm)
        self.mix_f = ChannelMix(width, ssm_channels)
        if bidirectional:
            self.ssm_b = DSSM(width, **ssm)
            self.mix_b = ChannelMix(width, ssm_channels)
        self.aggregate = Aggregate(aggregation, 3 if bidirectional else 2, width)
        self.proj_out = nn.Linear(width, dim)

    def forward(self, x: torch.Tensor, dt_scale: float = 1.0, dt: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, D); for temporal blocks dt_scale and dt (B, L) set the steps."""
        if not self.temporal:
            dt_scale, dt = 1.0, None
        z = self.norm(x)
        x_id = F.gelu(self.proj_id(z))  # (B, L, H)
        u = F.gelu(self.proj_in(z))  # (B, L, H)
        x_f = self.mix_f(self.ssm_f(u, dt_scale=dt_scale, dt=dt))  # (B, L, H)
        if self.bidirectional:
            # the backward pass over the reversed sequence steps by the gap to the next frame
            dt_b = None if dt is None else torch.cat([dt[:, 1:], dt[:, -1:]], 1).flip(1)
            x_b = self.mix_b(self.ssm_b(u.flip(1), dt_scale=dt_scale, dt=dt_b)).flip(1)
            y = self.aggregate(x_f, x_b, x_id)
        else:
            y = self.aggregate(x_f, x_id)
        return x + self.proj_out(y)

    # -- streaming (forward-only blocks) ------------------------------------------------
    def initial_state(self, batch_size: int, device=None) -> torch.Tensor:
        self._check_streamable()
        return self.ssm_f.initial_state(batch_size, device)

    def step(self, x_t: torch.Tensor, state: torch.Tensor, dt: float | torch.Tensor = 1.0,
             discretised=None) -> tuple[torch.Tensor, torch.Tensor]:
        """One frame x_t (B, D) with state (B, H, M) -> (out_t (B, D), new state)."""
        self._check_streamable()
        z = self.norm(x_t)
        x_id = F.gelu(self.proj_id(z))
        u = F.gelu(self.proj_in(z))
        y, state = self.ssm_f.step(u, state, dt, discretised)
        return x_t + self.proj_out(self.aggregate(self.mix_f(y), x_id)), state

    def _check_streamable(self):
        if self.bidirectional:
            raise ValueError("a bidirectional GDSSM block sees future frames and cannot stream; "
                             "build it with bidirectional=False (a causal model)")

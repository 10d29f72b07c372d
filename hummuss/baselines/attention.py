"""DSTformer's building blocks: spatial / temporal multi-head attention, MLP and the ST / TS block.

Attribute names (and their registration order) follow MotionBERT's `lib/model/DSTformer.py`,
so that `state_dict()` keys are those of the original checkpoints.

Tokens are kept as (B*F, J, d) throughout, as in the original: spatial attention mixes the
J joints of one frame, temporal attention mixes the F frames of one joint's trajectory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LN_EPS = 1e-6  # MotionBERT builds every LayerNorm with eps=1e-6 (learning.py::load_backbone)


class DropPath(nn.Module):
    """Stochastic depth: zero a whole sample's residual branch with probability p (training only)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class MLP(nn.Module):
    """Linear(d -> h), GELU, dropout, Linear(h -> d), dropout; keys fc1, fc2."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Attention(nn.Module):
    """Multi-head self-attention over joints ("spatial") or frames ("temporal"); keys qkv, proj.

    The qkv output is split as (3, heads, head_dim), i.e. rows [q; k; v], each head-major,
    exactly as the original reshapes it. Scale is head_dim ** -0.5.
    """

    def __init__(self, dim: int, num_heads: int, mode: str, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if mode not in ("spatial", "temporal"):
            raise ValueError(f"unknown attention mode {mode!r}; known: spatial, temporal")
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.mode = mode
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.attn_drop = attn_drop
        # registration order proj, qkv as in the original (state_dict order)
        self.proj = nn.Linear(dim, dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        BF, J, d = x.shape  # x (B*F, J, d)
        H, c = self.num_heads, self.head_dim
        qkv = self.qkv(x).reshape(BF, J, 3, H, c).permute(2, 0, 3, 1, 4)  # (3, B*F, H, J, c)
        q, k, v = qkv[0], qkv[1], qkv[2]
        p = self.attn_drop if self.training else 0.0
        if self.mode == "spatial":
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p, scale=self.scale)
            out = out.transpose(1, 2).reshape(BF, J, d)  # (B*F, H, J, c) -> (B*F, J, d)
        else:
            B = BF // frames

            def by_joint(t):  # (B*F, H, J, c) -> (B*H*J, F, c)
                return t.reshape(B, frames, H, J, c).permute(0, 2, 3, 1, 4).reshape(B * H * J, frames, c)

            out = F.scaled_dot_product_attention(by_joint(q), by_joint(k), by_joint(v),
                                                 dropout_p=p, scale=self.scale)
            # (B*H*J, F, c) -> (B, H, J, F, c) -> (B, F, J, H, c) -> (B*F, J, d)
            out = out.reshape(B, H, J, frames, c).permute(0, 3, 2, 1, 4).reshape(BF, J, d)
        return self.proj_drop(self.proj(out))


class Block(nn.Module):
    """One DSTformer stream block: pre-LN attention + MLP, spatial and temporal, each residual.

    order "st": S-MHSA, MLP_s, T-MHSA, MLP_t; order "ts": T-MHSA, MLP_t, S-MHSA, MLP_s.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, order: str,
                 qkv_bias: bool = True, drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: float = 0.0):
        super().__init__()
        if order not in ("st", "ts"):
            raise ValueError(f"unknown block order {order!r}; known: st, ts")
        self.order = order
        self.norm1_s = nn.LayerNorm(dim, eps=LN_EPS)
        self.norm1_t = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn_s = Attention(dim, num_heads, "spatial", qkv_bias, attn_drop, drop)
        self.attn_t = Attention(dim, num_heads, "temporal", qkv_bias, attn_drop, drop)
        self.drop_path = DropPath(drop_path)
        self.norm2_s = nn.LayerNorm(dim, eps=LN_EPS)
        self.norm2_t = nn.LayerNorm(dim, eps=LN_EPS)
        hidden = int(dim * mlp_ratio)
        self.mlp_s = MLP(dim, hidden, drop)
        self.mlp_t = MLP(dim, hidden, drop)

    def _spatial(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn_s(self.norm1_s(x), frames))
        return x + self.drop_path(self.mlp_s(self.norm2_s(x)))

    def _temporal(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn_t(self.norm1_t(x), frames))
        return x + self.drop_path(self.mlp_t(self.norm2_t(x)))

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        # x (B*F, J, d) -> (B*F, J, d)
        if self.order == "st":
            return self._temporal(self._spatial(x, frames), frames)
        return self._spatial(self._temporal(x, frames), frames)

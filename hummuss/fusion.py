"""Aggregation of parallel paths: multiplicative gating, average pooling, learned pooling.

Used twice in HumMUSS: inside a GDSSM block to combine x_f, x_b and x_id (the paper's
Table 2), and in every layer to combine the two spatio-temporal streams (Table 3).

    gate     prod_i x_i
    mean     (1/n) sum_i x_i
    learned  sum_i alpha_i x_i,  alpha = softmax(W [x_1, .., x_n] + b) per token, with
             W = 0 and b = 1/2 at initialisation (DSTformer's `ts_attn`), so every path
             starts with weight 1/n.
"""

from __future__ import annotations

import torch
import torch.nn as nn

AGGREGATIONS = ("gate", "mean", "learned")


def check_aggregation(kind: str, what: str = "aggregation") -> str:
    if kind not in AGGREGATIONS:
        raise ValueError(f"unknown {what} {kind!r}; known: {', '.join(AGGREGATIONS)}")
    return kind


class Aggregate(nn.Module):
    """Combine n tensors of shape (..., width) into one of the same shape."""

    def __init__(self, kind: str, n_inputs: int, width: int):
        super().__init__()
        self.kind, self.n_inputs = check_aggregation(kind), n_inputs
        if kind == "learned":
            self.weights = nn.Linear(n_inputs * width, n_inputs)
            nn.init.zeros_(self.weights.weight)
            nn.init.constant_(self.weights.bias, 0.5)

    def forward(self, *xs: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """n tensors of one shape -> that shape; `dim` is the channel (width) dimension."""
        if len(xs) != self.n_inputs:
            raise ValueError(f"{self.kind} aggregation built for {self.n_inputs} inputs, got {len(xs)}")
        if self.kind == "gate":
            out = xs[0] * xs[1] if len(xs) > 1 else xs[0]
            for x in xs[2:]:
                out = out * x if torch.is_grad_enabled() else out.mul_(x)
            return out
        if self.kind == "mean":
            out = xs[0] + xs[1] if len(xs) > 1 else xs[0].clone()
            for x in xs[2:]:
                out = out + x
            return out.div_(len(xs))
        n = len(xs)
        if dim in (0, -xs[0].dim()):  # channel-major (width, ...): W (n, n width) @ cat
            cat = torch.cat(xs, 0)
            logits = torch.addmm(self.weights.bias.unsqueeze(-1), self.weights.weight,
                                 cat.reshape(cat.shape[0], -1)).view(n, *xs[0].shape[1:])
            alpha = torch.softmax(logits, dim=0)  # (n, ...)
            out = alpha[0:1] * xs[0]
            for i in range(1, n):
                out = out.addcmul_(alpha[i:i + 1], xs[i])
            return out
        if dim not in (-1, xs[0].dim() - 1):
            raise ValueError(f"learned aggregation needs the channels on the first or last dim, got dim={dim}")
        alpha = torch.softmax(self.weights(torch.cat(xs, dim=-1)), dim=-1)  # (..., n)
        out = alpha[..., 0:1] * xs[0]
        for i in range(1, n):
            out = out.addcmul_(alpha[..., i:i + 1], xs[i])
        return out

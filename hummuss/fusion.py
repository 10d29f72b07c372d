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

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        if len(xs) != self.n_inputs:
            raise ValueError(f"{self.kind} aggregation built for {self.n_inputs} inputs, got {len(xs)}")
        if self.kind == "gate":
            out = xs[0]
            for x in xs[1:]:
                out = out * x
            return out
        if self.kind == "mean":
            return torch.stack(xs, 0).mean(0)
        alpha = torch.softmax(self.weights(torch.cat(xs, dim=-1)), dim=-1)  # (..., n)
        return sum(alpha[..., i : i + 1] * x for i, x in enumerate(xs))

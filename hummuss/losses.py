"""Training losses (MotionBERT's pose objective), on torch tensors (..., T, J, 3).

    L = w_mpjpe * MPJPE + w_scale * N-MPJPE + w_velocity * velocity
with MotionBERT's weights 1, 0.5 and 20 by default. All terms are in the units of the
labels (normalised screen coordinates during training).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def mpjpe_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean Euclidean distance per joint."""
    return (pred - target).norm(dim=-1).mean()


def n_mpjpe_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MPJPE after scaling each frame's prediction by its least-squares optimal scale."""
    num = (pred * target).sum(dim=(-1, -2), keepdim=True)
    den = pred.square().sum(dim=(-1, -2), keepdim=True).clamp_min(1e-8)
    return mpjpe_loss(num / den * pred, target)


def velocity_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MPJPE of the first temporal differences (frames on dim -3)."""
    if pred.shape[-3] < 2:
        return pred.new_zeros(())
    return mpjpe_loss(pred.diff(dim=-3), target.diff(dim=-3))


@dataclass
class PoseLoss:
    """The weighted sum; returns the total and each (detached) term for logging."""

    w_mpjpe: float = 1.0
    w_scale: float = 0.5
    w_velocity: float = 20.0

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        terms = {
            "mpjpe": mpjpe_loss(pred, target),
            "n_mpjpe": n_mpjpe_loss(pred, target),
            "velocity": velocity_loss(pred, target),
        }
        total = self.w_mpjpe * terms["mpjpe"] + self.w_scale * terms["n_mpjpe"] + self.w_velocity * terms["velocity"]
        return total, {k: v.detach() for k, v in terms.items()}

"""Reference floors: what a table's numbers mean without learning.

Two predictors fitted in closed form on a source's training frames, then scored by the
same evaluation as every trained model (`hummuss.evaluate.evaluate`):

    mean-pose     the mean root-relative training pose, whatever the input
    linear-lift   a per-frame affine least-squares map from the root-relative 2D input
                  (17 joints x (x, y)) to the root-relative 3D pose:
                      W* = argmin_W || [u, 1] W - p ||^2,   u (n, 34), p (n, 51)

A trained model above the linear lift has learned nothing worth comparing. Both are
`nn.Module`s with the models' call signature (x (B, T, 17, 3) -> (B, T, 17, 3)); they look
at one frame at a time, so a step size (`dt_scale`, `dt`) changes nothing and is accepted
(they answer every condition a continuous-time model answers).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from hummuss.data.skeleton import NUM_JOINTS, ROOT

FLOORS = ("mean-pose", "linear-lift")


def _root_relative(pose: np.ndarray) -> np.ndarray:
    return pose - pose[..., ROOT:ROOT + 1, :]


class MeanPose(nn.Module):
    """The mean root-relative training pose, for every frame."""

    continuous_time = True  # per-frame: a step size changes nothing

    def __init__(self, pose: np.ndarray):  # pose (17, 3)
        super().__init__()
        self.pose = nn.Parameter(torch.as_tensor(pose, dtype=torch.float32), requires_grad=False)

    def forward(self, x: torch.Tensor, dt_scale: float = 1.0, dt: torch.Tensor | None = None) -> torch.Tensor:
        return self.pose.expand(*x.shape[:-2], NUM_JOINTS, 3)  # (B, T, 17, 3)


class LinearLift(nn.Module):
    """Per-frame affine map from the root-relative 2D input to the root-relative 3D pose."""

    continuous_time = True

    def __init__(self, weight: np.ndarray):  # weight (2 * 17 + 1, 17 * 3): the last row is the bias
        super().__init__()
        self.weight = nn.Parameter(torch.as_tensor(weight, dtype=torch.float32), requires_grad=False)

    def forward(self, x: torch.Tensor, dt_scale: float = 1.0, dt: torch.Tensor | None = None) -> torch.Tensor:
        uv = x[..., :2] - x[..., ROOT:ROOT + 1, :2]  # (B, T, 17, 2)
        u = uv.flatten(-2)  # (B, T, 34)
        y = u @ self.weight[:-1] + self.weight[-1]  # (B, T, 51)
        return y.unflatten(-1, (NUM_JOINTS, 3))


def training_frames(source, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Every frame of the split's sequences: inputs (n, 17, 3), labels (n, 17, 3)."""
    seqs = source.sequences(split)
    if not seqs:
        raise ValueError(f"source {source.name!r} has no {split!r} sequences to fit a floor on")
    return (np.concatenate([s.inputs for s in seqs]).astype(np.float64),
            np.concatenate([s.labels for s in seqs]).astype(np.float64))


def fit_mean_pose(inputs: np.ndarray, labels: np.ndarray) -> MeanPose:
    return MeanPose(_root_relative(labels).mean(axis=0))


def fit_linear_lift(inputs: np.ndarray, labels: np.ndarray) -> LinearLift:
    n = len(inputs)
    u = _root_relative(inputs[..., :2]).reshape(n, -1)  # (n, 34)
    p = _root_relative(labels).reshape(n, -1)  # (n, 51)
    design = np.concatenate([u, np.ones((n, 1))], axis=1)  # (n, 35)
    weight, *_ = np.linalg.lstsq(design, p, rcond=None)  # (35, 51)
    return LinearLift(weight)


def fit_floor(name: str, source, split: str = "train") -> nn.Module:
    """The floor `name` (one of FLOORS) fitted on the source's `split` frames."""
    fits = {"mean-pose": fit_mean_pose, "linear-lift": fit_linear_lift}
    if name not in fits:
        raise ValueError(f"unknown floor {name!r}; known: {', '.join(FLOORS)}")
    return fits[name](*training_frames(source, split)).eval()

"""The H36M-17 skeleton in MotionBERT's joint order, and MPI-INF-3DHP's 17-joint order.

Every array in this project that has a joint axis uses `H36M_JOINTS` order.
"""

from __future__ import annotations

import numpy as np
import torch

H36M_JOINTS: tuple[str, ...] = (
    "pelvis",  # 0 root
    "r_hip",  # 1
    "r_knee",  # 2
    "r_ankle",  # 3
    "l_hip",  # 4
    "l_knee",  # 5
    "l_ankle",  # 6
    "spine",  # 7 belly
    "thorax",  # 8 neck
    "nose",  # 9
    "head",  # 10 head top
    "l_shoulder",  # 11
    "l_elbow",  # 12
    "l_wrist",  # 13
    "r_shoulder",  # 14
    "r_elbow",  # 15
    "r_wrist",  # 16
)
NUM_JOINTS = len(H36M_JOINTS)
ROOT = 0

# parent of each joint (-1 for the root); bones are (parent, child) pairs
H36M_PARENTS: tuple[int, ...] = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15)
H36M_BONES: tuple[tuple[int, int], ...] = tuple(
    (p, j) for j, p in enumerate(H36M_PARENTS) if p >= 0
)

# MotionBERT's flip_data: x -> -x, then these index lists swap places
FLIP_LEFT: tuple[int, ...] = (4, 5, 6, 11, 12, 13)
FLIP_RIGHT: tuple[int, ...] = (1, 2, 3, 14, 15, 16)
FLIP_PERMUTATION: tuple[int, ...] = tuple(
    {**{i: i for i in range(NUM_JOINTS)},
     **dict(zip(FLIP_LEFT, FLIP_RIGHT)),
     **dict(zip(FLIP_RIGHT, FLIP_LEFT))}[i]
    for i in range(NUM_JOINTS)
)

# MPI-INF-3DHP's 17 "relevant" joints, in the order of the P-STMO npz files
MPI3DHP_JOINTS: tuple[str, ...] = (
    "head_top", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow",
    "l_wrist", "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "pelvis",
    "spine", "head",
)
MPI3DHP_ROOT = 14
# index into an MPI-INF-3DHP array to get H36M-17 order (nose ~ MPI head, head ~ head_top)
MPI3DHP_TO_H36M: tuple[int, ...] = (14, 8, 9, 10, 11, 12, 13, 15, 1, 16, 0, 5, 6, 7, 2, 3, 4)
# the 14 joints scored by the 3DHP PCK/AUC protocol, as H36M indices (no pelvis, spine, nose)
MPI3DHP_PCK_JOINTS: tuple[int, ...] = (10, 8, 14, 15, 16, 11, 12, 13, 1, 2, 3, 4, 5, 6)

# approximate mean H36M bone lengths (mm) in H36M_BONES order; used only to estimate a
# mm-per-unit factor for recorded data that lacks one (e.g. MotionBERT's per-clip files)
H36M_MEAN_BONE_MM: tuple[float, ...] = (
    133.0, 443.0, 454.0, 133.0, 443.0, 454.0, 233.0, 257.0, 121.0, 115.0,
    151.0, 279.0, 252.0, 151.0, 279.0, 252.0)


def flip_pose(x):
    """Mirror poses left-right: negate x and swap left/right joints.

    Works on numpy arrays and torch tensors of shape (..., 17, C) with C >= 1.
    Applying it twice gives the input back.
    """
    if x.shape[-2] != NUM_JOINTS:
        raise ValueError(f"flip_pose expects a joint axis of {NUM_JOINTS} at dim -2, got shape {tuple(x.shape)}")
    perm = list(FLIP_PERMUTATION)
    out = x[..., perm, :]
    out = out.clone() if hasattr(out, "clone") else np.array(out, copy=True)
    out[..., 0] = -out[..., 0]
    return out


def root_relative_2d(x: torch.Tensor) -> torch.Tensor:
    """2D keypoints (..., 17, C >= 2) with the root joint's (x, y) subtracted from every
    joint's (x, y), frame by frame; the other channels (confidence) unchanged."""
    xy = x[..., :2] - x[..., ROOT:ROOT + 1, :2]
    return torch.cat([xy, x[..., 2:]], dim=-1)


def bone_lengths(joints):
    """Lengths (..., 16) of the H36M bones of joints (..., 17, 3); numpy."""
    joints = np.asarray(joints)
    parents = [p for p, _ in H36M_BONES]
    children = [c for _, c in H36M_BONES]
    return np.linalg.norm(joints[..., children, :] - joints[..., parents, :], axis=-1)

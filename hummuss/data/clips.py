"""The containers every data source returns: whole sequences and fixed-length clips.

Conventions (MotionBERT's): joints in H36M-17 order (`hummuss.data.skeleton`);
inputs are (x, y, confidence) with x, y normalised screen coordinates
`xy / w * 2 - [1, h / w]`; labels are 3D in the same normalised frame
(x, y as the 2D, z = depth / w * 2), root-relative in depth.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass
class Sequence:
    """One continuous recording (one subject, action and camera)."""

    inputs: np.ndarray  # (T, 17, 3) float32: normalised x, y, confidence
    labels: np.ndarray  # (T, 17, 3) float32: normalised 3D
    fps: float  # nominal frames per second
    times: np.ndarray  # (T,) float64 seconds since the first frame (irregular after drops)
    meta: dict = field(default_factory=dict)  # subject, action, camera, source id, ...
    # per-frame extras needed to score in millimetres, e.g. "factor_2_5d" (T,),
    # "labels_mm" (T, 17, 3); and per-sequence ones, e.g. "resolution" (2,)
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.inputs)


@dataclass
class Clips:
    """N clips of F frames each, stacked for training or evaluation."""

    inputs: np.ndarray  # (N, F, 17, 3) float32
    labels: np.ndarray  # (N, F, 17, 3) float32
    fps: np.ndarray  # (N,) float
    meta: pd.DataFrame  # N rows: subject, action, camera, source, start frame, ...
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # leading axis N

    def __len__(self) -> int:
        return len(self.inputs)

"""World-space motion -> a MotionBERT-style `Sequence`: project, detect, normalise.

MotionBERT's normalisation (same as LCN), with w, h the image size in pixels:
    2D input   xy_n = xy / w * 2 - [1, h / w]
    3D label   x_n, y_n as the 2D (from the ground-truth projection),
               z_n = z_img / w * 2 with z_img = (depth - depth_root) * (px per mm at the root)
z_img is LCN's `joint3d_image` depth (here px per mm = fx / depth_root).
`extras["mm_per_unit"]` = w / 2 / (px per mm) turns root-relative labels into millimetres
(denormalise to pixels, then multiply by the 2.5D factor, as MotionBERT scores H36M).
"""

from __future__ import annotations

import numpy as np

from hummuss.data.camera import H36M_FOCAL_PX, VirtualCamera
from hummuss.data.clips import Sequence
from hummuss.data.detections import DetectionNoise, simulate_detections
from hummuss.data.skeleton import NUM_JOINTS, ROOT

NOMINAL_DISTANCE_MM = 5000.0  # detection noise is specified for a subject this far away


def normalise_pixels(xy, width: float, height: float) -> np.ndarray:
    """Pixels (..., 2) -> normalised screen coordinates xy / w * 2 - [1, h / w].

    width, height: scalars or arrays broadcastable to (...,).
    """
    xy = np.asarray(xy, dtype=np.float64)
    w = np.asarray(width, dtype=np.float64)[..., None]
    h = np.asarray(height, dtype=np.float64)[..., None]
    return xy / w * 2 - np.concatenate(np.broadcast_arrays(np.ones_like(h), h / w), axis=-1)


def denormalise_pixels(xy_n, width: float, height: float) -> np.ndarray:
    """Inverse of `normalise_pixels`: (xy_n + [1, h / w]) * w / 2."""
    xy_n = np.asarray(xy_n, dtype=np.float64)
    w = np.asarray(width, dtype=np.float64)[..., None]
    h = np.asarray(height, dtype=np.float64)[..., None]
    return (xy_n + np.concatenate(np.broadcast_arrays(np.ones_like(h), h / w), axis=-1)) * w / 2


def render_sequence(
    joints_world_mm: np.ndarray,
    times: np.ndarray,
    fps: float,
    camera: VirtualCamera,
    rng: np.random.Generator,
    meta: dict | None = None,
    noise: DetectionNoise | None = None,
) -> Sequence:
    """Turn world joints (T, 17, 3) mm at `times` (T,) seconds into a `Sequence`.

    inputs (T, 17, 3) float32: normalised noisy detections and confidence;
    labels (T, 17, 3) float32: normalised ground truth (x, y screen, z root-relative);
    extras["mm_per_unit"] (T,) float32. `rng` drives the detection noise only.
    meta gets width, height and camera (if absent) on top of what is passed.
    """
    joints = np.asarray(joints_world_mm, dtype=np.float64)
    if joints.ndim != 3 or joints.shape[1:] != (NUM_JOINTS, 3):
        raise ValueError(f"render_sequence: joints must be (T, {NUM_JOINTS}, 3) mm, got {joints.shape}")
    times = np.asarray(times, dtype=np.float64)
    if times.shape != (len(joints),):
        raise ValueError(f"render_sequence: times must be ({len(joints)},), got {times.shape}")
    if not np.all(np.isfinite(joints)):
        raise ValueError("render_sequence: joints contain non-finite values")

    pixels, depth = camera.project(joints)  # (T, 17, 2), (T, 17)
    root_depth = depth[:, ROOT]  # (T,)
    px_per_mm = camera.fx / root_depth  # (T,)
    scale = px_per_mm / (H36M_FOCAL_PX / NOMINAL_DISTANCE_MM)
    noisy, conf = simulate_detections(pixels, fps, rng, times=times, scale=scale, params=noise)

    w, h = float(camera.width), float(camera.height)
    inputs = np.concatenate([normalise_pixels(noisy, w, h), conf[..., None]], axis=-1)
    z_img = (depth - root_depth[:, None]) * px_per_mm[:, None]  # (T, 17) pixels
    labels = np.concatenate([normalise_pixels(pixels, w, h), (z_img / w * 2)[..., None]], axis=-1)

    info = {"camera": camera.name, "width": int(camera.width), "height": int(camera.height)}
    info.update(meta or {})
    return Sequence(
        inputs=inputs.astype(np.float32),
        labels=labels.astype(np.float32),
        fps=float(fps),
        times=times - times[0],
        meta=info,
        extras={"mm_per_unit": (w / 2 / px_per_mm).astype(np.float32)},
    )

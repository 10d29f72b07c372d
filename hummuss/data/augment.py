"""Augmentations and resampling, numpy only, seeded by a passed `np.random.Generator`.

- `flip`: mirror inputs and labels together (MotionBERT's flip_data).
- `corrupt`: MotionBERT's pre-training corruption of a normalised 2D input.
- `subsample`, `upsample2`, `drop_frames`: change a `Sequence`'s frame rate or timing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from hummuss.data.clips import Sequence
from hummuss.data.skeleton import NUM_JOINTS, flip_pose


def flip(inputs, labels=None):
    """Mirror (..., 17, 3) inputs (and labels) left-right; returns the same structure."""
    if labels is None:
        return flip_pose(inputs)
    return flip_pose(inputs), flip_pose(labels)


def flip_sequence(seq: Sequence) -> Sequence:
    """A mirrored copy of a sequence (inputs and labels flipped together)."""
    inputs, labels = flip(seq.inputs, seq.labels)
    return dataclasses.replace(seq, inputs=inputs, labels=labels, meta={**seq.meta, "flipped": True})


@dataclass
class Corruption:
    """MotionBERT-style pre-training corruption, in normalised units (2 / w per pixel)."""

    keyframes: int = 27  # noise drawn at this many key-frames and linearly interpolated
    noise_std: float = 0.01  # Gaussian part of the key-frame noise (~5 px at w = 1000)
    uniform_range: float = 0.06  # uniform part: U(-r, r)
    gaussian_weight: float = 0.9  # probability that a key-frame draw is Gaussian
    jitter_std: float = 0.002  # per-frame Gaussian jitter on top
    conf_a: float = 0.02  # confidence = a / (d + a) + b * d + N(m, s), clipped to [0, 1]
    conf_b: float = 0.0
    conf_m: float = 0.0
    conf_s: float = 0.02
    joint_mask: float = 0.05  # each (frame, joint) zeroed with this probability
    frame_mask: float = 0.1  # each frame zeroed with this probability


def corrupt(inputs: np.ndarray, rng: np.random.Generator, params: Corruption | None = None) -> np.ndarray:
    """Corrupt normalised inputs (..., T, 17, C>=2): noisy xy, recomputed confidence, masks.

    The xy channels get smooth noise (key-frame draws from a Gaussian/uniform mixture,
    interpolated over time) plus jitter; the confidence is recomputed from the
    displacement d; masked joints and frames are zeroed in every channel.
    Returns (..., T, 17, 3) float32.
    """
    p = params or Corruption()
    x = np.asarray(inputs, dtype=np.float64)
    if x.ndim < 3 or x.shape[-2] != NUM_JOINTS or x.shape[-1] < 2:
        raise ValueError(f"corrupt expects (..., T, {NUM_JOINTS}, C>=2), got {x.shape}")
    *lead, t, j, _ = x.shape
    k = max(2, min(p.keyframes, t))
    key_shape = (*lead, k, j, 2)
    gauss = rng.normal(0.0, p.noise_std, size=key_shape)
    unif = rng.uniform(-p.uniform_range, p.uniform_range, size=key_shape)
    key_noise = np.where(rng.random(size=key_shape) < p.gaussian_weight, gauss, unif)
    # linear interpolation of the key-frames over the T frames
    pos = np.linspace(0, k - 1, t)
    lo = np.minimum(np.floor(pos).astype(int), k - 2)
    frac = (pos - lo)[:, None, None]
    noise = key_noise[..., lo, :, :] * (1 - frac) + key_noise[..., lo + 1, :, :] * frac
    noise = noise + rng.normal(0.0, p.jitter_std, size=noise.shape)

    xy = x[..., :2] + noise
    d = np.linalg.norm(noise, axis=-1)
    conf = p.conf_a / (d + p.conf_a) + p.conf_b * d + rng.normal(p.conf_m, p.conf_s, size=d.shape)
    out = np.concatenate([xy, np.clip(conf, 0.0, 1.0)[..., None]], axis=-1)
    keep = (rng.random(size=(*lead, t, j)) >= p.joint_mask) & (rng.random(size=(*lead, t, 1)) >= p.frame_mask)
    return (out * keep[..., None]).astype(np.float32)


def take_frames(seq: Sequence, index: np.ndarray, **changes) -> Sequence:
    """The frames `index` of `seq` (inputs, labels, times and every per-frame extra)."""
    extras = {key: np.asarray(v)[index] for key, v in seq.extras.items()}
    return dataclasses.replace(seq, inputs=seq.inputs[index], labels=seq.labels[index],
                               times=np.asarray(seq.times)[index], extras=extras, **changes)


def subsample(seq: Sequence, factor: int) -> Sequence:
    """Keep every `factor`-th frame (starting at frame 0); fps / factor."""
    if int(factor) != factor or factor < 1:
        raise ValueError(f"subsample: factor must be a positive integer, got {factor}")
    factor = int(factor)
    if factor == 1:
        return seq
    return take_frames(seq, np.arange(0, len(seq), factor), fps=seq.fps / factor,
                        meta={**seq.meta, "subsample": factor})


def _midpoints(a: np.ndarray) -> np.ndarray:
    """(T, ...) -> (2T - 1, ...): the frames and linear midpoints between neighbours."""
    a = np.asarray(a)
    if a.dtype == bool:
        mid = a[:-1] & a[1:]
    else:
        mid = (a[:-1] + a[1:]) / 2
    out = np.empty((2 * len(a) - 1, *a.shape[1:]), dtype=np.result_type(a, mid))
    out[0::2] = a
    out[1::2] = mid
    return out.astype(a.dtype)


def upsample2(seq: Sequence) -> Sequence:
    """Double the frame rate of recorded data by linear interpolation (2T - 1 frames).

    Every array with a frame axis is interpolated (bool extras such as `valid`: an
    inserted frame is True only if both neighbours are).
    """
    if len(seq) < 2:
        raise ValueError(f"upsample2 needs at least 2 frames, got {len(seq)}")
    extras = {key: _midpoints(v) for key, v in seq.extras.items()}
    return dataclasses.replace(
        seq, inputs=_midpoints(seq.inputs), labels=_midpoints(seq.labels),
        times=_midpoints(np.asarray(seq.times, dtype=np.float64)), fps=seq.fps * 2,
        extras=extras, meta={**seq.meta, "upsample": 2})


def drop_frames(seq: Sequence, rng: np.random.Generator, drop: float = 0.3) -> tuple[Sequence, np.ndarray]:
    """Drop frames at random (each with probability `drop`; frame 0 is always kept).

    Returns the shorter sequence and dt (T',) float32: each kept frame's step from
    the previous kept frame in units of the original frame period (first frame 1.0).
    """
    if not 0.0 <= drop < 1.0:
        raise ValueError(f"drop_frames: drop must be in [0, 1), got {drop}")
    keep = rng.random(len(seq)) >= drop
    keep[0] = True
    index = np.flatnonzero(keep)
    dt = np.diff(index, prepend=index[0] - 1).astype(np.float32)
    return take_frames(seq, index, meta={**seq.meta, "dropped": drop}), dt

"""Simulated 2D keypoint detections, defined in continuous time.

Every noise term is a fixed random function of time (a sum of sinusoids whose
frequencies, phases and amplitudes are drawn once from `rng`), evaluated at the
frame times. The number of draws does not depend on the number of frames, so
with one seed the detection at time t is the same whether the sequence is
sampled at 15, 30, 60 fps or at irregular timestamps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hummuss.data.skeleton import FLIP_PERMUTATION, NUM_JOINTS

# per-joint noise multipliers, H36M-17 order: extremities are detected worse
_JOINT_NOISE = np.array(
    [1.0, 1.0, 1.1, 1.3, 1.0, 1.1, 1.3, 0.9, 0.9, 0.8, 0.9, 1.0, 1.2, 1.5, 1.0, 1.2, 1.5])


@dataclass
class DetectionNoise:
    """Parameters of `simulate_detections` (pixels for a subject ~5 m from an H36M camera)."""

    noise_px: float = 4.0  # std of the smooth per-joint error
    noise_hz: tuple[float, float] = (0.2, 3.0)  # frequency band of the smooth error
    jitter_px: float = 1.0  # std of the fast error
    jitter_hz: tuple[float, float] = (4.0, 12.0)
    gross_threshold: float = 2.2  # gross error while a unit-variance process exceeds this
    gross_hz: tuple[float, float] = (0.05, 0.6)
    gross_px: float = 60.0  # size of a gross error on joints without a mirror partner
    conf_max: float = 0.98
    conf_half_px: float = 15.0  # error (px) at which confidence halves
    conf_noise: float = 0.03
    components: int = 12  # sinusoids per random function


def _random_function(rng: np.random.Generator, shape: tuple[int, ...], band, k: int):
    """Draw a unit-variance random function of time with `shape` independent outputs.

    Returns f(times (T,)) -> (T, *shape).
    """
    freq = np.exp(rng.uniform(np.log(band[0]), np.log(band[1]), size=(*shape, k)))  # Hz
    phase = rng.uniform(0, 2 * np.pi, size=(*shape, k))
    amp = rng.standard_normal(size=(*shape, k)) * np.sqrt(2.0 / k)

    def f(times: np.ndarray) -> np.ndarray:
        t = np.asarray(times, dtype=np.float64).reshape(-1, *([1] * (len(shape) + 1)))
        return np.sum(amp * np.sin(2 * np.pi * freq * t + phase), axis=-1)

    return f


def simulate_detections(
    pixels: np.ndarray,
    fps: float,
    rng: np.random.Generator,
    times: np.ndarray | None = None,
    scale=1.0,
    params: DetectionNoise | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Noisy detections of ground-truth pixels.

    pixels: (T, 17, 2) ground-truth image coordinates.
    times: (T,) seconds; default arange(T) / fps.
    scale: scalar or (T,) multiplier of every pixel error (apparent subject size
        relative to a subject 5 m from a 1145 px camera); confidence depends on
        error / scale, so it does not change with distance.
    Returns noisy pixels (T, 17, 2) and confidence (T, 17) in [0, 1]: temporally
    correlated per-joint noise, occasional gross errors (a left/right swap for
    limb joints, a large offset for the others), confidence = conf_max *
    a / (error + a) plus a little smooth noise, so it falls as the error grows.
    """
    p = params or DetectionNoise()
    pixels = np.asarray(pixels, dtype=np.float64)
    if pixels.ndim != 3 or pixels.shape[1:] != (NUM_JOINTS, 2):
        raise ValueError(f"simulate_detections: pixels must be (T, {NUM_JOINTS}, 2), got {pixels.shape}")
    if times is None:
        if fps <= 0:
            raise ValueError(f"simulate_detections: fps must be > 0, got {fps}")
        times = np.arange(len(pixels)) / float(fps)
    times = np.asarray(times, dtype=np.float64)
    if times.shape != (len(pixels),):
        raise ValueError(f"simulate_detections: times must be ({len(pixels)},), got {times.shape}")
    scale = np.broadcast_to(np.asarray(scale, dtype=np.float64), (len(pixels),))[:, None, None]

    # draw every random function first, in a fixed order (independent of T)
    smooth = _random_function(rng, (NUM_JOINTS, 2), p.noise_hz, p.components)
    fast = _random_function(rng, (NUM_JOINTS, 2), p.jitter_hz, p.components)
    gate_fn = _random_function(rng, (NUM_JOINTS,), p.gross_hz, p.components)
    offset_dir = _random_function(rng, (NUM_JOINTS, 2), p.gross_hz, p.components)
    conf_fn = _random_function(rng, (NUM_JOINTS,), p.noise_hz, p.components)

    err = (p.noise_px * smooth(times) * _JOINT_NOISE[:, None] + p.jitter_px * fast(times)) * scale
    gate = np.clip((gate_fn(times) - p.gross_threshold) / 0.3, 0.0, 1.0)[..., None]  # (T, 17, 1)
    partner = np.array(FLIP_PERMUTATION)
    has_partner = (partner != np.arange(NUM_JOINTS))[None, :, None]
    direction = offset_dir(times)
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True) + 1e-9
    gross = np.where(has_partner, pixels[:, partner] - pixels, p.gross_px * scale * direction)
    noisy = pixels + err + gate * gross

    d = np.linalg.norm(noisy - pixels, axis=-1) / scale[..., 0]  # (T, 17) error in nominal px
    conf = p.conf_max * p.conf_half_px / (d + p.conf_half_px) + p.conf_noise * conf_fn(times)
    return noisy, np.clip(conf, 0.0, 1.0)

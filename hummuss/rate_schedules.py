"""Frame rates that change inside a test window: which native frames are read, and their steps.

A schedule reads a sequence at a rate that changes while it runs, by picking exact frames
of the native recording (no interpolation): the i-th picked frame comes `strides[i]` native
frames after the one before it. Its step, in units of the native frame period (the step
the models were trained at), is that stride: `dt[i] = strides[i]`; the first picked frame is
native frame 0 and gets the stride it is read at (dt[0] = strides[0]). Ground truth is the
picked frames' own.

    segments   each window of `window` picked frames (the evaluation's `rate_length`, so every
               test window that starts at a multiple of it sees the whole cycle) in four
               segments, boundaries at floor(k * window / 4), read at strides 1, 2, 4, 1:
               the native rate, half, a quarter, the native rate again. On the generated data
               (60 fps) that is 60 -> 30 -> 15 -> 60 fps; on Human3.6M (50 fps) 50 -> 25 -> 12.5
               -> 50.
    walk       a seeded random walk of the stride over 1..4 (60, 30, 20, 15 fps at 60 fps
               native): the first stride uniform in 1..4, then before each picked frame the
               stride moves by -1 or +1 (equal odds; at 1 or 4 the step that would leave the
               range is not taken, so the stride stays) with probability min(1, 8 / window),
               about 8 moves per window whatever its length; otherwise it stays.

`schedule_sequences(seqs, name, window, seed)` applies a schedule to each sequence in order
(the walk draws from one generator seeded with `seed`, sequence after sequence): the
shorter sequences and each one's per-frame dt, the same shape `drop_frames` returns.
"""

from __future__ import annotations

import numpy as np

from hummuss.data.augment import take_frames
from hummuss.data.clips import Sequence

SCHEDULES: tuple[str, ...] = ("segments", "walk")
SEGMENT_STRIDES = (1, 2, 4, 1)  # native, half, quarter, native
WALK_STRIDES = (1, 4)  # the walk's lowest and highest stride
WALK_MOVES = 8  # expected stride changes per window


def check_schedule(name: str) -> str:
    if name not in SCHEDULES:
        raise ValueError(f"unknown rate schedule {name!r}; known: {', '.join(SCHEDULES)}")
    return name


def segment_strides(n: int, window: int) -> np.ndarray:
    """(n,) int: the strides of n picked frames under `segments` with windows of `window`."""
    if window < 1:
        raise ValueError(f"window must be >= 1 frame, got {window}")
    position = np.arange(n) % window  # position inside its window
    segment = np.minimum(position * len(SEGMENT_STRIDES) // window, len(SEGMENT_STRIDES) - 1)
    return np.asarray(SEGMENT_STRIDES, dtype=np.int64)[segment]


def walk_strides(n: int, window: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) int: the strides of n picked frames under `walk` (see the module docstring)."""
    if window < 1:
        raise ValueError(f"window must be >= 1 frame, got {window}")
    lo, hi = WALK_STRIDES
    move = min(1.0, WALK_MOVES / window)
    out = np.empty(n, dtype=np.int64)
    stride = int(rng.integers(lo, hi + 1))
    for i in range(n):
        if i > 0 and rng.random() < move:
            stride = int(np.clip(stride + (1 if rng.random() < 0.5 else -1), lo, hi))
        out[i] = stride
    return out


def pick(length: int, name: str, window: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(native frame index (n,) int, dt (n,) float32) of a sequence of `length` native frames."""
    check_schedule(name)
    if length < 1:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    strides = segment_strides(length, window) if name == "segments" else walk_strides(length, window, rng)
    index = np.cumsum(strides) - strides[0]  # frame 0 first, then each stride further
    n = int(np.searchsorted(index, length))  # the picked frames that exist
    return index[:n], strides[:n].astype(np.float32)


def schedule_sequences(seqs: list[Sequence], name: str, window: int,
                       seed: int = 0) -> tuple[list[Sequence], list[np.ndarray]]:
    """Each sequence read under schedule `name`: (the picked sequences, their per-frame dt)."""
    rng = np.random.default_rng(seed)
    out, dts = [], []
    for seq in seqs:
        index, dt = pick(len(seq), name, window, rng)
        out.append(take_frames(seq, index, meta={**seq.meta, "rate_schedule": name}))
        dts.append(dt)
    return out, dts

"""`MotionSource`: the one interface every data set implements.

A source yields whole `Sequence`s per split; `clips()` cuts them into fixed-length
windows exactly as MotionBERT's `split_clips` does. `rate` is a frame-rate
multiplier relative to the source's native rate (see `RATES`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import pandas as pd

from hummuss.data.augment import subsample, upsample2
from hummuss.data.clips import Clips, Sequence

# supported frame-rate multipliers: subsample x2, x4, x8; native; upsample x2
RATES: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0)



VALIDATION_EVERY = 10  # one training sequence in this many is held out for validation

def check_rate(rate: float) -> float:
    """`rate` as a float if supported, else ValueError naming the supported ones."""
    if float(rate) not in RATES:
        raise ValueError(f"unsupported rate {rate!r}; supported: {', '.join(map(str, RATES))}")
    return float(rate)


def resample_recorded(seq: Sequence, rate: float) -> Sequence:
    """Recorded data at `rate` x its frame rate: keep every k-th frame, or interpolate x2."""
    rate = check_rate(rate)
    if rate == 2.0:
        return upsample2(seq)
    return subsample(seq, round(1 / rate))


def checked_array(value, file, key: str, trailing: tuple[int, ...] = (), n: int | None = None,
                  finite: bool = True) -> np.ndarray:
    """`value` as a float64 array of shape (N, *trailing), else ValueError naming file and key.

    For readers: checks the shape (and N if given) and that every value is finite.
    """
    expected = f"({n if n is not None else 'N'}{''.join(f', {d}' for d in trailing)})"
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{file}: key {key!r}: expected a numeric array {expected}; {err}") from None
    if arr.ndim != 1 + len(trailing) or arr.shape[1:] != tuple(trailing) or (n is not None and len(arr) != n):
        raise ValueError(f"{file}: key {key!r}: expected shape {expected}, got {arr.shape}")
    if finite and not np.all(np.isfinite(arr)):
        bad = int(np.sum(~np.isfinite(arr)))
        raise ValueError(f"{file}: key {key!r}: {bad} non-finite values; expected finite numbers")
    return arr


def clip_windows(length: int, n_frames: int, stride: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Frame indices of the windows `split_clips` cuts from one sequence of `length` frames.

    Windows [st, st + n_frames) for st = 0, stride, 2 * stride, ... while they fit; tail
    frames after the last full window are dropped. A sequence shorter than n_frames is
    resampled to n_frames indices (MotionBERT's `resample`: evenly spaced positions,
    each rounded down or up at random, sorted).
    """
    if length >= n_frames:
        return [np.arange(st, st + n_frames) for st in range(0, length - n_frames + 1, stride)]
    if length == 0:
        return []
    even = np.linspace(0, length, num=n_frames, endpoint=False)
    pick = rng.integers(0, 2, size=n_frames)
    index = np.sort(np.where(pick == 1, np.floor(even), np.ceil(even)))
    return [np.clip(index, 0, length - 1).astype(np.int64)]


def stack_clips(seqs: list[Sequence], n_frames: int, stride: int | None = None, seed: int = 0) -> Clips:
    """Cut sequences into clips of `n_frames` (see `clip_windows`) and stack them.

    Clips.meta has each sequence's scalar meta plus `sequence` (index into `seqs`),
    `start` (first frame) and `resampled` (a short sequence stretched to n_frames).
    Clips.extras has every per-frame extra as (N, F, ...), plus `frame` (N, F) int64
    indices into the sequence and `times` (N, F) seconds.
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    stride = n_frames if stride is None else int(stride)
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    rng = np.random.default_rng(seed)
    inputs, labels, fps, rows, frames = [], [], [], [], []
    extras: dict[str, list[np.ndarray]] = {}
    keys = set(seqs[0].extras) if seqs else set()
    for i, seq in enumerate(seqs):
        if set(seq.extras) != keys:
            raise ValueError(f"sequence {seq.meta.get('source', i)!r} has extras {sorted(seq.extras)}; "
                             f"expected the same keys as the first sequence: {sorted(keys)}")
        scalars = {k: v for k, v in seq.meta.items() if np.isscalar(v) or v is None}
        for index in clip_windows(len(seq), n_frames, stride, rng):
            inputs.append(seq.inputs[index])
            labels.append(seq.labels[index])
            fps.append(seq.fps)
            frames.append(index)
            rows.append({**scalars, "sequence": i, "start": int(index[0]),
                         "resampled": len(seq) < n_frames})
            for key in keys:
                value = np.asarray(seq.extras[key])
                if len(value) != len(seq):
                    raise ValueError(f"extras[{key!r}] of sequence {seq.meta.get('source', i)!r} has "
                                     f"{len(value)} rows; expected one per frame ({len(seq)})")
                extras.setdefault(key, []).append(value[index])
            extras.setdefault("times", []).append(np.asarray(seq.times, dtype=np.float64)[index])
    if not inputs:
        shape = (0, n_frames, 17, 3)
        return Clips(np.zeros(shape, np.float32), np.zeros(shape, np.float32), np.zeros(0),
                     pd.DataFrame(columns=["subject", "action", "camera", "source", "sequence", "start"]))
    out_extras = {k: np.stack(v) for k, v in extras.items()}
    out_extras["frame"] = np.stack(frames)
    return Clips(
        inputs=np.stack(inputs).astype(np.float32, copy=False),
        labels=np.stack(labels).astype(np.float32, copy=False),
        fps=np.asarray(fps, dtype=np.float64),
        meta=pd.DataFrame(rows),
        extras=out_extras,
    )


class MotionSource(ABC):
    """A data set of 2D-3D motion sequences, split into train and test.

    Subclasses set `name` and `splits`, take their argument (a path, or options) in
    the constructor, and implement `sequences(split, rate)`. Every returned
    Sequence has meta keys subject, action, camera, source, and
    extras["mm_per_unit"] (T,); optionally extras["valid"] (T,) bool and extras["labels_mm"]
    (T, 17, 3), the ground truth in millimetres that evaluation scores against when present.
    """

    name: str = ""
    spec: str = ""
    splits: tuple[str, ...] = ("train", "test")
    native_fps: float | None = None  # None when sequences differ (see Sequence.fps)

    @abstractmethod
    def sequences(self, split: str, rate: float = 1.0) -> list[Sequence]:
        """All sequences of `split` at `rate` x the native frame rate."""

    def clips(self, split: str, n_frames: int = 243, stride: int | None = None,
              rate: float = 1.0) -> Clips:
        """Clips of `n_frames` from `sequences(split, rate)`, MotionBERT `split_clips` style.

        stride defaults to n_frames (non-overlapping). Deterministic: the random
        floor/ceil of short sequences uses a fixed seed.
        """
        return stack_clips(self.sequences(self.check_split(split), check_rate(rate)), n_frames, stride)

    def training_clips(self, n_frames: int, stride: int | None = None,
                       held_out_every: int = VALIDATION_EVERY) -> tuple[Clips, Clips | None]:
        """(training clips, validation clips), both from the train split: every
        `held_out_every`-th training sequence (the last one when there are fewer) is held out
        and cut into non-overlapping clips, so choosing the best epoch never looks at the
        test split. With a single training sequence there is no validation (None)."""
        seqs = self.sequences("train")
        held = set(range(held_out_every - 1, len(seqs), held_out_every)) or {len(seqs) - 1}
        if len(seqs) < 2:
            return stack_clips(seqs, n_frames, stride), None
        train = [s for i, s in enumerate(seqs) if i not in held]
        val = [s for i, s in enumerate(seqs) if i in held]
        return stack_clips(train, n_frames, stride), stack_clips(val, n_frames, n_frames)

    def check_split(self, split: str) -> str:
        if split not in self.splits:
            raise ValueError(f"unknown split {split!r} for source {self.name or type(self).__name__!r}; "
                             f"known: {', '.join(self.splits)}")
        return split

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec or self.name!r})"


class RecordedSource(MotionSource):
    """A source read from recordings at their own frame rate: subclasses implement
    `_native(split)`; other rates are resampled from it (`resample_recorded`), and
    both are memoised per (split, rate)."""

    def __init__(self):
        self._memo: dict[tuple[str, float], list[Sequence]] = {}

    @abstractmethod
    def _native(self, split: str) -> list[Sequence]:
        """The sequences of `split` as recorded."""

    def sequences(self, split: str, rate: float = 1.0) -> list[Sequence]:
        key = (self.check_split(split), check_rate(rate))
        if key not in self._memo:
            native = self._memo.get((split, 1.0)) or self._native(split)
            self._memo[(split, 1.0)] = native
            self._memo[key] = native if key[1] == 1.0 else [resample_recorded(s, key[1]) for s in native]
        return self._memo[key]

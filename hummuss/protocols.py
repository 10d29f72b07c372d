"""Evaluation protocols: which windows a model is run on and which frames are scored.

Every protocol sets the predicted root joint to 0 and leaves the other joints where the
model put them (MotionBERT's `evaluate` with `rootrel`, P-STMO's `pred_out[:, :, 14] = 0`);
the prediction is then scaled to millimetres by the sequence's `mm_per_unit`. The ground
truth is `extras["labels_mm"]` (root-relative mm) where the source has it (Human3.6M's
`joints_2.5d_image`), else the root-relative labels times `mm_per_unit`.

    motionbert   MotionBERT's `split_clips` with stride = F over the sequences in order:
                 clips [st, st + F) for st = 0, F, 2F, ... while they fit; the frames after
                 the last full clip are not scored; no frame is predicted twice. A sequence
                 shorter than F is resampled into one clip of F frames (random floor/ceil of
                 evenly spaced positions, fixed seed), except the last sequence of the list,
                 which gets no clip (the original's loop ends before it). A frame repeated in
                 a resampled clip is scored once, from its last position (numpy's `+=` on
                 repeated indices, as the original). Default for `h36m` and `motionbert-clips`.
    p-stmo       P-STMO's MPI-INF-3DHP test: every valid frame t is predicted once, from its
                 own window of F frames with t at position (F - 1) // 2 (edge frames
                 repeated past either end); only that position is scored. Default for
                 `mpi3dhp`.
    all-frames   every frame predicted and scored: windows of F frames, the last aligned to
                 the sequence end, overlapping predictions averaged; a sequence shorter than
                 F is one window of its own length. Default for every other source
                 (`synthetic`, `bvh`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hummuss.data.clips import Sequence
from hummuss.data.skeleton import ROOT
from hummuss.data.source import clip_windows
from hummuss.windows import window_starts

PROTOCOLS: tuple[str, ...] = ("motionbert", "p-stmo", "all-frames")
AUTO = "auto"
SOURCE_PROTOCOL = {"h36m": "motionbert", "motionbert-clips": "motionbert", "mpi3dhp": "p-stmo"}
DESCRIPTIONS = {
    "motionbert": "MotionBERT's frame set (non-overlapping clips of F frames, the tail after the last "
                  "full clip not scored), predicted root set to 0",
    "p-stmo": "P-STMO's MPI-INF-3DHP rules (every valid frame once, as the centre of its own "
              "edge-padded F-frame window), predicted root set to 0",
    "all-frames": "every frame scored (windows of F frames, the last aligned to the sequence end, "
                  "overlaps averaged), predicted root set to 0",
}


def resolve_protocol(protocol: str, source_name: str) -> str:
    """`protocol` checked, or for 'auto' (or '') the default of a source called `source_name`."""
    if protocol in ("", AUTO, None):
        return SOURCE_PROTOCOL.get(source_name, "all-frames")
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {protocol!r}; known: {AUTO}, {', '.join(PROTOCOLS)}")
    return protocol


def source_name_of(spec: str) -> str:
    """The source name of a data spec: 'h36m:FILE.pkl' -> 'h36m', 'synthetic' -> 'synthetic'."""
    return str(spec).partition(":")[0].strip()


@dataclass
class Window:
    """One model call: `index` (t,) frames of sequence `seq` as input; its predictions at
    positions `pos` (k,) score frames `frames` (k,) of the sequence."""

    seq: int
    index: np.ndarray
    pos: np.ndarray
    frames: np.ndarray


def _last_positions(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unique frames, the last position of each in `index`)."""
    frames, first_in_reversed = np.unique(index[::-1], return_index=True)
    return frames, len(index) - 1 - first_in_reversed


def plan_windows(seqs: list[Sequence], F: int, protocol: str, seed: int = 0) -> list[Window]:
    """The model calls and scored frames of `protocol` (resolved) at window length F."""
    if F < 1:
        raise ValueError(f"window length must be >= 1 frame, got {F}")
    out: list[Window] = []
    if protocol == "all-frames":
        for s, seq in enumerate(seqs):
            if len(seq) == 0:
                continue
            for st in window_starts(len(seq), F):
                index = np.arange(st, min(st + F, len(seq)))
                out.append(Window(s, index, np.arange(len(index)), index))
    elif protocol == "motionbert":
        rng = np.random.default_rng(seed)
        for s, seq in enumerate(seqs):
            if len(seq) < F and s == len(seqs) - 1:
                continue  # the original's loop ends before resampling the last sequence
            for index in clip_windows(len(seq), F, F, rng):
                frames, pos = _last_positions(index)
                out.append(Window(s, index, pos, frames))
    elif protocol == "p-stmo":
        centre = (F - 1) // 2
        for s, seq in enumerate(seqs):
            valid = np.asarray(seq.extras.get("valid", np.ones(len(seq), bool)), bool)
            for t in np.flatnonzero(valid):
                index = np.clip(np.arange(t - centre, t - centre + F), 0, len(seq) - 1)
                out.append(Window(s, index, np.array([centre]), np.array([t])))
    else:
        raise ValueError(f"unknown evaluation protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    return out


def assemble(windows: list[Window], preds: list[np.ndarray], seqs: list[Sequence]):
    """Per sequence: (prediction (T, 17, 3) with overlaps averaged and the root set to 0,
    covered (T,) bool: the frames the protocol scores)."""
    out = [np.zeros(seq.labels.shape, np.float64) for seq in seqs]
    count = [np.zeros(len(seq), np.int64) for seq in seqs]
    for w, pred in zip(windows, preds, strict=True):
        out[w.seq][w.frames] += pred[w.pos]
        count[w.seq][w.frames] += 1
    result = []
    for o, c in zip(out, count, strict=True):
        o = o / np.maximum(c, 1)[:, None, None]
        o[:, ROOT] = 0.0
        result.append((o.astype(np.float32), c > 0))
    return result


def scored_frames(seqs: list[Sequence], F: int, protocol: str, seed: int = 0) -> list[np.ndarray]:
    """Per sequence (T,) bool: the frames `protocol` scores at window length F."""
    covered = [np.zeros(len(seq), bool) for seq in seqs]
    for w in plan_windows(seqs, F, protocol, seed=seed):
        covered[w.seq][w.frames] = True
    return covered


def root_zeroed(pred: np.ndarray) -> np.ndarray:
    """A copy of pred (..., 17, 3) with the root joint set to 0 (the other joints untouched)."""
    out = np.array(pred, dtype=np.float32, copy=True)
    out[..., ROOT, :] = 0.0
    return out


def pred_mm(pred: np.ndarray, mm_per_unit) -> np.ndarray:
    """A root-zeroed prediction (..., T, 17, 3) in millimetres."""
    return root_zeroed(pred).astype(np.float64) * np.asarray(mm_per_unit, dtype=np.float64)[..., None, None]


def labels_mm(seq: Sequence) -> np.ndarray:
    """Root-relative ground truth (T, 17, 3) in millimetres (see the module docstring)."""
    if "labels_mm" in seq.extras:
        gt = np.asarray(seq.extras["labels_mm"], dtype=np.float64)
    else:
        gt = np.asarray(seq.labels, dtype=np.float64) * np.asarray(
            seq.extras["mm_per_unit"], dtype=np.float64)[:, None, None]
    return gt - gt[:, ROOT:ROOT + 1]

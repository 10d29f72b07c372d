"""`summarise(spec)`: what a data source holds, one row per split (for `data inspect`)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from hummuss.data.source import MotionSource

# (n_frames, stride) of the clip counts reported: MotionBERT's 243 / 81 and an 81 / 27 setting
CLIP_SETTINGS: tuple[tuple[int, int], ...] = ((243, 81), (81, 27))


def count_clips(lengths, n_frames: int, stride: int) -> int:
    """How many clips `MotionSource.clips(split, n_frames, stride)` returns for these lengths."""
    lengths = np.asarray(lengths, dtype=np.int64)
    full = np.where(lengths >= n_frames, (lengths - n_frames) // stride + 1, 0)
    short = (lengths > 0) & (lengths < n_frames)
    return int(full.sum() + short.sum())


def _range(values: list[np.ndarray]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return float(min(v.min() for v in values)), float(max(v.max() for v in values))


def summarise(spec: str | MotionSource) -> pd.DataFrame:
    """One row per split: sequences, frames, clips_243 (stride 81), clips_81 (stride 27),
    subjects, actions, fps (min, max, values), duration in seconds, value ranges of inputs
    (x, y, confidence), labels (x, y, z, and z root-relative), mm_per_unit, and the share of
    valid (scored) frames when the source marks them; for motion capture also how many
    recordings started with a dropped rest pose / T-pose and their frame rates (`recording_notes`)."""
    if isinstance(spec, str):
        from hummuss.data import open_source

        source = open_source(spec)
    else:
        source = spec
    rows = []
    for split in source.splits:
        seqs = source.sequences(split)
        lengths = [len(s) for s in seqs]
        fps = sorted({float(s.fps) for s in seqs})
        row: dict = {"split": split, "source": source.spec or source.name, "sequences": len(seqs),
                     "frames": int(sum(lengths))}
        for n, stride in CLIP_SETTINGS:
            row[f"clips_{n}"] = count_clips(lengths, n, stride)
        row["subjects"] = len({s.meta.get("subject") for s in seqs})
        row["actions"] = len({s.meta.get("action") for s in seqs})
        row["fps_min"] = fps[0] if fps else float("nan")
        row["fps_max"] = fps[-1] if fps else float("nan")
        row["fps_values"] = ", ".join(f"{f:g}" for f in fps)
        row["seconds"] = float(sum(len(s) / s.fps for s in seqs))
        for name, arrays in (("input", [s.inputs for s in seqs]), ("label", [s.labels for s in seqs])):
            for c, axis in enumerate("xyz" if name == "label" else ("x", "y", "conf")):
                lo, hi = _range([a[..., c] for a in arrays if len(a)])
                row[f"{name}_{axis}_min"], row[f"{name}_{axis}_max"] = lo, hi
        lo, hi = _range([s.labels[..., 2] - s.labels[..., :1, 2] for s in seqs if len(s)])
        row["label_zrel_min"], row["label_zrel_max"] = lo, hi
        confs = [s.inputs[..., 2] for s in seqs if len(s)]
        row["input_conf_mean"] = float(np.mean(np.concatenate([c.ravel() for c in confs]))) if confs else float("nan")
        lo, hi = _range([np.asarray(s.extras["mm_per_unit"]) for s in seqs if "mm_per_unit" in s.extras and len(s)])
        row["mm_per_unit_min"], row["mm_per_unit_max"] = lo, hi
        valid = [np.asarray(s.extras["valid"]) for s in seqs if "valid" in s.extras]
        row["valid_fraction"] = float(np.concatenate(valid).mean()) if valid else float("nan")
        row.update(recording_notes(seqs))
        rows.append(row)
    return pd.DataFrame(rows).set_index("split")


def recording_notes(seqs) -> dict:
    """For motion capture (sequences with meta `first_frame_dropped`, one file per recording):
    recordings whose frame 0 was dropped as a rest pose or T-pose, the frame rates the files'
    headers state and the rates used (`src_fps`). {} for other sources."""
    files = {s.meta.get("file", s.meta.get("source")): s.meta for s in seqs if "first_frame_dropped" in s.meta}
    if not files:
        return {}
    why = Counter(m["first_frame_dropped"] for m in files.values() if m["first_frame_dropped"] != "no")
    reasons = f" ({', '.join(f'{n} {w}' for w, n in sorted(why.items()))})" if why else ""
    return {"first_frame_dropped": f"{sum(why.values())} of {len(files)} recordings{reasons}",
            "header_fps": ", ".join(f"{f:g}" for f in sorted({round(float(m['header_fps']), 3) for m in files.values()})),
            "recorded_fps": ", ".join(f"{f:g}" for f in sorted({round(float(m['src_fps']), 3) for m in files.values()}))}

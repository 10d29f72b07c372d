"""What a run trained and was scored on, as MLflow dataset inputs (`Tracker.log_datasets`).

    inputs = [training_dataset(spec, source, train, val), evaluation_dataset(spec, source)]

Each is {"name", "digest", "context", "profile"}: the name is the data source and its part
(`synthetic/train`, `synthetic/test`, `synthetic/validation`), the digest a hash of the
frames themselves (inputs and labels, so two runs share a dataset exactly when they saw the
same data), and the profile what a reader asks of a motion data set: how many sequences,
frames and clips, which subjects, the frame rate and the data spec it came from.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from collections.abc import Sequence as Seq

import numpy as np

from suite.runspec import RunSpec
from suite.settings import redact


def digest(arrays: Iterable[np.ndarray]) -> str:
    """16 hex digits of sha256 over the arrays' bytes (and shapes)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(repr((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def _fps(values: Iterable[float]) -> float | list[float]:
    found = sorted({round(float(v), 3) for v in values})
    return found[0] if len(found) == 1 else found


def _subjects(values: Iterable) -> list[str]:
    return sorted({str(v) for v in values if v is not None and str(v) != "nan"})


def sequences_profile(seqs: Seq, spec: str, split: str) -> dict:
    """The profile of whole sequences (hummuss.data.Sequence) of `split`."""
    return {"split": split, "sequences": len(seqs), "frames": int(sum(len(s) for s in seqs)),
            "subjects": _subjects(s.meta.get("subject") for s in seqs), "fps": _fps(s.fps for s in seqs),
            "spec": redact(spec)}


def clips_profile(clips, spec: str, split: str) -> dict:
    """The profile of stacked clips (hummuss.data.Clips): (N, F, 17, 3) cut from sequences."""
    meta = clips.meta
    n, frames = (int(clips.inputs.shape[0]), int(clips.inputs.shape[1])) if len(clips) else (0, 0)
    sequences = int(meta["source"].nunique()) if "source" in meta else None
    return {"split": split, "sequences": sequences, "clips": n, "clip_frames": frames, "frames": n * frames,
            "subjects": _subjects(meta["subject"]) if "subject" in meta else [],
            "fps": _fps(clips.fps) if len(clips) else None, "spec": redact(spec)}


def training_dataset(spec: RunSpec, source, train, val=None) -> dict:
    """The training clips (validation: the held-out training sequences, counted apart)."""
    profile = clips_profile(train, spec.data, "train")
    profile.update(stride=spec.stride, validation_clips=len(val) if val is not None else 0)
    return {"name": f"{source.name}/train", "digest": digest([train.inputs, train.labels]), "context": "training",
            "profile": profile}


def validation_dataset(spec: RunSpec, source, val) -> dict:
    """The held-out training sequences' clips a sweep trial is scored on (context `evaluation`)."""
    return {"name": f"{source.name}/validation", "digest": digest([val.inputs, val.labels]),
            "context": "evaluation", "profile": clips_profile(val, spec.data, "validation")}


def split_dataset(spec, source, split: str, context: str) -> dict:
    """The whole sequences of `split` (evaluation: all, or the first `max_sequences`, as
    hummuss.evaluate scores them); `spec`: a RunSpec or a FloorSpec."""
    seqs = source.sequences(split)
    limit = int(spec.eval_config.get("max_sequences") or 0) if split == "test" else 0
    seqs = seqs[:limit] if limit else seqs
    return {"name": f"{source.name}/{split}", "digest": digest(a for s in seqs for a in (s.inputs, s.labels)),
            "context": context, "profile": sequences_profile(seqs, spec.data, split)}


def evaluation_dataset(spec, source) -> dict:
    """The test sequences the evaluation scores."""
    return split_dataset(spec, source, "test", "evaluation")

"""Models for a figure: the selected runs' best checkpoints, rebuilt, and their predictions.

A checkpoint is `<checkpoint_dir>/<train_hash>/best.pt`; the run's RunSpec comes from its
`config.json` artifact or, failing that, its params and the checkpoint. Anything missing
raises `FigureSkipped` naming it, so the report lists why a figure was not drawn.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from hummuss.checkpoint import load_checkpoint
from suite.report.figures import FigureSkipped
from suite.report.runs import Selection
from suite.runspec import RunSpec
from suite.tracking import Tracker
from suite.worker import build_model


def run_spec(tracker: Tracker, run: pd.Series, checkpoint: dict) -> RunSpec:
    """The run's RunSpec: its config.json artifact, else its params and the checkpoint."""
    try:
        return RunSpec.from_dict(tracker.load_json_artifact(run["run_id"], "config.json"))
    except Exception:  # no artifact: rebuild what the model and data need
        pass
    return RunSpec(study=run["study"], variant=run["tags.variant"], seed=int(run["tags.seed"]),
                   scale=run["tags.scale"], model=run["tags.model"], model_config=checkpoint["model_config"],
                   train_config=checkpoint["train_config"], data=run["params.data.spec"],
                   frames=int(run["params.data.frames"]), stride=int(run["params.data.stride"]),
                   eval_config={"rate_length": int(run.get("params.eval.rate_length", run["params.data.frames"]))})


def skeleton_models(tracker: Tracker, sel: Selection, families=("hummuss", "motionbert")) -> tuple[list, str]:
    """(label, model, spec) per model family of the selection's runs (its lowest seed), from
    `<checkpoint_dir>/<train_hash>/best.pt`, and the scale; raises FigureSkipped naming what
    is missing."""
    if sel.scale is None:
        raise FigureSkipped(f"no finished runs of the {sel.study.name} study")
    picks, absent = [], []
    for model in families:
        runs = sel.runs[sel.runs.get("tags.model", pd.Series(index=sel.runs.index, dtype=object)) == model]
        if not len(runs):
            absent.append(f"no finished {model} run at scale {sel.scale}")
            continue
        run = runs.iloc[0]
        best = Path(tracker.settings.checkpoint_dir) / str(run["tags.train_hash"]) / "best.pt"
        if not best.is_file():
            absent.append(f"checkpoint {best} of {run['tags.variant']}/seed{run['tags.seed']} is missing")
            continue
        picks.append((run, best))
    if absent:
        raise FigureSkipped("; ".join(absent))
    out = []
    for run, best in picks:
        try:
            payload = load_checkpoint(best)
            spec = run_spec(tracker, run, payload)
            model = build_model(spec)
            model.load_state_dict(payload["model"])
        except (ValueError, KeyError, RuntimeError, OSError) as err:  # foreign, truncated or stale
            raise FigureSkipped(f"cannot load checkpoint {best}: {type(err).__name__}: {err}") from None
        out.append((str(run.get("tags.label") or run["tags.variant"]), model.eval(), spec))
    return out, sel.scale


def predict_subsampled(model, spec: RunSpec, factor: int = 8):
    """The first test sequence of the run's data source subsampled `factor` times, and the
    model's prediction (a continuous-time model is told the step: dt_scale = factor).
    Returns (ground truth, prediction), each (T, 17, 3) in mm, the predicted root set to 0
    as the evaluation does (`hummuss.protocols`)."""
    from hummuss.data import open_source
    from hummuss.evaluate import predict_sequences
    from hummuss.protocols import labels_mm, pred_mm

    seqs = open_source(spec.data).sequences("test", rate=1.0 / factor)
    if not seqs:
        raise FigureSkipped(f"data source {spec.data!r} has no test sequences")
    seq = seqs[0]
    window = int(spec.eval_config.get("rate_length", spec.frames))
    pred = predict_sequences(model, [seq], window, flip=bool(spec.eval_config.get("flip", True)),
                             batch_size=8, dt_scale=float(factor))[0]
    mmpu = seq.extras["mm_per_unit"]
    return labels_mm(seq), pred_mm(pred, mmpu)

"""Evaluate a checkpoint trained elsewhere under the suite's protocol, and log it.

    hummuss-suite evaluate --checkpoint best_epoch.bin --format motionbert --data h36m:FILE.pkl

`--format motionbert` reads the original repository's `.bin` files (`model_pos`,
`module.` prefix); `--format hummuss` reads this suite's trainer checkpoints. The run is
logged into the `motionbert-baseline` experiment with scale `external` and the variant
the checkpoint's size matches (`lite` for 256-d, `full` for 512-d MotionBERT), so the
report shows it beside trained runs (`hummuss-suite report --scale external`).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict
from pathlib import Path

import torch

from hummuss.checkpoint import load_checkpoint
from hummuss.data import open_source
from hummuss.evaluate import EvalConfig, evaluate
from hummuss.zoo import family_of, model_from_config
from suite.runspec import stable_hash
from suite.tracking import Tracker, git_commit

FORMATS = ("hummuss", "motionbert")
STUDY = "motionbert-baseline"


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def load_any(path: Path, fmt: str):
    """(model, family, variant) from a checkpoint file of format `fmt`."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown checkpoint format {fmt!r}; known: {', '.join(FORMATS)}")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if fmt == "motionbert":
        from hummuss.baselines.motionbert import load_motionbert_checkpoint

        model = load_motionbert_checkpoint(str(path))
        variant = "full" if model.config.dim_feat == 512 else "lite"
        return model, "motionbert", variant
    payload = load_checkpoint(path)
    try:
        family = family_of(payload.get("model_class"))
    except ValueError as err:
        raise ValueError(f"checkpoint {path} holds a {payload.get('model_class')!r}; {str(err).split('; ')[-1]}") from None
    model = model_from_config(family, payload["model_config"])
    model.load_state_dict(payload["model"])
    return model, family, "external"


def evaluate_checkpoint(path: str | Path, fmt: str, data: str, tracker: Tracker,
                        eval_config: EvalConfig | None = None, say=print) -> tuple[str, object]:
    """Evaluate and log; returns (run id, evaluation table)."""
    path = Path(path)
    model, family, variant = load_any(path, fmt)
    source = open_source(data)
    cfg = eval_config or EvalConfig(lengths=(243,))
    cfg = EvalConfig(**{**asdict(cfg), "lengths": tuple(min(F, getattr(model.config, "maxlen", F))
                                                        for F in cfg.lengths)})
    digest = file_digest(path)
    exp = tracker.experiment_id(STUDY)
    parent = tracker.create_run(exp, f"evaluate {path.name} {time.strftime('%Y-%m-%d %H:%M:%S')}",
                                {"kind": "parent", "study": STUDY, "scale": "external", "git_commit": git_commit()})
    tags = {"study": STUDY, "variant": variant, "seed": "0", "scale": "external", "model": family,
            "label": f"{path.name} ({fmt})", "checkpoint": str(path), "checkpoint_digest": digest,
            "config_hash": stable_hash({"checkpoint": digest, "data": data, "eval": asdict(cfg)}),
            "git_commit": git_commit(), "torch": torch.__version__}
    run_id = tracker.create_run(exp, f"{variant}/external", tags, parent)
    try:
        tracker.log_params(run_id, {**{f"model.{k}": v for k, v in model.config.to_dict().items()},
                                    **{f"eval.{k}": v for k, v in asdict(cfg).items()},
                                    "data.spec": data, "model.family": family, "checkpoint.format": fmt})
        say(f"evaluating {path} ({family}, {sum(p.numel() for p in model.parameters()):,} parameters) on {data}")
        table = evaluate(model, source, cfg)
        tracker.log_evaluation(run_id, table, cfg.lengths[0])
        tracker.set_status(run_id, "FINISHED")
        tracker.set_status(parent, "FINISHED")
    except BaseException:
        tracker.set_status(run_id, "FAILED")
        tracker.set_status(parent, "FAILED")
        raise
    return run_id, table

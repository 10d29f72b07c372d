"""Evaluate a checkpoint trained elsewhere under the suite's protocol, and log it.

    hummuss-suite evaluate --checkpoint best_epoch.bin --format motionbert --data h36m:FILE.pkl

`--format motionbert` reads the original repository's `.bin` files (`model_pos`,
`module.` prefix); `--format hummuss` reads this suite's trainer checkpoints. The run is
logged into the `motionbert-baseline` experiment with scale `external` and the variant
the checkpoint's size matches (`lite` for 256-d, `full` for 512-d MotionBERT), so the
report shows it beside trained runs (`hummuss-suite report --scale external`).

`--checkpoint` also takes a model logged to MLflow (`log_checkpoints: true`):
`runs:/<run_id>/model` or a registered `models:/<name>/<version>`, loaded with
`mlflow.pytorch.load_model` from the configured store (`--format` does not apply).
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
from suite.settings import redact
from suite.tracking import Tracker, git_commit

FORMATS = ("hummuss", "motionbert")
STUDY = "motionbert-baseline"
MODEL_URI_SCHEMES = ("runs:/", "models:/")


def is_model_uri(text: str | Path) -> bool:
    """`runs:/...` or `models:/...`: a model in the MLflow store, not a file."""
    return str(text).startswith(MODEL_URI_SCHEMES)


def load_logged(uri: str, tracker: Tracker):
    """(model, family, variant) of a model logged to MLflow; ValueError naming the URI."""
    try:
        model = tracker.load_model(uri)
    except Exception as err:  # MlflowException (no such run, model or version), OSError
        raise ValueError(f"cannot load the model {uri} from {redact(tracker.settings.tracking_uri)}: "
                         f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    try:
        family = family_of(type(model).__name__)
    except ValueError as err:
        raise ValueError(f"{uri} holds a {type(model).__name__!r}; {str(err).split('; ')[-1]}") from None
    return model, family, "external"


def state_digest(model: torch.nn.Module) -> str:
    """16 hex digits of sha256 over the model's weights (a logged model has no file)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


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
    try:
        model = model_from_config(family, payload["model_config"])
        model.load_state_dict(payload["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:  # config and weights disagree
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else (lines or [""])[0]
        raise ValueError(f"checkpoint {path}: its saved model config does not match its weights "
                         f"({type(err).__name__}: {detail[:300]})") from None
    return model, family, "external"


def evaluate_checkpoint(path: str | Path, fmt: str, data: str, tracker: Tracker,
                        eval_config: EvalConfig | None = None, say=print, loaded=None) -> tuple[str, object]:
    """Evaluate and log; returns (run id, evaluation table). `path`: a file or a model URI
    (`runs:/`, `models:/`); `loaded`: its (model, family, variant) when the caller has them."""
    logged = is_model_uri(path)
    if logged:
        (model, family, variant), label, name = loaded or load_logged(str(path), tracker), str(path), str(path)
        fmt = "mlflow"
    else:
        path = Path(path)
        (model, family, variant), label, name = loaded or load_any(path, fmt), f"{path.name} ({fmt})", path.name
    source = open_source(data)
    cfg = eval_config or EvalConfig(lengths=(243,))
    cfg = EvalConfig(**{**asdict(cfg), "lengths": tuple(min(F, getattr(model.config, "maxlen", F))
                                                        for F in cfg.lengths)})
    digest = state_digest(model) if logged else file_digest(path)
    exp = tracker.experiment_id(STUDY)
    parent = tracker.create_run(exp, f"evaluate {name} {time.strftime('%Y-%m-%d %H:%M:%S')}",
                                {"kind": "parent", "study": STUDY, "scale": "external", "git_commit": git_commit()})
    tags = {"study": STUDY, "variant": variant, "seed": "0", "scale": "external", "model": family,
            "label": label, "checkpoint": str(path), "checkpoint_digest": digest,
            "config_hash": stable_hash({"checkpoint": digest, "data": data, "eval": asdict(cfg)}),
            "git_commit": git_commit(), "torch": torch.__version__}
    if logged:
        tags["model_uri"] = str(path)
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

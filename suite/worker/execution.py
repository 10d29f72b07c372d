"""Execute one claimed run: train (or resume), evaluate, log to its MLflow run."""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from hummuss.checkpoint import load_checkpoint
from hummuss.evaluate import EvalConfig, evaluate, with_as_trained
from hummuss.train import DistInfo
from suite.runspec import RunSpec
from suite.tracking import Tracker, TrackingSettings, metric_name
from suite.worker.training import MlflowCallback, checkpoint_dir, log_path, train_spec


class Heartbeat:
    """Refresh the run's `heartbeat` tag in the background, so other processes can
    tell a live run from a dead one (see suite/leases.py)."""

    def __init__(self, tracker: Tracker, run_id: str, interval: float):
        self.tracker, self.run_id, self.interval = tracker, run_id, max(1.0, interval)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self):
        while not self._stop.wait(self.interval):
            with contextlib.suppress(Exception):  # a missed beat is not an error
                self.tracker.set_tags(self.run_id, {"heartbeat": f"{time.time():.0f}"})

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()


def execute(spec: RunSpec, run_id: str, settings: TrackingSettings) -> None:
    """Train and evaluate `spec` into MLflow run `run_id` (already claimed)."""
    info = DistInfo.from_env()
    tracker = Tracker(settings, check=False) if info.main else None
    logfile = log_path(settings, spec)
    logfile.parent.mkdir(parents=True, exist_ok=True)
    handle = open(logfile, "a", buffering=1) if info.main else None

    def log(msg: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {spec.study}/{spec.name}: {msg}"
        print(line, file=sys.stderr, flush=True)
        if handle:
            handle.write(line + "\n")

    try:
        if tracker is None:  # ranks other than 0 only train
            train_spec(spec, settings, log=lambda m: None)
            return
        tracker.set_status(run_id, "RUNNING")
        tracker.set_tags(run_id, {"torch": torch.__version__, "device": _device_name(),
                                  "log": str(logfile), "heartbeat": f"{time.time():.0f}"})
        with Heartbeat(tracker, run_id, settings.claim_ttl_s / 4):
            model, source, result, train = train_spec(spec, settings, [MlflowCallback(tracker, run_id)], log)
            best = checkpoint_dir(settings, spec) / "best.pt"
            model.load_state_dict(load_checkpoint(best)["model"])
            log(f"evaluating the best epoch ({result.best_epoch}) under {spec.eval_config}")
            table = evaluate(model, source, EvalConfig(**spec.eval_config))
            log_results(tracker, run_id, spec, table, result, source, train, settings, best)
        tracker.set_status(run_id, "FINISHED")
        log("finished")
    except KeyboardInterrupt:
        log("interrupted: run marked KILLED, checkpoints kept")
        if tracker:
            tracker.set_status(run_id, "KILLED")
        raise
    except BaseException as err:
        log(f"failed: {type(err).__name__}: {err}")
        if handle:
            handle.write(traceback.format_exc())
        if tracker:
            with contextlib.suppress(Exception):
                tracker.set_tags(run_id, {"error": f"{type(err).__name__}: {err}"[:5000]})
            tracker.set_status(run_id, "FAILED")
        raise
    finally:
        if handle:
            handle.close()
            if tracker:
                with contextlib.suppress(Exception):
                    tracker.log_artifact(run_id, logfile)


def execute_file(spec_file: str | Path, run_id: str, settings: TrackingSettings) -> int:
    """A child process's run (`python -m suite.worker` or `suite.launch`): the spec of a
    JSON file executed into `run_id`; the exit code (0, 1: failed, 130: interrupted)."""
    spec = RunSpec.from_dict(json.loads(Path(spec_file).read_text()))
    try:
        execute(spec, run_id, settings)
    except KeyboardInterrupt:
        return 130
    except Exception:  # execute() logged it and marked the run FAILED
        return 1
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


def log_results(tracker, run_id, spec, table, result, source, train, settings, best) -> None:
    final = {metric_name(r.metric, r.condition): r.value for r in with_as_trained(table, spec.frames).itertuples()}
    final["best_epoch"] = result.best_epoch
    final["best_val_mpjpe"] = result.best_val_mpjpe
    tracker.log_metrics(run_id, final, step=result.epochs_run)
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "evaluation.csv"
        table.to_csv(csv, index=False)
        tracker.log_artifact(run_id, csv)
    tracker.log_dict(run_id, spec.to_dict(), "config.json")
    digest = _digest(train.inputs, train.labels)
    tracker.log_dataset(run_id, name=source.name, digest=digest, source=spec.data, context="training",
                        sample=np.asarray(train.inputs[:1], np.float32).reshape(1, -1))
    if settings.log_checkpoints:
        tracker.log_artifact(run_id, best, "checkpoint")


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def _device_name() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"

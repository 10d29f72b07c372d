"""Execute one claimed run: train (or resume), evaluate, log to its MLflow run."""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from hummuss.checkpoint import load_checkpoint
from hummuss.distributed import DistInfo
from hummuss.evaluate import EvalConfig, evaluate
from hummuss.mkl_vendor import code_path
from suite.leases import HOLDER_TAG, this_holder
from suite.runspec import RunSpec
from suite.tracking import BEST_EPOCH, BEST_VAL_MPJPE, Tracker, TrackingSettings
from suite.worker.datasets import evaluation_dataset, training_dataset
from suite.worker.status import RunStatus, StatusCallback, status_path, write_json
from suite.worker.training import TRAINED_BY, MlflowCallback, checkpoint_dir, log_path, train_spec


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
        self._thread.join(timeout=30)  # no beat may land after the run ends and its lease is cleared


def execute(spec: RunSpec, run_id: str, settings: TrackingSettings, echo: Callable[[str], None] | None = None) -> dict:
    """Train and evaluate `spec` into MLflow run `run_id` (already claimed); its final
    status file (see suite/worker/status.py): `trained_epochs`, `trained_by`, ...
    `echo`: where its log lines go besides the log file (default: stderr)."""
    info = DistInfo.from_env()
    tracker = Tracker(settings, check=False) if info.main else None
    logfile = log_path(settings, spec)
    logfile.parent.mkdir(parents=True, exist_ok=True)
    handle = open(logfile, "a", buffering=1) if info.main else None
    status = RunStatus(status_path(settings.checkpoint_dir, run_id) if info.main else None)
    echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))

    def log(msg: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {spec.study}/{spec.name}: {msg}"
        echo(line)
        if handle:
            handle.write(line + "\n")

    try:
        if tracker is None:  # ranks other than 0 only train
            train_spec(spec, settings, log=lambda m: None)
            return {}
        status.update(phase="starting", run=f"{spec.study}/{spec.name}", run_id=run_id, log=str(logfile))
        tracker.set_status(run_id, "RUNNING")
        # the log itself is uploaded as an artifact when the run ends: no local path in a tag
        tracker.set_tags(run_id, {"torch": torch.__version__, "device": _device_name(), "mkl": code_path(),
                                  "heartbeat": f"{time.time():.0f}", HOLDER_TAG: this_holder()})
        with Heartbeat(tracker, run_id, settings.claim_ttl_s / 4), tracker.system_metrics(run_id):
            trained = train_spec(spec, settings, [MlflowCallback(tracker, run_id), StatusCallback(status)], log,
                                 trainer={"run_id": run_id, "run": f"{spec.study}/{spec.name}"},
                                 on_wait=lambda: status.update(phase="waiting"))
            model, source, result, train = trained.model, trained.source, trained.result, trained.train
            trained_by = trained.trained_by or infer_trainer(tracker, spec, run_id, settings, log)
            tracker.set_tags(run_id, {"trained_by": trained_by["run_id"]})
            status.update(phase="evaluating", trained_epochs=trained.epochs_trained, trained_by=trained_by)
            if trained_by["run_id"] != run_id:
                log(f"evaluating the checkpoint trained by {trained_by['run']} (run {trained_by['run_id']})")
            best = checkpoint_dir(settings, spec) / "best.pt"
            model.load_state_dict(load_checkpoint(best)["model"])
            log(f"evaluating the best epoch ({result.best_epoch}) under {spec.eval_config}")
            table = evaluate(model, source, EvalConfig(**spec.eval_config))
            log_results(tracker, run_id, spec, table, result, source, train, settings, model, trained.val)
        tracker.set_status(run_id, "FINISHED")
        status.update(phase="finished")
        log("finished")
        return dict(status.fields)
    except KeyboardInterrupt:
        log("interrupted: run marked KILLED, checkpoints kept")
        status.update(phase="killed")
        if tracker:
            tracker.set_status(run_id, "KILLED")
        raise
    except BaseException as err:
        log(f"failed: {type(err).__name__}: {err}")
        status.update(phase="failed")
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


def infer_trainer(tracker: Tracker, spec: RunSpec, run_id: str, settings: TrackingSettings, log) -> dict:
    """Who trained a checkpoint that has no trained_by.json (written before there was one):
    the earliest finished run of the same training config in the store that says it
    trained it, else the earliest finished one, else this run. Written beside the
    checkpoint, so later runs read it."""
    runs = [r for r in tracker.runs_with_tag("train_hash", spec.train_hash)
            if r.info.status == "FINISHED" and r.info.run_id != run_id]
    own = [r for r in runs if r.data.tags.get("trained_by") == r.info.run_id]
    pick = (own or runs or [None])[0]
    if pick is None:
        found = {"run_id": run_id, "run": f"{spec.study}/{spec.name}"}
    else:
        tags = pick.data.tags
        found = {"run_id": pick.info.run_id, "run": f"{tags.get('study')}/{tags.get('variant')}/seed{tags.get('seed')}"}
    log(f"no {TRAINED_BY} beside the checkpoint: inferred from the store that {found['run']} trained it")
    with contextlib.suppress(OSError):
        write_json(checkpoint_dir(settings, spec) / TRAINED_BY, {**found, "inferred": True, "train_hash": spec.train_hash})
    return found


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


def log_results(tracker, run_id, spec, table, result, source, train, settings, model, val=None) -> None:
    tracker.log_evaluation(run_id, table, spec.frames, step=result.epochs_run,
                           extra={BEST_EPOCH: result.best_epoch, BEST_VAL_MPJPE: result.best_val_mpjpe})
    tracker.log_dict(run_id, spec.to_dict(), "config.json")
    tracker.log_datasets(run_id, [training_dataset(spec, source, train, val), evaluation_dataset(spec, source)])
    if settings.log_checkpoints:  # the best epoch's model (loaded before evaluating), loadable by MLflow
        example = np.ascontiguousarray(train.inputs[:1], dtype=np.float32)  # (1, F, 17, 3): the study's clip shape
        uri = tracker.log_model(run_id, model, example)
        tracker.set_tags(run_id, {"model_uri": uri})


def _device_name() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"

"""Execute one claimed run: train (or resume), evaluate, log to its MLflow run.

Runs in the runner's process (`--jobs 1`), in a child process (`--jobs N`), or under
torchrun (`python -m suite.worker` on every rank; rank 0 talks to MLflow and evaluates).

    python -m suite.worker --spec SPEC.json --run-id RUN_ID
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from hummuss.checkpoint import load_checkpoint
from hummuss.data import open_source
from hummuss.evaluate import EvalConfig, evaluate, with_as_trained
from hummuss.train import Callback, DistInfo, TrainConfig, Trainer
from hummuss.zoo import model_from_config
from suite.runspec import RunSpec
from suite.tracking import Tracker, TrackingSettings, load_settings, metric_name


class MlflowCallback(Callback):
    """Per-epoch metrics into the run, each epoch (step) logged exactly once, even
    across resumes: epochs already in the store are skipped, epochs the checkpoint
    holds but the store lacks (killed between the two writes) are filled in."""

    def __init__(self, tracker: Tracker, run_id: str):
        self.tracker, self.run_id = tracker, run_id
        self.logged: set[int] = set()

    def on_train_start(self, trainer) -> None:
        self.logged = self.tracker.logged_steps(self.run_id, "train/loss")
        for h in trainer.history:
            self._log(int(h["epoch"]), {k: v for k, v in h.items() if k != "epoch"})

    def on_epoch_end(self, epoch, metrics):
        self._log(epoch, metrics)
        return False

    def _log(self, epoch: int, metrics: dict) -> None:
        if epoch in self.logged:
            return
        self.tracker.log_metrics(self.run_id, metrics, step=epoch)
        self.logged.add(epoch)


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


@contextlib.contextmanager
def file_lock(path: Path):
    """An exclusive lock on `path` (one training per checkpoint folder at a time)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_model(spec: RunSpec):
    """The freshly initialised model of `spec`, seeded by its training seed."""
    torch.manual_seed(spec.train_config["seed"])
    return model_from_config(spec.model, spec.model_config)


def checkpoint_dir(settings: TrackingSettings, spec: RunSpec) -> Path:
    return Path(settings.checkpoint_dir) / spec.train_hash


def log_path(settings: TrackingSettings, spec: RunSpec) -> Path:
    return Path(settings.checkpoint_dir) / "logs" / spec.study / f"{spec.variant}-seed{spec.seed}.log"


def train_spec(spec: RunSpec, settings: TrackingSettings, callbacks=(), log=print):
    """Train (or resume, or find finished) the weights of `spec`; returns (model, source)."""
    if spec.init_from is not None:  # a stage: its checkpoint must exist first
        init_dir = checkpoint_dir(settings, spec.init_from)
        if not (init_dir / "best.pt").exists():
            raise RuntimeError(f"{spec.study}/{spec.variant} starts from {spec.init_from.study}/"
                               f"{spec.init_from.variant}, whose checkpoint {init_dir / 'best.pt'} does not exist")
    source = open_source(spec.data)
    model = build_model(spec)
    out = checkpoint_dir(settings, spec)
    with file_lock(out / ".lock"):
        if spec.init_from is not None and not (out / "last.pt").exists():
            model.load_state_dict(load_checkpoint(checkpoint_dir(settings, spec.init_from) / "best.pt")["model"])
            log(f"initialised from {spec.init_from.study}/{spec.init_from.variant}")
        train = source.clips("train", spec.frames, spec.stride)
        val = source.clips("test", spec.frames, spec.frames)
        trainer = Trainer(model, train, val, TrainConfig.from_dict(spec.train_config), out,
                          callbacks=list(callbacks), log=log)
        result = trainer.fit()
    return model, source, result, train


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
    import hashlib

    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def _device_name() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def _sigterm_to_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m suite.worker", description="Execute one claimed run.")
    p.add_argument("--spec", required=True, help="run spec JSON file")
    p.add_argument("--run-id", required=True, help="the MLflow run to log into")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm_to_interrupt)
    threads = os.environ.get("HUMMUSS_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    spec = RunSpec.from_dict(json.loads(Path(args.spec).read_text()))
    try:
        execute(spec, args.run_id, load_settings())
    except KeyboardInterrupt:
        return 130
    except Exception:
        return 1
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Train a run spec: the one training path of runs and sweep trials.

    trained = train_spec(spec, settings, callbacks=[MlflowCallback(tracker, run_id)])
    trained.model, trained.result.best_epoch

Checkpoints go to `<checkpoint_dir>/<train_hash>/` (or the folder given, e.g. a trial's),
so a killed training resumes and identical trainings are never repeated; one process
trains a folder at a time (a file lock).
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

import torch

from hummuss.checkpoint import load_checkpoint
from hummuss.data import open_source
from hummuss.train import Callback, TrainConfig, Trainer, TrainResult
from hummuss.zoo import model_from_config
from suite.runspec import RunSpec
from suite.tracking import Tracker, TrackingSettings


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


class Trained(NamedTuple):
    model: torch.nn.Module  # with the last epoch's weights
    source: Any  # the data source (hummuss.data.MotionSource)
    result: TrainResult
    train: Any  # the training clips


def train_spec(spec: RunSpec, settings: TrackingSettings, callbacks: Iterable[Callback] = (),
               log: Callable[[str], None] = print, out: Path | None = None) -> Trained:
    """Train (or resume, or find finished) the weights of `spec` in `out` (default: its
    checkpoint folder, `<checkpoint_dir>/<train_hash>/`)."""
    if spec.init_from is not None:  # a stage: its checkpoint must exist first
        init_dir = checkpoint_dir(settings, spec.init_from)
        if not (init_dir / "best.pt").exists():
            raise RuntimeError(f"{spec.study}/{spec.variant} starts from {spec.init_from.study}/"
                               f"{spec.init_from.variant}, whose checkpoint {init_dir / 'best.pt'} does not exist")
    source = open_source(spec.data)
    model = build_model(spec)
    out = checkpoint_dir(settings, spec) if out is None else Path(out)
    with file_lock(out / ".lock"):
        if spec.init_from is not None and not (out / "last.pt").exists():
            model.load_state_dict(load_checkpoint(checkpoint_dir(settings, spec.init_from) / "best.pt")["model"])
            log(f"initialised from {spec.init_from.study}/{spec.init_from.variant}")
        train = source.clips("train", spec.frames, spec.stride)
        val = source.clips("test", spec.frames, spec.frames)
        trainer = Trainer(model, train, val, TrainConfig.from_dict(spec.train_config), out,
                          callbacks=list(callbacks), log=log)
        result = trainer.fit()
    return Trained(model, source, result, train)

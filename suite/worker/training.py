"""Train a run spec: the one training path of runs and sweep trials.

    trained = train_spec(spec, settings, callbacks=[MlflowCallback(tracker, run_id)])
    trained.model, trained.result.best_epoch

Checkpoints go to `<checkpoint_dir>/<train_hash>/` (or the folder given, e.g. a trial's),
so a killed training resumes and identical trainings are never repeated: one process
trains a folder at a time (a file lock; a second run of the same training waits for it,
then finds the training done and only evaluates). The run that trained a folder is
written beside its checkpoints, `trained_by.json` ({"run_id", "run", "epochs", ...}), so
every later run sharing the training can name it (tag `trained_by`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

import torch

from hummuss.checkpoint import load_checkpoint
from hummuss.data import open_source
from hummuss.distributed import DistInfo
from hummuss.train import Callback, TrainConfig, Trainer, TrainResult
from hummuss.zoo import model_from_config
from suite.runspec import RunSpec
from suite.tracking import TRAIN_LOSS, Tracker, TrackingSettings, epoch_metric_names
from suite.worker.status import write_json

TRAINED_BY = "trained_by.json"  # beside the checkpoints: the run that trained them
LOGGED_BY = "logged_by.json"  # beside the checkpoints: the run that logged each epoch's metrics


class MlflowCallback(Callback):
    """Per-epoch metrics into the run, each epoch (step) logged exactly once in the store:
    by the run that trained it. Beside the checkpoints, `logged_by.json` ({epoch: run id})
    records which run logged each epoch, written before the metrics. On a resume, epochs the
    checkpoint holds but this run lacks (killed between the two writes) are filled in when
    they are this run's, or nobody's and the training is not another run's (`trained_by.json`).
    So a run that resumes a training another run began and was killed in shows only the
    epochs it trained (the earlier ones stay on the run that trained them), and a run that
    finds the training finished by another run gets none of its curves: it only evaluates,
    and its tag `trained_by` names the run that has them."""

    def __init__(self, tracker: Tracker, run_id: str):
        self.tracker, self.run_id = tracker, run_id
        self.logged: set[int] = set()
        self.out: Path | None = None
        self.owners: dict[int, str] = {}  # logged_by.json as this process last wrote it (one training per folder)

    def on_train_start(self, trainer) -> None:
        self.out = Path(trainer.out_dir)
        self.logged = self.tracker.logged_steps(self.run_id, TRAIN_LOSS)
        holder = read_trained_by(self.out)
        others = holder is not None and holder["run_id"] != self.run_id
        self.owners = read_logged_by(self.out)
        for h in trainer.history:
            epoch = int(h["epoch"])
            owner = self.owners.get(epoch)
            if owner == self.run_id or (owner is None and not others):
                self._log(epoch, {k: v for k, v in h.items() if k != "epoch"})

    def on_epoch_end(self, epoch, metrics):
        self._log(epoch, metrics)
        return False

    def _log(self, epoch: int, metrics: dict) -> None:
        if epoch in self.logged:
            return
        if self.out is not None and self.owners.get(epoch) != self.run_id:
            self.owners[epoch] = self.run_id  # the file lock keeps other trainings out of this folder
            write_json(self.out / LOGGED_BY, {str(e): r for e, r in self.owners.items()})
        self.tracker.log_metrics(self.run_id, epoch_metric_names(metrics), step=epoch)
        self.logged.add(epoch)


def read_logged_by(folder: Path) -> dict[int, str]:
    """epoch -> the id of the run that logged its metrics (`logged_by.json`); {} when none."""
    try:
        found = json.loads((Path(folder) / LOGGED_BY).read_text())
        return {int(e): str(r) for e, r in found.items()}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


@contextlib.contextmanager
def file_lock(path: Path, on_wait: Callable[[], None] | None = None):
    """An exclusive lock on `path` (one training per checkpoint folder at a time);
    `on_wait()` is called first when another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
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


def read_trained_by(folder: Path) -> dict | None:
    """Who trained the checkpoints in `folder` ({"run_id", "run", ...}); None when unknown."""
    try:
        found = json.loads((Path(folder) / TRAINED_BY).read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) and found.get("run_id") else None


def finished_training(settings: TrackingSettings, spec: RunSpec, elsewhere: Iterable[Path] = ()) -> Path | None:
    """A folder holding a complete training of `spec`'s training configuration (its
    `train_hash`): the runs' shared checkpoint folder, else the first of `elsewhere` (e.g.
    a sweep's trial folders) whose `trained_by.json` says so; None when there is none."""
    for folder in (checkpoint_dir(settings, spec), *elsewhere):
        holder = read_trained_by(folder)
        if (holder is not None and holder.get("complete", True) and (Path(folder) / "best.pt").exists()
                and holder.get("train_hash", spec.train_hash) == spec.train_hash):
            return Path(folder)
    return None


class Trained(NamedTuple):
    model: torch.nn.Module  # with the last epoch's weights
    source: Any  # the data source (hummuss.data.MotionSource)
    result: TrainResult
    train: Any  # the training clips
    epochs_trained: int = 0  # epochs this call trained (0: the training was done already)
    trained_by: dict | None = None  # the run that trained the checkpoints (trained_by.json)
    val: Any = None  # the validation clips (held-out training sequences), None without


class _EpochCounter(Callback):
    def __init__(self):
        self.start, self.epochs = 0, 0

    def on_train_start(self, trainer) -> None:
        self.start = trainer.epoch

    def on_epoch_end(self, epoch, metrics):
        self.epochs = epoch - self.start
        return False


def train_spec(spec: RunSpec, settings: TrackingSettings, callbacks: Iterable[Callback] = (),
               log: Callable[[str], None] = print, out: Path | None = None, trainer: dict | None = None,
               on_wait: Callable[[], None] | None = None) -> Trained:
    """Train (or resume, or find finished) the weights of `spec` in `out` (default: its
    checkpoint folder, `<checkpoint_dir>/<train_hash>/`).

    `trainer` ({"run_id": ..., "run": ...}): who trains; written to `trained_by.json` in
    `out` when this call trains an epoch. When another process trains the folder, this
    one waits for it (`on_wait()` is called first) and then finds the training done.
    Under torchrun only rank 0 takes the folder's lock (the other ranks meet it in the
    process group)."""
    if spec.init_from is not None:  # a stage: its checkpoint must exist first
        init_dir = checkpoint_dir(settings, spec.init_from)
        if not (init_dir / "best.pt").exists():
            raise RuntimeError(f"{spec.study}/{spec.variant} starts from {spec.init_from.study}/"
                               f"{spec.init_from.variant}, whose checkpoint {init_dir / 'best.pt'} does not exist")
    source = open_source(spec.data)
    model = build_model(spec)
    out = checkpoint_dir(settings, spec) if out is None else Path(out)
    counter = _EpochCounter()

    def waiting() -> None:
        holder = read_trained_by(out)
        log(f"waiting: another process is training the checkpoint {out}" if holder is None else
            f"waiting: another process is training the checkpoint {out} (trained before by {holder['run']})")
        if on_wait is not None:
            on_wait()

    lock = file_lock(out / ".lock", waiting) if DistInfo.from_env().main else contextlib.nullcontext()
    with lock:
        if spec.init_from is not None and not (out / "last.pt").exists():
            model.load_state_dict(load_checkpoint(checkpoint_dir(settings, spec.init_from) / "best.pt")["model"])
            log(f"initialised from {spec.init_from.study}/{spec.init_from.variant}")
        train, val = source.training_clips(spec.frames, spec.stride)  # validation: held-out training sequences
        result = Trainer(model, train, val, TrainConfig.from_dict(spec.train_config), out,
                         callbacks=[counter, *callbacks], log=log).fit()
        if counter.epochs and trainer is not None:
            complete = not result.stopped_early and result.epochs_run >= TrainConfig.from_dict(spec.train_config).epochs
            write_json(out / TRAINED_BY, {**trainer, "epochs": f"{counter.start + 1}-{result.epochs_run}",
                                          "train_hash": spec.train_hash, "complete": complete,
                                          "finished": time.time()})
        trained_by = read_trained_by(out)
    return Trained(model, source, result, train, counter.epochs, trained_by, val)

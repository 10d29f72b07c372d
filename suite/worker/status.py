"""What a running run is doing, in a small JSON file its worker rewrites at every step, so
the runner shows progress without asking the tracking store:

    <checkpoint_dir>/status/<run_id>.json
    {"phase": "training", "epoch": 3, "epochs": 10, "val_mpjpe": 45.2, "trained_epochs": 3,
     "trained_by": {"run_id": "...", "run": "<study>/<variant>/seed<n>"}, "updated": 1767225600.0}

phase: starting | waiting (another run trains its checkpoint) | training | evaluating |
finished | failed | killed. `trained_epochs` counts the epochs this run trained itself
(0: it only evaluated a checkpoint that was there); `trained_by` names the run that
trained its checkpoint (its MLflow tag `trained_by`). Written atomically (a reader never
sees half a file); a run under torchrun writes it from rank 0 only.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

from hummuss.train import Callback


def status_path(checkpoint_dir: str | Path, run_id: str) -> Path:
    return Path(checkpoint_dir) / "status" / f"{run_id}.json"


def read_status(path: Path) -> dict:
    """The status a worker last wrote; {} when there is none (yet)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def write_json(path: Path, payload: dict) -> None:
    """Write `payload` to `path` atomically (a temporary file renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, default=str))
    os.replace(tmp, path)


class RunStatus:
    """The status file of one run (`path=None`: a rank that writes none)."""

    def __init__(self, path: Path | None):
        self.path, self.fields = path, {}

    def update(self, **fields) -> None:
        if self.path is None:
            return
        self.fields.update(fields, updated=time.time())
        with contextlib.suppress(OSError):  # progress is a courtesy: never fail a run for it
            write_json(self.path, self.fields)


class StatusCallback(Callback):
    """Epoch, epochs and validation MPJPE into the status file after every epoch."""

    def __init__(self, status: RunStatus):
        self.status, self.start = status, 0

    def on_train_start(self, trainer) -> None:
        self.start = trainer.epoch
        last = trainer.history[-1] if trainer.history else {}
        phase = "training" if trainer.epoch < trainer.config.epochs else "evaluating"
        self.status.update(phase=phase, epoch=trainer.epoch, epochs=trainer.config.epochs,
                           val_mpjpe=last.get("val/mpjpe"), trained_epochs=0)

    def on_epoch_end(self, epoch, metrics):
        self.status.update(epoch=epoch, val_mpjpe=metrics.get("val/mpjpe"), trained_epochs=epoch - self.start)
        return False

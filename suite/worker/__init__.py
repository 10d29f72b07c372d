"""Execute one claimed run: train (or resume), evaluate, log to its MLflow run.

Runs in the runner's process (`--jobs 1`), in a child process (`--jobs N`), or under
torchrun (`python -m suite.worker` on every rank; rank 0 talks to MLflow and evaluates).

    python -m suite.worker --spec SPEC.json --run-id RUN_ID

suite/worker/training.py trains a spec (`train_spec`, also the path of every sweep
trial) and records who trained a checkpoint (`trained_by.json`); suite/worker/execution.py
executes a claimed run around it (heartbeat, evaluation, final metrics, artifacts, tag
`trained_by`); suite/worker/status.py is the small status file a run rewrites at every
epoch (the runner's progress display reads it); suite/worker/floors.py executes a floor
run (a reference floor fitted in closed form and evaluated).
"""

from suite.worker.execution import Heartbeat, execute, execute_file, infer_trainer, log_results
from suite.worker.floors import execute_floor, headline
from suite.worker.status import RunStatus, StatusCallback, read_status, status_path
from suite.worker.training import (
    TRAINED_BY,
    MlflowCallback,
    Trained,
    build_model,
    checkpoint_dir,
    file_lock,
    finished_training,
    log_path,
    read_trained_by,
    train_spec,
)

__all__ = ["TRAINED_BY", "Heartbeat", "MlflowCallback", "RunStatus", "StatusCallback", "Trained", "build_model",
           "checkpoint_dir", "execute", "execute_file", "execute_floor", "file_lock", "finished_training",
           "headline", "infer_trainer",
           "log_path", "log_results", "read_status", "read_trained_by", "status_path", "train_spec"]

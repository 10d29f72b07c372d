"""Execute one claimed run: train (or resume), evaluate, log to its MLflow run.

Runs in the runner's process (`--jobs 1`), in a child process (`--jobs N`), or under
torchrun (`python -m suite.worker` on every rank; rank 0 talks to MLflow and evaluates).

    python -m suite.worker --spec SPEC.json --run-id RUN_ID

suite/worker/training.py trains a spec (`train_spec`, also the path of every sweep
trial); suite/worker/execution.py executes a claimed run around it (heartbeat,
evaluation, final metrics, artifacts).
"""

from suite.worker.execution import Heartbeat, execute, execute_file, log_results
from suite.worker.training import (
    MlflowCallback,
    Trained,
    build_model,
    checkpoint_dir,
    file_lock,
    log_path,
    train_spec,
)

__all__ = ["Heartbeat", "MlflowCallback", "Trained", "build_model", "checkpoint_dir", "execute", "execute_file",
           "file_lock", "log_path", "log_results", "train_spec"]

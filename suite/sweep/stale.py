"""Dead workers: their trials are failed and retried, on any storage.

Each trial records its worker (`worker` user attribute: host, pid, process start, time);
`recover_stale` fails a RUNNING trial whose process is gone (same host) or that runs
longer than the stale-after limit, and re-enqueues its parameters with `retry_of`/
`retries` attributes. RDB heartbeats catch dead workers on other machines
(`StaleTrialCallback`). Exactly one process recovers a trial: the storage refuses to
finish a finished trial twice.
"""

from __future__ import annotations

import contextlib
import copy
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from suite.processes import proc_stat, process_alive
from suite.sweep.config import SweepConfig
from suite.sweep.storage import StorageSpec, open_storage, quiet_experimental
from suite.tracking import Tracker, TrackingSettings

VOLATILE_ATTRS = ("worker", "mlflow_run_id")  # trial attributes a retry must not inherit


def worker_identity(number: int) -> dict[str, Any]:
    """Who runs trial `number`: recorded as its `worker` user attribute."""
    stat = proc_stat(os.getpid())
    return {"host": socket.gethostname(), "pid": os.getpid(), "proc_start": stat[1] if stat else None,
            "trial": number, "since": time.time()}


def stale_reason(trial: FrozenTrial, stale_after_s: float, now: float | None = None) -> str | None:
    """Why a RUNNING trial is abandoned, or None while it may still be running."""
    now = time.time() if now is None else now
    worker = trial.user_attrs.get("worker") or {}
    ours = worker.get("trial") == trial.number  # not inherited from the trial it retries
    if ours and worker.get("host") == socket.gethostname() and worker.get("pid"):
        if not process_alive(int(worker["pid"]), worker.get("proc_start")):
            return f"its worker (pid {worker['pid']} on {worker['host']}) is gone"
    since = worker.get("since") if ours else (trial.datetime_start.timestamp() if trial.datetime_start else None)
    if since is not None and now - since > stale_after_s:
        return f"it has been running for {(now - since) / 3600:.1f} h (more than --stale-after {stale_after_s:.0f} s)"
    return None


def retry_attrs(number: int, user_attrs: Mapping[str, Any], reason: str) -> dict[str, Any]:
    """The user attributes of the trial that retries trial `number` (whose attributes are given)."""
    kept = {k: v for k, v in user_attrs.items() if k not in VOLATILE_ATTRS}
    return {**kept, "retry_of": number, "retries": int(user_attrs.get("retries", 0)) + 1,
            "retry_reason": reason[:500]}


def mark_run_failed(tracker: Tracker | None, trial: FrozenTrial, reason: str) -> None:
    """End the MLflow child run of an abandoned trial FAILED, naming why."""
    run_id = trial.user_attrs.get("mlflow_run_id")
    if tracker is None or not run_id:
        return
    with contextlib.suppress(Exception):  # bookkeeping must not stop the recovery
        tracker.set_tags(run_id, {"optuna.state": "FAIL", "error": f"abandoned: {reason}", "retried": "true"})
        tracker.set_status(run_id, "FAILED")


def recover_stale(study: optuna.Study, stale_after_s: float, max_retry: int, tracker: Tracker | None,
                  say: Callable[[str], None] = print) -> list[int]:
    """Fail the abandoned RUNNING trials and re-enqueue their parameters (any storage)."""
    recovered = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = stale_reason(t, stale_after_s)
        if reason is None:
            continue
        try:  # Optuna (or the storage, in a race) refuses a second FAIL: exactly one process recovers a trial
            study.tell(t.number, state=TrialState.FAIL)
        except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
            continue
        attrs = retry_attrs(t.number, t.user_attrs, reason)
        if attrs["retries"] <= max_retry:
            study.enqueue_trial(dict(t.params), user_attrs=attrs)
        mark_run_failed(tracker, t, reason)
        say(f"trial {t.number}: {reason}; marked failed and "
            + ("re-enqueued" if attrs["retries"] <= max_retry else f"not retried ({max_retry} retries used)"))
        recovered.append(t.number)
    return recovered


class StaleTrialCallback:
    """RDB storages: the trial of a worker without heartbeat is retried
    (`RetryHeartbeatStaleTrialCallback`) and its MLflow run ends FAILED."""

    def __init__(self, settings: TrackingSettings, max_retry: int):
        self.settings = settings
        with quiet_experimental():
            self.retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        reason = "its worker stopped sending heartbeats"
        clean = copy.deepcopy(trial)
        clean.user_attrs = retry_attrs(trial.number, trial.user_attrs, reason)
        with quiet_experimental():
            self.retry(study, clean)
        mark_run_failed(Tracker(self.settings, check=False), trial, reason)


def open_sweep_storage(spec: StorageSpec, cfg: SweepConfig, settings: TrackingSettings):
    """The Optuna storage of a sweep; a database gets heartbeats, and the trials of a worker
    that stops beating are retried (`StaleTrialCallback`)."""
    if spec.kind == "rdb":
        return open_storage(spec, cfg.heartbeat_s, cfg.grace_s, StaleTrialCallback(settings, cfg.max_retry))
    return open_storage(spec)

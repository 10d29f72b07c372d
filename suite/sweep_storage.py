"""Where a sweep lives and how it survives dead workers; sampler and pruner factories.

`--storage` is read as optuna-dashboard reads it:
- an SQLAlchemy URL (`sqlite:///PATH.db`, `postgresql://user@host:5432/db`,
  `mysql+pymysql://...`): an `RDBStorage` with heartbeats, so the trials of a dead
  worker are failed and retried (`RetryHeartbeatStaleTrialCallback`); a database
  server is how many machines share one sweep;
- anything else: the path of a journal file (`JournalStorage` + `JournalFileBackend`):
  several processes on one machine, no server, no heartbeats (the sweep command
  recovers the trials of dead workers itself, see suite/sweep.py).

Defaults (no `--storage`): `optuna.db` (sqlite) beside the MLflow store for one worker,
`sweeps/<sweep>.journal` there for several (sqlite is not safe for concurrent writers).

Stale trials, on any storage: each trial records its worker (`worker` user attribute:
host, pid, process start, time); `recover_stale` fails a RUNNING trial whose process is
gone (same host) or that runs longer than the stale-after limit, and re-enqueues its
parameters with `retry_of`/`retries` attributes. RDB heartbeats catch dead workers on
other machines (`StaleTrialCallback`). Exactly one process recovers a trial: the storage
refuses to finish a finished trial twice.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import json
import os
import socket
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from suite.tracking import Tracker, TrackingSettings, postgres_driver, redact

SAMPLERS = ("tpe", "gp", "random", "grid")
PRUNERS = ("median", "hyperband", "none")
_NOT_SQLALCHEMY = ("redis", "rediss", "http", "https", "grpc", "file")
_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
VOLATILE_ATTRS = ("worker", "mlflow_run_id")  # trial attributes a retry must not inherit



@contextlib.contextmanager
def quiet_experimental():
    """Heartbeats and their retry callback are still 'experimental' in Optuna 5.0: no warning each time."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


@dataclass(frozen=True)
class StorageSpec:
    """A resolved storage: `rdb` (an SQLAlchemy URL) or `journal` (an absolute file path)."""

    kind: str  # rdb | journal
    location: str

    @property
    def shown(self) -> str:
        """The location with any password hidden (for logs, tags and messages)."""
        return redact(self.location)

    @property
    def dashboard(self) -> str:
        """The argument of `optuna-dashboard` for this storage."""
        return self.location if self.kind == "journal" else redact(postgres_driver(self.location))

    @property
    def describe(self) -> str:
        return f"journal file {self.location}" if self.kind == "journal" else f"database {self.shown}"


def parse_storage(text: str) -> StorageSpec:
    """An SQLAlchemy URL, or else the path of a journal file."""
    text = text.strip()
    if not text:
        raise ValueError("empty --storage; give an SQLAlchemy URL (sqlite:///PATH.db, postgresql://...) "
                         "or the path of a journal file")
    if "://" in text:
        scheme = text.split("://", 1)[0].split("+", 1)[0].lower()
        if scheme in _NOT_SQLALCHEMY:
            raise ValueError(f"unsupported --storage {redact(text)!r}: {scheme}:// is not an SQLAlchemy URL; "
                             f"give sqlite:///PATH.db, postgresql://USER@HOST/DB, mysql+pymysql://... "
                             f"or the path of a journal file")
        return StorageSpec("rdb", text)
    path = Path(text).expanduser().resolve()
    if path.suffix.lower() in _SQLITE_SUFFIXES:
        raise ValueError(f"--storage {text!r} looks like an SQLite file, but a bare path is read as a journal "
                         f"file; pass sqlite:///{path} for SQLite")
    return StorageSpec("journal", str(path))


def store_folder(settings: TrackingSettings) -> Path:
    """The folder of the sqlite MLflow store, else of the settings file, else the working directory."""
    uri = settings.tracking_uri
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).parent
    if settings.source:
        return Path(settings.source).resolve().parent
    return Path.cwd()


def default_storages(settings: TrackingSettings, sweep: str) -> dict[str, StorageSpec]:
    """The two default storages of a sweep: {'sqlite': ..., 'journal': ...}."""
    folder = store_folder(settings)
    return {"sqlite": StorageSpec("rdb", f"sqlite:///{folder / 'optuna.db'}"),
            "journal": StorageSpec("journal", str(folder / "sweeps" / f"{sweep}.journal"))}


def sweep_exists(spec: StorageSpec, sweep: str) -> bool:
    """Whether `spec` holds an Optuna study named `sweep` (without creating anything)."""
    if spec.kind == "journal":
        if not Path(spec.location).exists():
            return False
    elif spec.location.startswith("sqlite:///"):
        if not Path(spec.location[len("sqlite:///"):]).exists():
            return False
    try:
        names = optuna.study.get_all_study_names(storage=open_storage(spec))
    except Exception:  # an unreadable or foreign file is not our sweep
        return False
    return sweep in names


def open_storage(spec: StorageSpec, heartbeat_s: float | None = None, grace_s: float | None = None,
                 stale_callback: Callable | None = None) -> optuna.storages.BaseStorage:
    """An Optuna storage for `spec`; RDB storages get heartbeats when `heartbeat_s` is given."""
    if spec.kind == "journal":
        from optuna.storages.journal import JournalFileBackend

        Path(spec.location).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(spec.location))
    if spec.location.startswith("sqlite:///"):
        Path(spec.location[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        engine: dict[str, Any] = {"connect_args": {"timeout": 60}}
    else:
        engine = {"pool_pre_ping": True}
    beats: dict[str, Any] = {}
    if heartbeat_s:
        beats = dict(heartbeat_interval=max(1, round(heartbeat_s)),
                     grace_period=max(2, round(grace_s or 4 * heartbeat_s)),
                     heartbeat_stale_trial_callback=stale_callback)
    with quiet_experimental():
        return optuna.storages.RDBStorage(postgres_driver(spec.location), engine_kwargs=engine, **beats)


# -- dead workers: their trials are failed and retried -----------------------------
def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks) of a Linux process, None where /proc is absent."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[19])


def worker_identity(number: int) -> dict[str, Any]:
    """Who runs trial `number`: recorded as its `worker` user attribute."""
    stat = _proc_stat(os.getpid())
    return {"host": socket.gethostname(), "pid": os.getpid(), "proc_start": stat[1] if stat else None,
            "trial": number, "since": time.time()}


def process_alive(pid: int, proc_start: int | None = None) -> bool:
    """Whether process `pid` of this host is alive (not a zombie, not a recycled pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    stat = _proc_stat(pid)
    if stat is None:
        return not Path("/proc").is_dir()  # exists on Linux: the process just ended
    state, start = stat
    return state not in ("Z", "X") and (proc_start is None or start == proc_start)


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
        try:  # the storage refuses a second FAIL: exactly one process recovers a trial
            study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
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


class AskLock:
    """Serialises "count the trials, then ask for one" among the workers of one host (or of
    hosts sharing checkpoint_dir), so a sweep does not overshoot `--trials`. The objective
    releases it as soon as its trial exists."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(path, "a")
        self.held = False

    def acquire(self) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_EX)
        self.held = True

    def release(self) -> None:
        if self.held:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.held = False


# -- samplers and pruners -----------------------------------------------------------------
def derive_seed(seed: int, *salt: Any) -> int:
    """A 31-bit seed from `seed` and `salt` (stable across processes and machines)."""
    digest = hashlib.sha256(json.dumps([seed, *salt], default=str).encode()).hexdigest()
    return int(digest[:8], 16) & 0x7FFFFFFF


def make_sampler(kind: str, seed: int) -> optuna.samplers.BaseSampler:
    """`tpe`, `gp`, `random` or `grid` (every combination once, in a seeded order:
    `BruteForceSampler`, which also skips the combinations already tried, e.g. the paper's)."""
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if kind == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "grid":
        return optuna.samplers.BruteForceSampler(seed=seed)
    raise ValueError(f"unknown sampler {kind!r}; known: {', '.join(SAMPLERS)}")


def make_pruner(kind: str, epochs: int) -> optuna.pruners.BasePruner:
    """`median` (after 5 trials, from epoch 1), `hyperband` (1 to `epochs` epochs) or `none`."""
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, epochs), reduction_factor=3)
    if kind == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {kind!r}; known: {', '.join(PRUNERS)}")

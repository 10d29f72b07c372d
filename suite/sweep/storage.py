"""Where a sweep lives: `--storage`, or the default beside the MLflow store.

`--storage` is read as optuna-dashboard reads it:
- an SQLAlchemy URL (`sqlite:///PATH.db`, `postgresql://user@host:5432/db`,
  `mysql+pymysql://...`): an `RDBStorage` with heartbeats, so the trials of a dead
  worker are failed and retried (`RetryHeartbeatStaleTrialCallback`, suite/sweep/stale.py);
  a database server is how many machines share one sweep;
- anything else: the path of a journal file (`JournalStorage` + `JournalFileBackend`):
  several processes on one machine, no server, no heartbeats (the sweep command
  recovers the trials of dead workers itself, see suite/sweep/stale.py).

Defaults (no `--storage`): `optuna.db` (sqlite) beside the MLflow store for one worker,
`sweeps/<sweep>.journal` there for several (sqlite is not safe for concurrent writers).
"""

from __future__ import annotations

import contextlib
import urllib.parse
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from suite.store import same_database
from suite.tracking import TrackingSettings, postgres_driver, redact

_NOT_SQLALCHEMY = ("redis", "rediss", "http", "https", "grpc", "file")
_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


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


def check_separate(spec: StorageSpec, settings: TrackingSettings) -> None:
    """Refuse an Optuna storage in the MLflow store's own database: both keep their schema
    version in a table `alembic_version`, and the second to start fails on the other's."""
    if spec.kind == "rdb" and same_database(spec.location, settings.tracking_uri):
        db = urllib.parse.urlsplit(spec.location).path.strip("/") or "(default)"
        raise ValueError(f"--storage {spec.shown} is the MLflow store's own database ({db}): MLflow and Optuna "
                         f"both keep their schema version in a table alembic_version and would clash; give the "
                         f"sweep a database of its own on the same server, e.g. CREATE DATABASE optuna; then "
                         f"--storage {redact(_with_database(spec.location, 'optuna'))}")


def _with_database(uri: str, name: str) -> str:
    return urllib.parse.urlunsplit(urllib.parse.urlsplit(uri)._replace(path=f"/{name}"))


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


def resolve_storage(storage: str | None, workers: int, settings: TrackingSettings, name: str,
                    say: Callable[[str], None] = print) -> StorageSpec:
    """`storage` (`--storage`), else the default for the number of workers (or the default
    that already holds the sweep `name`)."""
    if storage:
        spec = parse_storage(storage)
        if workers > 1 and spec.location.startswith("sqlite:"):
            say("note: several workers on one sqlite file may hit 'database is locked'; a journal file "
                "or PostgreSQL is safer")
        return spec
    defaults = default_storages(settings, name)
    preferred, other = ("journal", "sqlite") if workers > 1 else ("sqlite", "journal")
    if not sweep_exists(defaults[preferred], name) and sweep_exists(defaults[other], name):
        say(f"note: sweep {name!r} lives in {defaults[other].describe}; continuing it there")
        return defaults[other]
    return defaults[preferred]

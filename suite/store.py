"""Is the tracking store usable: reachable, writable, and safe to open for the first time
from several processes at once. No MLflow here (suite/tracking.py talks to MLflow).

    check_reachable("http://user:pw@host:5000")   # TrackingError naming the URI (password hidden)
    with first_use_lock(uri):                      # a fresh sqlite store's schema is created once
        client.search_experiments(max_results=1)
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import socket
import urllib.parse
from pathlib import Path

from suite.settings import TrackingError, redact


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI, None for other stores."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def _health(uri: str, timeout: float) -> None:
    """GET <server>/health, with the URI's user and password (if any) as basic auth rather
    than in the URL (urllib refuses `user:pw@host`)."""
    from urllib.request import Request, urlopen

    parsed = urllib.parse.urlsplit(uri)
    netloc = parsed.hostname or ""
    if parsed.port:
        netloc = f"{netloc}:{parsed.port}"
    plain = urllib.parse.urlunsplit(parsed._replace(netloc=netloc)).rstrip("/")
    request = Request(f"{plain}/health")
    if parsed.username is not None:
        pair = f"{urllib.parse.unquote(parsed.username)}:{urllib.parse.unquote(parsed.password or '')}"
        request.add_header("Authorization", "Basic " + base64.b64encode(pair.encode()).decode())
    with urlopen(request, timeout=timeout) as resp:
        if resp.status >= 400:
            raise TrackingError(f"MLflow tracking server at {redact(uri)} answered {resp.status} to /health")


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, naming the URI (never its password), when the tracking store cannot be
    reached or (a sqlite file) cannot be written."""
    parsed = urllib.parse.urlparse(uri)
    shown = redact(uri)
    if parsed.scheme in ("http", "https"):
        try:
            _health(uri, timeout)
        except TrackingError:
            raise
        except Exception as err:
            raise TrackingError(f"cannot reach the MLflow tracking server at {shown}: {_hide(err, uri)}") from None
    elif parsed.scheme.startswith(("postgresql", "mysql", "mssql")):
        host, port = parsed.hostname or "localhost", parsed.port or {"postgresql": 5432, "mysql": 3306}.get(
            parsed.scheme.split("+")[0], 1433)
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError as err:
            raise TrackingError(f"cannot reach the tracking database at {shown}: {err}") from None
    elif parsed.scheme == "sqlite":
        _check_sqlite(sqlite_path(uri), shown)
    elif parsed.scheme == "file" or not parsed.scheme:
        raise TrackingError(f"tracking URI {shown} is MLflow's retired file store; use sqlite:///PATH.db, "
                            f"an http:// server or a database URI")


def _hide(err: Exception, uri: str) -> str:
    """The error's text with the URI's password (and the URI) redacted."""
    text = redact(str(err))
    password = urllib.parse.urlsplit(uri).password
    return text.replace(password, "***") if password else text


def _check_sqlite(path: Path, shown: str) -> None:
    """The folder exists (created) and the file and folder can be written: sqlite writes a
    journal beside the database, and a read-only store fails only at the first write."""
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TrackingError(f"cannot create the folder of the sqlite store {shown}: {err}") from None
    problem = "" if os.access(folder, os.W_OK) else f"{folder} cannot be written"
    if path.exists() and not problem:
        problem = _write_probe(path)
    if problem:
        raise TrackingError(f"the sqlite store {shown} is read-only ({problem}); make it writable or point "
                            f"tracking_uri in mlflow.yaml (or MLFLOW_TRACKING_URI) elsewhere")


def _write_probe(path: Path) -> str:
    """Why the database file cannot be written ("" when it can: a write in a transaction
    rolled back; a locked database is busy, not read-only)."""
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=10)
    except sqlite3.Error as err:
        return str(err)
    try:
        con.isolation_level = None  # the transaction by hand: a write, rolled back
        version = con.execute("PRAGMA user_version").fetchone()[0]
        con.execute("BEGIN IMMEDIATE")
        try:  # sqlite opens a write-protected file read-only without a word: only a write tells
            con.execute(f"PRAGMA user_version = {int(version)}")
        finally:
            con.execute("ROLLBACK")
    except sqlite3.OperationalError as err:
        return "" if "locked" in str(err) else str(err)
    finally:
        con.close()
    return ""


@contextlib.contextmanager
def first_use_lock(uri: str):
    """For a sqlite store: an exclusive lock on `<db>.lock` meanwhile, so that processes
    opening a fresh store at once create its schema one after the other (MLflow's schema
    creation is not safe to run twice at once); nothing for other stores."""
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def same_database(a: str, b: str) -> bool:
    """Whether two database URLs (not sqlite) name the same database on the same server and
    schema search path (driver, user and password aside)."""
    def key(uri: str):
        parts = urllib.parse.urlsplit(uri)
        scheme = parts.scheme.split("+", 1)[0]
        scheme = {"postgres": "postgresql"}.get(scheme, scheme)
        port = parts.port or {"postgresql": 5432, "mysql": 3306}.get(scheme)
        query = urllib.parse.parse_qs(parts.query)
        return (scheme, (parts.hostname or "localhost").lower(), port, parts.path.strip("/"),
                tuple(query.get("options", [])))

    if a.startswith("sqlite") or b.startswith("sqlite") or "://" not in a or "://" not in b:
        return False
    return key(a) == key(b)

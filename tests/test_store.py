"""The tracking store from the command line: credentials in a server URI, unreachable and
read-only stores (one line, exit 2), and two commands opening a fresh sqlite store at once."""

import base64
import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from suite.store import check_reachable
from suite.tracking import PROJECT_DIR, Tracker, TrackingError, load_settings

TINY = ["epochs=1", "max_steps_per_epoch=1", "max_val_clips=2", "eval.lengths=27", "eval.flip=false",
        "eval.max_sequences=1"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _suite(folder: Path, *args: str, timeout: float = 300, **env_extra) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(HUMMUSS_MLFLOW_CONFIG=str(folder / "mlflow.yaml"), PYTHONPATH=str(PROJECT_DIR),
               MLFLOW_DISABLE_TELEMETRY="true", **env_extra)
    return subprocess.Popen([sys.executable, "-m", "suite", *args], cwd=folder, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _one_line_error(proc: subprocess.Popen, timeout: float = 120) -> str:
    out, err = proc.communicate(timeout=timeout)
    lines = err.strip().splitlines()
    assert proc.returncode == 2, out + err
    assert len(lines) == 1 and lines[0].startswith("hummuss-suite: error: "), err
    return lines[0]


def test_a_server_uri_with_user_and_password_is_reached_with_basic_auth_and_the_password_never_shown():
    seen = []

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            seen.append((self.path, self.headers.get("Authorization")))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        check_reachable(f"http://alice:s3cr%40t@127.0.0.1:{server.server_port}/")
    finally:
        server.shutdown()
    assert seen == [("/health", "Basic " + base64.b64encode(b"alice:s3cr@t").decode())]
    with pytest.raises(TrackingError) as err:  # nobody listening: the message hides the password
        check_reachable(f"http://alice:s3cr3t@127.0.0.1:{_free_port()}", timeout=2)
    assert "alice:***@127.0.0.1" in str(err.value) and "s3cr3t" not in str(err.value)


def test_an_unreachable_server_is_one_line_and_exit_2_without_the_password(tmp_path):
    (tmp_path / "mlflow.yaml").write_text("tracking_uri: sqlite:///mlruns.db\ncheckpoint_dir: checkpoints\n")
    uri = f"http://bob:hunter2@127.0.0.1:{_free_port()}"
    line = _one_line_error(_suite(tmp_path, "run", "context-length", "--scale", "smoke", MLFLOW_TRACKING_URI=uri))
    assert "cannot reach" in line and "bob:***@127.0.0.1" in line and "hunter2" not in line
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.skipif(shutil.which("chattr") is None, reason="chattr not installed")
def test_a_read_only_sqlite_store_is_one_line_and_exit_2(tmp_path, monkeypatch):
    (tmp_path / "mlflow.yaml").write_text("tracking_uri: sqlite:///store/mlruns.db\ncheckpoint_dir: checkpoints\n")
    monkeypatch.setenv("HUMMUSS_MLFLOW_CONFIG", str(tmp_path / "mlflow.yaml"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    Tracker(load_settings()).experiment_id("context-length")  # a store with data in it
    store = tmp_path / "store"
    # the file immutable (chattr +i): read-only even for root, which file modes are not
    if subprocess.run(["chattr", "+i", str(store / "mlruns.db")], capture_output=True).returncode:
        pytest.skip("chattr +i not permitted here")
    try:
        line = _one_line_error(_suite(tmp_path, "run", "context-length", "--scale", "smoke"))
    finally:
        subprocess.run(["chattr", "-i", str(store / "mlruns.db")], check=True)
    assert "is read-only" in line and "mlruns.db" in line


def test_two_run_commands_at_once_on_a_fresh_store_both_finish_and_the_run_trains_once(tmp_path, monkeypatch):
    """Before, one of them died in MLflow's schema creation."""
    (tmp_path / "mlflow.yaml").write_text("tracking_uri: sqlite:///mlruns.db\nartifact_location: mlartifacts\n"
                                          "checkpoint_dir: checkpoints\nclaim_ttl_s: 30\n")
    args = ("run", "context-length", "--scale", "smoke", "--variant", "hummuss", "--set", *TINY)
    procs = [_suite(tmp_path, *args) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, outs):
        assert proc.returncode == 0, out[-2000:] + err[-3000:]
    monkeypatch.setenv("HUMMUSS_MLFLOW_CONFIG", str(tmp_path / "mlflow.yaml"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracker = Tracker(load_settings())
    runs = tracker.all_runs(tracker.experiment_id("context-length", create=False))
    children = [r for r in runs if r.data.tags.get("kind") not in ("parent", "floor")]
    assert len(children) == 1 and children[0].info.status == "FINISHED"
    assert children[0].data.tags["trained_by"] == children[0].info.run_id
    trained = [out for out, _ in outs if "trained and evaluated" in out]
    assert len(trained) == 1, [o[-1500:] for o, _ in outs]  # the other skipped it (or waited, then skipped)


def test_same_database_compares_server_database_and_search_path_not_driver_or_credentials():
    from suite.store import same_database

    assert same_database("postgresql://u@db/mlflow", "postgresql+psycopg2://v:pw@db:5432/mlflow")
    assert not same_database("postgresql://u@db/mlflow", "postgresql://u@db/optuna")
    assert not same_database("postgresql://u@db/x", "postgresql://u@db/x?options=-csearch_path%3Doptuna")
    assert not same_database("sqlite:////tmp/a.db", "sqlite:////tmp/a.db")  # sqlite: separate files by default


@pytest.mark.skipif(not os.environ.get("HUMMUSS_TEST_POSTGRES_URL"), reason="HUMMUSS_TEST_POSTGRES_URL is not set")
def test_a_sweep_storage_in_the_mlflow_stores_postgres_database_is_refused_saying_how_to_separate(tmp_path):
    import urllib.parse
    import uuid

    import psycopg2

    admin_url, name = os.environ["HUMMUSS_TEST_POSTGRES_URL"], f"hummuss_store_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(admin_url)
    admin.autocommit = True
    with admin.cursor() as cur:  # a database of its own: nothing may land in the shared one
        cur.execute(f'CREATE DATABASE "{name}"')
    url = urllib.parse.urlunsplit(urllib.parse.urlsplit(admin_url)._replace(path=f"/{name}"))
    try:
        (tmp_path / "mlflow.yaml").write_text(f"tracking_uri: {url}\ncheckpoint_dir: checkpoints\n")
        line = _one_line_error(_suite(tmp_path, "sweep", "context-length", "--trials", "1", "--scale", "smoke",
                                      "--storage", url))
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
    assert "alembic_version" in line and "CREATE DATABASE optuna" in line and "/optuna" in line

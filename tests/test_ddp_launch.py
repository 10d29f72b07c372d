"""DDP through the whole suite: `run --launcher torchrun --nproc-per-node 2` finishes, and a
SIGTERM to the command leaves no process of it behind (torchrun starts each rank in a
session of its own, so a signal to torchrun's group alone does not reach them)."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import use_store

from suite.launch import stop_process_trees
from suite.tracking import PROJECT_DIR, Tracker, load_settings

TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent))
needs_torchrun = pytest.mark.skipif(TORCHRUN is None, reason="torchrun not installed beside this Python")


@pytest.fixture
def store(tmp_path, monkeypatch):
    return use_store(tmp_path, monkeypatch, claim_ttl_s=30)


def _env(config: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(HUMMUSS_MLFLOW_CONFIG=str(config), PYTHONPATH=str(PROJECT_DIR), PYTHONUNBUFFERED="1",
               MLFLOW_DISABLE_TELEMETRY="true")
    return env


def _runs(study: str):
    tracker = Tracker(load_settings())
    return tracker.all_runs(tracker.experiment_id(study, create=False))


def _command(*extra: str) -> list[str]:
    return [sys.executable, "-m", "suite", "run", "context-length", "--scale", "smoke", "--launcher", "torchrun",
            "--nproc-per-node", "2", *extra]


@needs_torchrun
def test_torchrun_with_two_processes_runs_a_smoke_study_to_the_end(store):
    """The issue's command: before, each rank took the checkpoint folder's lock and one waited
    in a gloo collective for the other, which waited for the lock (it never finished)."""
    started = time.time()
    proc = subprocess.Popen(_command(), env=_env(store), cwd=store.parent, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=180)
    finally:  # hung: every process of it goes
        if proc.poll() is None:
            stop_process_trees([proc.pid], grace_s=1)
    took = time.time() - started
    print(f"run --launcher torchrun --nproc-per-node 2 at smoke scale: {took:.0f} s")
    assert proc.returncode == 0, output[-3000:]
    runs = _runs("context-length")
    children = [r for r in runs if r.data.tags.get("kind") not in ("parent", "floor")]
    assert len(children) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    assert all(r.data.tags["trained_by"] == r.info.run_id for r in children)


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


@needs_torchrun
def test_sigterm_to_the_command_stops_torchrun_and_both_ranks_and_marks_the_runs_killed(store):
    proc = subprocess.Popen(_command("--variant", "hummuss", "--set", "epochs=500"), env=_env(store),
                            cwd=store.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    log = store.parent / "checkpoints" / "logs" / "context-length" / "hummuss-seed0.log"
    deadline, tree = time.time() + 150, []
    try:
        while not (log.exists() and "epoch 1/500" in log.read_text()):  # both ranks are in the process group
            assert proc.poll() is None and time.time() < deadline, proc.stdout.read() if proc.poll() else "slow"
            time.sleep(0.5)
        tree = _tree(proc.pid)
        lines = {p.pid: " ".join(p.cmdline()) for p in tree}
        ranks = [p for p in tree if "suite.launch" in lines[p.pid] and "torchrun" not in lines[p.pid]]
        assert len(ranks) == 2 and any("torchrun" in " ".join(p.cmdline()) for p in tree)
        assert {os.getpgid(p.pid) for p in ranks}.isdisjoint({proc.pid})  # out of reach of the command's group
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
        _gone, alive = psutil.wait_procs(tree, timeout=10)
        left = [(p.pid, p.cmdline()) for p in alive]
    finally:  # a failing test leaves nothing behind either
        if proc.poll() is None:
            stop_process_trees([proc.pid], grace_s=1)
        for p in tree:
            with contextlib.suppress(psutil.Error):
                p.kill()
    assert proc.returncode == 130, output[-3000:]
    assert not left, f"left behind: {left}"
    statuses = {r.data.tags.get("kind", "run"): r.info.status for r in _runs("context-length")
                if r.data.tags.get("kind") != "floor"}
    assert statuses == {"parent": "KILLED", "run": "KILLED"}


def test_stop_process_trees_reaches_descendants_in_other_sessions_that_ignore_signals(tmp_path):
    """What a rank blocked in a collective looks like from outside: deaf to SIGINT and SIGTERM,
    in a session of its own. It is killed after the grace period."""
    deaf = ("import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
            "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)")
    parent = ("import subprocess, sys, time; "
              f"subprocess.Popen([sys.executable, '-c', {deaf!r}], start_new_session=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", parent], start_new_session=True)
    deadline = time.time() + 20
    while len(_tree(proc.pid)) < 2 and time.time() < deadline:
        time.sleep(0.1)
    tree = _tree(proc.pid)
    assert len(tree) == 2
    started = time.time()
    try:
        stop_process_trees([proc.pid], grace_s=1)
        proc.wait(timeout=5)
        _gone, alive = psutil.wait_procs(tree, timeout=5)
    finally:
        for p in tree:
            with contextlib.suppress(psutil.Error):
                p.kill()
    assert not alive and time.time() - started < 10

"""Processes killed by SIGKILL, as the kernel's OOM killer kills them: a run's process (its
run ends FAILED naming memory and the batch size, its parent is not left RUNNING), and a
whole invocation (the next one takes its run over at once and closes its parent KILLED)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import use_store

from suite.tracking import PROJECT_DIR, Tracker, load_settings


@pytest.fixture
def store(tmp_path, monkeypatch):
    # a TTL far longer than the tests: only a dead process frees a run
    return use_store(tmp_path, monkeypatch, claim_ttl_s=600)


def _start(store: Path, sets: tuple[str, ...], *extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(HUMMUSS_MLFLOW_CONFIG=str(store), PYTHONPATH=str(PROJECT_DIR), PYTHONUNBUFFERED="1",
               MLFLOW_DISABLE_TELEMETRY="true")
    cmd = [sys.executable, "-m", "suite", "run", "context-length", "--scale", "smoke", "--variant", "hummuss",
           *extra, "--set", "batch_size=4", "max_val_clips=2", "eval.lengths=27", "eval.flip=false", *sets]
    return subprocess.Popen(cmd, env=env, cwd=store.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def _wait_for_first_epoch(proc: subprocess.Popen, store: Path, epochs: int) -> None:
    log = store.parent / "checkpoints" / "logs" / "context-length" / "hummuss-seed0.log"
    deadline = time.time() + 150
    while not (log.exists() and f"epoch 1/{epochs}" in log.read_text()):
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "no first epoch"
        time.sleep(0.3)


def _runs():
    tracker = Tracker(load_settings())
    runs = tracker.all_runs(tracker.experiment_id("context-length", create=False))
    return [r for r in runs if r.data.tags.get("kind") != "floor"]


def _stop(proc: subprocess.Popen, tree=()) -> None:
    for p in [*tree, *([psutil.Process(proc.pid)] if proc.poll() is None else [])]:
        try:
            p.kill()
        except psutil.Error:
            pass


def test_a_run_process_killed_for_memory_ends_failed_naming_memory_and_the_batch_size(store):
    proc = _start(store, ("epochs=400", "max_steps_per_epoch=200"), "--jobs", "2")
    tree = []
    try:
        _wait_for_first_epoch(proc, store, 400)
        tree = psutil.Process(proc.pid).children(recursive=True)
        (child,) = [p for p in tree if "suite.launch" in " ".join(p.cmdline())]
        child.send_signal(signal.SIGKILL)  # what the OOM killer sends
        output, _ = proc.communicate(timeout=120)
    finally:
        _stop(proc, tree)
    print(output)
    assert proc.returncode == 1
    runs = {r.data.tags.get("kind", "run"): r for r in _runs()}
    assert {k: r.info.status for k, r in runs.items()} == {"parent": "FAILED", "run": "FAILED"}
    error = runs["run"].data.tags["error"]
    assert "out of memory" in error and "batch size 4" in error and "--set batch_size=2" in error
    assert "out of memory" in output


def test_a_killed_invocations_run_is_taken_over_at_once_and_its_parent_closed_killed(store):
    budget = ("epochs=8", "max_steps_per_epoch=1")
    first = _start(store, budget)  # --jobs 1: the run executes in the command's own process
    try:
        _wait_for_first_epoch(first, store, 8)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(30)
    finally:
        _stop(first)
    (dead_parent,) = [r.info.run_id for r in _runs() if r.data.tags.get("kind") == "parent"]
    started = time.time()
    second = _start(store, budget)
    try:
        output, _ = second.communicate(timeout=300)
    finally:
        _stop(second)
    print(output)
    assert second.returncode == 0 and time.time() - started < 300  # not claim_ttl_s (600 s) later
    assert "resuming run" in output and "is gone" in output
    assert f"parent run {dead_parent} of an invocation that died marked KILLED" in output
    statuses = sorted((r.data.tags.get("kind", "run"), r.info.status) for r in _runs())
    assert statuses == [("parent", "FINISHED"), ("parent", "KILLED"), ("run", "FINISHED")]

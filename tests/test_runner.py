"""The runner: parallel children, failures kept to their run, Ctrl-C, waiting on other processes, reruns."""

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from suite.leases import take_lease
from suite.runner import Outcome, Runner, summary, tally
from suite.runspec import expand_floors, expand_runs
from suite.tracking import PROJECT_DIR, VAL_MPJPE, Tracker, load_settings
from tests.test_tracking_conventions import check_datasets

TINY = {"epochs": "1", "max_steps_per_epoch": "1", "max_val_clips": "2", "eval.lengths": "27",
        "eval.flip": "false", "eval.max_sequences": "1"}


def _forget_tracking_uri(monkeypatch) -> None:
    """Unset MLFLOW_TRACKING_URI (it would override mlflow.yaml) for this test only; a bare
    delenv of an unset variable would not undo a value set meanwhile."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")


def _store(tmp_path: Path, monkeypatch, ttl: float) -> Path:
    config = tmp_path / "mlflow.yaml"
    config.write_text("tracking_uri: sqlite:///mlruns.db\nartifact_location: mlartifacts\n"
                      f"checkpoint_dir: checkpoints\nclaim_ttl_s: {ttl}\n")
    monkeypatch.setenv("HUMMUSS_MLFLOW_CONFIG", str(config))
    _forget_tracking_uri(monkeypatch)
    monkeypatch.setenv("HUMMUSS_FAKE_GPUS", "0")  # the same placement on any machine
    return config


def _default_sigint():
    """A process started in the background inherits an ignored SIGINT; Ctrl-C must reach the runner."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _child_runs(tracker: Tracker, study: str):
    exp = tracker.experiment_id(study, create=False)
    return [r for r in tracker.search([exp]) if r.data.tags.get("kind") not in ("parent", "floor")]


def _lite():
    return expand_runs("motionbert-baseline", "smoke", sets=TINY, variants=("lite",))[0]


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="unknown launcher 'pbs'; known: local, torchrun, slurm"):
        Runner(None, launcher="pbs")
    with pytest.raises(ValueError, match="--jobs and --nproc-per-node must be >= 1, got 0"):
        Runner(None, jobs=0)


def test_summary_lists_every_run_and_names_the_logs_of_those_that_did_not_finish():
    spec = _lite()
    text = summary([Outcome(spec, "FINISHED", "trained and evaluated", "r1", "/l/a.log", 12.0),
                    Outcome(spec, "FAILED", "exit code 1", "r2", "/l/b.log", 3.0)])
    lines = text.splitlines()
    assert lines[1].split() == ["motionbert-baseline/lite/seed0", "FINISHED", "12s", "trained", "and", "evaluated"]
    assert lines[-2:] == ["1 run(s) did not finish:", "  motionbert-baseline/lite/seed0: exit code 1; log: /l/b.log"]


def test_tally_counts_trainings_against_runs_and_floors():
    lite, floor = _lite(), expand_floors("motionbert-baseline", "smoke")[0]
    outcomes = [Outcome(lite, "FINISHED", "", "a", trained=True, trained_by="a"),
                Outcome(lite, "FINISHED", "", "b", trained_by="a"), Outcome(lite, "FINISHED", "", "c", trained_by="a"),
                Outcome(lite, "FINISHED", "", "d", trained_by="d"), Outcome(floor, "FINISHED", "", "f"),
                Outcome(lite, "SKIPPED", "already finished", "e"), Outcome(floor, "SKIPPED", "already finished", "g"),
                Outcome(lite, "FAILED", "exit code 1", "h")]
    assert tally(outcomes) == ("1 training for 4 runs (2 runs evaluated a shared checkpoint, 1 run evaluated the "
                               "checkpoint it trained before), 1 floor run; skipped 1 run and 1 floor run; "
                               "1 did not finish")
    assert tally(outcomes[:1]) == "1 training for 1 run, 0 floor runs"


def test_failing_run_does_not_stop_its_sibling_and_a_finished_run_is_not_run_again(tmp_path, monkeypatch):
    _store(tmp_path, monkeypatch, ttl=30)
    tracker = Tracker(load_settings())
    good = _lite()
    bad = dataclasses.replace(good, variant="broken", data="h36m:/nonexistent/data_3d.pkl")
    said = []
    outcomes = Runner(tracker, jobs=2, say=said.append).run_specs([good, bad])
    print("\n".join(said))
    print(summary(outcomes))
    assert [(o.spec.variant, o.status) for o in outcomes] == [("lite", "FINISHED"), ("broken", "FAILED")]
    started = [i for i, line in enumerate(said) if ": started (pid " in line]
    ended = [i for i, line in enumerate(said) if " in " in line and (": finished" in line or ": failed" in line)]
    assert len(started) == 2 and max(started) < min(ended), "the two runs did not run side by side"
    assert len({line.split("pid ")[1].split(",")[0] for line in said if "started (pid" in line}) == 2
    failed = outcomes[1]
    assert failed.log.endswith("logs/motionbert-baseline/broken-seed0.log")
    assert "FileNotFoundError" in Path(failed.log).read_text()
    assert f"  motionbert-baseline/broken/seed0: exit code 1; log: {failed.log}" in summary(outcomes)
    assert tracker.client.get_run(failed.run_id).info.status == "FAILED"
    assert tracker.client.get_run(outcomes[0].run_id).info.status == "FINISHED"
    for outcome in outcomes:  # lease bookkeeping gone once a run ends; no local paths in tags
        tags = tracker.client.get_run(outcome.run_id).data.tags
        assert not {"claim", "heartbeat", "log"} & set(tags), tags
        assert not [v for v in tags.values() if v.startswith("/")], tags

    # the finished study again: nothing runs, no child run and no parent run is added
    exp = tracker.experiment_id("motionbert-baseline", create=False)
    parents = lambda: [r for r in tracker.search([exp]) if r.data.tags.get("kind") == "parent"]  # noqa: E731
    before = len(_child_runs(tracker, "motionbert-baseline"))
    assert len(parents()) == 1
    said = []
    outcomes = Runner(tracker, jobs=2, say=said.append).run_specs([good])
    assert [(o.status, o.reason, o.run_id) for o in outcomes] == [
        ("SKIPPED", "already finished", tracker.client.get_run(outcomes[0].run_id).info.run_id)]
    assert len(_child_runs(tracker, "motionbert-baseline")) == before == 2
    assert len(parents()) == 1
    assert said[-1] == ("motionbert-baseline: nothing to do: all 1 run(s) at scale smoke finished before "
                        "(experiment hummuss/motionbert-baseline)")


def test_ctrl_c_marks_running_runs_killed_and_keeps_their_checkpoints(tmp_path, monkeypatch):
    """SIGINT to the runner; its run trains in a child process (--jobs 2), which the
    runner stops (--jobs 1 trains in the runner's process: the worker marks it KILLED)."""
    config = _store(tmp_path, monkeypatch, ttl=30)
    sets = [f"{k}={v}" for k, v in {**TINY, "epochs": "500"}.items()]
    cmd = [sys.executable, "-m", "suite", "run", "motionbert-baseline", "--scale", "smoke", "--variant", "lite",
           "--jobs", "2", "--set", *sets]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(PYTHONPATH=str(PROJECT_DIR), PYTHONUNBUFFERED="1", MLFLOW_DISABLE_TELEMETRY="true")
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=_default_sigint)
    try:
        deadline = time.time() + 120
        while not list((tmp_path / "checkpoints").glob("*/last.pt")) and time.time() < deadline:
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)  # Ctrl-C reaches the runner process (only)
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    print(out[-3000:])
    assert proc.returncode == 130, out
    assert "interrupted: stopping the running runs (they are marked KILLED, checkpoints kept)" in out
    tracker = Tracker(load_settings(config))
    (run,) = _child_runs(tracker, "motionbert-baseline")
    assert run.info.status == "KILLED", out
    exp = tracker.experiment_id("motionbert-baseline", create=False)
    (parent,) = [r for r in tracker.search([exp]) if r.data.tags.get("kind") == "parent"]
    assert parent.info.status == "KILLED", out
    (last,) = (tmp_path / "checkpoints").glob("*/last.pt")
    assert last.stat().st_size > 0
    log = tmp_path / "checkpoints" / "logs" / "motionbert-baseline" / "lite-seed0.log"
    assert "interrupted: run marked KILLED, checkpoints kept" in log.read_text(), log.read_text()


def test_a_run_held_by_another_process_is_skipped_or_waited_for(tmp_path, monkeypatch):
    _store(tmp_path, monkeypatch, ttl=4)  # looked at again every second
    tracker = Tracker(load_settings())
    spec = _lite()
    other = take_lease(tracker, tracker.experiment_id(spec.study), spec, None)  # "another process" holds it
    assert other.action == "new"

    said = []
    outcomes = Runner(tracker, wait=False, say=said.append).run_specs([spec])
    assert [(o.status, o.reason) for o in outcomes] == [("SKIPPED", "running in another process")]
    assert any(f"held by another process (run {other.run_id})" in line for line in said)

    threading.Timer(1.0, tracker.set_status, (other.run_id, "FINISHED")).start()
    outcomes = Runner(tracker, wait=True, say=said.append).run_specs([spec])
    assert [(o.status, o.reason, o.run_id) for o in outcomes] == \
        [("SKIPPED", "finished by another process", other.run_id)]
    assert len(_child_runs(tracker, spec.study)) == 1


def test_runs_sharing_a_training_train_once_and_name_the_run_that_trained(tmp_path, monkeypatch):
    """motionbert-baseline at smoke: lite and full share one training configuration. With
    --jobs 2 the runner starts full only once lite has trained the checkpoint; full
    evaluates it (tag trained_by = lite's run). The floors run meanwhile; progress comes
    as plain lines (the output is not a terminal) with the running run's epoch and val MPJPE."""
    _store(tmp_path, monkeypatch, ttl=30)
    tracker = Tracker(load_settings())
    # 3 steps an epoch took about 3 s of epochs after the first with MKL's generic code on a
    # 2-core EPYC and 0.8 s with its Intel code path (hummuss/mkl_vendor.py), too few for a
    # progress line of 0.5 s to fall on epochs 1-7; 30 steps: about 2.5 s, lines every 0.25 s
    sets = {**TINY, "epochs": "8", "max_steps_per_epoch": "30"}
    said = []
    runner = Runner(tracker, jobs=2, say=said.append, progress_every_s=0.25)
    outcomes = runner.run_study("motionbert-baseline", "smoke", sets=sets)
    text = "\n".join(said)
    print(text)
    print(summary(outcomes))
    lite, full, *floors = outcomes
    assert [(o.spec.name, o.status) for o in outcomes] == [
        ("lite/seed0", "FINISHED"), ("full/seed0", "FINISHED"),
        ("floor/mean-pose", "FINISHED"), ("floor/linear-lift", "FINISHED")]
    assert (lite.trained, lite.trained_by, lite.reason) == (True, lite.run_id, "trained and evaluated")
    assert (full.trained, full.trained_by) == (False, lite.run_id)
    assert full.reason == f"evaluated (trained by motionbert-baseline/lite/seed0, run {lite.run_id})"
    assert tally(outcomes) == "1 training for 2 runs (1 run evaluated a shared checkpoint), 2 floor runs"
    assert f"  full/seed0: finished in {full.seconds:.0f} s ({full.reason})" in said

    # full waited for lite instead of starting beside it, and never trained
    assert "  full/seed0: waits for lite/seed0, which trains the checkpoint it evaluates" in said
    index = {key: next(i for i, line in enumerate(said) if line.startswith(key))
             for key in ("  lite/seed0: finished", "  full/seed0: started")}
    assert index["  lite/seed0: finished"] < index["  full/seed0: started"]
    logs = Path(tracker.settings.checkpoint_dir) / "logs" / "motionbert-baseline"
    assert (logs / "lite-seed0.log").read_text().count("epoch 1/8") == 1
    full_log = (logs / "full-seed0.log").read_text()
    assert "epoch 1/8" not in full_log
    assert f"evaluating the checkpoint trained by motionbert-baseline/lite/seed0 (run {lite.run_id})" in full_log
    for run in _child_runs(tracker, "motionbert-baseline"):
        assert run.data.tags["trained_by"] == lite.run_id
    # the curves stay on the run that trained: the evaluating run gets none copied
    curve = {r: [m.step for m in tracker.client.get_metric_history(r, VAL_MPJPE)] for r in (lite.run_id, full.run_id)}
    assert curve == {lite.run_id: list(range(1, 9)), full.run_id: []}
    for o in (lite, full, *floors):  # every child run, floors too: what it learnt from and was scored on
        check_datasets(tracker.get_run(o.run_id), "synthetic/test")
    marker = Path(tracker.settings.checkpoint_dir) / lite.spec.train_hash / "trained_by.json"
    assert json.loads(marker.read_text())["run_id"] == lite.run_id

    # progress: at starts and ends, and every 0.5 s meanwhile with the running run's epoch
    progress = [line for line in said if line.startswith("progress: ")]
    assert progress[0].startswith("progress: trainings 0/1, runs 0/2, floors 0/2; 0:0")
    assert re.search(r"^progress: trainings 0/1, runs 0/2, floors \d/2; \d+:\d\d elapsed, ETA \?; running: "
                     r"motionbert-baseline/lite/seed0 \(epoch [1-7]/8, val \d+\.\d mm\)$", text, re.M), text
    assert re.search(r"^progress: trainings 1/1, runs 1/2, floors 2/2; \d+:\d\d elapsed, ETA \d+ s; running: "
                     r"motionbert-baseline/full/seed0 \(", text, re.M), text
    assert progress[-1].startswith("progress: trainings 1/1, runs 2/2, floors 2/2; ")
    assert progress[-1].endswith("ETA 0 s")

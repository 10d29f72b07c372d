"""Leases on runs: one run per config hash, leases that expire with their heartbeat, and two
`hummuss-suite run` processes sharing a PostgreSQL store."""

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from suite.leases import HOLDER_TAG, LeaseKeeper, heartbeat_of, holder_gone, take_lease, this_holder
from suite.runspec import expand_runs
from suite.tracking import PROJECT_DIR, Tracker, load_settings

TTL = 3.0  # seconds without heartbeat before a RUNNING run is taken over (keeper beats every 1 s)
PG_URL = os.environ.get("HUMMUSS_TEST_POSTGRES_URL")


def _forget_tracking_uri(monkeypatch) -> None:
    """Unset MLFLOW_TRACKING_URI (it would override mlflow.yaml) for this test only; a bare
    delenv of an unset variable would not undo a value set meanwhile."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")


@pytest.fixture
def spec():
    return expand_runs("context-length", "smoke", variants=("hummuss",))[0]


def _experiment(tracker, request) -> str:
    return tracker.experiment_id(f"claims-{uuid.uuid4().hex[:8]}")


def _active(tracker, exp, spec):
    return tracker.runs_with_hash(exp, spec.config_hash)


def test_first_claimant_creates_the_run_and_the_next_sees_it_running(tracker, spec, request):
    exp = _experiment(tracker, request)
    first = take_lease(tracker, exp, spec, None)
    assert first.action == "new" and first.run_id
    second = take_lease(tracker, exp, spec, None)
    assert (second.run_id, second.action, second.holder) == (None, "running-elsewhere", first.run_id)
    tracker.set_status(first.run_id, "FINISHED")
    third = take_lease(tracker, exp, spec, None)
    assert (third.run_id, third.action, third.holder) == (None, "finished", first.run_id)
    assert [r.info.run_id for r in _active(tracker, exp, spec)] == [first.run_id]


def test_a_killed_run_is_resumed_into_the_same_mlflow_run(tracker, spec, request):
    exp = _experiment(tracker, request)
    first = take_lease(tracker, exp, spec, None)
    tracker.set_status(first.run_id, "KILLED")
    again = take_lease(tracker, exp, spec, None)
    assert (again.run_id, again.action, again.previous) == (first.run_id, "resume", "KILLED")
    assert tracker.client.get_run(first.run_id).info.status == "RUNNING"


def test_a_claim_lives_with_its_heartbeat_and_expires_when_it_stops(tracker, spec, request):
    exp = _experiment(tracker, request)
    first = take_lease(tracker, exp, spec, None)
    with LeaseKeeper(tracker) as keeper:  # the holder is alive
        assert keeper.interval == 1.0
        keeper.add(first.run_id)
        time.sleep(TTL + 1.0)
        assert take_lease(tracker, exp, spec, None).action == "running-elsewhere"
        beat = heartbeat_of(tracker.client.get_run(first.run_id))
        assert time.time() - beat < TTL
    time.sleep(TTL + 0.5)  # the holder died: no heartbeat for claim_ttl_s
    taken = take_lease(tracker, exp, spec, None)
    assert (taken.run_id, taken.action) == (first.run_id, "resume")
    assert re.fullmatch(r"RUNNING, no heartbeat for \d+ s", taken.previous)
    assert int(taken.previous.split()[-2]) >= TTL


@pytest.mark.parametrize("state", ["none", "KILLED"], ids=["new-run", "take-over"])
def test_of_three_simultaneous_claimants_exactly_one_wins(tracker, spec, request, state):
    exp = _experiment(tracker, request)
    if state == "KILLED":
        tracker.set_status(take_lease(tracker, exp, spec, None).run_id, "KILLED")
    start, results = threading.Barrier(3), []

    def claimant():
        mine = Tracker(tracker.settings, check=False)  # its own client, as another process would have
        start.wait()
        results.append(take_lease(mine, exp, spec, None))

    threads = [threading.Thread(target=claimant) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    winners = [c for c in results if c.run_id]
    print([(c.action, c.holder) for c in results])
    assert len(results) == 3 and len(winners) == 1
    assert winners[0].action == ("new" if state == "none" else "resume")
    assert [r.info.run_id for r in _active(tracker, exp, spec)] == [winners[0].run_id]
    assert {c.action for c in results if not c.run_id} <= {"lost", "running-elsewhere"}


def test_a_claimant_reading_back_after_the_winners_heartbeat_went_stale_still_loses(tracker, spec, request):
    """B read the run while it was KILLED; A took it over; B reads back more than the TTL
    after A's heartbeat (A's keeper not beating yet, a loaded machine). A's claim tag is
    gone and its heartbeat is stale, but the run changed hands since B's read: B loses."""
    exp = _experiment(tracker, request)
    run_id = take_lease(tracker, exp, spec, None).run_id
    tracker.set_status(run_id, "KILLED")
    before = _active(tracker, exp, spec)  # what B's first read returns
    a = take_lease(tracker, exp, spec, None)
    assert (a.run_id, a.action) == (run_id, "resume")
    time.sleep(TTL + 0.5)
    b_client = Tracker(tracker.settings, check=False)
    b_client.runs_with_hash = lambda *args: before
    b = take_lease(b_client, exp, spec, None)
    assert (b.run_id, b.action, b.holder) == (None, "lost", run_id)
    assert not [k for k in tracker.get_run(run_id).data.tags if k.startswith("claim.")]


# -- two processes, one PostgreSQL store ------------------------------------------------------
@pytest.fixture
def postgres_store(tmp_path, monkeypatch):
    """A fresh database on HUMMUSS_TEST_POSTGRES_URL's server, dropped afterwards, and an
    mlflow.yaml pointing at it (claim_ttl_s 6)."""
    if not PG_URL:
        pytest.skip("HUMMUSS_TEST_POSTGRES_URL is not set (e.g. postgresql://postgres@127.0.0.1:5432/postgres)")
    import psycopg2

    name = f"hummuss_claims_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(PG_URL)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    url = urllib.parse.urlunsplit(urllib.parse.urlsplit(PG_URL)._replace(path=f"/{name}"))  # postgresql://
    config = tmp_path / "mlflow.yaml"
    config.write_text(f"tracking_uri: {url}\nartifact_location: mlartifacts\ncheckpoint_dir: checkpoints\n"
                      "claim_ttl_s: 6\n")
    monkeypatch.setenv("HUMMUSS_MLFLOW_CONFIG", str(config))
    _forget_tracking_uri(monkeypatch)
    try:
        yield config
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _wait_for(predicate, what: str, timeout: float = 180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_holder_killed_but_not_yet_reaped_is_gone():
    """A holder process on this machine is alive while it runs; SIGKILLed it is gone at once,
    both as a zombie its parent has not waited for and once reaped."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    run = SimpleNamespace(data=SimpleNamespace(tags={HOLDER_TAG: this_holder(child.pid)}))
    try:
        assert holder_gone(run) == ""
        child.send_signal(signal.SIGKILL)
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # until it has died, leaving it unreaped
        assert re.fullmatch(rf"its process {child.pid} on \S+ is gone", holder_gone(run))
    finally:
        child.kill()
        child.wait()
    assert holder_gone(run).startswith(f"its process {child.pid} ")


@pytest.mark.postgres
def test_two_processes_split_a_study_and_a_killed_ones_run_is_taken_over(postgres_store):
    tracker = Tracker(load_settings())  # creates the schema once, as `mlflow db upgrade` would
    folder = postgres_store.parent
    sets = {"epochs": "3", "max_steps_per_epoch": "2", "max_val_clips": "2", "eval.lengths": "27",
            "eval.flip": "false", "eval.max_sequences": "1"}
    cmd = [sys.executable, "-m", "suite", "run", "context-length", "--scale", "smoke", "--variant", "hummuss",
           "--seeds", "0,1,2", "--set", *[f"{k}={v}" for k, v in sets.items()]]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(PYTHONPATH=str(PROJECT_DIR), PYTHONUNBUFFERED="1", MLFLOW_DISABLE_TELEMETRY="true",
               HUMMUSS_MLFLOW_CONFIG=str(postgres_store), HUMMUSS_FAKE_GPUS="0")
    outs = {name: folder / f"{name}.out" for name in "ab"}
    procs = {name: subprocess.Popen(cmd, env=env, cwd=folder, stdout=open(outs[name], "w"),
                                    stderr=subprocess.STDOUT) for name in "ab"}
    logs = Path(load_settings().checkpoint_dir) / "logs" / "context-length"
    try:
        # b trains a run; once its first epoch is checkpointed, b is killed outright
        line = _wait_for(lambda: re.search(r"  (hummuss/seed\d): training \(run (\w+)\)", outs["b"].read_text()),
                         "process b to train a run")
        name, b_run = line.group(1), line.group(2)
        log = logs / f"{name.replace('/', '-')}.log"
        _wait_for(lambda: log.exists() and "epoch 1/3" in log.read_text(), f"epoch 1 of {name} in b")
        procs["b"].send_signal(signal.SIGKILL)
        procs["a"].wait(timeout=300)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    a_out, b_out = outs["a"].read_text(), outs["b"].read_text()
    print("--- a ---\n" + a_out[-4000:] + "\n--- b ---\n" + b_out[-2000:])
    assert procs["a"].returncode == 0
    trained_a = set(re.findall(r"  (hummuss/seed\d): training \(run", a_out))
    trained_b = set(re.findall(r"  (hummuss/seed\d): training \(run", b_out))
    assert trained_b == {name}  # b was killed in its first run
    assert trained_a == {"hummuss/seed0", "hummuss/seed1", "hummuss/seed2"}
    # a left b's run alone while b lived, then took it over once b's process was dead: killed
    # and not yet reaped by this test (a zombie) counts as dead, so this does not depend on
    # whether the parent reaps at once (CI's machine did, this one did not)
    assert re.search(rf"  {name}: resuming run {b_run} \(was RUNNING, its process {procs['b'].pid} on \S+ is gone\)",
                     a_out)

    exp = tracker.experiment_id("context-length", create=False)
    runs = [r for r in tracker.search([exp]) if r.data.tags.get("kind") not in ("parent", "floor")]
    assert sorted(r.data.tags["seed"] for r in runs) == ["0", "1", "2"]  # one MLflow run per config
    assert {r.info.status for r in runs} == {"FINISHED"}
    for r in runs:  # no epoch trained twice, none logged twice
        text = (logs / f"hummuss-seed{r.data.tags['seed']}.log").read_text()
        assert text.count("epoch 1/3") == 1 and text.count("epoch 3/3") == 1, text
        steps = [m.step for m in tracker.client.get_metric_history(r.info.run_id, "train/loss/total")]
        assert sorted(steps) == [1, 2, 3]
    resumed = (logs / f"{name.replace('/', '-')}.log").read_text()
    assert resumed.count("resumed from") == 1

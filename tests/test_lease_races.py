"""The take-over race with a claim write that lands late, and runs whose holder died on this
machine, taken over at once (no waiting for `claim_ttl_s`)."""

import subprocess
import sys
import threading
import time
import uuid

import pytest

from suite.leases import HOLDER_TAG, MAX_GAP_S, close_dead_parents, is_live, take_lease, this_holder
from suite.runspec import expand_runs
from suite.tracking import Tracker

TTL = 300.0  # long: nothing here may wait for a heartbeat to go stale


@pytest.fixture
def spec():
    return expand_runs("context-length", "smoke", variants=("hummuss",))[0]


class SlowClaims(Tracker):
    """A claimant whose first claim write waits for `release` (and at least MAX_GAP_S), as a
    write stuck behind a locked store does."""

    def __init__(self, settings, release: threading.Event):
        super().__init__(settings, check=False)
        self.release, self.blocked, self.slowed = release, threading.Event(), False

    def set_tags(self, run_id, tags):
        if not self.slowed and any(k.startswith("claim") for k in tags):
            self.slowed = True
            self.blocked.set()
            started = time.time()
            assert self.release.wait(30)
            time.sleep(max(0.0, MAX_GAP_S + 0.05 - (time.time() - started)))
        super().set_tags(run_id, tags)


class SignalsClaims(Tracker):
    """A claimant that says when its claim is written."""

    def __init__(self, settings, wrote: threading.Event):
        super().__init__(settings, check=False)
        self.wrote = wrote

    def set_tags(self, run_id, tags):
        super().set_tags(run_id, tags)
        if any(k.startswith("claim") for k in tags):
            self.wrote.set()


def _killed_run(tracker, spec) -> tuple[str, str]:
    exp = tracker.experiment_id(f"races-{uuid.uuid4().hex[:8]}")
    run_id = take_lease(tracker, exp, spec, None).run_id
    tracker.set_status(run_id, "KILLED")
    return exp, run_id


def _slow_claimant(tracker, exp, spec, release):
    slow, result = SlowClaims(tracker.settings, release), []
    thread = threading.Thread(target=lambda: result.append(take_lease(slow, exp, spec, None)))
    thread.start()
    assert slow.blocked.wait(30)  # it read the run as free; its claim is not written yet
    return thread, result


def test_a_claim_landing_after_the_winners_read_back_does_not_make_a_second_winner(tracker, spec):
    """Before, the late claimant overwrote the winner's `claim` tag, went round again, found
    its own claim there and took the run as free: two processes executed it."""
    exp, run_id = _killed_run(tracker, spec)
    release = threading.Event()
    thread, late = _slow_claimant(tracker, exp, spec, release)
    first = take_lease(Tracker(tracker.settings, check=False), exp, spec, None)
    release.set()  # the late write lands after `first` decided
    thread.join(60)
    print(first, late)
    assert (first.run_id, first.action) == (run_id, "resume")
    assert late[0].run_id is None and late[0].action == "running-elsewhere"
    assert not [k for k in tracker.get_run(run_id).data.tags if k.startswith("claim")]


def test_a_late_claim_that_beats_a_read_back_is_withdrawn_and_retried_so_one_still_wins(tracker, spec):
    """The late write lands around another claimant's write and read-back: whichever way the
    read-back goes, the late claim is withdrawn and tried again: one winner, not none."""
    exp, run_id = _killed_run(tracker, spec)
    wrote = threading.Event()
    thread, late = _slow_claimant(tracker, exp, spec, wrote)  # released once the other has written
    other = take_lease(SignalsClaims(tracker.settings, wrote), exp, spec, None)
    thread.join(60)
    print(other, late)
    winners = [c for c in (other, late[0]) if c.run_id]
    assert len(winners) == 1 and (winners[0].run_id, winners[0].action) == (run_id, "resume")
    run = tracker.get_run(run_id)
    assert run.info.status == "RUNNING" and not [k for k in run.data.tags if k.startswith("claim")]


def _dead_process_holder() -> str:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    holder = this_holder(proc.pid)
    proc.wait()
    return holder


def test_a_run_whose_process_died_on_this_machine_is_taken_over_at_once(tracker, spec):
    exp = tracker.experiment_id(f"races-{uuid.uuid4().hex[:8]}")
    first = take_lease(tracker, exp, spec, None)
    assert take_lease(tracker, exp, spec, None).action == "running-elsewhere"  # this process: alive
    tracker.set_tags(first.run_id, {HOLDER_TAG: _dead_process_holder(), "heartbeat": f"{time.time():.3f}"})
    assert not is_live(tracker.get_run(first.run_id), TTL, time.time())
    started = time.time()
    taken = take_lease(tracker, exp, spec, None)
    assert (taken.run_id, taken.action) == (first.run_id, "resume") and time.time() - started < 10
    assert taken.previous.startswith("RUNNING, its process ") and taken.previous.endswith(" is gone")
    elsewhere = {HOLDER_TAG: "another-host:1:0.00", "heartbeat": f"{time.time():.3f}"}
    tracker.set_tags(first.run_id, elsewhere)  # another machine's process: its heartbeat decides
    assert is_live(tracker.get_run(first.run_id), TTL, time.time())


def test_the_parent_run_of_a_dead_invocation_is_closed_killed(tracker):
    exp = tracker.experiment_id(f"races-{uuid.uuid4().hex[:8]}")
    now = f"{time.time():.3f}"
    dead = tracker.create_run(exp, "dead", {"kind": "parent", HOLDER_TAG: _dead_process_holder(), "heartbeat": now})
    alive = tracker.create_run(exp, "alive", {"kind": "parent", HOLDER_TAG: this_holder(), "heartbeat": now})
    assert close_dead_parents(tracker, exp) == [dead]
    assert tracker.get_run(dead).info.status == "KILLED" and tracker.get_run(alive).info.status == "RUNNING"
    assert "is gone" in tracker.get_run(dead).data.tags["ended"]

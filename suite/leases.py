"""Leases on runs, taken through the tracking store, so no run executes twice.

Several `hummuss-suite run` processes (on one machine or many sharing a tracking
server) may expand the same study. Just before a run starts, its process claims it:

- a FINISHED run with the same config hash: nothing to do;
- a RUNNING one whose `heartbeat` tag is fresh (younger than `claim_ttl_s`) and whose
  holder is not known to be dead: it is someone else's (`holder` names it); the runner
  looks again later. The `holder` tag (host:pid:start) names the process executing it:
  on the same machine a dead one is seen at once, elsewhere its heartbeat stops;
- a FAILED, KILLED, stale or dead-held RUNNING one: taken over (resumed into the same
  MLflow run from its checkpoint). Each claimant writes a tag of its own, `claim.<token>`
  = the time of its first read, and reads the run back after a pause: the earliest claim
  wins, unless the run changed hands since the first read (`changed_hands`); every other
  claimant withdraws its tag and backs off;
- none: a new run is created, then every run with that hash is read back and the
  earliest live one wins; a process that lost deletes its own run.

Both races are decided by reading back after `SETTLE_S`. That is sound only if a
claimant's write lands within `SETTLE_S` of its first read, so a claimant whose read and
write took longer than `MAX_GAP_S` withdraws its write (deletes its own tag or run: a late
write can only ever add a claim of its own, never overwrite another's) and tries again.

The lease tags (`holder`, `heartbeat`; `suite.tracking.LEASE_TAGS`) are removed when a
run ends, so a finished run shows none. A claim lives as long as its holder: the worker
(`suite.worker.Heartbeat`) and the
runner (`LeaseKeeper`, also for runs queued on Slurm) refresh the `heartbeat` tag every
`claim_ttl_s / 4`; when the holder dies the heartbeat stops, and `claim_ttl_s` later
the run is stale and the next claimant takes it over (on the holder's own machine at
once: its `holder` process is gone). A parent run beats too, and a later invocation marks
the parent of one that died KILLED (`close_dead_parents`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass

from suite.processes import process_alive
from suite.runspec import RunSpec
from suite.tracking import Tracker

SETTLE_S = 0.5  # pause between writing a claim and reading it back
MAX_GAP_S = 0.8 * SETTLE_S  # longest first-read-to-write time for which read-back decides
ATTEMPTS = 5  # claims withdrawn for being slow before giving up ("lost")
CLAIM_PREFIX = "claim."  # a take-over claimant's own tag: claim.<token> = its first read's time
HOLDER_TAG = "holder"  # host:pid:start of the process that holds the run (suite.tracking.LEASE_TAGS)


@dataclass
class Lease:
    run_id: str | None  # None: not ours to run
    action: str  # new | resume | finished | running-elsewhere | lost
    holder: str | None = None  # running-elsewhere: the live run; finished: the finished run
    previous: str = ""  # resume: what the run was ("FAILED", "KILLED", "RUNNING, no heartbeat for 412 s")


def heartbeat_of(run) -> float:
    """The run's last heartbeat (seconds since the epoch); its start when it has none."""
    tag = run.data.tags.get("heartbeat")
    try:
        return float(tag) if tag else run.info.start_time / 1000.0
    except ValueError:
        return run.info.start_time / 1000.0


def this_holder(pid: int | None = None) -> str:
    """The `holder` tag of this process (or of its child `pid`): host, pid and start time (a
    pid can be reused)."""
    import psutil

    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{psutil.Process(pid).create_time():.2f}"


def holder_gone(run) -> str:
    """Why the process holding `run` is known to be dead ("process 123 on host h is gone"),
    else "": only a holder on this machine can be looked at; elsewhere the heartbeat decides."""
    import psutil

    host, _, rest = run.data.tags.get(HOLDER_TAG, "").partition(":")
    pid, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return ""
    try:  # a zombie (killed, not yet reaped by its parent) is gone; a recycled pid started later
        alive = process_alive(int(pid)) and abs(psutil.Process(int(pid)).create_time() - float(started or 0)) < 0.5
    except (psutil.Error, ValueError):
        alive = False
    return "" if alive else f"its process {pid} on {host} is gone"


def claims(run) -> dict[str, float]:
    """token -> first-read time of each take-over claim pending on the run."""
    out = {}
    for key, value in run.data.tags.items():
        if key.startswith(CLAIM_PREFIX):
            with contextlib.suppress(ValueError):
                out[key[len(CLAIM_PREFIX):]] = float(value)
    return out


def is_live(run, ttl: float, now: float) -> bool:
    """RUNNING with a heartbeat younger than `ttl` seconds, held by a process not known to
    be dead (a run from before the `holder` tag: its `claim` tag)."""
    held = HOLDER_TAG in run.data.tags or "claim" in run.data.tags
    return run.info.status == "RUNNING" and now - heartbeat_of(run) < ttl and held and not holder_gone(run)


def changed_hands(before, after, first_read: float) -> bool:
    """Whether the run was taken between a claimant's first read (`before`, at `first_read`)
    and its read-back (`after`): another holder, a heartbeat written since, or RUNNING again.
    A winner's claim tag goes once it holds the run, and its heartbeat may be older than
    `claim_ttl_s` by the time a slow claimant reads back (its keeper not beating yet, a
    loaded machine): that claimant must still see that it lost."""
    return (after.data.tags.get(HOLDER_TAG) != before.data.tags.get(HOLDER_TAG)
            or heartbeat_of(after) > first_read
            or (after.info.status == "RUNNING") != (before.info.status == "RUNNING"))


def take_lease(tracker: Tracker, experiment_id: str, spec: RunSpec, parent_id: str | None,
               token: str | None = None) -> Lease:
    token = token or uuid.uuid4().hex
    ttl = tracker.settings.claim_ttl_s
    mine = f"{CLAIM_PREFIX}{token}"
    for _attempt in range(ATTEMPTS):
        first_read = time.time()
        runs = tracker.runs_with_hash(experiment_id, spec.config_hash)
        now = time.time()
        done = [r for r in runs if r.info.status == "FINISHED"]
        if done:
            return Lease(None, "finished", holder=done[0].info.run_id)
        live = [r for r in runs if is_live(r, ttl, now)]
        if live:
            return Lease(None, "running-elsewhere", holder=live[0].info.run_id)
        if runs:  # failed, killed, abandoned, or its holder is dead: take it over
            target = runs[0]
            run_id, previous = target.info.run_id, target.info.status
            if previous == "RUNNING":
                previous = f"RUNNING, {holder_gone(target) or f'no heartbeat for {now - heartbeat_of(target):.0f} s'}"
            # a tag of its own: a late write (landing after another's read-back) adds a claim
            # that its writer withdraws, and never overwrites the claim of another
            tracker.set_tags(run_id, {mine: f"{first_read:.6f}"})
            if time.time() - first_read > MAX_GAP_S:  # too slow for the read-back to decide
                tracker.delete_tags(run_id, [mine])
                continue
            time.sleep(SETTLE_S)
            current = tracker.get_run(run_id)
            pending = {t: at for t, at in claims(current).items() if at > first_read - ttl}  # older: abandoned
            if (token in pending and not is_live(current, ttl, time.time()) and not changed_hands(target, current, first_read)
                    and min(pending, key=lambda t: (pending[t], t)) == token):
                # the holder first, then RUNNING, then the claim goes: a claimant reading
                # back meanwhile sees either this claim (earlier than its own) or a live run
                tracker.set_tags(run_id, {HOLDER_TAG: this_holder(), "heartbeat": f"{time.time():.3f}"})
                tracker.set_status(run_id, "RUNNING")
                tracker.delete_tags(run_id, [mine])
                return Lease(run_id, "resume", previous=previous)
            tracker.delete_tags(run_id, [mine])  # lost
            return Lease(None, "lost", holder=run_id)
        tags = {**spec.tags(), HOLDER_TAG: this_holder(), "heartbeat": f"{time.time():.3f}"}
        run_id = tracker.create_run(experiment_id, spec.name, tags, parent_id)
        if time.time() - first_read > MAX_GAP_S:
            tracker.delete_run(run_id)
            continue
        time.sleep(SETTLE_S)
        rivals = [r for r in tracker.runs_with_hash(experiment_id, spec.config_hash)
                  if r.info.status in ("RUNNING", "FINISHED")]
        rivals.sort(key=lambda r: (r.info.start_time, r.info.run_id))
        if rivals and rivals[0].info.run_id != run_id:
            tracker.delete_run(run_id)
            return Lease(None, "lost", holder=rivals[0].info.run_id)
        return Lease(run_id, "new")
    return Lease(None, "lost")


def close_dead_parents(tracker: Tracker, experiment_id: str) -> list[str]:
    """Mark KILLED the parent runs of invocations that died (killed, out of memory, the
    machine rebooted): RUNNING, and their process on this machine is gone or their
    heartbeat stopped `claim_ttl_s` ago. Returns their ids."""
    ttl, now, closed = tracker.settings.claim_ttl_s, time.time(), []
    for run in tracker.all_runs(experiment_id, "attributes.status = 'RUNNING' and tags.kind = 'parent'"):
        tags = run.data.tags
        why = holder_gone(run) or (f"no heartbeat for {now - heartbeat_of(run):.0f} s"
                                   if "heartbeat" in tags and now - heartbeat_of(run) >= ttl else "")
        if why:
            tracker.set_tags(run.info.run_id, {"ended": f"KILLED by a later invocation: {why}"})
            tracker.set_status(run.info.run_id, "KILLED")
            closed.append(run.info.run_id)
    return closed


class LeaseKeeper:
    """Refresh the `heartbeat` of every run this process holds, in the background.

        with LeaseKeeper(tracker) as keeper:
            keeper.add(run_id)      # claimed: queued on Slurm, starting in a child, ...
            ...
            keeper.discard(run_id)  # ended

    Every `claim_ttl_s / 4` (at least 1 s). A missed beat is not an error.
    """

    def __init__(self, tracker: Tracker, interval: float | None = None):
        self.tracker = tracker
        self.interval = max(1.0, interval if interval is not None else tracker.settings.claim_ttl_s / 4)
        self._runs: set[str] = set()
        self._lock = threading.Lock()
        self._beating = threading.Lock()  # held while a beat is written
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="claim-keeper")

    def add(self, run_id: str) -> None:
        with self._lock:
            self._runs.add(run_id)

    def discard(self, run_id: str) -> None:
        """Stop beating for `run_id` and remove its lease tags if it has ended (a beat in
        flight is waited for, so none lands after)."""
        with self._lock:
            self._runs.discard(run_id)
        with self._beating:
            pass
        with contextlib.suppress(Exception):
            if self.tracker.get_run(run_id).info.status != "RUNNING":
                self.tracker.clear_lease(run_id)

    @property
    def runs(self) -> set[str]:
        with self._lock:
            return set(self._runs)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            for run_id in self.runs:
                with self._beating, contextlib.suppress(Exception):
                    if run_id in self.runs:  # not discarded meanwhile
                        self.tracker.set_tags(run_id, {"heartbeat": f"{time.time():.3f}"})

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

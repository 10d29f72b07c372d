"""Leases on runs, taken through the tracking store, so no run executes twice.

Several `hummuss-suite run` processes (on one machine or many sharing a tracking
server) may expand the same study. Just before a run starts, its process claims it:

- a FINISHED run with the same config hash: nothing to do;
- a RUNNING one whose `heartbeat` tag is fresh (younger than `claim_ttl_s`): it is
  someone else's (`holder` names it); the runner looks again later;
- a FAILED, KILLED or stale RUNNING one: taken over (resumed into the same MLflow run
  from its checkpoint) by writing a `claim` token and reading it back after a pause:
  the last writer wins, every other claimant backs off;
- none: a new run is created, then every run with that hash is read back and the
  earliest live one wins; a process that lost deletes its own run.

Both races are decided by reading back after `SETTLE_S`. That is sound only if a
claimant's write lands within `SETTLE_S` of its first read, so a claim whose read and
write took longer than `MAX_GAP_S` is withdrawn and tried again.

The lease tags (`claim`, `heartbeat`; `suite.tracking.LEASE_TAGS`) are removed when a
run ends, so a finished run shows none. A claim lives as long as its holder: the worker (`suite.worker.Heartbeat`) and the
runner (`LeaseKeeper`, also for runs queued on Slurm) refresh the `heartbeat` tag every
`claim_ttl_s / 4`; when the holder dies the heartbeat stops, and `claim_ttl_s` later
the run is stale and the next claimant takes it over.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from dataclasses import dataclass

from suite.runspec import RunSpec
from suite.tracking import Tracker

SETTLE_S = 0.5  # pause between writing a claim and reading it back
MAX_GAP_S = 0.8 * SETTLE_S  # longest first-read-to-write time for which read-back decides
ATTEMPTS = 5  # claims withdrawn for being slow before giving up ("lost")


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


def is_live(run, ttl: float, now: float) -> bool:
    """RUNNING with a heartbeat younger than `ttl` seconds."""
    return run.info.status == "RUNNING" and now - heartbeat_of(run) < ttl


def take_lease(tracker: Tracker, experiment_id: str, spec: RunSpec, parent_id: str | None,
               token: str | None = None) -> Lease:
    token = token or uuid.uuid4().hex
    ttl = tracker.settings.claim_ttl_s
    for _attempt in range(ATTEMPTS):
        first_read = time.time()
        runs = tracker.runs_with_hash(experiment_id, spec.config_hash)
        now = time.time()
        done = [r for r in runs if r.info.status == "FINISHED"]
        if done:
            return Lease(None, "finished", holder=done[0].info.run_id)
        live = [r for r in runs if is_live(r, ttl, now) and r.data.tags.get("claim") != token]
        if live:
            return Lease(None, "running-elsewhere", holder=live[0].info.run_id)
        if runs:  # failed, killed or abandoned (or our own withdrawn claim): take it over
            target = runs[0]
            previous = target.info.status
            if previous == "RUNNING" and target.data.tags.get("claim") != token:
                previous = f"RUNNING, no heartbeat for {now - heartbeat_of(target):.0f} s"
            tracker.set_tags(target.info.run_id, {"claim": token, "heartbeat": f"{time.time():.3f}"})
            if time.time() - first_read > MAX_GAP_S:
                continue  # too slow for the read-back to be sure: look again
            tracker.set_status(target.info.run_id, "RUNNING")
            time.sleep(SETTLE_S)
            current = tracker.get_run(target.info.run_id).data.tags.get("claim")
            if current == token:
                return Lease(target.info.run_id, "resume", previous=previous)
            return Lease(None, "lost", holder=target.info.run_id)
        tags = {**spec.tags(), "claim": token, "heartbeat": f"{time.time():.3f}"}
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

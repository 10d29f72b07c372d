"""Claiming runs through the tracking store, so no run executes twice.

Several `hummuss-suite run` processes (on one machine or many sharing a tracking
server) may expand the same study. Before a run starts, its process claims it:

- a FINISHED run with the same config hash: nothing to do;
- a RUNNING one whose `heartbeat` tag is fresh (younger than `claim_ttl_s`): it is
  someone else's;
- a FAILED, KILLED or stale RUNNING one: taken over (resumed into the same MLflow run
  from its checkpoint) by writing a `claim` token and reading it back after a pause:
  the last writer wins, every other claimant backs off;
- none: a new run is created, then every run with that hash is read back and the
  earliest live one wins; a process that lost deletes its own run.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from suite.runspec import RunSpec
from suite.tracking import Tracker

SETTLE_S = 0.5  # pause between writing a claim and reading it back


@dataclass
class Claim:
    run_id: str | None  # None: not ours to run
    action: str  # new | resume | finished | running-elsewhere | lost


def _heartbeat(run) -> float:
    tag = run.data.tags.get("heartbeat")
    try:
        return float(tag) if tag else run.info.start_time / 1000.0
    except ValueError:
        return run.info.start_time / 1000.0


def _live(run, ttl: float, now: float) -> bool:
    return run.info.status == "RUNNING" and now - _heartbeat(run) < ttl


def claim(tracker: Tracker, experiment_id: str, spec: RunSpec, parent_id: str | None,
          token: str | None = None) -> Claim:
    token = token or uuid.uuid4().hex
    ttl = tracker.settings.claim_ttl_s
    runs = tracker.runs_with_hash(experiment_id, spec.config_hash)
    now = time.time()
    if any(r.info.status == "FINISHED" for r in runs):
        return Claim(None, "finished")
    if any(_live(r, ttl, now) for r in runs):
        return Claim(None, "running-elsewhere")
    if runs:  # failed, killed or abandoned: take it over
        target = runs[0].info.run_id
        tracker.set_tags(target, {"claim": token, "heartbeat": f"{now:.0f}"})
        tracker.set_status(target, "RUNNING")
        time.sleep(SETTLE_S)
        current = tracker.client.get_run(target).data.tags.get("claim")
        return Claim(target, "resume") if current == token else Claim(None, "lost")
    tags = {**spec.tags(), "claim": token, "heartbeat": f"{now:.0f}"}
    run_id = tracker.create_run(experiment_id, spec.name, tags, parent_id)
    time.sleep(SETTLE_S)
    rivals = [r for r in tracker.runs_with_hash(experiment_id, spec.config_hash)
              if r.info.status in ("RUNNING", "FINISHED")]
    rivals.sort(key=lambda r: (r.info.start_time, r.info.run_id))
    if rivals and rivals[0].info.run_id != run_id:
        tracker.client.delete_run(run_id)
        return Claim(None, "lost")
    return Claim(run_id, "new")

"""Workers: each runs trials until the sweep has `--trials` finished trials; one runs in
the command's process, several in child processes of this machine
(`python -m suite.sweep --worker I ...`).

A worker counts the sweep's trials before each new one, over every process and machine
(`AskLock` makes the count exact among the workers of one host), recovers the trials of
dead workers first, and stops after `MAX_CONSECUTIVE_FAILURES` failed trials in a row.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from suite.launch import child_env
from suite.sweep.config import SweepConfig
from suite.sweep.objective import TrialObjective, trial_dir
from suite.sweep.prepare import Plan, prepare
from suite.sweep.results import SweepResult, summarise
from suite.sweep.samplers import derive_seed, make_pruner, make_sampler
from suite.sweep.space import check_space, grid_exhausted, grid_values
from suite.sweep.stale import open_sweep_storage, recover_stale
from suite.sweep.storage import parse_storage, quiet_experimental
from suite.tracking import Tracker

DONE = (TrialState.COMPLETE, TrialState.PRUNED)
POLL_S = 1.0  # how often a worker with nothing to start looks again
MAX_CONSECUTIVE_FAILURES = 3  # a worker whose trials keep raising stops
EXIT_STOPS = {0: "done", 3: "failing", 130: "interrupted"}  # a worker process's exit code -> why it stopped


@dataclass
class WorkerOutcome:
    ran: int  # trials this worker started
    stop: str  # done | timeout | grid exhausted | failing


class AskLock:
    """Serialises "count the trials, then ask for one" among the workers of one host (or of
    hosts sharing checkpoint_dir), so a sweep does not overshoot `--trials`. The objective
    releases it as soon as its trial exists."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(path, "a")
        self.held = False

    def acquire(self) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_EX)
        self.held = True

    def release(self) -> None:
        if self.held:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.held = False


def work(cfg: SweepConfig, tracker: Tracker, index: int = 0, deadline: float | None = None,
         say: Callable[[str], None] = print) -> WorkerOutcome:
    """Run trials of the sweep `cfg` (already prepared: storage, study, parent run) until it
    has `cfg.trials` finished trials, the deadline passes or trials keep failing."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study_decl = cfg.declaration()
    base, _ = check_space(study_decl, cfg.variant, cfg.scale, cfg.seed, cfg.sets, cfg.sampler)
    spec = parse_storage(cfg.storage)
    study = optuna.load_study(study_name=cfg.name, storage=open_sweep_storage(spec, cfg, tracker.settings),
                              pruner=make_pruner(cfg.pruner, base.train_config["epochs"]))
    parent = study.user_attrs["mlflow_parent_run_id"]
    objective = TrialObjective(study_decl, study_decl.search_space, base, cfg.name, tracker,
                               tracker.experiment_id(study_decl.name), parent, say)
    lock = AskLock(trial_dir(tracker.settings, cfg.name, 0).parent / ".ask.lock")
    objective.on_start = lock.release
    grid_size = math.prod(map(len, grid_values(study_decl.search_space).values())) if cfg.sampler == "grid" else 0
    ran = failures = 0
    while True:
        if deadline and time.time() >= deadline:
            return WorkerOutcome(ran, "timeout")
        recover_stale(study, cfg.stale_after_s, cfg.max_retry, tracker, say)
        if spec.kind == "rdb":
            with quiet_experimental():
                optuna.storages.fail_stale_trials(study)  # heartbeats: retried by StaleTrialCallback
        lock.acquire()
        try:
            trials = study.get_trials(deepcopy=False)
            states = Counter(t.state for t in trials)
            done = states[TrialState.COMPLETE] + states[TrialState.PRUNED]
            if done >= cfg.trials:
                return WorkerOutcome(ran, "done")
            if grid_size and grid_exhausted(trials, grid_size):
                return WorkerOutcome(ran, "grid exhausted")
            if done + states[TrialState.RUNNING] >= cfg.trials:  # enough are running elsewhere
                lock.release()
                time.sleep(POLL_S)
                continue
            study.sampler = make_sampler(cfg.sampler, derive_seed(cfg.seed, len(trials), index))
            study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
        finally:
            lock.release()
        ran += 1
        failures = failures + 1 if objective.last_state == "FAIL" else 0
        if failures >= MAX_CONSECUTIVE_FAILURES:
            say(f"worker {index}: {failures} trials in a row failed; stopping (see their logs)")
            return WorkerOutcome(ran, "failing")


def worker_process(cfg: SweepConfig, tracker: Tracker, index: int, deadline: float | None) -> int:
    """The life of a worker process that `spawn_workers` started: trials until the sweep is
    done; its exit code (0: done or timeout, 3: its trials keep failing, 130: interrupted)."""
    prefix = f"[worker {index}] "
    try:
        stop = work(cfg, tracker, index, deadline, lambda m: print(prefix + m, flush=True)).stop
    except KeyboardInterrupt:
        stop = "interrupted"
    return next((code for code, why in EXIT_STOPS.items() if why == stop), 0)  # timeout, grid exhausted: 0


def spawn_workers(plan: Plan, workers: int, deadline: float | None, say: Callable[[str], None]) -> list[str]:
    """`workers` processes on this machine; their exit codes as stop reasons."""
    cfg = plan.cfg
    payload = cfg.to_json()
    env = child_env(plan.tracker.settings, workers)
    procs = {}
    for i in range(workers):
        cmd = [sys.executable, "-m", "suite.sweep", "--worker", str(i), "--deadline", str(deadline or 0),
               "--config", payload]
        proc = subprocess.Popen(cmd, env=env, start_new_session=True)
        procs[proc.pid] = (i, proc)
        say(f"worker {i}: pid {proc.pid}")
    stops = []
    try:
        while procs:
            for pid, (i, proc) in list(procs.items()):
                code = proc.poll()
                if code is None:
                    continue
                del procs[pid]
                if code < 0:
                    stops.append(f"worker {i} killed by {signal.Signals(-code).name}")
                    say(f"worker {i} (pid {pid}) was killed by {signal.Signals(-code).name}; its trial is "
                        f"retried by the others (or by the next run of this command)")
                    recover_stale(plan.study, cfg.stale_after_s, cfg.max_retry, plan.tracker, say)
                else:
                    stops.append(EXIT_STOPS.get(code, f"exit code {code}"))
            time.sleep(0.5)
    except KeyboardInterrupt:
        say("interrupted: stopping the workers (their trials are marked failed and re-enqueued)")
        for _i, proc in procs.values():  # SIGTERM: a worker turns it into KeyboardInterrupt
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGTERM)
        for _i, proc in procs.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        raise
    return stops


def run_sweep(cfg: SweepConfig, tracker: Tracker, say: Callable[[str], None] = print) -> SweepResult:
    """Prepare the sweep, run its workers (in this process for one), summarise."""
    plan = prepare(cfg, tracker, say)
    cfg = plan.cfg
    started = time.time()
    deadline = started + cfg.timeout_s if cfg.timeout_s else None
    needed = cfg.trials - sum(t.state in DONE for t in plan.study.get_trials(deepcopy=False))
    workers = max(0, min(cfg.workers, needed))
    if workers == 0:  # finished before: the parent run (its metrics, its end time) is left as it is
        say(f"sweep {cfg.name}: nothing to do: {cfg.trials} trials already finished; "
            f"storage {plan.storage.describe}; MLflow parent run {plan.parent_id}")
        return summarise(plan, started, ["nothing to do"], log=False)
    say(f"sweep {cfg.name}: {cfg.trials} trials of {cfg.study}/{cfg.variant} at scale {cfg.scale}, "
        f"sampler {cfg.sampler} (seed {cfg.seed}), pruner {cfg.pruner}; {needed} to run on "
        f"{workers} worker(s); storage {plan.storage.describe}; MLflow parent run {plan.parent_id}")
    tracker.set_status(plan.parent_id, "RUNNING")
    status = "FAILED"
    try:
        if workers == 1:
            stops = [work(cfg, tracker, 0, deadline, say).stop]
        else:
            stops = spawn_workers(plan, workers, deadline, say)
        result = summarise(plan, started, stops)
        status = "FINISHED" if result.ok else "FAILED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracker.set_status(plan.parent_id, status)
    return result

"""Run a study: expand it into runs, skip what finished, launch the rest.

    runner = Runner(Tracker(load_settings()), jobs=2)
    outcomes = runner.run_study(STUDY, "smoke")
    print(summary(outcomes))

Where runs execute (see suite/launch/):
- `jobs=1`, launcher `local`: one after the other in this process;
- `jobs=N`: in up to N child processes at once, each pinned to its own GPU(s) when the
  machine has GPUs (`gpus_per_run`, default 1; K > 1 runs torchrun with K processes);
- launcher `torchrun`: each run under `torchrun --nproc-per-node N`;
- launcher `slurm`: a submitit job array (`slurm=SlurmOptions(...)`).

Each run is claimed (suite/leases.py) just before it starts, so several processes, on
one machine or many sharing a tracking store, divide a study between them. A run some
other process holds is looked at again every `claim_ttl_s / 4`: when it finished it is
skipped, when its holder died (no heartbeat for `claim_ttl_s`) it is taken over and
resumed from its checkpoint. With `wait=False` the runner stops looking once its own
runs are done. Stages (`init_from`) run before the runs that start from them. A failing
run does not stop its siblings; Ctrl-C stops cleanly: running runs are marked KILLED
and their checkpoints kept.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from suite.launch import (
    LAUNCHERS,
    DevicePlan,
    DevicePool,
    RunTask,
    SlurmOptions,
    child_env,
    discover_gpus,
    plan_devices,
    project_on_pythonpath,
)
from suite.leases import LeaseKeeper, take_lease
from suite.runspec import RunSpec, expand_runs
from suite.tracking import Tracker, git_commit
from suite.worker import execute, log_path


@dataclass
class Outcome:
    spec: RunSpec
    status: str  # FINISHED | SKIPPED | FAILED | KILLED
    reason: str  # what happened, in words
    run_id: str | None = None
    log: str = ""
    seconds: float = 0.0


class Runner:
    def __init__(self, tracker: Tracker, jobs: int = 1, launcher: str = "local", nproc_per_node: int = 1,
                 say=print, *, gpus_per_run: int | None = None, wait: bool = True,
                 slurm: SlurmOptions | None = None):
        if launcher not in LAUNCHERS:
            raise ValueError(f"unknown launcher {launcher!r}; known: {', '.join(LAUNCHERS)}")
        if jobs < 1 or nproc_per_node < 1:
            raise ValueError(f"--jobs and --nproc-per-node must be >= 1, got {jobs} and {nproc_per_node}")
        if gpus_per_run is not None and gpus_per_run < 0:
            raise ValueError(f"--gpus-per-run must be >= 0, got {gpus_per_run}")
        self.tracker, self.jobs, self.launcher, self.nproc = tracker, jobs, launcher, nproc_per_node
        self.gpus_per_run, self.wait, self.say = gpus_per_run, wait, say
        self.slurm = slurm or (SlurmOptions(gpus_per_task=1 if gpus_per_run is None else gpus_per_run)
                               if launcher == "slurm" else None)
        self._plan: DevicePlan | None = None
        if launcher == "slurm":  # bad combinations fail here, before anything is logged
            self.slurm.check()
        else:
            self.device_plan()

    # -- the plan ------------------------------------------------------------------------
    def run_study(self, study: str, scale: str, seeds=None, data=None, sets=None, variants=None,
                  parent_tags: dict | None = None) -> list[Outcome]:
        specs = expand_runs(study, scale, seeds, data, sets, variants)
        stages = {s.init_from.config_hash: s.init_from for s in specs if s.init_from is not None}
        outcomes = []
        if stages:
            self.say(f"running {len(stages)} stage run(s) first: "
                     + ", ".join(f"{s.study}/{s.name}" for s in stages.values()))
            outcomes += self.run_specs(list(stages.values()), parent_tags)
            failed = [o for o in outcomes if o.status in ("FAILED", "KILLED")]
            if failed:
                return outcomes + [Outcome(s, "SKIPPED", "its stage failed") for s in specs]
        return outcomes + self.run_specs(specs, parent_tags)

    def run_specs(self, specs: list[RunSpec], parent_tags: dict | None = None) -> list[Outcome]:
        """Claim and execute specs (all of one study or several), grouped per study."""
        outcomes: list[Outcome] = []
        for study in dict.fromkeys(s.study for s in specs):
            group = [s for s in specs if s.study == study]
            outcomes += self._run_group(study, group, parent_tags or {})
        return outcomes

    def device_plan(self) -> DevicePlan:
        """GPUs found and how runs share them (discovered and said once, at construction)."""
        if self._plan is None:
            self._plan = plan_devices(discover_gpus(), self.jobs, self.gpus_per_run, self.launcher, self.nproc)
            self.say(self._plan.describe())
        return self._plan

    def _backend(self):
        if self.launcher == "slurm":
            return _SlurmBackend(self)
        plan = self.device_plan()
        hide_gpus = bool(plan.gpus) and plan.per_run == 0  # only a child's environment can hide them
        if self.jobs == 1 and self.launcher == "local" and not plan.torchrun and not hide_gpus:
            return _InProcess(self)
        return _Children(self, plan)

    # -- claiming and waiting ----------------------------------------------------------------
    def _run_group(self, study: str, specs: list[RunSpec], parent_tags: dict) -> list[Outcome]:
        tracker = self.tracker
        exp_id = tracker.experiment_id(study)
        parent = tracker.create_run(exp_id, f"{study} {specs[0].scale} {time.strftime('%Y-%m-%d %H:%M:%S')}",
                                    {"kind": "parent", "study": study, "scale": specs[0].scale,
                                     "git_commit": git_commit(), **parent_tags})
        self.say(f"{study}: {len(specs)} run(s) at scale {specs[0].scale} "
                 f"(experiment {tracker.experiment_name(study)}, parent run {parent})")
        ttl = tracker.settings.claim_ttl_s
        recheck = min(30.0, max(1.0, ttl / 4))
        queue = list(range(len(specs)))  # not claimed yet, in order
        waiting: dict[int, float] = {}  # held by another process: index -> when to look again
        results: dict[int, Outcome] = {}
        status = "FINISHED"
        backend = None
        with LeaseKeeper(tracker) as keeper:
            try:
                backend = self._backend()
                while queue or waiting or backend.busy():
                    now = time.time()
                    due = [i for i, t in waiting.items() if t <= now]
                    batch = []
                    while len(batch) < backend.free_slots() and (queue or due):
                        i = queue.pop(0) if queue else due.pop(0)
                        looked_before = waiting.pop(i, None) is not None
                        started = self._claim(exp_id, specs[i], parent, looked_before, recheck)
                        if isinstance(started, Outcome):
                            results[i] = started
                        elif started is None:  # someone else's: look again later
                            waiting[i] = time.time() + recheck
                        else:
                            keeper.add(started)
                            batch.append((i, specs[i], started))
                    if batch:
                        backend.start(batch)
                    for i, outcome in backend.poll():
                        keeper.discard(outcome.run_id)
                        results[i] = outcome
                    if not queue and waiting and not backend.busy() and not self.wait:
                        for i in waiting:
                            results[i] = Outcome(specs[i], "SKIPPED", "running in another process")
                        break
                    if not batch and (backend.busy() or waiting):
                        pause = backend.poll_s if backend.busy() else min(waiting.values()) - time.time()
                        time.sleep(min(max(pause, 0.05), recheck))
            except BaseException as err:  # Ctrl-C, or the store failing under us: stop what runs
                status = "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED"
                if backend is not None:
                    backend.interrupt()
                raise
            finally:
                failed = any(o.status in ("FAILED", "KILLED") for o in results.values())
                tracker.set_status(parent, status if status != "FINISHED" else ("FAILED" if failed else "FINISHED"))
        return [results[i] for i in sorted(results)]

    def _claim(self, exp_id: str, spec: RunSpec, parent: str, looked_before: bool, recheck: float):
        """Claim `spec`: its run id when ours to run, None when another process holds it,
        else the Outcome (SKIPPED) it ends with."""
        c = take_lease(self.tracker, exp_id, spec, parent)
        if c.action == "finished":
            reason = "finished by another process" if looked_before else "already finished"
            self.say(f"  {spec.name}: skipped ({reason})")
            return Outcome(spec, "SKIPPED", reason, c.holder)
        if c.action in ("running-elsewhere", "lost"):
            if not looked_before:
                ttl = self.tracker.settings.claim_ttl_s
                then = (f"looking again every {recheck:.0f} s; taken over if its heartbeat stops for {ttl:.0f} s"
                        if self.wait else "skipped unless it frees up before this process is done")
                self.say(f"  {spec.name}: held by another process (run {c.holder}); {then}")
            return None
        if c.action == "resume":
            self.say(f"  {spec.name}: resuming run {c.run_id} (was {c.previous})")
        self.tracker.set_tags(c.run_id, {"git_commit": git_commit()})
        if c.action == "new":
            self.tracker.log_params(c.run_id, spec.params())
        return c.run_id

    # -- shared by the backends ---------------------------------------------------------------
    def _done(self, spec, run_id, status, reason, started) -> Outcome:
        log = str(log_path(self.tracker.settings, spec))
        o = Outcome(spec, status, reason, run_id, log, time.time() - started)
        self.say(f"  {spec.name}: {status.lower()} in {o.seconds:.0f} s" + (f" ({reason}; log: {log})"
                                                                          if status != "FINISHED" else ""))
        return o


class _InProcess:
    """`jobs=1`: each run executes in this process, one after the other."""

    poll_s = 0.2

    def __init__(self, runner: Runner):
        self.runner, self._done = runner, []

    def free_slots(self) -> int:
        return 1

    def busy(self) -> bool:
        return False

    def start(self, batch) -> None:
        for i, spec, run_id in batch:
            started = time.time()
            self.runner.say(f"  {spec.name}: training (run {run_id})")
            try:
                execute(spec, run_id, self.runner.tracker.settings)
            except KeyboardInterrupt:
                raise
            except Exception as err:
                self._done.append((i, self.runner._done(spec, run_id, "FAILED", f"{type(err).__name__}: {err}",
                                                        started)))
            else:
                self._done.append((i, self.runner._done(spec, run_id, "FINISHED", "trained and evaluated", started)))

    def poll(self):
        done, self._done = self._done, []
        return done

    def interrupt(self) -> None:  # execute() marked its run KILLED
        pass


class _Children:
    """Each run in its own process group (`python -m suite.launch`, or torchrun), pinned
    to the GPUs the device pool hands it."""

    poll_s = 0.2

    def __init__(self, runner: Runner, plan: DevicePlan):
        self.runner, self.plan, self.pool = runner, plan, DevicePool(plan)
        self.running: dict[int, tuple] = {}  # pid -> (proc, i, spec, run_id, started, out, devices)
        settings = runner.tracker.settings
        self.spec_dir = Path(settings.checkpoint_dir) / "specs"

    def free_slots(self) -> int:
        return self.plan.slots - len(self.running)

    def busy(self) -> bool:
        return bool(self.running)

    def _command(self, spec_file: Path, run_id: str) -> list[str]:
        entry = ["-m", "suite.launch", "--spec", str(spec_file), "--run-id", run_id]
        if self.plan.torchrun:
            torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
            return [torchrun, "--standalone", "--nproc-per-node", str(self.plan.nproc), *entry]
        return [sys.executable, *entry]

    def _env(self, devices: tuple[str, ...]) -> dict[str, str]:
        return child_env(self.runner.tracker.settings, self.plan.slots * self.plan.nproc, self.pool.env(devices))

    def start(self, batch) -> None:
        self.spec_dir.mkdir(parents=True, exist_ok=True)
        for i, spec, run_id in batch:
            devices = self.pool.acquire()
            assert devices is not None, "started more runs than the device pool has slots"
            spec_file = self.spec_dir / f"{spec.config_hash}.json"
            spec_file.write_text(json.dumps(spec.to_dict()))
            log = log_path(self.runner.tracker.settings, spec)
            log.parent.mkdir(parents=True, exist_ok=True)
            out = open(log.with_suffix(".out"), "a")
            proc = subprocess.Popen(self._command(spec_file, run_id), env=self._env(devices),
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            self.running[proc.pid] = (proc, i, spec, run_id, time.time(), out, devices)
            where = f", GPU {','.join(devices)}" if devices else ""
            self.runner.say(f"  {spec.name}: started (pid {proc.pid}, run {run_id}{where}, log {log})")

    def poll(self):
        done = []
        for pid, (proc, i, spec, run_id, started, out, devices) in list(self.running.items()):
            code = proc.poll()
            if code is None:
                continue
            out.close()
            del self.running[pid]
            self.pool.release(devices)
            if code == 0:
                done.append((i, self.runner._done(spec, run_id, "FINISHED", "trained and evaluated", started)))
                continue
            status = "KILLED" if code in (130, -signal.SIGINT, -signal.SIGTERM) else "FAILED"
            if code < 0 and status == "FAILED":  # died without marking its run
                self.runner.tracker.set_status(run_id, "FAILED")
            done.append((i, self.runner._done(spec, run_id, status, f"exit code {code}", started)))
        return done

    def interrupt(self) -> None:
        self.runner.say("interrupted: stopping the running runs (they are marked KILLED, checkpoints kept)")
        for proc, *_ in self.running.values():
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGINT)
        for proc, _i, _spec, run_id, _started, out, devices in self.running.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            self.runner.tracker.set_status(run_id, "KILLED")
            out.close()
            self.pool.release(devices)
        self.running.clear()


class _SlurmBackend:
    """A submitit job array per batch of claimed runs; the runner waits for the tasks
    (and keeps their claims alive while they queue)."""

    poll_s = 2.0

    def __init__(self, runner: Runner):
        self.runner, self.options = runner, runner.slurm
        self.executor = self.options.executor(parallelism=runner.jobs)
        self.jobs: list[tuple] = []  # (job, i, spec, run_id, started)

    def free_slots(self) -> int:
        return 10**6  # Slurm queues them; --jobs caps the array's parallelism

    def busy(self) -> bool:
        return bool(self.jobs)

    def start(self, batch) -> None:
        settings = self.runner.tracker.settings
        with project_on_pythonpath(), self.executor.batch():
            submitted = [(self.executor.submit(RunTask(), spec.to_dict(), run_id, settings), i, spec, run_id)
                         for i, spec, run_id in batch]
        for job, i, spec, run_id in submitted:
            self.jobs.append((job, i, spec, run_id, time.time()))
            self.runner.tracker.set_tags(run_id, {"slurm_job": job.job_id, "slurm_log": str(job.paths.stdout)})
            self.runner.say(f"  {spec.name}: submitted (job {job.job_id}, run {run_id}, "
                            f"log {log_path(settings, spec)}, slurm log {job.paths.stdout})")

    def poll(self):
        done = []
        for entry in list(self.jobs):
            job, i, spec, run_id, started = entry
            if not job.done():
                continue
            self.jobs.remove(entry)
            error = job.exception()
            if error is None:
                done.append((i, self.runner._done(spec, run_id, "FINISHED", "trained and evaluated", started)))
                continue
            last = [line for line in str(error).strip().splitlines() if line.strip()][-1:] or [repr(error)]
            current = self.runner.tracker.get_run(run_id).info.status
            if current == "RUNNING":  # the task died without marking its run
                self.runner.tracker.set_status(run_id, "FAILED")
            done.append((i, self.runner._done(spec, run_id, "FAILED",
                                              f"{last[0].strip()} (slurm log: {job.paths.stderr})", started)))
        return done

    def interrupt(self) -> None:
        self.runner.say("interrupted: cancelling the submitted runs (they are marked KILLED, checkpoints kept)")
        for job, _i, _spec, run_id, _started in self.jobs:
            with contextlib.suppress(Exception):
                job.cancel(check=False)
            self.runner.tracker.set_status(run_id, "KILLED")
        self.jobs.clear()


def summary(outcomes: list[Outcome]) -> str:
    """One line per run, then what failed and where its log is."""
    lines = [f"{'run':<40} {'status':<9} {'time':>7}  note"]
    for o in outcomes:
        lines.append(f"{o.spec.study + '/' + o.spec.name:<40} {o.status:<9} {o.seconds:>6.0f}s  {o.reason}")
    failed = [o for o in outcomes if o.status in ("FAILED", "KILLED")]
    if failed:
        lines.append("")
        lines.append(f"{len(failed)} run(s) did not finish:")
        lines += [f"  {o.spec.study}/{o.spec.name}: {o.reason}; log: {o.log}" for o in failed]
    return "\n".join(lines)

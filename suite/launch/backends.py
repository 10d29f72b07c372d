"""Where the runner's claimed runs execute (suite/runner.py picks one per invocation):

- `InProcess`: `jobs=1`, launcher `local`: each run in the runner's process, one after the other;
- `Children`: each run in its own process group (`python -m suite.launch`, or torchrun),
  pinned to the GPUs the device pool hands it;
- `SlurmArray`: a submitit job array per batch of claimed runs.

Each has `free_slots()`, `busy()`, `train_hashes()` (train_hash -> spec of its running
runs), `start(batch)` of (index, spec, run_id), `poll()` -> [(index, Outcome)] and
`interrupt()`; the runner (`runner`) gives them its tracker, progress display, `say` and
the `_done` / `_finished` outcomes.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from suite.launch.devices import DevicePlan, DevicePool
from suite.launch.processes import child_env, project_on_pythonpath, stop_process_trees
from suite.launch.slurm import RunTask
from suite.leases import HOLDER_TAG, this_holder
from suite.worker import execute, log_path

STOP_GRACE_S = 20.0  # a stopped run's processes get this long to end KILLED before SIGKILL


class InProcess:
    """`jobs=1`: each run executes in this process, one after the other."""

    poll_s = 0.2

    def __init__(self, runner):
        self.runner, self._done = runner, []

    def free_slots(self) -> int:
        return 1

    def busy(self) -> bool:
        return False

    def train_hashes(self) -> dict:
        return {}

    def start(self, batch) -> None:
        for i, spec, run_id in batch:
            started = time.time()
            self.runner.say(f"  {spec.name}: training (run {run_id})")
            self.runner.progress.started(spec, run_id)
            try:
                status = execute(spec, run_id, self.runner.tracker.settings, echo=self.runner.progress.echo)
            except KeyboardInterrupt:
                raise
            except Exception as err:
                self._done.append((i, self.runner._done(spec, run_id, "FAILED", f"{type(err).__name__}: {err}",
                                                        started)))
            else:
                self._done.append((i, self.runner._finished(spec, run_id, started, status)))

    def poll(self):
        done, self._done = self._done, []
        return done

    def interrupt(self) -> None:  # execute() marked its run KILLED
        pass


class Children:
    """Each run in its own process group (`python -m suite.launch`, or torchrun), pinned
    to the GPUs the device pool hands it."""

    poll_s = 0.2

    def __init__(self, runner, plan: DevicePlan):
        self.runner, self.plan, self.pool = runner, plan, DevicePool(plan)
        self.running: dict[int, tuple] = {}  # pid -> (proc, i, spec, run_id, started, out, devices)
        settings = runner.tracker.settings
        self.spec_dir = Path(settings.checkpoint_dir) / "specs"

    def free_slots(self) -> int:
        return self.plan.slots - len(self.running)

    def busy(self) -> bool:
        return bool(self.running)

    def train_hashes(self) -> dict:
        return {entry[2].train_hash: entry[2] for entry in self.running.values()}

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
            with contextlib.suppress(Exception):  # the run's holder is now its process (see suite/leases.py)
                self.runner.tracker.set_tags(run_id, {HOLDER_TAG: this_holder(proc.pid)})
            where = f", GPU {','.join(devices)}" if devices else ""
            self.runner.say(f"  {spec.name}: started (pid {proc.pid}, run {run_id}{where}, log {log})")
            self.runner.progress.started(spec, run_id)

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
                done.append((i, self.runner._finished(spec, run_id, started)))
                continue
            status = "KILLED" if code in (130, -signal.SIGINT, -signal.SIGTERM) else "FAILED"
            reason = f"exit code {code}"
            if status == "FAILED" and _killed_by_sigkill(code, Path(out.name)):
                reason = memory_reason(spec, code)
                with contextlib.suppress(Exception):
                    self.runner.tracker.set_tags(run_id, {"error": reason})
            if status == "FAILED" and self.runner.tracker.get_run(run_id).info.status == "RUNNING":
                self.runner.tracker.set_status(run_id, "FAILED")  # died without marking its run
            done.append((i, self.runner._done(spec, run_id, status, reason, started)))
        return done

    def interrupt(self) -> None:
        """Stop every running run's whole process tree (torchrun's ranks live in sessions of
        their own): SIGINT, then SIGKILL to what is left after `STOP_GRACE_S`; runs KILLED."""
        self.runner.say("interrupted: stopping the running runs (they are marked KILLED, checkpoints kept)")
        stop_process_trees([proc.pid for proc, *_ in self.running.values()], grace_s=STOP_GRACE_S)
        for proc, _i, _spec, run_id, _started, out, devices in self.running.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            with contextlib.suppress(Exception):  # the store failing must not leave processes behind
                self.runner.tracker.set_status(run_id, "KILLED")
            out.close()
            self.pool.release(devices)
        self.running.clear()


def _killed_by_sigkill(code: int, out: Path) -> bool:
    """The run's process, or under torchrun one of its ranks (torchrun then exits 1 and says
    so in the output), was killed by SIGKILL: the kernel's OOM killer, unless a person did."""
    if code == -signal.SIGKILL:
        return True
    try:
        with open(out, "rb") as handle:
            handle.seek(max(0, out.stat().st_size - 20000))
            return b"Signal 9 (SIGKILL)" in handle.read()
    except OSError:
        return False


def memory_reason(spec, code: int) -> str:
    """Why a run whose process was killed by SIGKILL failed, naming what to change."""
    batch = spec.train_config.get("batch_size")
    return (f"killed by SIGKILL (exit code {code}): most likely out of memory (the kernel's OOM killer) at "
            f"batch size {batch} on {spec.frames}-frame clips of a {spec.model} model; try a smaller batch, "
            f"e.g. --set batch_size={max(1, int(batch or 2) // 2)}")


class SlurmArray:
    """A submitit job array per batch of claimed runs; the runner waits for the tasks
    (and keeps their claims alive while they queue)."""

    poll_s = 2.0

    def __init__(self, runner):
        self.runner, self.options = runner, runner.slurm
        self.executor = self.options.executor(parallelism=runner.jobs)
        self.jobs: list[tuple] = []  # (job, i, spec, run_id, started)

    def free_slots(self) -> int:
        return 10**6  # Slurm queues them; --jobs caps the array's parallelism

    def busy(self) -> bool:
        return bool(self.jobs)

    def train_hashes(self) -> dict:
        return {entry[2].train_hash: entry[2] for entry in self.jobs}

    def start(self, batch) -> None:
        settings = self.runner.tracker.settings
        with project_on_pythonpath(), self.executor.batch():
            submitted = [(self.executor.submit(RunTask(), spec.to_dict(), run_id, settings), i, spec, run_id)
                         for i, spec, run_id in batch]
        for job, i, spec, run_id in submitted:
            self.jobs.append((job, i, spec, run_id, time.time()))
            self.runner.tracker.set_tags(run_id, {"slurm_job": job.job_id, "slurm_log": _portable(job.paths.stdout)})
            self.runner.say(f"  {spec.name}: submitted (job {job.job_id}, run {run_id}, "
                            f"log {log_path(settings, spec)}, slurm log {job.paths.stdout})")
            self.runner.progress.started(spec, run_id)

    def poll(self):
        done = []
        for entry in list(self.jobs):
            job, i, spec, run_id, started = entry
            if not job.done():
                continue
            self.jobs.remove(entry)
            error = job.exception()
            if error is None:
                done.append((i, self.runner._finished(spec, run_id, started)))
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


def _portable(path) -> str:
    """A path for a tag: relative to the working directory (where the Slurm folder lives, by
    default `slurm-logs/`), never an absolute path of this machine."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(Path(*path.parts[-2:]))  # outside it: the job's folder and file name

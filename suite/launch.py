"""Where runs execute: GPUs of this machine, torchrun inside a run, or a Slurm job array.

Device discovery and placement (`--jobs N`, `--gpus-per-run K`):

    plan = plan_devices(discover_gpus(), jobs=4)     # 4 GPUs found -> 4 runs at once, 1 GPU each
    pool = DevicePool(plan)
    devices = pool.acquire()                          # ('2',): the run's CUDA_VISIBLE_DEVICES
    env = pool.env(devices)                           # {'CUDA_VISIBLE_DEVICES': '2'}

- G GPUs found, K GPUs per run (default 1): at most min(N, G // K) runs at once, each
  pinned to its own K GPUs through `CUDA_VISIBLE_DEVICES`; K > 1 runs the run under
  `torchrun --nproc-per-node K` (one process per GPU). More jobs than GPUs never share a
  GPU: the extra runs wait for one to free up.
- `--gpus-per-run 0`: runs on the CPU, N at once, GPUs hidden from them.
- No GPU found: runs on the CPU (the runner says so once).
- `HUMMUSS_FAKE_GPUS=N` in the environment makes discovery report N GPUs (ids 0..N-1):
  placement then works as on an N-GPU machine (tests, dry runs), although torch in the
  runs still finds no CUDA device and trains on the CPU.

Child processes start as `python -m suite.launch --spec FILE --run-id ID`: it records
what the run saw (tag `cuda_visible_devices`) and hands over to `suite.worker`.

Slurm (`--launcher slurm`): the runs go to `submitit` as one job array, each array task
executing `suite.worker.execute(spec, run_id, settings)` for a run the launching process
claimed before submission (and keeps claimed while the task waits in the queue). A
preempted or timed-out task is requeued (`submitit.helpers.Checkpointable`) and resumes
from its checkpoint, in the same MLflow run. `SlurmOptions(cluster="local")` runs the
array on this machine through submitit's local executor (how the tests run it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import sys
from dataclasses import dataclass

FAKE_GPUS_ENV = "HUMMUSS_FAKE_GPUS"
DEVICES_TAG = "cuda_visible_devices"  # what a run saw, "(unset)" when the variable was not set
LAUNCHERS = ("local", "torchrun", "slurm")
CLUSTERS = ("slurm", "local", "debug")  # submitit executors: a real cluster, this machine, in-process

try:  # submitit is the `cluster` extra; only --launcher slurm needs it
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:  # pragma: no cover
    _Checkpointable = object


# -- device discovery and placement -------------------------------------------------------
def discover_gpus() -> list[str]:
    """The GPUs runs may use, as `CUDA_VISIBLE_DEVICES` names them (['0', '1'], or the
    ids the parent's own CUDA_VISIBLE_DEVICES lists); HUMMUSS_FAKE_GPUS=N overrides."""
    fake = os.environ.get(FAKE_GPUS_ENV)
    if fake is not None and fake.strip() != "":
        try:
            n = int(fake)
        except ValueError:
            n = -1
        if n < 0:
            raise ValueError(f"{FAKE_GPUS_ENV}={fake!r}: expected a number of GPUs such as 4 (or 0)")
        return [str(i) for i in range(n)]
    import torch

    if not torch.cuda.is_available():
        return []
    n = torch.cuda.device_count()
    visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return visible[:n] if len(visible) >= n else [str(i) for i in range(n)]


@dataclass(frozen=True)
class DevicePlan:
    """How runs share the machine's devices."""

    gpus: tuple[str, ...]  # GPUs found (CUDA_VISIBLE_DEVICES ids); () = none
    per_run: int  # GPUs each run gets; 0 = the run uses the CPU
    slots: int  # runs at once
    nproc: int  # processes per run
    torchrun: bool  # start each run under torchrun (nproc processes)

    def describe(self) -> str:
        if not self.gpus:
            return (f"no GPU found: runs train on the CPU, {self.slots} at once"
                    + (f", {self.nproc} processes each (torchrun)" if self.torchrun else ""))
        found = f"{len(self.gpus)} GPU(s) found ({','.join(self.gpus)})"
        if self.per_run == 0:
            return f"{found}, but --gpus-per-run 0: runs train on the CPU, {self.slots} at once"
        each = f"{self.per_run} GPU(s) each" + (f", torchrun with {self.nproc} processes" if self.torchrun else "")
        return f"{found}: up to {self.slots} run(s) at once, {each}"


def plan_devices(gpus: list[str] | tuple[str, ...], jobs: int, gpus_per_run: int | None = None,
                 launcher: str = "local", nproc_per_node: int = 1) -> DevicePlan:
    """Runs at once and devices per run, from the GPUs found and the options.

    `gpus_per_run=None` means 1 GPU per run (or `nproc_per_node` under torchrun) when
    there are GPUs, the CPU when there are none. Raises ValueError for combinations that
    cannot be placed.
    """
    gpus = tuple(gpus)
    if jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    if nproc_per_node < 1:
        raise ValueError(f"--nproc-per-node must be >= 1, got {nproc_per_node}")
    if gpus_per_run is not None and gpus_per_run < 0:
        raise ValueError(f"--gpus-per-run must be >= 0, got {gpus_per_run}")
    if gpus_per_run is None:
        per_run = 0 if not gpus else (nproc_per_node if launcher == "torchrun" else 1)
    else:
        per_run = gpus_per_run
    if per_run > len(gpus):
        found = f"only {len(gpus)} GPU(s) were found" if gpus else \
            f"no GPU was found (torch sees none; {FAKE_GPUS_ENV}=N pretends N)"
        raise ValueError(f"--gpus-per-run {per_run} asks for {per_run} GPU(s) per run, but {found}")
    if per_run == 0:
        torchrun = launcher == "torchrun"
        return DevicePlan(gpus, 0, jobs, nproc_per_node if torchrun else 1, torchrun)
    if launcher == "torchrun" and nproc_per_node not in (1, per_run):
        raise ValueError(f"--nproc-per-node {nproc_per_node} with --gpus-per-run {per_run}: under torchrun "
                         f"each GPU of a run takes one process; give one of them, or the same number")
    slots = min(jobs, len(gpus) // per_run)
    return DevicePlan(gpus, per_run, slots, per_run, launcher == "torchrun" or per_run > 1)


class DevicePool:
    """Hands each starting run its own GPUs and takes them back when it ends."""

    def __init__(self, plan: DevicePlan):
        self.plan = plan
        self._free = list(plan.gpus)
        self._running = 0

    def has_free(self) -> bool:
        return self._running < self.plan.slots

    def acquire(self) -> tuple[str, ...] | None:
        """The devices of a run about to start (() for a CPU run), or None: no free slot."""
        if not self.has_free():
            return None
        k = self.plan.per_run
        taken, self._free = tuple(self._free[:k]), self._free[k:]
        self._running += 1
        return taken

    def release(self, devices: tuple[str, ...]) -> None:
        self._running -= 1
        self._free.extend(d for d in devices if d not in self._free)
        order = {d: i for i, d in enumerate(self.plan.gpus)}
        self._free.sort(key=lambda d: order.get(d, len(order)))

    def env(self, devices: tuple[str, ...]) -> dict[str, str]:
        """Environment of a run given `devices`: its CUDA_VISIBLE_DEVICES (empty hides
        the GPUs from a CPU run); nothing to set on a machine without GPUs."""
        if not self.plan.gpus:
            return {}
        return {"CUDA_VISIBLE_DEVICES": ",".join(devices)}


def record_devices(tracker, run_id: str, **extra: str) -> None:
    """Tag the run with the CUDA_VISIBLE_DEVICES this process sees (and `extra` tags)."""
    seen = os.environ.get("CUDA_VISIBLE_DEVICES")
    tracker.set_tags(run_id, {DEVICES_TAG: "(unset)" if seen is None else seen, **extra})


# -- Slurm through submitit ----------------------------------------------------------------
def parse_minutes(text: str | int) -> int:
    """A Slurm time limit in minutes. Slurm's formats: 'M', 'M:S', 'H:M:S', 'D-H', 'D-H:M',
    'D-H:M:S' (so '4:00:00' is 240 and '90' is 90); seconds round up to a minute."""
    value = str(text).strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", value)
    if not m:
        raise ValueError(f"bad time limit {value!r}; expected minutes (90), H:M:S (4:00:00) or D-H:M:S")
    days, a, b, c = (int(x) if x is not None else None for x in m.groups())
    if days is not None:  # D-H, D-H:M, D-H:M:S
        minutes = days * 1440 + a * 60 + (b or 0) + (1 if c else 0)
    elif c is not None:  # H:M:S
        minutes = a * 60 + b + (1 if c else 0)
    else:  # M or M:S
        minutes = a + (1 if b else 0)
    if minutes < 1:
        raise ValueError(f"time limit {value!r} is shorter than a minute")
    return minutes


@dataclass(frozen=True)
class SlurmOptions:
    """How `--launcher slurm` submits a study: one array task per run."""

    folder: str = "slurm-logs/%j"  # job scripts and logs (submitit expands %j to the job id)
    partition: str | None = None
    time: str = "24:00:00"  # per task; a preempted or timed-out task is requeued
    gpus_per_task: int = 1
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    cluster: str = "slurm"  # slurm | local (this machine, for tests) | debug (in this process)

    def __post_init__(self):
        if self.cluster not in CLUSTERS:
            raise ValueError(f"unknown Slurm cluster {self.cluster!r}; known: {', '.join(CLUSTERS)}")
        if self.gpus_per_task < 0:
            raise ValueError(f"GPUs per task must be >= 0, got {self.gpus_per_task}")
        parse_minutes(self.time)

    def check(self) -> None:
        """ValueError when this machine cannot submit: no submitit, or no sbatch for a real cluster."""
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise ValueError("--launcher slurm needs submitit: pip install 'hummuss-suite[cluster]'") from None
        if self.cluster == "slurm" and shutil.which("sbatch") is None:
            raise ValueError("--launcher slurm: sbatch is not on PATH (not a Slurm login node?); "
                             "--slurm-cluster local runs the array on this machine instead")

    def executor(self, parallelism: int):
        """A submitit executor for these options; `parallelism` caps array tasks at once."""
        self.check()
        import submitit

        executor = submitit.AutoExecutor(folder=self.folder, cluster=self.cluster)
        gpus = self.gpus_per_task
        params = dict(name="hummuss", timeout_min=parse_minutes(self.time), nodes=1,
                      tasks_per_node=max(1, gpus), gpus_per_node=gpus, cpus_per_task=self.cpus_per_task,
                      mem_gb=self.mem_gb, slurm_array_parallelism=parallelism,
                      slurm_partition=self.partition)
        executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
        return executor


class RunTask(_Checkpointable):
    """One array task: execute a claimed run (`suite.worker.execute`).

    On preemption or time-out submitit calls `checkpoint` and requeues the task; the
    worker's checkpoint (`last.pt`) is what carries the progress, so the requeued task
    simply executes the run again and the trainer resumes from the last epoch. The run
    is put back to RUNNING (the worker marks it FAILED as the task exits) and tagged
    `preemptions`.
    """

    def __init__(self):
        self.preemptions = 0
        self._requeueing = False

    def __call__(self, spec: dict, run_id: str, settings) -> str:
        from suite.runspec import RunSpec
        from suite.tracking import Tracker
        from suite.worker import execute

        env = None
        with contextlib.suppress(Exception):
            import submitit

            env = submitit.JobEnvironment()
        if env is not None and env.num_tasks > 1:  # one process per GPU: torch.distributed's env://
            import submitit

            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False,
                                                                  overwrite=True)
        main = env is None or env.global_rank == 0
        tracker = Tracker(settings, check=False) if main else None
        if tracker is not None:
            record_devices(tracker, run_id, slurm_job=str(env.job_id) if env else "",
                           preemptions=str(self.preemptions))
        try:
            execute(RunSpec.from_dict(spec), run_id, settings)
        except SystemExit:
            if self._requeueing and tracker is not None:
                tracker.set_status(run_id, "RUNNING")
                tracker.set_tags(run_id, {"preemptions": str(self.preemptions), "error": ""})
            raise
        return run_id

    def checkpoint(self, *args, **kwargs):
        """Called by submitit on preemption or time-out: requeue with the same arguments."""
        import submitit

        self.preemptions += 1
        self._requeueing = True
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)

    def __getstate__(self):
        return {"preemptions": self.preemptions, "_requeueing": False}


@contextlib.contextmanager
def project_on_pythonpath():
    """PYTHONPATH holds the project while submitting (jobs inherit the environment)."""
    from suite.tracking import PROJECT_DIR

    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_DIR), old]))
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


# -- command-line options (wired into `hummuss-suite run` by suite/cli.py) -------------------
def add_launch_options(p: argparse.ArgumentParser) -> None:
    """--jobs, --launcher, --nproc-per-node, --gpus-per-run, --no-wait and --slurm-*."""
    p.add_argument("--jobs", type=int, default=1,
                   help="runs at once (default: 1); with GPUs, at most one run per free GPU(s)")
    p.add_argument("--launcher", default="local", choices=list(LAUNCHERS),
                   help="local processes, torchrun inside each run, or a Slurm job array (submitit)")
    p.add_argument("--nproc-per-node", type=int, default=1, help="processes per run under torchrun")
    p.add_argument("--gpus-per-run", type=int, default=None,
                   help="GPUs each run gets (default: 1 when GPUs are found); K > 1 runs torchrun with K "
                        "processes; 0 trains on the CPU. With --launcher slurm: GPUs per array task")
    p.add_argument("--no-wait", dest="wait", action="store_false",
                   help="do not wait for runs that another process is running (default: wait, and take "
                        "them over if their heartbeat stops for claim_ttl_s)")
    g = p.add_argument_group("Slurm (--launcher slurm)")
    g.add_argument("--slurm-folder", default="slurm-logs/%j", help="job scripts and logs (default: slurm-logs/%%j)")
    g.add_argument("--slurm-partition", help="partition to submit to")
    g.add_argument("--slurm-time", default="24:00:00", help="time limit per run, e.g. 4:00:00 or 240 (minutes)")
    g.add_argument("--slurm-cpus-per-task", type=int, help="CPUs per array task")
    g.add_argument("--slurm-mem-gb", type=float, help="memory per array task in GB")
    g.add_argument("--slurm-cluster", default="slurm", choices=list(CLUSTERS),
                   help="slurm, or local to run the array on this machine with submitit's local executor")


def runner_kwargs(args: argparse.Namespace) -> dict:
    """Keyword arguments of `Runner(tracker, **runner_kwargs(args))`; ValueError when bad."""
    kwargs = dict(jobs=args.jobs, launcher=args.launcher, nproc_per_node=args.nproc_per_node,
                  gpus_per_run=args.gpus_per_run, wait=args.wait)
    if args.launcher == "slurm":
        kwargs["slurm"] = SlurmOptions(folder=args.slurm_folder, partition=args.slurm_partition,
                                       time=args.slurm_time, cpus_per_task=args.slurm_cpus_per_task,
                                       mem_gb=args.slurm_mem_gb, cluster=args.slurm_cluster,
                                       gpus_per_task=1 if args.gpus_per_run is None else args.gpus_per_run)
    return kwargs


# -- child process entry point -----------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """`python -m suite.launch --spec FILE --run-id ID`: tag what the run sees, then run
    `suite.worker` (every rank under torchrun; rank 0 tags)."""
    from suite import worker

    args = list(sys.argv[1:] if argv is None else argv)
    if os.environ.get("RANK", "0") == "0" and "--run-id" in args:
        run_id = args[args.index("--run-id") + 1]
        with contextlib.suppress(Exception):  # the run itself reports store trouble
            from suite.tracking import Tracker, load_settings

            record_devices(Tracker(load_settings(), check=False), run_id)
    return worker.main(args)


if __name__ == "__main__":
    sys.exit(main())

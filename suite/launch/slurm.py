"""Slurm through submitit: one array task per claimed run, requeued when preempted."""

from __future__ import annotations

import contextlib
import re
import shutil
from dataclasses import dataclass

from suite.launch.devices import record_devices

CLUSTERS = ("slurm", "local", "debug")  # submitit executors: a real cluster, this machine, in-process

try:  # submitit is the `cluster` extra; only --launcher slurm needs it
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:  # pragma: no cover
    _Checkpointable = object


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


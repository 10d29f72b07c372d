"""Where runs execute: GPUs of this machine, torchrun inside a run, or a Slurm job array.

Device discovery and placement (`--jobs N`, `--gpus-per-run K`; suite/launch/devices.py):

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

Child processes (suite/launch/processes.py) get their environment from `child_env` (the
tracking store, the project on PYTHONPATH, their share of the CPU threads) and start as
`python -m suite.launch --spec FILE --run-id ID`: it records what the run saw (tag
`cuda_visible_devices`) and hands over to `suite.worker`.

The runner's three backends (suite/launch/backends.py): `InProcess` (`--jobs 1`),
`Children` (a process group per run) and `SlurmArray`.

Slurm (`--launcher slurm`; suite/launch/slurm.py): the runs go to `submitit` as one job
array, each array task executing `suite.worker.execute(spec, run_id, settings)` for a run
the launching process claimed before submission (and keeps claimed while the task waits
in the queue). A preempted or timed-out task is requeued (`submitit.helpers.Checkpointable`)
and resumes from its checkpoint, in the same MLflow run. `SlurmOptions(cluster="local")`
runs the array on this machine through submitit's local executor (how the tests run it).
"""

from suite.launch.devices import (
    DEVICES_TAG,
    FAKE_GPUS_ENV,
    LAUNCHERS,
    DevicePlan,
    DevicePool,
    discover_gpus,
    plan_devices,
    record_devices,
)
from suite.launch.processes import (
    THREADS_ENV,
    child_env,
    enter_child_process,
    interrupt_on_sigterm,
    process_tree,
    project_on_pythonpath,
    pythonpath,
    sigterm_as_interrupt,
    stop_process_trees,
)
from suite.launch.slurm import CLUSTERS, RunTask, SlurmOptions, parse_minutes

__all__ = [
    "CLUSTERS", "DEVICES_TAG", "FAKE_GPUS_ENV", "LAUNCHERS", "THREADS_ENV", "DevicePlan", "DevicePool", "RunTask",
    "SlurmOptions", "child_env", "discover_gpus", "enter_child_process", "interrupt_on_sigterm", "parse_minutes",
    "plan_devices", "process_tree", "project_on_pythonpath", "pythonpath", "record_devices", "sigterm_as_interrupt",
    "stop_process_trees",
]

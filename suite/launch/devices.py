"""This machine's GPUs and how runs share them (`--jobs N`, `--gpus-per-run K`).

    plan = plan_devices(discover_gpus(), jobs=4)     # 4 GPUs found -> 4 runs at once, 1 GPU each
    pool = DevicePool(plan)
    devices = pool.acquire()                          # ('2',): the run's CUDA_VISIBLE_DEVICES
    env = pool.env(devices)                           # {'CUDA_VISIBLE_DEVICES': '2'}
"""

from __future__ import annotations

import os
from dataclasses import dataclass

FAKE_GPUS_ENV = "HUMMUSS_FAKE_GPUS"
DEVICES_TAG = "cuda_visible_devices"  # what a run saw, "(unset)" when the variable was not set
LAUNCHERS = ("local", "torchrun", "slurm")


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


"""keep_freed_memory: glibc told to keep freed blocks, once per process, by the trainer on the CPU."""

import ctypes
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from hummuss import allocator


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_glibc_accepts_the_thresholds():
    allocator.keep_freed_memory.cache_clear()
    assert allocator.keep_freed_memory() is True
    # mallopt refuses values it cannot take with 0: the same call by hand is accepted too
    assert ctypes.CDLL("libc.so.6").mallopt(allocator.M_MMAP_THRESHOLD, allocator.THRESHOLD) == 1


def test_the_trainer_on_the_cpu_keeps_freed_memory(monkeypatch, tmp_path):
    from hummuss.data.clips import Clips
    from hummuss.train import TrainConfig, Trainer
    calls = []
    monkeypatch.setattr("hummuss.train.keep_freed_memory", lambda: calls.append(1) or True)
    x = np.zeros((4, 5, 17, 3), np.float32)
    clips = Clips(inputs=x, labels=x, fps=np.full(4, 50.0), meta=pd.DataFrame(index=range(4)))
    Trainer(torch.nn.Linear(3, 3), clips, None, TrainConfig(device="cpu"), tmp_path)
    assert calls == [1]


# -- glibc.malloc.hugetlb: large blocks on transparent huge pages ----------------------------
FAULTS = """
import resource, torch
torch.set_num_threads(1)
from hummuss.allocator import keep_freed_memory
keep_freed_memory()
x = torch.ones(36 << 20)  # 144 MiB, as a training step's activations at paper size
x.clone()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    x.clone()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 4)
"""


def _thp_mode() -> str:
    try:
        text = open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    except OSError:
        return "none"
    return text.split("[")[1].split("]")[0]


@pytest.mark.skipif(_thp_mode() not in ("madvise", "always"), reason="no transparent huge pages on this kernel")
def test_huge_pages_cut_the_page_faults_of_a_large_block():
    """A 144 MiB clone after the trainer's `keep_freed_memory` faults in its pages anew each
    time (36,864 pages of 4 KiB; about 30,000 faults measured here); started with
    `with_hugepages`, it faults them in 2 MiB at a time (72 huge pages)."""
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != allocator.TUNABLES_ENV}

    def faults(e):
        out = subprocess.run([sys.executable, "-c", FAULTS], env=e, capture_output=True, text=True, check=True)
        return int(out.stdout.split()[-1])

    plain, huge = faults(env), faults(allocator.with_hugepages(env))
    assert plain > 10_000, plain
    assert huge < 1_000, huge


def test_with_hugepages_adds_the_tunable_and_keeps_the_users():
    add = allocator.with_hugepages
    assert add({"A": "1"}) == {"A": "1", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    assert add({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})["GLIBC_TUNABLES"] == \
        "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    theirs = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0:glibc.malloc.arena_max=2"}
    assert add(theirs) == theirs and allocator.hugepages_requested(theirs)
    assert not allocator.hugepages_requested({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})


def test_child_processes_start_with_huge_pages(monkeypatch, tmp_path):
    from suite.launch.processes import child_env
    from suite.tracking import TrackingSettings

    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    env = child_env(TrackingSettings(f"sqlite:///{tmp_path}/m.db", str(tmp_path)), processes=1)
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the restart is Linux-only")
def test_hummuss_suite_restarts_once_with_huge_pages(monkeypatch):
    """`hummuss-suite` (suite.entry.main) re-executes `python -m suite` with the same
    arguments and the tunable; started with it (the restarted process), with the user's
    own setting, or with HUMMUSS_HUGEPAGES=0, it runs the command line as it is."""
    from suite import entry

    execs = []

    class Restarted(Exception):
        pass

    def execve(path, argv, env):
        execs.append((path, argv, env))
        raise Restarted

    monkeypatch.setattr(entry.os, "execve", execve)
    monkeypatch.setattr(entry.sys, "argv", ["/venv/bin/hummuss-suite", "run", "tables", "--scale", "smoke"])
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.delenv(entry.OPT_OUT_ENV, raising=False)
    monkeypatch.setenv("HUMMUSS_MKL_INTEL_PATH", "0")  # the huge pages alone (tests/test_mkl_vendor.py: both)
    with pytest.raises(Restarted):
        entry.main()
    path, argv, env = execs[0]
    assert path == sys.executable and argv == [sys.executable, "-m", "suite", "run", "tables", "--scale", "smoke"]
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"

    ran = []
    monkeypatch.setattr("suite.cli.main", lambda: ran.append(1) or 0)
    for tunables, opt_out in [("glibc.malloc.hugetlb=1", None), ("glibc.malloc.hugetlb=0", None), (None, "0")]:
        for name, value in [("GLIBC_TUNABLES", tunables), (entry.OPT_OUT_ENV, opt_out)]:
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        assert entry.main() == 0
    assert ran == [1, 1, 1] and len(execs) == 1

"""`hummuss-suite`'s entry point: the process restarts itself once with glibc's malloc on
huge pages (`hummuss.allocator`: a training step's large activations fault in 2 MiB at a
time instead of 4 KiB) and, on a CPU that is not an Intel one, with MKL's Intel code path
(`hummuss.mkl_vendor`: about twice the matmul and FFT rate on an AMD EPYC), then runs the
command line (`suite.cli.main`). Child processes inherit both.

The restart is `os.execve` of `python -m suite` with the same arguments, before anything
heavy is imported: the same process id, terminal and signals. Each setting is added only
where the environment lacks it: glibc.malloc.hugetlb (to any value; HUMMUSS_HUGEPAGES=0: never),
the MKL library (HUMMUSS_MKL_INTEL_PATH=0: never); with nothing to add, or off Linux, there
is no restart.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from hummuss.allocator import hugepages_requested, with_hugepages
from hummuss.mkl_vendor import with_intel_path

OPT_OUT_ENV = "HUMMUSS_HUGEPAGES"  # "0": no huge pages


def restart_environment(env: Mapping[str, str]) -> dict[str, str] | None:
    """The environment to restart this process with, or None where it should run as it is."""
    if not sys.platform.startswith("linux"):
        return None
    new = dict(env)
    if not hugepages_requested(env) and env.get(OPT_OUT_ENV) != "0":
        new = with_hugepages(new)
    new = with_intel_path(new)
    return None if new == dict(env) else new


def main() -> int:
    env = restart_environment(os.environ)
    if env is not None:
        command = [sys.executable, "-m", "suite", *sys.argv[1:]]
        os.execve(command[0], command, env)
    from suite.cli import main as cli

    return cli()

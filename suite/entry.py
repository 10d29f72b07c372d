"""`hummuss-suite`'s entry point: the process restarts itself once with glibc's malloc on
huge pages (`hummuss.allocator`: a training step's large activations fault in 2 MiB at a
time instead of 4 KiB), then runs the command line (`suite.cli.main`).

The restart is `os.execve` of `python -m suite` with the same arguments, before anything
heavy is imported: the same process id, terminal and signals. It does not happen where
the environment already sets glibc.malloc.hugetlb (to any value), off Linux, or with
HUMMUSS_HUGEPAGES=0.
"""

from __future__ import annotations

import os
import sys

from hummuss.allocator import hugepages_requested, with_hugepages

OPT_OUT_ENV = "HUMMUSS_HUGEPAGES"  # "0": start as is


def restart_command() -> list[str] | None:
    """The command line that restarts this process with huge pages, or None where it should
    run as it is."""
    if not sys.platform.startswith("linux") or hugepages_requested() or os.environ.get(OPT_OUT_ENV) == "0":
        return None
    return [sys.executable, "-m", "suite", *sys.argv[1:]]


def main() -> int:
    command = restart_command()
    if command is not None:
        os.execve(command[0], command, with_hugepages(os.environ))
    from suite.cli import main as cli

    return cli()

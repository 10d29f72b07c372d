"""Memory for each training step without page faults: glibc's malloc tuned for large tensors.

A CPU training step allocates and frees activations of tens to hundreds of MiB. With
glibc's defaults each of them is a fresh mapping whose pages the kernel faults in and
zeroes one 4 KiB page at a time, on every step. Two settings change that:

- `keep_freed_memory()` (in the process, any time): raises malloc's mmap and trim
  thresholds to 1 GiB, so freed blocks go back to malloc's free lists and the heap, not to
  the kernel. Blocks up to a few MiB are then reused (a clone of 8 MiB: 5.6 -> 0.7 ms, one
  thread); larger ones, allocated 64-byte aligned, mostly are not: the heap grows past them
  and faults in new pages (a clone of 143 MiB: 30,000 minor faults, 70-97 ms).
- the glibc tunable `glibc.malloc.hugetlb=1` (environment variable GLIBC_TUNABLES, read
  when the process starts; glibc 2.35 and later): malloc backs its heap and mappings with
  transparent huge pages (where the kernel's THP mode is `madvise` or `always`), so a fresh
  block faults in 2 MiB at a time (the same clone: 29 faults, 14.5 ms).

`with_hugepages(env)` adds the tunable to an environment: the suite starts its own processes
with it (`hummuss-suite` re-executes itself once, child processes inherit it).
`hugepages_requested()` says whether this process started with it. Linux with glibc only;
elsewhere the variable is ignored and `keep_freed_memory` does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys
from collections.abc import Mapping

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
THRESHOLD = 1 << 30
TUNABLES_ENV = "GLIBC_TUNABLES"
HUGEPAGES = "glibc.malloc.hugetlb=1"


@functools.cache
def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds (once per process); True where it applied."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, THRESHOLD))


def _tunables(env: Mapping[str, str]) -> list[str]:
    return [t for t in env.get(TUNABLES_ENV, "").split(":") if t]


def hugepages_requested(env: Mapping[str, str] | None = None) -> bool:
    """Whether `env` (default: this process's) sets glibc.malloc.hugetlb, to any value (a
    value the user chose, 0 included, is theirs to keep)."""
    return any(t.startswith("glibc.malloc.hugetlb=") for t in _tunables(os.environ if env is None else env))


def with_hugepages(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with glibc.malloc.hugetlb=1 added to its GLIBC_TUNABLES (other tunables kept;
    an explicit glibc.malloc.hugetlb setting left as it is)."""
    if hugepages_requested(env):
        return dict(env)
    return {**env, TUNABLES_ENV: ":".join([*_tunables(env), HUGEPAGES])}

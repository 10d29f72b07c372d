"""MKL's own code on CPUs that are not Intel's: a one-function library preloaded into the suite's processes.

PyTorch's CPU build runs its float32 matmuls (mm, addmm, bmm: every nn.Linear, MotionBERT's
attention) and its FFTs in Intel's oneMKL. Before MKL picks its code for a CPU it calls
`mkl_serv_intel_cpu_true()`, which says whether the CPU is an Intel one; on any other CPU MKL
runs slower, generic code, whatever instructions the CPU has. On a 2-core AMD EPYC of family 26
model 2 (Zen 5, AVX-512; torch 2.13.0, MKL 2024.2), medians of 5 runs each:

    operation                                  MKL's own choice    Intel code path
    2048^3 matmul                              107 GMAC/s          232 GMAC/s
    512-point rfft / irfft, a transform        0.143 / 0.158 us    0.067 / 0.051 us
    paper training step, HumMUSS               3.85-4.18 s         2.30-2.37 s
    paper training step, MotionBERT-Lite       5.36-5.48 s         2.96-3.86 s
    offline pass F = 243, HumMUSS              661-782 ms          347-357 ms
    offline pass F = 243, MotionBERT-Lite      908-960 ms          471-503 ms

(oneDNN, the other library in the same build, ran the same 2048^3 product at 232 GMAC/s
without any of this.) The results are float32 either way: a 2048^3 product differed from
MKL's own by 1e-6 of its largest entry, as two summation orders do.

hummuss/csrc/mkl_intel_cpu.c defines that one function to answer yes. Preloaded (LD_PRELOAD),
the dynamic linker binds MKL's calls to it rather than to MKL's own definition, and MKL
then picks its code by the instructions the CPU reports (cpuid) as it does on an Intel CPU.
Nothing else changes: the same library, its own feature checks, float32 arithmetic.

It must be there when the process starts, so the suite starts its processes with it:
`hummuss-suite` restarts itself once with it (suite/entry.py, with glibc's huge pages), `make
test` runs the tests with it (`python -m hummuss.mkl_vendor -- COMMAND` runs a command with it),
and child processes (the runner's workers, torchrun, Slurm jobs started from the suite)
inherit the environment. HumMUSS and MotionBERT run in the same processes, so both get it:
their comparisons stay under one protocol. (Without it, on an AMD CPU, MotionBERT's
matmuls ran at half the rate while HumMUSS's own compiled kernels, hummuss/csrc, did not:
the comparisons favoured HumMUSS, the streaming one most.)

It applies on x86-64 Linux where the CPU is not an Intel one, unless HUMMUSS_MKL_INTEL_PATH=0.
On an Intel CPU MKL's own answer is already yes. A torch without MKL never calls the
function. The library is compiled once with the C compiler (`cc`, or $CC) into
~/.cache/hummuss (or $XDG_CACHE_HOME/hummuss); without a compiler the suite runs as before
and says so once. `code_path()` says which code this process's MKL runs; the benchmarks
and every tracked run record it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path

ENV = "HUMMUSS_MKL_INTEL_PATH"  # "0": leave MKL to its own choice
SOURCE = Path(__file__).with_name("csrc") / "mkl_intel_cpu.c"
PRELOAD_ENV = "LD_PRELOAD"
INTEL = "GenuineIntel"
LIBRARY_PREFIX = "libhummuss-mkl-intel-cpu-"


@functools.cache
def cpu_vendor() -> str | None:
    """The CPU's vendor string (/proc/cpuinfo's vendor_id: GenuineIntel, AuthenticAMD, ...), or None."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "vendor_id":
                return value.strip()
    except OSError:
        pass
    return None


def applies(env: Mapping[str, str] | None = None) -> bool:
    """Whether processes started with `env` (default: this process's) should get the library:
    x86-64 Linux, a CPU that is not an Intel one, and HUMMUSS_MKL_INTEL_PATH not "0"."""
    env = os.environ if env is None else env
    return (sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")
            and cpu_vendor() not in (None, INTEL) and env.get(ENV) != "0")


def library_name() -> str:
    """The built library's file name, named by its source's contents (a changed source builds anew)."""
    digest = hashlib.sha1(SOURCE.read_bytes()).hexdigest()[:12]
    return f"{LIBRARY_PREFIX}{digest}.so"


def cache_directory() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "hummuss"


@functools.cache
def library() -> Path | None:
    """The compiled library (built on first call, then cached on disk), or None where it cannot
    be built (no C compiler; one warning)."""
    path = cache_directory() / library_name()
    if path.exists():
        return path
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    try:
        if compiler is None:
            raise OSError("no C compiler (cc, gcc or $CC)")
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:  # built aside, then renamed: racing processes are safe
            built = Path(tmp) / path.name
            subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", str(built), str(SOURCE)],
                           check=True, capture_output=True, text=True, timeout=120)
            os.replace(built, path)
        return path
    except (OSError, subprocess.SubprocessError) as err:
        detail = getattr(err, "stderr", None) or err
        warnings.warn(f"MKL keeps its generic code on this {cpu_vendor()} CPU (about half the matmul rate): "
                      f"could not build {SOURCE.name}: {detail}", RuntimeWarning, stacklevel=2)
        return None


def _entries(env: Mapping[str, str]) -> list[str]:
    return env.get(PRELOAD_ENV, "").replace(":", " ").split()


def _ours(entry: str) -> bool:
    return Path(entry).name.startswith(LIBRARY_PREFIX)


def preloaded(env: Mapping[str, str] | None = None) -> bool:
    """Whether `env` (default: this process's) preloads a build of the library that exists here."""
    return any(_ours(p) and Path(p).exists() for p in _entries(os.environ if env is None else env))


def with_intel_path(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with this machine's build of the library first in LD_PRELOAD (other entries kept,
    other builds of it dropped: an environment inherited from another machine, a Slurm job's,
    may name one that is not here), where it `applies` and could be built; otherwise `env` as it is."""
    if not applies(env):
        return dict(env)
    lib = library()
    if lib is None:
        return dict(env)
    entries = [str(lib), *(p for p in _entries(env) if not _ours(p))]
    if _entries(env) == entries:
        return dict(env)
    return {**env, PRELOAD_ENV: ":".join(entries)}


def mapped() -> bool:
    """Whether this process has the library loaded (Linux: /proc/self/maps)."""
    try:
        return LIBRARY_PREFIX in Path("/proc/self/maps").read_text(errors="replace")
    except OSError:
        return False


def intel_code_path() -> bool:
    """Whether this process's MKL runs its Intel code: an Intel CPU, or the library loaded."""
    return cpu_vendor() == INTEL or mapped()


def code_path() -> str:
    """Which code this process's MKL runs, in words, for benchmarks and tracked runs."""
    vendor = cpu_vendor() or "unknown"
    if vendor == INTEL:
        return "MKL's own (Intel CPU)"
    if mapped():
        return f"MKL's Intel code path on this {vendor} CPU (hummuss/mkl_vendor.py)"
    return f"MKL's generic code on this {vendor} CPU"


def main(argv: list[str] | None = None) -> int:
    """`python -m hummuss.mkl_vendor -- COMMAND ...`: run COMMAND (in place of this process)
    with the library preloaded where it applies (`make test`); without arguments, print
    `code_path()` of a process started with this environment."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--"] and len(args) > 1:
        os.execvpe(args[1], args[1:], with_intel_path(os.environ))
    if args:
        print("usage: python -m hummuss.mkl_vendor [-- COMMAND ...]", file=sys.stderr)
        return 2
    print(code_path())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Shared set-up of the speed benchmarks (collected only with --benchmark-only: `make bench`).

Every benchmark compares HumMUSS and MotionBERT(-Lite) in the same run, uses
`benchmark.pedantic` with fixed rounds and records its figures with `suite.bench.record`
(frames, fps, latency_ms, peak_mb from the torch profiler's memory events, MACs per frame
and the fraction of this machine's measured fp32 matmul rate). HUMMUSS_BENCH_QUICK=1
runs fewer sizes and rounds.
"""

import os
from pathlib import Path

import pytest
import torch

from hummuss.allocator import keep_freed_memory
from hummuss.mkl_vendor import code_path
from hummuss.zoo import build_model
from suite.bench import gemm_rate

keep_freed_memory()  # the trainer's allocator setting, for every benchmark (hummuss/allocator.py)


def pytest_benchmark_update_machine_info(config, machine_info):
    """What the JSON's machine_info lacks for reading these figures: torch, the vector
    instructions its CPU kernels use, its threads, the GPU, glibc's tunables (huge pages
    change the training step's time) and the code MKL runs (`hummuss.mkl_vendor`: on an AMD
    CPU its generic code halves the matmul rate). `suite.report.speed.machine_text` prints them."""
    machine_info["torch"] = {
        "version": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
        "mkl": code_path(),
    }
    machine_info["caches"] = _caches()


def _caches() -> dict[str, int]:
    """Per-core data and unified cache sizes in bytes from Linux's sysfs, {"L1d": ..., "L2":
    ..., "L3": ...} ({} elsewhere). (py-cpuinfo's sizes were wrong on a VM: L3 1 MiB for a
    32 MiB EPYC.)"""
    out = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level, kind, size = ((index / name).read_text().strip() for name in ("level", "type", "size"))
            scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(size[-1], 1)
            out[f"L{level}" + ("d" if kind == "Data" else "")] = int(size.rstrip("KMG")) * scale
        except (OSError, ValueError):
            continue
    return {k: v for k, v in out.items() if k in ("L1d", "L2", "L3")}


@pytest.fixture(scope="session")
def matmul_rate() -> float:
    """fp32 (1024 x 1024) @ (1024 x 1024) rate of this machine, GMAC/s."""
    return gemm_rate(1024, 1024, 1024)


@pytest.fixture(scope="session")
def models():
    """build(name, preset, **overrides) -> the model in eval mode, built once per session."""
    cache = {}

    def build(name: str, preset: str, **overrides):
        key = (name, preset, tuple(sorted(overrides.items())))
        if key not in cache:
            torch.manual_seed(0)
            cache[key] = build_model(name, preset, **overrides).eval()
        return cache[key]

    return build

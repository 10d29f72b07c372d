"""Shared set-up of the speed benchmarks (collected only with --benchmark-only: `make bench`).

Every benchmark compares HumMUSS and MotionBERT(-Lite) in the same run, uses
`benchmark.pedantic` with fixed rounds and records its figures with `suite.bench.record`
(frames, fps, latency_ms, peak_mb from the torch profiler's memory events, MACs per frame
and the fraction of this machine's measured fp32 matmul rate). HUMMUSS_BENCH_QUICK=1
runs fewer sizes and rounds.
"""

import pytest
import torch

from hummuss.allocator import keep_freed_memory
from hummuss.zoo import build_model
from suite.bench import gemm_rate

keep_freed_memory()  # the trainer's allocator setting, for every benchmark (hummuss/allocator.py)


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

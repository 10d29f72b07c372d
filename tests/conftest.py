"""Shared test set-up: offline MLflow, and benchmarks kept out of the normal run."""

import os
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

BENCH_DIR = Path(__file__).parent / "benchmarks"


def pytest_ignore_collect(collection_path, config):
    """tests/benchmarks/ is collected only with --benchmark-only (`make bench`)."""
    if BENCH_DIR in Path(collection_path).parents or Path(collection_path) == BENCH_DIR:
        return not config.getoption("benchmark_only", default=False)
    return None

"""Shared test set-up: offline MLflow, benchmarks kept out of the normal run, and each
pytest-xdist worker held to its share of the CPU cores."""

import os
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

# `make test` runs two workers on the machine's cores; torch's default of one thread per core
# in each of them (and in the processes the tests start) oversubscribes the cores, and
# OpenMP threads that wait on a busy core make small-operation work like the streaming
# step's several times slower. Set before any test imports torch; a value the caller set is kept.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    from suite.launch.processes import THREADS_ENV, thread_share

    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", THREADS_ENV):
        os.environ.setdefault(_name, thread_share(_WORKERS))

BENCH_DIR = Path(__file__).parent / "benchmarks"


def pytest_ignore_collect(collection_path, config):
    """tests/benchmarks/ is collected only with --benchmark-only (`make bench`)."""
    if BENCH_DIR in Path(collection_path).parents or Path(collection_path) == BENCH_DIR:
        return not config.getoption("benchmark_only", default=False)
    return None


import pytest  # noqa: E402


def _kernels_buildable() -> bool:
    import shutil

    from hummuss import cpu_kernels

    return (shutil.which("c++") is not None or shutil.which("g++") is not None) and cpu_kernels.enabled()


# tests of the compiled CPU kernels (hummuss/csrc): skipped where none can be built
needs_kernels = pytest.mark.skipif(not _kernels_buildable(), reason="no C++ compiler here, or HUMMUSS_CPU_KERNELS=0")


def use_store(folder: Path, monkeypatch, claim_ttl_s: int = 60) -> Path:
    """Point the suite at a private tracking store: mlflow.yaml in `folder` (sqlite,
    artifacts, checkpoints), named by HUMMUSS_MLFLOW_CONFIG; returns the yaml's path."""
    config = folder / "mlflow.yaml"
    config.write_text("tracking_uri: sqlite:///mlruns.db\nartifact_location: mlartifacts\n"
                      f"checkpoint_dir: checkpoints\nclaim_ttl_s: {claim_ttl_s}\n")
    monkeypatch.setenv("HUMMUSS_MLFLOW_CONFIG", str(config))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return config


@pytest.fixture
def suite_store(tmp_path, monkeypatch):
    """A private tracking store in tmp_path (see `use_store`)."""
    use_store(tmp_path, monkeypatch)
    return tmp_path


@pytest.fixture(scope="module")
def tracker(request, tmp_path_factory):
    """A Tracker on one private store per test module (see `use_store`), its claim expiry the
    module's `TTL` in seconds (60 without one); each test works in an experiment of its own.
    A module that defines its own `tracker` fixture uses that instead."""
    from suite.tracking import Tracker, load_settings

    folder = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    with pytest.MonkeyPatch.context() as mp:
        use_store(folder, mp, claim_ttl_s=getattr(request.module, "TTL", 60))
        yield Tracker(load_settings())

"""`system_metrics: true` and GPUs: MLflow logs `system/gpu_*` through pynvml, which the
`gpu` extra (nvidia-ml-py) installs; where an NVIDIA GPU is present and pynvml is not, a run
says so, naming the extra, and still logs the other system metrics. (That a run logs
`system/cpu_utilization_percentage` at all: tests/test_tracking_conventions.py.)"""

import importlib.util
import re
from pathlib import Path

import pytest
import tomllib
import torch

from suite.settings import GPU_EXTRA, gpu_metrics_missing
from suite.tracking import Tracker, load_settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def nvidia_gpu(monkeypatch):
    """As if CUDA saw an NVIDIA GPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.version, "cuda", "12.4")


def without_pynvml(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pynvml" else real(name, *a))


def test_a_gpu_without_pynvml_is_named_with_the_extra_that_installs_it(nvidia_gpu, monkeypatch):
    without_pynvml(monkeypatch)
    note = gpu_metrics_missing()
    assert "nvidia-ml-py" in note and ".[gpu]" in note and "pynvml" in note


def test_nothing_is_missing_with_pynvml_or_without_an_nvidia_gpu(nvidia_gpu, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "pynvml" else real(name, *a))
    assert gpu_metrics_missing() is None
    without_pynvml(monkeypatch)
    monkeypatch.setattr(torch.version, "cuda", None)  # ROCm: MLflow reads AMD GPUs otherwise
    assert gpu_metrics_missing() is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_metrics_missing() is None


def test_a_run_with_system_metrics_warns_once_per_run_and_logs_cpu_metrics(suite_store, nvidia_gpu, monkeypatch):
    without_pynvml(monkeypatch)
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    config = suite_store / "mlflow.yaml"
    config.write_text(config.read_text() + "system_metrics: true\n")
    tracker = Tracker(load_settings())
    run_id = tracker.create_run(tracker.experiment_id("context-length"), "probe", {"study": "context-length"})
    with pytest.warns(UserWarning, match=r"nvidia-ml-py") as caught:
        with tracker.system_metrics(run_id):
            import time
            time.sleep(1.0)
    assert len([w for w in caught if GPU_EXTRA in str(w.message)]) == 1
    metrics = tracker.get_run(run_id).data.metrics
    assert "system/cpu_utilization_percentage" in metrics
    assert not any(k.startswith("system/gpu_") for k in metrics)


def test_the_gpu_extra_provides_the_module_mlflows_gpu_monitor_imports():
    """pyproject's `gpu` extra is nvidia-ml-py, whose module is pynvml (PyPI: nvidia-ml-py
    installs pynvml.py), and MLflow's NVIDIA monitor imports exactly that; it is no core
    dependency (most machines have no GPU)."""
    import mlflow.system_metrics.metrics.gpu_monitor as monitor

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extra = [re.split(r"[<>=!~ ;\[]", d, maxsplit=1)[0] for d in project["optional-dependencies"]["gpu"]]
    assert extra == [GPU_EXTRA] == ["nvidia-ml-py"]
    assert re.search(r"^\s*import pynvml\b", Path(monitor.__file__).read_text(), re.M)
    assert not any(d.startswith(GPU_EXTRA) for d in project["dependencies"])
    assert "hummuss-suite[gpu]" in (ROOT / "README.md").read_text() or ".[gpu]" in (ROOT / "README.md").read_text()

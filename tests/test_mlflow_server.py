"""Against a real `mlflow server` on loopback: what a user of the MLflow UI and REST API sees."""

import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from suite.runner import Runner
from suite.runspec import expand_runs
from suite.tracking import Tracker, load_settings
from tests.test_tracking_conventions import check_datasets

TINY = {"epochs": "1", "max_steps_per_epoch": "1", "max_val_clips": "2", "eval.lengths": "27",
        "eval.flip": "false", "eval.max_sequences": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`mlflow server` (sqlite backend, proxied artifacts) on a free loopback port."""
    folder = tmp_path_factory.mktemp("server")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                             f"sqlite:///{folder / 'server.db'}", "--artifacts-destination", str(folder / "artifacts"),
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=open(folder / "server.log", "w"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"mlflow server did not start: {(folder / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)
    yield url, folder
    proc.terminate()
    proc.wait(timeout=30)


def test_a_run_twice_against_a_server(server, tmp_path, monkeypatch):
    import mlflow
    import mlflow.pytorch
    import torch

    url, _ = server
    config = tmp_path / "mlflow.yaml"
    config.write_text(f"tracking_uri: {url}\nartifact_location: mlartifacts\ncheckpoint_dir: checkpoints\n"
                      "claim_ttl_s: 60\nlog_checkpoints: true\n")
    monkeypatch.setenv("HUMMUSS_MLFLOW_CONFIG", str(config))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("HUMMUSS_FAKE_GPUS", "0")
    tracker = Tracker(load_settings())
    spec = expand_runs("motionbert-baseline", "smoke", sets=TINY, variants=("lite",))[0]
    said = []
    (first,) = Runner(tracker, say=said.append).run_specs([spec])
    (second,) = Runner(tracker, say=said.append).run_specs([spec])
    assert (first.status, second.status, second.run_id) == ("FINISHED", "SKIPPED", first.run_id)
    assert said[-1].startswith("motionbert-baseline: nothing to do")

    exp = tracker.client.get_experiment_by_name("hummuss/motionbert-baseline")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development" and exp.tags["mlflow.note.content"]
    runs = tracker.search([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("kind") == "parent"]
    children = [r for r in runs if r.data.tags.get("kind") != "parent"]
    assert len(parents) == 1 and len(children) == 1  # the rerun added nothing
    child = children[0]
    tags = child.data.tags
    assert child.info.status == "FINISHED" and tags["mlflow.parentRunId"] == parents[0].info.run_id
    assert tags["mlflow.source.name"] == "hummuss-suite" and tags["mlflow.user"]
    assert len(tags["mlflow.source.git.commit"]) == 40
    assert tags["mlflow.note.content"].startswith("motionbert-baseline / ")
    assert parents[0].data.tags["mlflow.note.content"].startswith("`hummuss-suite run motionbert-baseline")
    assert not {"claim", "heartbeat", "log"} & set(tags)
    assert not [v for v in tags.values() if v.startswith("/")]
    assert {"val/mpjpe_mm", "train/loss/total", "best/val/mpjpe_mm", "best/epoch"} <= set(child.data.metrics)
    check_datasets(tracker.get_run(child.info.run_id), "synthetic/test")

    mlflow.set_tracking_uri(url)
    try:
        logged = mlflow.pytorch.load_model(f"runs:/{child.info.run_id}/model")
    finally:
        mlflow.set_tracking_uri(None)
    from hummuss.checkpoint import load_checkpoint
    from hummuss.zoo import model_from_config
    from suite.worker import checkpoint_dir

    reference = model_from_config(spec.model, spec.model_config)
    reference.load_state_dict(load_checkpoint(checkpoint_dir(tracker.settings, spec) / "best.pt")["model"])
    x = torch.randn(1, spec.frames, 17, 3)
    with torch.no_grad():
        assert (logged.eval()(x) - reference.eval()(x)).abs().max().item() == 0.0

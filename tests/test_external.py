"""`hummuss-suite evaluate`: checkpoints trained elsewhere, evaluated and logged."""

import mlflow
import pytest
import torch

from hummuss.baselines.motionbert import MotionBERT, MotionBERTConfig
from hummuss.data import open_source
from hummuss.model import HumMUSS, HumMUSSConfig
from hummuss.train import TrainConfig, Trainer
from suite.cli import main


def _children(store):
    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlruns.db'}")
    df = mlflow.search_runs(experiment_names=["hummuss/motionbert-baseline"])
    return df[df["tags.kind"] != "parent"]


def test_an_original_layout_motionbert_checkpoint_is_evaluated_and_logged(suite_store, capsys):
    torch.manual_seed(0)
    model = MotionBERT(MotionBERTConfig.preset("smoke"))
    path = suite_store / "best_epoch.bin"
    model.save_motionbert_checkpoint(str(path))
    argv = ["evaluate", "--checkpoint", str(path), "--format", "motionbert", "--data", "synthetic:scale=smoke",
            "--frames", "27"]
    assert main(argv) == 0
    assert "F_27" in capsys.readouterr().out
    runs = _children(suite_store)
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["tags.scale"] == "external" and run["tags.variant"] == "lite"
    assert run["status"] == "FINISHED" and run["metrics.test/mpjpe/F_27"] > 0
    assert run["metrics.test/mpjpe/as_trained"] == run["metrics.test/mpjpe/F_27"]
    assert run["params.eval.protocol"] == "auto"  # synthetic: all-frames (the report resolves it)


def test_an_unknown_protocol_exits_2_before_logging(suite_store, capsys):
    path = suite_store / "best_epoch.bin"
    MotionBERT(MotionBERTConfig.preset("smoke")).save_motionbert_checkpoint(str(path))
    with pytest.raises(SystemExit) as info:
        main(["evaluate", "--checkpoint", str(path), "--format", "motionbert", "--data", "synthetic:scale=smoke",
              "--protocol", "frames"])
    assert info.value.code == 2
    assert "unknown evaluation protocol 'frames'; known: auto, motionbert, p-stmo, all-frames" in capsys.readouterr().err
    assert not (suite_store / "mlruns.db").exists()


def test_a_suite_checkpoint_is_evaluated(suite_store):
    src = open_source("synthetic:scale=smoke")
    torch.manual_seed(0)
    model = HumMUSS(HumMUSSConfig.preset("smoke"))
    Trainer(model, src.clips("train", 27, 9), None, TrainConfig.preset("smoke", epochs=1), suite_store / "ck",
            log=lambda m: None).fit()
    argv = ["evaluate", "--checkpoint", str(suite_store / "ck" / "last.pt"), "--data", "synthetic:scale=smoke",
            "--frames", "27,81"]
    assert main(argv) == 0
    run = _children(suite_store).iloc[0]
    assert run["tags.model"] == "hummuss" and run["metrics.test/mpjpe/F_81"] > 0


@pytest.mark.parametrize("content, fmt, message", [
    (b"not a checkpoint", "hummuss", "truncated or not a hummuss-suite checkpoint"),
    (None, "hummuss", "does not exist"),
])
def test_bad_checkpoints_exit_2_before_logging(suite_store, capsys, content, fmt, message):
    path = suite_store / "x.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SystemExit) as info:
        main(["evaluate", "--checkpoint", str(path), "--format", fmt, "--data", "synthetic:scale=smoke"])
    assert info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (suite_store / "mlruns.db").exists()


def test_data_inspect_prints_a_table_per_split(capsys):
    assert main(["data", "inspect", "synthetic:scale=smoke", "--json"]) == 0
    import json

    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2
    with pytest.raises(SystemExit) as info:
        main(["data", "inspect", "h36m:/no/such/file.pkl"])
    assert info.value.code == 2


def test_a_logged_or_registered_model_is_evaluated_from_its_uri(suite_store, capsys):
    """`--checkpoint runs:/<id>/model` and `models:/<name>/<version>` (log_checkpoints: true)
    load the logged model from the store: both evaluate the same weights to the same scores;
    a URI that names nothing exits 2 before logging a run."""
    import numpy as np

    from suite.external import state_digest
    from suite.tracking import Tracker, load_settings

    torch.manual_seed(0)
    model = HumMUSS(HumMUSSConfig.preset("smoke"))
    tracker = Tracker(load_settings())
    trained = tracker.create_run(tracker.experiment_id("context-length"), "trained", {"kind": "test"})
    uri = tracker.log_model(trained, model, np.zeros((1, 27, 17, 3), np.float32))
    mlflow.set_tracking_uri(tracker.settings.tracking_uri)
    mlflow.register_model(uri, "hummuss-smoke")
    for ref in (uri, "models:/hummuss-smoke/1"):
        assert main(["evaluate", "--checkpoint", ref, "--data", "synthetic:scale=smoke", "--frames", "27"]) == 0
    assert "F_27" in capsys.readouterr().out
    runs = _children(suite_store).sort_values("start_time")
    assert list(runs["tags.model_uri"]) == [uri, "models:/hummuss-smoke/1"]
    assert set(runs["tags.model"]) == {"hummuss"} and set(runs["status"]) == {"FINISHED"}
    assert set(runs["tags.checkpoint_digest"]) == {state_digest(model)}
    assert runs["metrics.test/mpjpe/F_27"].nunique() == 1 and runs["metrics.test/mpjpe/F_27"].iloc[0] > 0

    with pytest.raises(SystemExit) as info:
        main(["evaluate", "--checkpoint", "models:/hummuss-smoke/7", "--data", "synthetic:scale=smoke"])
    assert info.value.code == 2
    assert "cannot load the model models:/hummuss-smoke/7 from sqlite:" in capsys.readouterr().err
    assert len(_children(suite_store)) == 2

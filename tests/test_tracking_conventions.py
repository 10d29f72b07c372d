"""MLflow's own conventions, fast: context tags, descriptions, experiments the suite did not create."""

import json

from suite.tracking import Tracker, load_settings


def check_datasets(run, evaluation: str, eval_sequences: int | None = None) -> dict:
    """The run's dataset inputs: one `training` and one `evaluation`, each with a digest and
    a profile of sequences, frames, subjects, frame rate and data spec; returns them by context."""
    found = {}
    for item in run.inputs.dataset_inputs:
        (context,) = [t.value for t in item.tags if t.key == "mlflow.data.context"]
        found[context] = item.dataset
    assert set(found) == {"training", "evaluation"}
    assert (found["training"].name, found["evaluation"].name) == ("synthetic/train", evaluation)
    for dataset in found.values():
        profile = json.loads(dataset.profile)
        assert len(dataset.digest) == 16 and profile["spec"].startswith("synthetic") and profile["fps"] == 60.0
        assert profile["sequences"] >= 1 and profile["frames"] > 0 and profile["subjects"][0].startswith("S")
    train = json.loads(found["training"].profile)
    assert train["clips"] * train["clip_frames"] == train["frames"] if "clips" in train else train["split"] == "train"
    if eval_sequences is not None:
        assert json.loads(found["evaluation"].profile)["sequences"] == eval_sequences
    return found


def test_an_experiment_made_elsewhere_gets_its_kind_and_description(suite_store):
    tracker = Tracker(load_settings())
    made = tracker.client.create_experiment("hummuss/context-length")  # as a user or an older suite would
    assert "mlflow.note.content" not in tracker.client.get_experiment(made).tags
    assert tracker.experiment_id("context-length") == made
    tags = tracker.client.get_experiment(made).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    assert tags["mlflow.note.content"].startswith("**context-length**: Does a model trained on 27 frames")


def test_runs_carry_mlflows_context_tags(suite_store):
    tracker = Tracker(load_settings())
    exp = tracker.experiment_id("context-length")
    run = tracker.get_run(tracker.create_run(exp, "r", {"mlflow.note.content": "hello", "kind": "x"}))
    tags = run.data.tags
    assert tags["mlflow.source.name"] == "hummuss-suite" and tags["mlflow.source.type"] == "LOCAL"
    assert len(tags["mlflow.source.git.commit"]) == 40 and tags["mlflow.user"]
    assert tags["mlflow.note.content"] == "hello"


def test_stale_trials_are_failed_and_retried_through_optunas_public_api():
    import time
    from pathlib import Path

    import optuna
    from optuna.trial import TrialState

    from suite.sweep.stale import recover_stale

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2)})
    trial.set_user_attr("worker", {"trial": 0, "host": "elsewhere", "since": time.time() - 100})
    said = []
    assert recover_stale(study, 10.0, 3, None, said.append) == [0]
    assert study.trials[0].state == TrialState.FAIL
    assert study.trials[1].state == TrialState.WAITING and study.trials[1].user_attrs["retry_of"] == 0
    assert study.trials[1].system_attrs["fixed_params"] == study.trials[0].params  # enqueued, not asked yet
    assert recover_stale(study, 10.0, 3, None, said.append) == []  # recovered once only
    # no private Optuna API anywhere in the sweep package
    sources = {p.name: p.read_text() for p in Path("suite/sweep").glob("*.py")}
    assert {n for n, text in sources.items() if "._storage" in text or "._trial_id" in text} == set()


def test_a_run_logs_role_and_unit_metric_names_and_system_metrics_only_when_enabled(suite_store, monkeypatch):
    from suite.runner import Runner
    from suite.runspec import expand_runs

    tiny = {"epochs": "1", "max_steps_per_epoch": "1", "max_val_clips": "2", "eval.lengths": "27",
            "eval.flip": "false", "eval.max_sequences": "1"}
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    monkeypatch.setenv("HUMMUSS_FAKE_GPUS", "0")
    config = suite_store / "mlflow.yaml"
    for enabled in (False, True):
        config.write_text(config.read_text().replace("system_metrics: false\n", "")
                          + f"system_metrics: {str(enabled).lower()}\n")
        tracker = Tracker(load_settings())
        spec = expand_runs("motionbert-baseline", "smoke", seeds=(int(enabled),), sets=tiny, variants=("lite",))[0]
        (outcome,) = Runner(tracker, say=lambda m: None).run_specs([spec])
        assert outcome.status == "FINISHED"
        metrics = tracker.get_run(outcome.run_id).data.metrics
        system = {k for k in metrics if k.startswith("system/")}
        assert {"val/mpjpe_mm", "train/loss/total", "train/loss/velocity", "train/lr", "best/val/mpjpe_mm",
                "best/epoch"} <= set(metrics)
        assert not {"val/mpjpe", "train/loss", "best_val_mpjpe", "best_epoch"} & set(metrics)
        check_datasets(tracker.get_run(outcome.run_id), "synthetic/test", eval_sequences=1)
        if enabled:
            assert "system/cpu_utilization_percentage" in system and "system/system_memory_usage_megabytes" in system
        else:
            assert system == set()


def test_epoch_metrics_are_named_with_their_role_and_unit():
    from suite.tracking import epoch_metric_names

    trainer = {"train/loss": 0.3, "train/mpjpe": 0.2, "train/n_mpjpe": 0.1, "train/velocity": 0.05,
               "val/mpjpe": 410.0, "lr": 1e-3, "time/epoch_s": 2.0}
    assert epoch_metric_names(trainer) == {
        "train/loss/total": 0.3, "train/loss/mpjpe": 0.2, "train/loss/n_mpjpe": 0.1, "train/loss/velocity": 0.05,
        "val/mpjpe_mm": 410.0, "train/lr": 1e-3, "time/epoch_s": 2.0}


def test_log_checkpoints_logs_a_model_that_mlflow_loads_and_predicts_as_the_checkpoint(suite_store, monkeypatch):
    import mlflow
    import mlflow.pytorch
    import torch

    from hummuss.checkpoint import load_checkpoint
    from hummuss.zoo import model_from_config
    from suite.runner import Runner
    from suite.runspec import expand_runs
    from suite.worker import checkpoint_dir

    tiny = {"epochs": "1", "max_steps_per_epoch": "1", "max_val_clips": "2", "eval.lengths": "27",
            "eval.flip": "false", "eval.max_sequences": "1"}
    monkeypatch.setenv("HUMMUSS_FAKE_GPUS", "0")
    config = suite_store / "mlflow.yaml"
    config.write_text(config.read_text() + "log_checkpoints: true\n")
    tracker = Tracker(load_settings())
    spec = expand_runs("motionbert-baseline", "smoke", sets=tiny, variants=("lite",))[0]
    (outcome,) = Runner(tracker, say=lambda m: None).run_specs([spec])
    assert outcome.status == "FINISHED"
    run = tracker.get_run(outcome.run_id)
    assert run.data.tags["model_uri"] == f"runs:/{outcome.run_id}/model"

    mlflow.set_tracking_uri(tracker.settings.tracking_uri)
    try:
        logged = mlflow.pytorch.load_model(f"runs:/{outcome.run_id}/model")
        info = mlflow.models.get_model_info(f"runs:/{outcome.run_id}/model")
    finally:
        mlflow.set_tracking_uri(None)
    assert info.signature is not None
    assert [tuple(s.shape) for s in info.signature.inputs.inputs] == [(-1, spec.frames, 17, 3)]  # the clip shape
    reference = model_from_config(spec.model, spec.model_config)
    reference.load_state_dict(load_checkpoint(checkpoint_dir(tracker.settings, spec) / "best.pt")["model"])
    reference.eval()
    logged.eval()
    x = torch.randn(2, spec.frames, 17, 3)
    with torch.no_grad():
        assert (logged(x) - reference(x)).abs().max().item() == 0.0


def test_store_calls_are_retried_by_error_type_not_by_message(monkeypatch):
    """A locked sqlite file (MLflow's TEMPORARILY_UNAVAILABLE, or SQLAlchemy's OperationalError)
    is tried again; a server's answer (RestException: MLflow's HTTP client retried it already)
    and any other error, whatever its message says, are raised at once."""
    import pytest
    from mlflow.exceptions import MlflowException, RestException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, TEMPORARILY_UNAVAILABLE
    from sqlalchemy.exc import OperationalError

    from suite import tracking

    monkeypatch.setattr(tracking.time, "sleep", lambda s: None)

    def failing(*errors):
        calls = []

        def fn():
            calls.append(1)
            if len(calls) <= len(errors):
                raise errors[len(calls) - 1]
            return "ok"
        return fn, calls

    locked = MlflowException("(sqlite3.OperationalError) database is locked", error_code=TEMPORARILY_UNAVAILABLE)
    fn, calls = failing(locked, OperationalError("UPDATE runs", {}, Exception("database is locked")))
    assert tracking._with_retry(fn, "test") == "ok" and len(calls) == 3
    for err in (RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "locked"}),
                MlflowException("connection to the run's parameter 'connection' timed out",
                               error_code=INVALID_PARAMETER_VALUE),
                ValueError("database is locked")):
        fn, calls = failing(err)
        with pytest.raises(type(err)):
            tracking._with_retry(fn, "test")
        assert len(calls) == 1

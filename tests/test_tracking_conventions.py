"""MLflow's own conventions, fast: context tags, descriptions, experiments the suite did not create."""

from suite.tracking import Tracker, load_settings


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

"""Dataset inputs logged while another run inserts the same dataset: `Tracker.log_datasets`
tries once more exactly when MLflow says a concurrent insert won (decided by the error's type
and code, never its text), and raises anything else after one call."""

import pytest
from mlflow.exceptions import MlflowException, RestException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from suite.tracking import Tracker, load_settings

DATASETS = [{"name": "synthetic/train", "digest": "d1", "context": "training",
             "profile": {"split": "train", "sequences": 2, "frames": 10, "spec": "synthetic"}}]


def lost_race_error(tracker) -> MlflowException:
    """What MLflow's SQL store raises for a row another writer inserted first: a real
    IntegrityError (a second experiment row with an existing id) in its managed session."""
    from mlflow.store.tracking.dbmodels.models import SqlExperiment

    store = tracker.client._tracking_client.store
    existing = tracker.experiment_id("context-length")
    with pytest.raises(MlflowException) as caught:
        with store.ManagedSessionMaker(read_only=False) as session:
            session.add(SqlExperiment(experiment_id=int(existing), name="a copy", lifecycle_stage="active"))
            session.flush()
    return caught.value


def failing_once(monkeypatch, tracker, err, real):
    calls = []

    def log_inputs(run_id, datasets=None, **kw):
        calls.append(run_id)
        if len(calls) == 1:
            raise err
        return real(run_id, datasets=datasets, **kw)
    monkeypatch.setattr(tracker.client, "log_inputs", log_inputs)
    return calls


@pytest.fixture
def tracker(suite_store):
    return Tracker(load_settings())


def _run(tracker):
    return tracker.create_run(tracker.experiment_id("context-length"), "probe", {"study": "context-length"})


def test_a_lost_insert_race_is_tried_once_more_and_links_the_dataset(tracker, monkeypatch):
    from sqlalchemy.exc import IntegrityError

    err = lost_race_error(tracker)
    assert isinstance(err.__cause__, IntegrityError) and err.error_code == "BAD_REQUEST"
    real = tracker.client.log_inputs
    for race in (err, RestException({"error_code": "BAD_REQUEST", "message": "UNIQUE constraint failed"})):
        run = _run(tracker)
        calls = failing_once(monkeypatch, tracker, race, real)
        tracker.log_datasets(run, DATASETS)
        assert len(calls) == 2
        (logged,) = tracker.get_run(run).inputs.dataset_inputs
        assert (logged.dataset.name, logged.dataset.digest) == ("synthetic/train", "d1")


@pytest.mark.parametrize("err", [
    MlflowException("UNIQUE constraint failed: datasets.dataset_uuid", error_code=INVALID_PARAMETER_VALUE),
    RestException({"error_code": "INTERNAL_ERROR", "message": "duplicate key value violates unique constraint"}),
    ValueError("duplicate key"),
])
def test_other_errors_are_raised_after_one_call_whatever_their_text(tracker, monkeypatch, err):
    run = _run(tracker)
    calls = failing_once(monkeypatch, tracker, err, tracker.client.log_inputs)
    with pytest.raises(type(err)):
        tracker.log_datasets(run, DATASETS)
    assert len(calls) == 1

"""A training killed part-way and resumed: each epoch's metrics are logged once in the store,
by the run that trained that epoch (`logged_by.json` beside the checkpoints). A run that
resumes a training another run began shows only the epochs it trained; the run that was
killed keeps its own; a run resumed into itself fills in what it lacks."""

import json

import pytest

from hummuss.train import Callback
from suite.runspec import expand_runs
from suite.tracking import TRAIN_LOSS, VAL_MPJPE, Tracker, load_settings
from suite.worker import MlflowCallback, checkpoint_dir, train_spec

SETS = {"epochs": "4", "max_steps_per_epoch": "1", "max_val_clips": "2"}


class KillAfter(Callback):
    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_epoch_end(self, epoch, metrics):
        if epoch == self.epoch:
            raise KeyboardInterrupt
        return False


@pytest.fixture
def setting(suite_store):
    tracker = Tracker(load_settings())
    spec = expand_runs("motionbert-baseline", "smoke", seeds=(0,), sets=SETS, variants=("lite",))[0]
    exp = tracker.experiment_id(spec.study)
    return tracker, spec, lambda name: tracker.create_run(exp, name, {"study": spec.study})


def steps(tracker, run_id, key=VAL_MPJPE):
    return sorted(m.step for m in tracker.client.get_metric_history(run_id, key))


def train(tracker, spec, run_id, *extra):
    return train_spec(spec, tracker.settings, [MlflowCallback(tracker, run_id), *extra], log=lambda m: None,
                      trainer={"run_id": run_id, "run": run_id})


def test_a_run_resuming_another_runs_killed_training_logs_only_the_epochs_it_trained(setting, monkeypatch):
    tracker, spec, new_run = setting
    first, second = new_run("first"), new_run("second")
    real = tracker.log_metrics

    def killed_at_epoch_2(run_id, metrics, step=0):
        if step == 2:  # after logged_by.json names the run, before its metrics reach the store
            raise KeyboardInterrupt
        return real(run_id, metrics, step=step)
    monkeypatch.setattr(tracker, "log_metrics", killed_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(tracker, spec, first)  # killed before trained_by.json is written
    monkeypatch.setattr(tracker, "log_metrics", real)
    folder = checkpoint_dir(tracker.settings, spec)
    assert not (folder / "trained_by.json").exists()
    assert json.loads((folder / "logged_by.json").read_text()) == {"1": first, "2": first}
    assert steps(tracker, first) == [1]

    trained = train(tracker, spec, second)  # another run resumes the training at epoch 3
    assert trained.epochs_trained == 2 and trained.result.epochs_run == 4
    assert steps(tracker, second) == [3, 4] and steps(tracker, second, TRAIN_LOSS) == [3, 4]
    assert trained.trained_by["run_id"] == second

    # the killed run resumed into itself: the training is done; it fills in its own epoch 2
    # and copies none of the other run's
    again = train(tracker, spec, first)
    assert again.epochs_trained == 0
    assert steps(tracker, first) == [1, 2] and steps(tracker, second) == [3, 4]  # each epoch once


def test_a_run_resumed_into_itself_fills_in_the_epochs_it_lacks(setting):
    tracker, spec, new_run = setting
    run = new_run("only")
    with pytest.raises(KeyboardInterrupt):  # killed after epoch 2's checkpoint, before its metrics
        train_spec(spec, tracker.settings, [KillAfter(2), MlflowCallback(tracker, run)], log=lambda m: None,
                   trainer={"run_id": run, "run": run})
    assert steps(tracker, run) == [1]
    train(tracker, spec, run)
    assert steps(tracker, run) == [1, 2, 3, 4] and steps(tracker, run, TRAIN_LOSS) == [1, 2, 3, 4]

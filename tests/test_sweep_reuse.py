"""Sweeps reuse a finished training: a trial whose training configuration (train_hash) was
trained to the end before does not train again (suite/sweep/objective.py)."""

from __future__ import annotations

import dataclasses
import re

import optuna
from optuna.trial import TrialState

from suite import sweep
from suite.registry import Param, get_study
from suite.sweep import SweepConfig
from suite.sweep import config as sweep_config
from suite.sweep import workers as sweep_workers
from suite.sweep.objective import trial_dir
from suite.tracking import BEST_EPOCH, BEST_VAL_MPJPE
from tests.test_sweep import FAST_SETS, load_sweep, store  # noqa: F401  (store: the module's MLflow store)
from tests.test_tracking_conventions import check_datasets


def test_a_trial_of_a_finished_training_does_not_train_again(store, monkeypatch):  # noqa: F811 (the fixture)
    """Two trials with the same parameters (a one-point space): the second finds the first's
    finished training (same train_hash), trains nothing, reads its value, names its run in
    `trained_by` and gets none of its curves."""
    _, tracker = store
    space = {"init": Param("categorical", choices=("lin",))}
    one_point = dataclasses.replace(get_study("context-length"), search_space=space)
    monkeypatch.setattr(sweep_config, "get_study", lambda name: one_point)
    cfg = SweepConfig("context-length", trials=2, scale="smoke", name="reuse", sampler="random", pruner="none",
                      sets={**FAST_SETS, "epochs": "1"})
    said = []
    result = sweep.run_sweep(cfg, tracker, say=said.append)
    first, second = load_sweep(result.storage.location, "reuse").trials
    assert (first.state, second.state) == (TrialState.COMPLETE, TrialState.COMPLETE)
    assert first.params == second.params and second.value == first.value
    assert second.intermediate_values == first.intermediate_values
    folder = trial_dir(tracker.settings, "reuse", 0).parent
    assert (folder / "trial-0" / "last.pt").exists() and not (folder / "trial-1" / "last.pt").exists()
    runs = {r.data.tags["trial"]: r for r in tracker.search([tracker.experiment_id("context-length")],
                                                              f"tags.mlflow.parentRunId = '{result.parent_run_id}'")}
    trainer = runs["0"].info.run_id
    assert runs["0"].data.tags["trained_by"] == trainer and runs["1"].data.tags["trained_by"] == trainer
    for run in runs.values():  # each trial: its training data and the held-out sequences that score it
        check_datasets(tracker.get_run(run.info.run_id), "synthetic/validation")
    curves = [[m.step for m in tracker.client.get_metric_history(runs[n].info.run_id, "val/mpjpe_mm")] for n in "01"]
    assert curves == [[1], []]
    assert any(line.startswith("trial 1: complete") and f"(trained by reuse/trial-0, run {trainer})" in line
               for line in said)


class PruneAt(optuna.pruners.BasePruner):
    """Prunes the trials numbered `trials` once they have reported epoch `epoch`."""

    def __init__(self, epoch: int, trials: set[int]):
        self.epoch, self.trials = epoch, trials

    def prune(self, study, trial) -> bool:
        return trial.number in self.trials and (trial.last_step or 0) >= self.epoch


def _pruned_sweep(tracker, monkeypatch, name: str, trials: int, prune: set[int]):
    """A one-point sweep of 3 epochs a trial whose trials `prune` are pruned at epoch 2:
    (its Optuna trials, trial number -> child run, what it said)."""
    space = {"init": Param("categorical", choices=("lin",))}
    one_point = dataclasses.replace(get_study("context-length"), search_space=space)
    monkeypatch.setattr(sweep_config, "get_study", lambda name: one_point)
    monkeypatch.setattr(sweep_workers, "make_pruner", lambda kind, epochs: PruneAt(2, prune))
    cfg = SweepConfig("context-length", trials=trials, scale="smoke", name=name, sampler="random",
                      sets={**FAST_SETS, "epochs": "3"})
    said = []
    result = sweep.run_sweep(cfg, tracker, say=said.append)
    runs = {int(r.data.tags["trial"]): r for r in tracker.search([tracker.experiment_id("context-length")],
                                                                   f"tags.mlflow.parentRunId = '{result.parent_run_id}'")}
    return load_sweep(result.storage.location, name).trials, runs, said


def test_a_trial_of_a_finished_training_is_pruned_where_a_training_would_be(store, monkeypatch):  # noqa: F811
    """A trial that reuses a finished training of 3 epochs reports its epochs one by one and
    asks the pruner after each: pruned at epoch 2 as the same trial trained afresh is, with
    the same values, tags, status, best metrics and log line."""
    _, tracker = store
    fresh_trials, fresh_runs, fresh_said = _pruned_sweep(tracker, monkeypatch, "prune-fresh", 1, {0})
    trials, runs, said = _pruned_sweep(tracker, monkeypatch, "prune-reused", 2, {1})
    first, reused = trials
    fresh = fresh_trials[0]
    assert (fresh.state, first.state, reused.state) == (TrialState.PRUNED, TrialState.COMPLETE, TrialState.PRUNED)
    assert sorted(first.intermediate_values) == [1, 2, 3]  # the reused training ran to the end
    assert reused.intermediate_values == {e: first.intermediate_values[e] for e in (1, 2)}
    assert reused.intermediate_values == fresh.intermediate_values  # the same training, seeded
    assert runs[1].data.tags["trained_by"] == runs[0].info.run_id  # read, not trained again
    best = min(fresh.intermediate_values.values())
    for run in (fresh_runs[0], runs[1]):
        tags = run.data.tags
        assert (tags["optuna.state"], tags["pruned"], tags["pruned_at_epoch"]) == ("PRUNED", "true", "2")
        assert run.info.status == "KILLED"
        assert run.data.metrics[BEST_VAL_MPJPE] == best
        history = tracker.client.get_metric_history(run.info.run_id, BEST_EPOCH)
        assert [(m.step, m.value) for m in history] == [(2, min((v, e) for e, v in fresh.intermediate_values.items())[1])]

    def pruned_line(lines, n):
        found = [re.sub(r" in \d+ s ", " in _ s ", line) for line in lines if line.startswith(f"trial {n}: pruned")]
        assert len(found) == 1, lines
        return found[0].replace(f"trial {n}:", "trial _:")
    assert pruned_line(said, 1) == pruned_line(fresh_said, 0)
    assert pruned_line(said, 1).startswith(f"trial _: pruned at epoch 2 (val MPJPE {best:.1f} mm) in _ s")

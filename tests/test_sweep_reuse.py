"""Sweeps reuse a finished training: a trial whose training configuration (train_hash) was
trained to the end before does not train again (suite/sweep/objective.py)."""

from __future__ import annotations

import dataclasses

from optuna.trial import TrialState

from suite import sweep
from suite.registry import Param, get_study
from suite.sweep import SweepConfig
from suite.sweep import config as sweep_config
from suite.sweep.objective import trial_dir
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

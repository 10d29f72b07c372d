"""What a sweep did: trial counts and the best trial, also written on the MLflow parent run."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from optuna.trial import TrialState

from suite.sweep.prepare import Plan
from suite.sweep.space import format_params
from suite.sweep.storage import StorageSpec
from suite.tracking import BEST_VAL_MPJPE


@dataclass
class SweepResult:
    name: str
    storage: StorageSpec
    parent_run_id: str
    experiment: str
    target: int
    counts: dict[str, int]  # trial state name -> number of trials
    best: dict[str, Any] | None  # trial, value, params, run_id
    seconds: float
    stops: list[str]  # why each worker stopped
    ok: bool

    @property
    def finished(self) -> int:
        return self.counts.get("COMPLETE", 0) + self.counts.get("PRUNED", 0)

    def format(self) -> str:
        c = self.counts
        lines = [f"sweep {self.name}: {self.finished}/{self.target} trials finished ({c.get('COMPLETE', 0)} "
                 f"complete, {c.get('PRUNED', 0)} pruned), {c.get('FAIL', 0)} failed, "
                 f"{c.get('RUNNING', 0)} running, {c.get('WAITING', 0)} waiting; {self.seconds:.0f} s"]
        if self.best:
            lines.append(f"best: trial {self.best['trial']}, val MPJPE {self.best['value']:.2f} mm  "
                         f"[{format_params(self.best['params'])}]  (MLflow run {self.best['run_id']})")
        else:
            lines.append("best: no trial has completed yet")
        lines.append(f"storage: {self.storage.describe}  (optuna-dashboard {self.storage.dashboard})")
        lines.append(f"MLflow: experiment {self.experiment}, parent run {self.parent_run_id}")
        if self.ok and self.finished < self.target and "grid exhausted" in self.stops:
            lines.append("the grid is exhausted: every combination has been tried")
        elif self.ok and self.finished < self.target:
            lines.append("stopped by --timeout; run the same command again to continue")
        if self.stops == ["nothing to do"]:
            lines.append("nothing to do: every trial had finished before (the parent run is unchanged)")
        if not self.ok:
            lines.append(f"not finished ({', '.join(self.stops)}); run the same command again to continue")
        return "\n".join(lines)


def summarise(plan: Plan, started: float, stops: list[str], log: bool = True) -> SweepResult:
    """Counts and the best trial, also written on the parent run when `log` (a rerun with
    nothing to do writes nothing)."""
    study, tracker, cfg = plan.study, plan.tracker, plan.cfg
    trials = study.get_trials(deepcopy=False)
    counts = Counter(t.state.name for t in trials)
    best = None
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        b = min(complete, key=lambda t: (t.value, t.number))
        best = {"trial": b.number, "value": b.value, "params": b.params,
                "run_id": b.user_attrs.get("mlflow_run_id", "")}
    finished = counts.get("COMPLETE", 0) + counts.get("PRUNED", 0)
    metrics = {"trials/complete": counts.get("COMPLETE", 0), "trials/pruned": counts.get("PRUNED", 0),
               "trials/failed": counts.get("FAIL", 0)}
    if best and log:
        metrics[BEST_VAL_MPJPE] = best["value"]
        tracker.set_tags(plan.parent_id, {"best/trial": best["trial"], "best/params": json.dumps(best["params"]),
                                          "best/run_id": best["run_id"]})
    if log:
        tracker.log_metrics(plan.parent_id, metrics, step=finished)
    ok = finished >= cfg.trials or "grid exhausted" in stops or (
        bool(stops) and all(s in ("timeout", "done", "nothing to do") for s in stops))
    return SweepResult(cfg.name, plan.storage, plan.parent_id, tracker.experiment_name(cfg.study), cfg.trials,
                       dict(counts), best, time.time() - started, stops, ok)

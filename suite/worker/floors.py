"""Execute one claimed floor run: fit the floor in closed form (seconds, no training), score
it with the runs' evaluation, log it to its MLflow run.

    metrics = execute_floor(floor_spec, run_id, tracker)   # {"test/mpjpe/F_27": ..., ...}

The runner executes floors in its own process (they take seconds), between launching and
polling the runs of the study.
"""

from __future__ import annotations

import contextlib

from hummuss.data import open_source
from hummuss.evaluate import AS_TRAINED, EvalConfig, evaluate
from hummuss.floors import fit_floor
from suite.runspec import FloorSpec
from suite.tracking import Tracker, metric_name
from suite.worker.datasets import evaluation_dataset, split_dataset


def execute_floor(spec: FloorSpec, run_id: str, tracker: Tracker, source=None) -> dict[str, float]:
    """Fit and evaluate the floor of `spec` into run `run_id` (already claimed); its final
    metrics. `source`: the opened data source of `spec.data`, when the caller has it."""
    try:
        tracker.set_status(run_id, "RUNNING")
        source = source if source is not None else open_source(spec.data)
        model = fit_floor(spec.floor, source)
        table = evaluate(model, source, EvalConfig(**spec.eval_config))
        metrics = tracker.log_evaluation(run_id, table, spec.frames)
        tracker.log_dict(run_id, spec.to_dict(), "config.json")
        tracker.log_datasets(run_id, [split_dataset(spec, source, "train", "training"), evaluation_dataset(spec, source)])
        tracker.set_status(run_id, "FINISHED")
        return metrics
    except KeyboardInterrupt:
        tracker.set_status(run_id, "KILLED")
        raise
    except BaseException as err:
        with contextlib.suppress(Exception):
            tracker.set_tags(run_id, {"error": f"{type(err).__name__}: {err}"[:5000]})
        tracker.set_status(run_id, "FAILED")
        raise


def headline(metrics: dict[str, float]) -> str:
    """'as_trained MPJPE 187.3 mm' (what the summary says of a floor)."""
    value = metrics.get(metric_name("mpjpe", AS_TRAINED))
    return f"as_trained MPJPE {value:.1f} mm" if value is not None else ""

"""Building MLflow stores for the report's tests: child runs as the worker logs them, floor runs
as the runner logs them, written with the MlflowClient directly, batched, on sqlite without
fsync (only while building fixtures).
"""

import contextlib
import os
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine

from hummuss.checkpoint import CHECKPOINT_FORMAT, save_atomic
from suite.tracking import Tracker, load_settings, metric_name
from suite.worker import build_model

EPOCHS = 3


@contextlib.contextmanager
def fast_sqlite():
    """No fsync while a test writes its store (only for building test fixtures)."""
    def pragmas(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA synchronous=OFF")
        cursor.execute("PRAGMA journal_mode=MEMORY")
        cursor.close()

    event.listen(Engine, "connect", pragmas)
    try:
        yield
    finally:
        event.remove(Engine, "connect", pragmas)


def new_store(root):
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # set by the previous Tracker of this process
    (root / "mlflow.yaml").write_text("tracking_uri: sqlite:///mlruns.db\nartifact_location: mlartifacts\n"
                                      "checkpoint_dir: checkpoints\n")
    settings = load_settings(root / "mlflow.yaml")
    return settings, Tracker(settings)


def table_conditions(study, variant=None):
    """Every condition the study's table reads (from `variant`, if given), and as_trained."""
    t = study.table
    return {"as_trained"} | {t.cell(r, c)[1] for r, _ in t.rows for c, _ in t.columns
                             if variant is None or t.cell(r, c)[0] == variant}


class Writer:
    """Writes child runs as the worker does, in three calls each, and floor runs as the runner
    does; records what it logged."""

    def __init__(self, tracker):
        self.tracker, self.client = tracker, tracker.client
        self.clock = 1_700_000_000_000  # end times strictly increase: the latest run is well defined
        self.logged = {}  # (study, scale, variant, seed) -> {condition: value}
        self.floors = {}  # (study, scale, floor) -> {condition: value} of the run the report must read
        self.parents = {}

    def parent(self, study, scale):
        if (study, scale) not in self.parents:
            exp = self.tracker.experiment_id(study)
            run = self.tracker.create_run(exp, f"{study} {scale}", {"kind": "parent", "study": study, "scale": scale})
            self._end(run, "FINISHED")
            self.parents[(study, scale)] = (exp, run)
        return self.parents[(study, scale)]

    def _end(self, run_id, status):
        self.clock += 1000
        self.client.set_terminated(run_id, status, end_time=self.clock)

    def child(self, spec, values, status="FINISHED", params=False, record=True):
        from mlflow.entities import Metric, Param

        exp, parent = self.parent(spec.study, spec.scale)
        run_id = self.tracker.create_run(exp, spec.name, {**spec.tags(), "git_commit": "abcdef0123"}, parent)
        metrics = [Metric(metric_name("mpjpe", c), v, 0, EPOCHS) for c, v in values.items()]
        for epoch in range(1, EPOCHS + 1):
            metrics += [Metric("val/mpjpe_mm", values.get("as_trained", 50.0) + 10.0 * (EPOCHS - epoch), 0, epoch),
                        Metric("train/loss/total", 0.5 / epoch, 0, epoch)]
        few = [Param("data.spec", spec.data)] if not params else []
        self.client.log_batch(run_id, metrics=metrics, params=few)
        if params:
            self.tracker.log_params(run_id, spec.params())
        self._end(run_id, status)
        if record and status == "FINISHED":
            self.logged[(spec.study, spec.scale, spec.variant, spec.seed)] = dict(values)
        return run_id

    def floor(self, study, scale, name, values, data, status="FINISHED", record=True):
        """A floor run: tags kind=floor, floor, study, scale; param data.spec; test metrics."""
        from mlflow.entities import Metric, Param

        exp, parent = self.parent(study, scale)
        tags = {"kind": "floor", "floor": name, "study": study, "scale": scale, "config_hash": f"floor-{name}",
                "git_commit": "abcdef0123"}
        run_id = self.tracker.create_run(exp, f"floor/{name}", tags, parent)
        self.client.log_batch(run_id, metrics=[Metric(metric_name("mpjpe", c), v, 0, 0) for c, v in values.items()],
                              params=[Param("data.spec", data)])
        self._end(run_id, status)
        if record and status == "FINISHED":
            self.floors[(study, scale, name)] = dict(values)
        return run_id


def save_checkpoint(settings, spec):
    """A trainer-format best.pt for `spec` (an untrained model: the panel only needs weights)."""
    model = build_model(spec)
    path = Path(settings.checkpoint_dir) / spec.train_hash / "best.pt"
    save_atomic({"format": CHECKPOINT_FORMAT, "model": model.state_dict(), "model_config": spec.model_config,
                 "train_config": spec.train_config}, path)  # with its checksum, as the trainer writes it


def many_runs(root: Path, seeds: int = 21):
    """The 500-run store: every paper study at scale cpu with `seeds` seeds and both floors, and
    at scale smoke with seed 0 (no floors); 552 runs for 21 seeds. A model cell's value at
    seed s is `many_runs_value(condition, s)`, a floor's `FLOOR_VALUES[floor]`. Returns
    (settings, tracker, number of runs in the studies' experiments)."""
    from suite.registry import paper_studies
    from suite.runspec import expand_runs

    with fast_sqlite():
        settings, tracker = new_store(root)
        w = Writer(tracker)
        for study in paper_studies():
            for scale, chosen in (("cpu", tuple(range(seeds))), ("smoke", (0,))):
                for spec in expand_runs(study.name, scale, chosen):
                    w.child(spec, {c: many_runs_value(c, spec.seed) for c in table_conditions(study, spec.variant)})
            for name, value in FLOOR_VALUES.items():
                w.floor(study.name, "cpu", name, {c: value for c in table_conditions(study)}, study.scale("cpu").data)
    runs = sum(len(tracker.all_runs(tracker.experiment_id(s.name))) for s in paper_studies())
    return settings, tracker, runs


FLOOR_VALUES = {"mean-pose": 150.0, "linear-lift": 70.0}


def many_runs_value(condition: str, seed: int) -> float:
    """40 mm plus 0-8 mm by condition plus 0.1 mm per seed."""
    return 40.0 + sum(map(ord, condition)) % 9 + 0.1 * seed

"""MLflow conventions of the suite: the only module that talks to MLflow.

Layout of the store:
- one experiment per study, `<prefix>/<study>` (tag `mlflow.experimentKind =
  custom_model_development`, so the MLflow 3 UI shows it as model training);
- one parent run per invocation (`run`, `sweep`, `evaluate`), tag `kind=parent`;
- one child run per variant and seed (explicit `mlflow.parentRunId`, so nesting works
  across processes and machines), tagged `study`, `variant`, `seed`, `scale`,
  `config_hash`, `train_hash`, `trained_by` (the run that trained its checkpoint: itself,
  or the run it shares the training with), `git_commit`, `torch`, `device`; the full
  config as params; per-epoch metrics with step = epoch; final metrics
  `test/<metric>/<condition>`;
- one floor run per reference floor (`hummuss.floors.FLOORS`) and invocation's data and
  evaluation, named `floor/<name>`, tagged `kind=floor`, `floor`, `study`, `scale`,
  `config_hash`, `git_commit`; params `data.spec` and `eval.*`; the same final metrics.

Settings come from `mlflow.yaml` (see that file); `MLFLOW_TRACKING_URI` in the
environment overrides its `tracking_uri`. Database errors MLflow marks transient are
retried with back-off, so several processes can share the default sqlite store without
"database is locked" reaching the user (a server's answers MLflow's HTTP client retries
itself); for many machines use an `mlflow server` on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

# the metric names, git_commit and the tag names are used by other modules through this one
from suite.naming import BEST_EPOCH as BEST_EPOCH
from suite.naming import BEST_VAL_MPJPE as BEST_VAL_MPJPE
from suite.naming import TRAIN_LOSS as TRAIN_LOSS
from suite.naming import VAL_MPJPE as VAL_MPJPE
from suite.naming import epoch_metric_names as epoch_metric_names
from suite.naming import metric_name
from suite.provenance import EXPERIMENT_KIND_TAG as EXPERIMENT_KIND_TAG
from suite.provenance import NOTE_TAG as NOTE_TAG
from suite.provenance import context_tags, experiment_tags
from suite.provenance import git_commit as git_commit
from suite.settings import PROJECT_DIR as PROJECT_DIR
from suite.settings import TrackingError as TrackingError
from suite.settings import TrackingSettings as TrackingSettings
from suite.settings import config_path as config_path
from suite.settings import gpu_metrics_missing, is_secret_key, redact
from suite.settings import load_settings as load_settings
from suite.settings import postgres_driver as postgres_driver
from suite.settings import resolve_uri as resolve_uri
from suite.settings import sqlite_uri as sqlite_uri
from suite.store import check_reachable as check_reachable
from suite.store import first_use_lock

PARENT_TAG = "mlflow.parentRunId"
# lease bookkeeping (suite/leases.py): on a run only while it is claimed, removed when it ends
LEASE_TAGS = ("claim", "heartbeat", "holder")  # and each claimant's `claim.<token>`
T = TypeVar("T")


# -- connection -----------------------------------------------------------------------
def _transient(err: BaseException) -> bool:
    """A store error worth another try: what MLflow's SQL stores raise for a locked sqlite
    file or a dropped database connection (MlflowException TEMPORARILY_UNAVAILABLE, wrapping
    SQLAlchemy's OperationalError), or that OperationalError itself. Not a REST answer
    (RestException): MLflow's HTTP client has already retried it with its own back-off."""
    from mlflow.exceptions import MlflowException, RestException
    from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE, ErrorCode
    from sqlalchemy.exc import OperationalError

    if isinstance(err, OperationalError):
        return True
    return (isinstance(err, MlflowException) and not isinstance(err, RestException)
            and err.error_code == ErrorCode.Name(TEMPORARILY_UNAVAILABLE))


def _with_retry(fn: Callable[[], T], what: str, attempts: int = 8, base: float = 0.2) -> T:
    """Retry transient database errors (`_transient`) with back-off; others at once."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as err:
            if attempt == attempts - 1 or not _transient(err):
                raise
            time.sleep(base * 2 ** attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def _first_line(err: Exception) -> str:
    """An error's first line, its password redacted (SQLAlchemy appends SQL and a link)."""
    lines = [line for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
    return redact(lines[0])


class Tracker:
    """A connected store: experiments, runs, and retried writes."""

    def __init__(self, settings: TrackingSettings, check: bool = True):
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        from mlflow import MlflowClient

        self.settings = settings
        if check:
            check_reachable(settings.tracking_uri)
        # an explicit client: no global state (mlflow.set_tracking_uri would export
        # MLFLOW_TRACKING_URI and silently redirect later Trackers in this process); MLflow
        # opens the store (and creates a fresh one's schema) here, so: one process at a time
        # on a sqlite file, retried as every other call
        try:
            with first_use_lock(settings.tracking_uri):
                self.client = _with_retry(lambda: MlflowClient(tracking_uri=settings.tracking_uri), "connect")
            if check:  # one cheap call: the store answers and its schema is usable
                _with_retry(lambda: self.client.search_experiments(max_results=1), "connect")
        except Exception as err:
            if not check:
                raise
            raise TrackingError(f"cannot use the tracking store {redact(settings.tracking_uri)}: "
                                f"{_first_line(err)}") from None

    # -- experiments ---------------------------------------------------------------
    def experiment_name(self, study: str) -> str:
        return f"{self.settings.experiment_prefix}/{study}"

    def experiment_id(self, study: str, create: bool = True) -> str | None:
        name = self.experiment_name(study)
        exp = _with_retry(lambda: self.client.get_experiment_by_name(name), "get experiment")
        if exp is not None:
            if create:
                self._describe_experiment(exp, study)
            return exp.experiment_id
        if not create:
            return None
        location = self.settings.artifact_location
        location = f"{location.rstrip('/')}/{study}" if "://" in location else Path(location, study).as_uri()
        try:
            return _with_retry(lambda: self.client.create_experiment(
                name, artifact_location=location, tags=experiment_tags(study)), "create experiment")
        except Exception:  # created by another process meanwhile
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def _describe_experiment(self, exp, study: str) -> None:
        """An experiment the suite did not create (or an older one) gets its kind and description."""
        missing = {k: v for k, v in experiment_tags(study).items() if k not in exp.tags}
        for key, value in missing.items():
            _with_retry(lambda k=key, v=value: self.client.set_experiment_tag(exp.experiment_id, k, v), "tag experiment")

    # -- runs ----------------------------------------------------------------------
    def create_run(self, experiment_id: str, name: str, tags: dict[str, str], parent_id: str | None = None) -> str:
        """A run with MLflow's context tags (source, git commit, user) under `tags`."""
        tags = {**context_tags(), **{k: redact(str(v)) for k, v in tags.items()}}
        if parent_id:
            tags[PARENT_TAG] = parent_id
        run = _with_retry(lambda: self.client.create_run(experiment_id, tags=tags, run_name=name), "create run")
        return run.info.run_id

    def search(self, experiment_ids: list[str], filter_string: str = "", order_by=None, max_results=1000):
        return _with_retry(lambda: list(self.client.search_runs(
            experiment_ids, filter_string, max_results=max_results, order_by=order_by)), "search runs")

    def all_runs(self, experiment_id: str, filter_string: str = ""):
        """Every active run of the experiment that passes `filter_string` (all pages)."""
        runs, token = [], None
        while True:
            page = _with_retry(lambda tok=token: self.client.search_runs(
                [experiment_id], filter_string, max_results=5000, page_token=tok), "search runs")
            runs += list(page)
            token = page.token
            if not token:
                return runs

    def runs_frame(self, experiment_ids: list[str]):
        """Every active run of the experiments as `mlflow.search_runs(output_format="pandas")`
        gives them: one row each, columns run_id, experiment_id, status, start_time, end_time
        (UTC timestamps), artifact_uri, metrics.*, params.*, tags.*."""
        import mlflow

        with _fluent_context(self.settings.tracking_uri):
            return _with_retry(lambda: mlflow.search_runs(experiment_ids, output_format="pandas"), "search runs")

    def get_run(self, run_id: str):
        return _with_retry(lambda: self.client.get_run(run_id), "get run")

    def delete_run(self, run_id: str) -> None:
        _with_retry(lambda: self.client.delete_run(run_id), "delete run")

    def runs_with_hash(self, experiment_id: str, config_hash: str):
        return self.search([experiment_id], f"tags.config_hash = '{config_hash}'", order_by=["attributes.start_time ASC"])

    def runs_with_tag(self, key: str, value: str):
        """Active runs of every experiment whose tag `key` is `value`, earliest first."""
        exps = _with_retry(lambda: list(self.client.search_experiments()), "search experiments")
        if not exps:
            return []
        return self.search([e.experiment_id for e in exps], f"tags.{key} = '{value}'",
                           order_by=["attributes.start_time ASC"])

    def set_status(self, run_id: str, status: str) -> None:
        """A terminal status also removes the lease tags (`LEASE_TAGS`): they mean something
        only while a process holds the run."""
        if status in ("FINISHED", "FAILED", "KILLED"):
            _with_retry(lambda: self.client.set_terminated(run_id, status), "end run")
            self.clear_lease(run_id)
        else:
            _with_retry(lambda: self.client.update_run(run_id, status=status), "update run")

    def clear_lease(self, run_id: str) -> None:
        """Delete the lease tags of a run that no process holds any more (best effort)."""
        try:
            tags = self.get_run(run_id).data.tags
            self.delete_tags(run_id, [k for k in tags if k in LEASE_TAGS or k.startswith("claim.")])
        except Exception:  # noqa: BLE001 - a tag left behind is cosmetic; the next end removes it
            pass

    def delete_tags(self, run_id: str, keys: list[str]) -> None:
        """Delete tags of a run (a missing one is no error)."""
        from mlflow.exceptions import MlflowException

        for key in keys:
            with contextlib.suppress(MlflowException):
                _with_retry(lambda k=key: self.client.delete_tag(run_id, k), "delete tag")

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, redact(str(v))[:8000]) for k, v in tags.items() if not is_secret_key(k)]
        for i in range(0, len(items), 100):
            _with_retry(lambda chunk=items[i:i + 100]: self.client.log_batch(run_id, tags=chunk), "set tags")

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, redact(str(v))[:6000]) for k, v in params.items() if not is_secret_key(k)]
        for i in range(0, len(items), 100):
            _with_retry(lambda chunk=items[i:i + 100]: self.client.log_batch(run_id, params=chunk), "log params")

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for i in range(0, len(items), 1000):
            _with_retry(lambda chunk=items[i:i + 1000]: self.client.log_batch(run_id, metrics=chunk), "log metrics")

    def metric_histories(self, run_ids: list[str], key: str) -> list[tuple[str, int, float]]:
        """(run_id, step, value) of metric `key` for many runs: one query per 500 runs where
        the store can (MLflow's SQL stores have `get_metric_history_bulk`), else one per run."""
        store = getattr(getattr(self.client, "_tracking_client", None), "store", None)
        bulk = getattr(store, "get_metric_history_bulk", None)
        if bulk is not None:
            try:
                out = []
                for i in range(0, len(run_ids), 500):
                    out += [(m.run_id, m.step, m.value) for m in bulk(run_ids[i:i + 500], key, 10**7)]
                return out
            except Exception:  # a store version without it: one call per run instead
                pass
        return [(run_id, m.step, m.value) for run_id in run_ids
                for m in _with_retry(lambda r=run_id: self.client.get_metric_history(r, key), "history")]

    def load_json_artifact(self, run_id: str, name: str) -> Any:
        """The JSON artifact `name` of a run (as `log_dict` wrote it)."""
        import json
        import tempfile

        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        with tempfile.TemporaryDirectory() as tmp:
            path = self.client.download_artifacts(run_id, name, tmp)  # no retry: a missing file is an answer
            return json.loads(Path(path).read_text())

    def logged_steps(self, run_id: str, key: str) -> set[int]:
        return {m.step for m in _with_retry(lambda: self.client.get_metric_history(run_id, key), "history")}

    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        _with_retry(lambda: self.client.log_artifact(run_id, str(path), artifact_path), "log artifact")

    def log_evaluation(self, run_id: str, table, trained_frames: int, extra: dict[str, float] | None = None,
                       step: int = 0) -> dict[str, float]:
        """Log an evaluation table (`hummuss.evaluate.evaluate`'s): metrics `test/<metric>/<condition>`
        (with F_<trained_frames> also as `as_trained`), plus `extra`, and the table as
        `evaluation.csv`. Returns the metrics logged."""
        import tempfile

        from hummuss.evaluate import with_as_trained

        scored = with_as_trained(table, trained_frames)
        metrics = {metric_name(r.metric, r.condition): r.value for r in scored.itertuples()}
        metrics.update(extra or {})
        self.log_metrics(run_id, metrics, step=step)
        with tempfile.TemporaryDirectory() as tmp:
            csv = Path(tmp) / "evaluation.csv"
            table.to_csv(csv, index=False)
            self.log_artifact(run_id, csv)
        return metrics

    @contextlib.contextmanager
    def system_metrics(self, run_id: str):
        """While the block runs, MLflow's system metrics monitor logs `system/...` metrics (CPU,
        memory, disk, network; GPU where nvidia-ml-py finds one) to the run, every 10 s
        (`MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`), when mlflow.yaml says `system_metrics: true`."""
        if not self.settings.system_metrics:
            yield
            return
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        if note := gpu_metrics_missing():
            warnings.warn(note, stacklevel=3)

        monitor = SystemMetricsMonitor(run_id, resume_logging=True, tracking_uri=self.settings.tracking_uri)
        monitor.start()
        try:
            yield
        finally:
            monitor.finish()

    def log_model(self, run_id: str, model, example) -> str:
        """Log `model` (a torch module) with `mlflow.pytorch.log_model` as the run's `model`: a
        signature inferred from `example` (a numpy batch, also the input example) and the
        model's output on it. Returns the URI `mlflow.pytorch.load_model` takes."""
        import mlflow
        import mlflow.pytorch
        import torch
        from mlflow.models import infer_signature

        model.eval()
        with torch.no_grad():
            output = model(torch.as_tensor(example)).float().cpu().numpy()
        signature = infer_signature(example, output)
        experiment_id = self.get_run(run_id).info.experiment_id
        with _fluent_context(self.settings.tracking_uri, experiment_id):
            _with_retry(lambda: mlflow.pytorch.log_model(
                model, name="model", run_id=run_id, signature=signature, input_example=example,
                serialization_format="pickle",  # the module itself (torch.export refuses data-dependent checks)
                pip_requirements=[f"torch=={torch.__version__}", f"mlflow=={mlflow.__version__}"]), "log model")
        return f"runs:/{run_id}/model"

    def load_model(self, uri: str):
        """The torch module of a logged model, `runs:/<run_id>/model` or
        `models:/<name>/<version>`, from this store (on the CPU)."""
        import mlflow.pytorch

        with _fluent_context(self.settings.tracking_uri):
            return mlflow.pytorch.load_model(uri, map_location="cpu")

    def log_dict(self, run_id: str, payload: dict, name: str) -> None:
        _with_retry(lambda: self.client.log_dict(run_id, payload, name), "log dict")

    def log_datasets(self, run_id: str, datasets: list[dict]) -> None:
        """Record data sets as the run's inputs (the "Datasets used" of its page), each a
        dict {"name", "digest", "context", "profile"} (suite/worker/datasets.py), tagged
        `mlflow.data.context` (`training`, `evaluation`); the profile is shown as JSON."""
        from mlflow.entities import DatasetInput, InputTag

        entries = [DatasetInput(_motion_dataset(d)._to_mlflow_entity(),
                                tags=[InputTag("mlflow.data.context", d["context"])]) for d in datasets]
        try:
            _with_retry(lambda: self.client.log_inputs(run_id, datasets=entries), "log input")
        except Exception as err:
            if not _lost_insert_race(err):
                raise
            # another run inserted the same dataset meanwhile: once more links to that one
            _with_retry(lambda: self.client.log_inputs(run_id, datasets=entries), "log input")


def _lost_insert_race(err: BaseException) -> bool:
    """A concurrent writer inserted the same row first: MLflow's SQL store raises
    MlflowException(BAD_REQUEST) from SQLAlchemy's IntegrityError; a tracking server answers
    that as RestException BAD_REQUEST (no cause to inspect; another try raises a real bad
    request again)."""
    from mlflow.exceptions import RestException
    from mlflow.protos.databricks_pb2 import BAD_REQUEST, ErrorCode
    from sqlalchemy.exc import IntegrityError

    if isinstance(err, IntegrityError) or isinstance(err.__cause__, IntegrityError):
        return True
    return isinstance(err, RestException) and err.error_code == ErrorCode.Name(BAD_REQUEST)


def _motion_dataset(d: dict):
    """An `mlflow.data` dataset of motion clips: name, digest and a profile of its own
    (sequences, frames, subjects, fps, spec), its source the data spec."""
    import json

    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.dataset import Dataset

    class MotionDataset(Dataset):
        def _compute_digest(self) -> str:
            return d["digest"]

        @property
        def profile(self):
            return d["profile"]

        @property
        def schema(self):
            return None

        def to_dict(self) -> dict[str, str]:
            return {**super().to_dict(), "profile": json.dumps(d["profile"])}

    spec = redact(str(d["profile"].get("spec", "")))
    return MotionDataset(CodeDatasetSource({"spec": spec}), name=d["name"], digest=d["digest"])


@contextlib.contextmanager
def _fluent_context(uri: str, experiment_id: str | None = None):
    """MLflow's process-wide tracking URI and experiment (MLFLOW_TRACKING_URI,
    MLFLOW_EXPERIMENT_ID) set for the block only, for the MLflow functions that take no
    client (`mlflow.pytorch.log_model` files its logged model under the current experiment)."""
    import mlflow

    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")
    env = {k: os.environ.get(k) for k in keys}
    before = mlflow.get_tracking_uri()
    if experiment_id is not None:
        os.environ.pop("MLFLOW_EXPERIMENT_NAME", None)
        os.environ["MLFLOW_EXPERIMENT_ID"] = experiment_id
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def flatten(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    """{'lr': 1} -> {'<prefix>.lr': 1}, nested dicts joined with dots."""
    out = {}
    for key, value in values.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            out.update(flatten(name, value))
        else:
            out[name] = value
    return out

"""Before any trial: validate the command and the search space, create or load the Optuna
study, and the sweep's MLflow parent run (shared by every worker on every machine)."""

from __future__ import annotations

import contextlib
import dataclasses
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import optuna

from suite.registry import Param, Study
from suite.sweep.config import SweepConfig
from suite.sweep.space import check_space, format_params
from suite.sweep.stale import open_sweep_storage, recover_stale
from suite.sweep.storage import (
    StorageSpec,
    check_separate,
    parse_storage,
    quiet_experimental,
    resolve_storage,
)
from suite.tracking import Tracker, TrackingSettings, git_commit
from suite.worker import checkpoint_dir

SETTLE_S = 0.5  # pause between writing a shared value and reading it back
OBJECTIVE_NAME = "val/mpjpe_mm (best epoch)"  # what each trial returns, minimised


@dataclass
class Plan:
    """A prepared sweep: validated, its study and parent run exist."""

    cfg: SweepConfig  # with variant, name and storage resolved
    storage: StorageSpec
    study: optuna.Study
    tracker: Tracker
    parent_id: str


def validate(cfg: SweepConfig, settings: TrackingSettings) -> tuple[Study, str, dict[str, Any]]:
    """Check the command and the study's search space without writing anything.

    Returns (study, base variant, the base configuration's values of the search space);
    raises ValueError naming what is wrong.
    """
    cfg.check()
    if cfg.storage:  # not the MLflow store's own database
        check_separate(parse_storage(cfg.storage), settings)
    study_decl = cfg.declaration()
    variant = cfg.variant or study_decl.variants[0].name
    base, paper = check_space(study_decl, variant, cfg.scale, cfg.seed, cfg.sets, cfg.sampler)
    if base.init_from is not None:
        init = checkpoint_dir(settings, base.init_from) / "best.pt"
        if not init.exists():
            raise ValueError(f"{study_decl.name}/{variant} at scale {cfg.scale!r} starts from "
                             f"{base.init_from.study}/{base.init_from.variant}, whose checkpoint {init} does not "
                             f"exist; run `hummuss-suite run {base.init_from.study} --scale {cfg.scale}` first")
    return study_decl, variant, paper


def prepare(cfg: SweepConfig, tracker: Tracker, say: Callable[[str], None] = print) -> Plan:
    """Validate everything, then create or load the Optuna study and the MLflow parent run.

    Raises ValueError (a usage error) before anything is written when a name, a value or
    the search space is wrong.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study_decl, variant, paper = validate(cfg, tracker.settings)
    name = cfg.name or cfg.default_name(study_decl, variant)
    storage = resolve_storage(cfg.storage, cfg.workers, tracker.settings, name, say)
    cfg = dataclasses.replace(cfg, variant=variant, name=name, storage=storage.location)
    study = optuna.create_study(study_name=name, storage=open_sweep_storage(storage, cfg, tracker.settings),
                                direction="minimize", load_if_exists=True)
    _check_identity(study, cfg, say)
    if study.metric_names != [OBJECTIVE_NAME]:  # optuna-dashboard's name of the objective
        with quiet_experimental():
            study.set_metric_names([OBJECTIVE_NAME])
    experiment_id = tracker.experiment_id(study_decl.name)
    parent = ensure_parent(tracker, study, experiment_id,
                           {"study": study_decl.name, "variant": variant, "scale": cfg.scale, "seed": cfg.seed,
                            "sampler": cfg.sampler, "pruner": cfg.pruner, "storage": storage.shown,
                            "git_commit": git_commit(),
                            "mlflow.note.content": f"`{cfg.command or 'hummuss-suite sweep ' + study_decl.name}`\n\n"
                                                   f"Optuna sweep {name}: {cfg.trials} trials of {study_decl.name}/"
                                                   f"{variant} at scale {cfg.scale}, sampler {cfg.sampler}, pruner "
                                                   f"{cfg.pruner}; storage {storage.shown}."},
                           study_decl.search_space)
    if not study.get_trials(deepcopy=False):
        study.enqueue_trial(dict(paper), user_attrs={"paper": True}, skip_if_exists=True)
        say(f"sweep {name}: the paper's configuration is the first trial [{format_params(paper)}]")
    recover_stale(study, cfg.stale_after_s, cfg.max_retry, tracker, say)
    return Plan(cfg, storage, study, tracker, parent)


def _active_run(tracker: Tracker, run_id: str) -> bool:
    try:
        return tracker.get_run(run_id).info.lifecycle_stage == "active"
    except Exception:
        return False


def ensure_parent(tracker: Tracker, study: optuna.Study, experiment_id: str, tags: dict[str, str],
                  space: Mapping[str, Param]) -> str:
    """The sweep's parent run, shared by every process of every machine.

    Its id lives in the Optuna study's user attributes. Processes that start a new sweep
    at once each create a parent, read back every parent of the sweep after a pause, keep
    the earliest and delete their own if it lost.
    """
    current = study.user_attrs.get("mlflow_parent_run_id")
    if current and _active_run(tracker, current):
        return current
    if "sweep_uid" not in study.user_attrs:
        study.set_user_attr("sweep_uid", uuid.uuid4().hex)
        time.sleep(SETTLE_S)
    uid = study.user_attrs["sweep_uid"]
    mine = tracker.create_run(experiment_id, f"sweep {study.study_name}",
                              {**tags, "kind": "sweep", "sweep": study.study_name, "sweep_uid": uid})
    time.sleep(SETTLE_S)
    rivals = tracker.search([experiment_id], f"tags.sweep_uid = '{uid}' and tags.kind = 'sweep'")
    winner = min(rivals, key=lambda r: (r.info.start_time, r.info.run_id)).info.run_id if rivals else mine
    if winner != mine:
        with contextlib.suppress(Exception):
            tracker.delete_run(mine)
    else:
        tracker.log_dict(mine, {k: dataclasses.asdict(p) for k, p in space.items()}, "search_space.json")
    study.set_user_attr("mlflow_parent_run_id", winner)
    return winner


def _check_identity(study: optuna.Study, cfg: SweepConfig, say: Callable[[str], None]) -> None:
    """A sweep keeps its study, variant, scale, seed and fixed overrides; say when the sampler changes."""
    mine = {"study": cfg.study, "variant": cfg.variant, "scale": cfg.scale, "seed": cfg.seed,
            "sets": dict(sorted(cfg.sets.items()))}
    recorded = study.user_attrs.get("sweep")
    if recorded is None:
        study.set_user_attr("sweep", {**mine, "sampler": cfg.sampler, "pruner": cfg.pruner})
        return
    for key, value in mine.items():
        if recorded.get(key) != value:
            raise ValueError(f"sweep {cfg.name!r} was created with {key}={recorded.get(key)!r}; this command "
                             f"asks for {key}={value!r}; pass --name to start another sweep")
    for key in ("sampler", "pruner"):
        if recorded.get(key) != getattr(cfg, key):
            say(f"note: sweep {cfg.name!r} was started with --{key} {recorded.get(key)}; "
                f"continuing with --{key} {getattr(cfg, key)}")

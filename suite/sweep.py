"""Optuna sweeps: tune a study's base configuration; one trial is one training run.

    hummuss-suite sweep gdssm-aggregation --trials 40 --scale cpu               # one process, sqlite
    hummuss-suite sweep gdssm-aggregation --trials 40 --scale cpu --workers 2   # two processes, a journal file
    hummuss-suite sweep gdssm-aggregation --trials 200 --scale paper \\
        --storage postgresql://user@db:5432/optuna                             # the same command on every machine

A trial trains the study's base variant (its first, or `--variant`) at `--scale` with the
trial's parameters applied to the model or train config (`Param.target`), reports the
validation MPJPE after every epoch (the pruner may stop it there) and returns the best
one. The search space is declared in the study file (`Study.search_space`) and checked
before any trial runs. The paper's configuration is the first trial. The sampler and
its seed are pinned (`--sampler`, `--seed`); a sequential sweep is reproducible, a
parallel one is not (the order in which trials finish changes what is sampled).

Workers: `--workers N` starts N processes on this machine; each runs trials until
`--trials` trials of the sweep are finished (complete or pruned), counted over every
process and machine before each new trial (a file lock makes the count exact among the
workers of one host). A rerun of a finished or interrupted sweep only adds the missing
trials; `--set KEY=VALUE` fixes config fields for every trial (part of the sweep's
identity, with the study, variant, scale and seed).

Dead workers (suite/sweep_storage.py): every trial records its worker (host, pid); the
command fails and re-enqueues a RUNNING trial whose process is gone (same host) or that
runs longer than `--stale-after`, when it starts and before every new trial. With a
database (`--storage postgresql://...`) running trials also beat a heartbeat and
`RetryHeartbeatStaleTrialCallback` retries the trials of a machine that went silent.
Ctrl-C (or SIGTERM) ends the running trial failed and re-enqueues it. A retried trial
resumes from the checkpoint of the trial it retries (`<checkpoint_dir>/sweeps/<sweep>/
trial-<n>/`, shared by all machines when checkpoint_dir is). A trial that raises (a
non-finite loss, a config the model refuses) fails and is not retried; a worker stops
after 3 such failures in a row.

MLflow (through suite.tracking): experiment `hummuss/<study>`; one parent run per sweep
(tags `kind=sweep`, `sweep`, `sweep_uid`; its id is kept in the Optuna study's user
attributes so every worker on every machine nests under it); one child run per trial
(tags `trial`, `sweep`, `kind=trial`, the full config as params, per-epoch metrics);
a pruned trial ends KILLED with tag `pruned=true`, a failed one FAILED. The best trial
is summarised on the parent (metric `best/value`, tags `best/trial`, `best/params`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hummuss.checkpoint import load_checkpoint
from hummuss.config import parse_overrides
from hummuss.train import Callback, TrainConfig, Trainer
from hummuss.zoo import config_class
from suite.registry import Param, Study, get_study
from suite.runspec import RunSpec, expand
from suite.sweep_storage import (
    PRUNERS,
    SAMPLERS,
    AskLock,
    StaleTrialCallback,
    StorageSpec,
    default_storages,
    derive_seed,
    make_pruner,
    make_sampler,
    open_storage,
    parse_storage,
    quiet_experimental,
    recover_stale,
    retry_attrs,
    sweep_exists,
    worker_identity,
)
from suite.tracking import (
    PROJECT_DIR,
    Tracker,
    TrackingError,
    TrackingSettings,
    git_commit,
    load_settings,
)

KINDS = ("float", "int", "categorical")
TARGETS = ("model", "train")
DONE = (TrialState.COMPLETE, TrialState.PRUNED)
SETTLE_S = 0.5  # pause between writing a shared value and reading it back
POLL_S = 1.0  # how often a worker with nothing to start looks again
MAX_CONSECUTIVE_FAILURES = 3  # a worker whose trials keep raising stops


# -- configuration ------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepConfig:
    """One `hummuss-suite sweep` invocation."""

    study: str
    trials: int  # finished (complete or pruned) trials to reach, over all workers and machines
    scale: str = "cpu"
    variant: str | None = None  # the study's first variant
    name: str | None = None  # the Optuna study name; default <study>[-<variant>]-<scale>
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int = 0  # the sampler's seed and the training seed
    workers: int = 1  # processes on this machine
    storage: str | None = None  # SQLAlchemy URL or journal file; default beside the MLflow store
    timeout_s: float | None = None  # start no trial after this many seconds
    sets: Mapping[str, str] = field(default_factory=dict)  # fixed overrides of every trial (--set)
    heartbeat_s: float = 30.0  # RDB storages: heartbeat interval of a running trial
    grace_s: float = 120.0  # RDB storages: a trial without a heartbeat this long is stale
    stale_after_s: float = 24 * 3600.0  # any storage: a trial running this long is stale
    max_retry: int = 3  # retries of one stale trial

    def check(self) -> None:
        if self.trials < 1:
            raise ValueError(f"--trials must be >= 1, got {self.trials}")
        if self.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {self.workers}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; known: {', '.join(SAMPLERS)}")
        if self.pruner not in PRUNERS:
            raise ValueError(f"unknown pruner {self.pruner!r}; known: {', '.join(PRUNERS)}")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ValueError(f"--timeout must be > 0 seconds, got {self.timeout_s}")
        if self.stale_after_s <= 0 or self.heartbeat_s <= 0 or self.grace_s <= self.heartbeat_s:
            raise ValueError("need --stale-after > 0 and 0 < heartbeat < grace period")

    def default_name(self, study: Study, variant: str) -> str:
        middle = "" if variant == study.variants[0].name else f"-{variant}"
        return f"{study.name}{middle}-{self.scale}"


# -- the search space ---------------------------------------------------------------------
def _where(study: Study, name: str) -> str:
    return f"search space of study {study.name!r}: parameter {name!r}"


def _on_step(value: float, low: float, step: float) -> bool:
    k = (value - low) / step
    return abs(k - round(k)) < 1e-6


def contains(p: Param, value: Any) -> bool:
    """Whether `value` is a point of the dimension `p`."""
    if p.kind == "categorical":
        return value in p.choices
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if p.kind == "int" and value != int(value):
        return False
    return p.low <= value <= p.high and (p.step is None or _on_step(value, p.low, p.step))


def _check_param(study: Study, name: str, p: Param, sampler: str) -> None:
    where = _where(study, name)
    if p.kind not in KINDS:
        raise ValueError(f"{where}: unknown kind {p.kind!r}; known: {', '.join(KINDS)}")
    if p.target not in TARGETS:
        raise ValueError(f"{where}: unknown target {p.target!r}; known: {', '.join(TARGETS)}")
    if p.kind == "categorical":
        if not p.choices:
            raise ValueError(f"{where}: empty choice list; give at least one choice")
        if len(set(map(repr, p.choices))) != len(p.choices):
            raise ValueError(f"{where}: duplicate choices in {p.choices!r}")
        return
    if p.low is None or p.high is None:
        raise ValueError(f"{where}: a {p.kind} range needs low and high")
    if p.low >= p.high:
        raise ValueError(f"{where}: empty range: low={p.low} >= high={p.high}")
    if p.log and p.low <= 0:
        raise ValueError(f"{where}: a log range must be > 0, got low={p.low}")
    if p.step is not None:
        if p.step <= 0:
            raise ValueError(f"{where}: step must be > 0, got {p.step}")
        if p.log:
            raise ValueError(f"{where}: a log range cannot have a step (Optuna samples it continuously)")
        if not _on_step(p.high, p.low, p.step):
            raise ValueError(f"{where}: high={p.high} is not low={p.low} plus a whole number of steps {p.step}")
    if p.kind == "int":
        for bound in (p.low, p.high, p.step or 1):
            if bound != int(bound):
                raise ValueError(f"{where}: an int range needs integer low, high and step, got {bound}")
    if sampler == "grid" and p.kind == "float" and p.step is None:
        fix = "declare its values categorical, e.g. choices=(1e-4, 3e-4, 1e-3)" if p.log else \
            "give this float range a step, or declare it categorical"
        raise ValueError(f"{where}: the grid sampler needs a finite set of values; {fix}")


def grid_values(space: Mapping[str, Param]) -> dict[str, list]:
    """Every parameter's values on a grid (ranges need a step on floats)."""
    out = {}
    for name, p in space.items():
        if p.kind == "categorical":
            out[name] = list(p.choices)
        elif p.kind == "int":
            out[name] = list(range(int(p.low), int(p.high) + 1, int(p.step or 1)))
        elif p.step is None:
            raise ValueError(f"parameter {name!r} has no finite set of values for the grid sampler (a float "
                             f"range without step)")
        else:
            n = round((p.high - p.low) / p.step)
            out[name] = [round(p.low + i * p.step, 12) for i in range(n + 1)]
    return out


def grid_exhausted(trials: list[FrozenTrial], size: int) -> bool:
    """Every point of a grid of `size` points has been tried (a failed point counts, as for
    BruteForceSampler) and no retry waits."""
    if any(t.state == TrialState.WAITING for t in trials):
        return False
    tried = {tuple(sorted(t.params.items())) for t in trials
             if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    return len(tried) >= size


def check_space(study: Study, variant: str, scale: str, seed: int = 0, sets: Mapping[str, str] | None = None,
                sampler: str = "tpe") -> tuple[RunSpec, dict[str, Any]]:
    """Validate `study.search_space` for `variant` at `scale`: the base run spec and its values.

    Raises a ValueError naming the parameter for an unknown kind or target, a name that
    is no field of the target config, an empty range or choice list, a log range
    touching 0, a value the config refuses, or a base value outside the space.
    """
    space = study.search_space
    if not space:
        raise ValueError(f"study {study.name!r} declares no search space; add search_space=frozen(name="
                         f"Param(...), ...) to its file in studies/")
    chosen = study.variant(variant)
    spec = expand(study, scale, seeds=(seed,), sets=dict(sets or {}), variants=(variant,))[0]
    for name, p in space.items():
        _check_param(study, name, p, sampler)
        cls = config_class(chosen.model) if p.target == "model" else TrainConfig
        values = spec.model_config if p.target == "model" else spec.train_config
        where = _where(study, name)
        if name not in values:
            raise ValueError(f"{where}: unknown parameter, not a field of {cls.__name__} (target "
                             f"{p.target!r}, variant {variant!r}); known: {', '.join(sorted(values))}")
        base = values[name]
        if p.kind == "float" and isinstance(base, int) and not isinstance(base, bool):
            raise ValueError(f"{where}: {cls.__name__}.{name} is an integer; declare it Param('int', ...)")
        if p.kind != "categorical" and (isinstance(base, bool) or not isinstance(base, int | float)):
            raise ValueError(f"{where}: {cls.__name__}.{name} is a {type(base).__name__}; declare it categorical")
        for value in p.choices if p.kind == "categorical" else (p.low, p.high):
            value = int(value) if p.kind == "int" else value
            try:
                cls.from_dict({**values, name: value})
            except (ValueError, TypeError) as err:
                raise ValueError(f"{where}: {cls.__name__} refuses {name}={value!r}: {err}") from None
        if not contains(p, base):
            raise ValueError(f"{where}: the base configuration's value {base!r} (variant {variant!r} at "
                             f"scale {scale!r}) lies outside the search space; widen it, so that the "
                             f"paper's configuration can be the first trial")
    return spec, {name: spec.model_config[name] if p.target == "model" else spec.train_config[name]
                  for name, p in space.items()}


def suggest(trial: optuna.Trial, space: Mapping[str, Param]) -> dict[str, Any]:
    """The trial's value of every dimension."""
    out = {}
    for name, p in space.items():
        if p.kind == "categorical":
            out[name] = trial.suggest_categorical(name, list(p.choices))
        elif p.kind == "int":
            out[name] = trial.suggest_int(name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        else:
            out[name] = trial.suggest_float(name, p.low, p.high, step=p.step, log=p.log)
    return out


def apply_params(spec: RunSpec, params: Mapping[str, Any], space: Mapping[str, Param]) -> RunSpec:
    """`spec` with the trial's values in its model and train configs (validated by the configs)."""
    model = {**spec.model_config, **{k: v for k, v in params.items() if space[k].target == "model"}}
    train = {**spec.train_config, **{k: v for k, v in params.items() if space[k].target == "train"}}
    return dataclasses.replace(spec, model_config=config_class(spec.model).from_dict(model).to_dict(),
                               train_config=TrainConfig.from_dict(train).to_dict())


# -- MLflow ------------------------------------------------------------------------------
def _active_run(tracker: Tracker, run_id: str) -> bool:
    try:
        return tracker.client.get_run(run_id).info.lifecycle_stage == "active"
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
            tracker.client.delete_run(mine)
    else:
        tracker.log_dict(mine, {k: dataclasses.asdict(p) for k, p in space.items()}, "search_space.json")
    study.set_user_attr("mlflow_parent_run_id", winner)
    return winner


def _fmt_params(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


# -- one trial ---------------------------------------------------------------------------
class ReportToTrial(Callback):
    """Per-epoch validation MPJPE into the Optuna trial; stops training when it is pruned."""

    def __init__(self, trial: optuna.Trial):
        self.trial = trial
        self.pruned_at: int | None = None
        self.resumed_at = 0

    def on_train_start(self, trainer) -> None:
        self.resumed_at = trainer.epoch
        for h in trainer.history:  # epochs of the trial this one retries
            if "val/mpjpe" in h:
                self.trial.report(float(h["val/mpjpe"]), int(h["epoch"]))

    def on_epoch_end(self, epoch, metrics):
        if "val/mpjpe" not in metrics:
            return False
        self.trial.report(float(metrics["val/mpjpe"]), epoch)
        if self.trial.should_prune():
            self.pruned_at = epoch
            return True
        return False


def trial_dir(settings: TrackingSettings, sweep: str, number: int) -> Path:
    return Path(settings.checkpoint_dir) / "sweeps" / sweep / f"trial-{number}"


class TrialObjective:
    """The objective: train one trial, log it as a child run, return its best validation MPJPE."""

    def __init__(self, study: Study, space: Mapping[str, Param], base: RunSpec, sweep: str, tracker: Tracker,
                 experiment_id: str, parent_id: str, say: Callable[[str], None] = print):
        self.study, self.space, self.base, self.sweep = study, space, base, sweep
        self.tracker, self.experiment_id, self.parent_id, self.say = tracker, experiment_id, parent_id, say
        self.last_state: str = ""
        self.on_start: Callable[[], None] | None = None  # called once the trial exists (AskLock.release)

    def __call__(self, trial: optuna.Trial) -> float:
        if self.on_start is not None:
            self.on_start()
        self.last_state = "FAIL"
        n, started = trial.number, time.time()
        trial.set_user_attr("worker", worker_identity(n))
        params = suggest(trial, self.space)
        out = trial_dir(self.tracker.settings, self.sweep, n)
        retry_of = trial.user_attrs.get("retry_of")
        base = self.base
        tags = {"kind": "trial", "sweep": self.sweep, "trial": n, "study": base.study, "variant": base.variant,
                "seed": base.seed, "scale": base.scale, "model": base.model, "label": f"{self.sweep} trial {n}",
                "git_commit": git_commit(), "host": socket.gethostname(), "sweep.params": json.dumps(params)}
        if retry_of is not None:
            tags["retry_of"] = retry_of
        if trial.user_attrs.get("paper"):
            tags["paper_config"] = "true"
        run_id = self.tracker.create_run(self.experiment_id, f"trial-{n}", tags, self.parent_id)
        trial.set_user_attr("mlflow_run_id", run_id)
        try:
            spec = apply_params(base, params, self.space)  # the configs may refuse a combination
            self.tracker.set_tags(run_id, {"train_hash": spec.train_hash})
            self.tracker.log_params(run_id, {**spec.params(), "sweep.name": self.sweep, "sweep.trial": n})
            self._carry_over(retry_of, out)
            result, report = self._train(trial, spec, run_id, out)
            value = float(result.best_val_mpjpe)
            if not math.isfinite(value):
                raise ValueError(f"trial {n} has no finite validation MPJPE (got {value})")
        except KeyboardInterrupt:
            self.tracker.set_tags(run_id, {"optuna.state": "FAIL", "interrupted": "true"})
            self.tracker.set_status(run_id, "KILLED")
            trial.study.enqueue_trial(params, user_attrs=retry_attrs(n, trial.user_attrs, "interrupted"))
            raise
        except Exception as err:
            self.tracker.set_tags(run_id, {"optuna.state": "FAIL", "error": f"{type(err).__name__}: {err}"[:5000]})
            self.tracker.set_status(run_id, "FAILED")
            self.say(f"trial {n}: failed ({type(err).__name__}: {err}); log: {out / 'train.log'}")
            raise
        self.tracker.log_metrics(run_id, {"best_val_mpjpe": value, "best_epoch": result.best_epoch},
                                 step=result.epochs_run)
        if report.resumed_at:
            self.tracker.set_tags(run_id, {"resumed_from_epoch": report.resumed_at})
        seconds = time.time() - started
        if report.pruned_at is not None:
            self.tracker.set_tags(run_id, {"optuna.state": "PRUNED", "pruned": "true",
                                           "pruned_at_epoch": report.pruned_at})
            self.tracker.set_status(run_id, "KILLED")
            self.last_state = "PRUNED"
            self.say(f"trial {n}: pruned at epoch {report.pruned_at} (val MPJPE {value:.1f} mm) in {seconds:.0f} s"
                     f"  [{_fmt_params(params)}]")
            raise optuna.TrialPruned(f"pruned at epoch {report.pruned_at}")
        self.tracker.set_tags(run_id, {"optuna.state": "COMPLETE"})
        self.tracker.set_status(run_id, "FINISHED")
        self.last_state = "COMPLETE"
        self.say(f"trial {n}: complete, val MPJPE {value:.1f} mm in {seconds:.0f} s  [{_fmt_params(params)}]")
        return value

    def _carry_over(self, retry_of: int | None, out: Path) -> None:
        """A retry resumes from the checkpoints of the trial it retries."""
        if retry_of is None or (out / "last.pt").exists():
            return
        previous = trial_dir(self.tracker.settings, self.sweep, int(retry_of))
        if (previous / "last.pt").exists():
            out.mkdir(parents=True, exist_ok=True)
            for name in ("best.pt", "last.pt"):  # last.pt last: its presence means "resume"
                if (previous / name).exists():
                    shutil.copy2(previous / name, out / name)

    def _train(self, trial: optuna.Trial, spec: RunSpec, run_id: str, out: Path):
        from hummuss.data import open_source
        from suite.worker import MlflowCallback, build_model, checkpoint_dir

        out.mkdir(parents=True, exist_ok=True)
        handle = open(out / "train.log", "a", buffering=1)

        def log(msg: str) -> None:
            line = f"{time.strftime('%H:%M:%S')} {self.sweep}/trial-{trial.number}: {msg}"
            print(line, file=sys.stderr, flush=True)
            handle.write(line + "\n")

        try:
            source = open_source(spec.data)
            model = build_model(spec)
            if spec.init_from is not None and not (out / "last.pt").exists():
                init = checkpoint_dir(self.tracker.settings, spec.init_from) / "best.pt"
                model.load_state_dict(load_checkpoint(init)["model"])
                log(f"initialised from {spec.init_from.study}/{spec.init_from.variant}")
            train = source.clips("train", spec.frames, spec.stride)
            val = source.clips("test", spec.frames, spec.frames)
            report = ReportToTrial(trial)
            trainer = Trainer(model, train, val, TrainConfig.from_dict(spec.train_config), out,
                              callbacks=[MlflowCallback(self.tracker, run_id), report], log=log)
            return trainer.fit(), report
        finally:
            handle.close()
            with contextlib.suppress(Exception):
                self.tracker.log_artifact(run_id, out / "train.log")


# -- a worker: trials until the sweep has enough ------------------------------------------
@dataclass
class WorkerOutcome:
    ran: int  # trials this worker started
    stop: str  # done | timeout | grid exhausted | failing


def _storage_for(spec: StorageSpec, cfg: SweepConfig, settings: TrackingSettings):
    if spec.kind == "rdb":
        return open_storage(spec, cfg.heartbeat_s, cfg.grace_s, StaleTrialCallback(settings, cfg.max_retry))
    return open_storage(spec)


def work(cfg: SweepConfig, index: int = 0, deadline: float | None = None, say: Callable[[str], None] = print,
         tracker: Tracker | None = None) -> WorkerOutcome:
    """Run trials of the sweep `cfg` (already prepared: storage, study, parent run) until it
    has `cfg.trials` finished trials, the deadline passes or trials keep failing."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study_decl = get_study(cfg.study)
    base, _ = check_space(study_decl, cfg.variant, cfg.scale, cfg.seed, cfg.sets, cfg.sampler)
    tracker = tracker or Tracker(load_settings(), check=False)
    spec = parse_storage(cfg.storage)
    study = optuna.load_study(study_name=cfg.name, storage=_storage_for(spec, cfg, tracker.settings),
                              pruner=make_pruner(cfg.pruner, base.train_config["epochs"]))
    parent = study.user_attrs["mlflow_parent_run_id"]
    objective = TrialObjective(study_decl, study_decl.search_space, base, cfg.name, tracker,
                               tracker.experiment_id(study_decl.name), parent, say)
    lock = AskLock(trial_dir(tracker.settings, cfg.name, 0).parent / ".ask.lock")
    objective.on_start = lock.release
    grid_size = math.prod(map(len, grid_values(study_decl.search_space).values())) if cfg.sampler == "grid" else 0
    ran = failures = 0
    while True:
        if deadline and time.time() >= deadline:
            return WorkerOutcome(ran, "timeout")
        recover_stale(study, cfg.stale_after_s, cfg.max_retry, tracker, say)
        if spec.kind == "rdb":
            with quiet_experimental():
                optuna.storages.fail_stale_trials(study)  # heartbeats: retried by StaleTrialCallback
        lock.acquire()
        try:
            trials = study.get_trials(deepcopy=False)
            states = Counter(t.state for t in trials)
            done = states[TrialState.COMPLETE] + states[TrialState.PRUNED]
            if done >= cfg.trials:
                return WorkerOutcome(ran, "done")
            if grid_size and grid_exhausted(trials, grid_size):
                return WorkerOutcome(ran, "grid exhausted")
            if done + states[TrialState.RUNNING] >= cfg.trials:  # enough are running elsewhere
                lock.release()
                time.sleep(POLL_S)
                continue
            study.sampler = make_sampler(cfg.sampler, derive_seed(cfg.seed, len(trials), index))
            study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
        finally:
            lock.release()
        ran += 1
        failures = failures + 1 if objective.last_state == "FAIL" else 0
        if failures >= MAX_CONSECUTIVE_FAILURES:
            say(f"worker {index}: {failures} trials in a row failed; stopping (see their logs)")
            return WorkerOutcome(ran, "failing")


# -- the command: prepare, run the workers, summarise -------------------------------------
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
                         f"[{_fmt_params(self.best['params'])}]  (MLflow run {self.best['run_id']})")
        else:
            lines.append("best: no trial has completed yet")
        lines.append(f"storage: {self.storage.describe}  (optuna-dashboard {self.storage.dashboard})")
        lines.append(f"MLflow: experiment {self.experiment}, parent run {self.parent_run_id}")
        if self.ok and self.finished < self.target and "grid exhausted" in self.stops:
            lines.append("the grid is exhausted: every combination has been tried")
        elif self.ok and self.finished < self.target:
            lines.append("stopped by --timeout; run the same command again to continue")
        if not self.ok:
            lines.append(f"not finished ({', '.join(self.stops)}); run the same command again to continue")
        return "\n".join(lines)


def resolve_storage(cfg: SweepConfig, settings: TrackingSettings, name: str,
                    say: Callable[[str], None] = print) -> StorageSpec:
    """`--storage`, else the default for the number of workers (or the default that holds the sweep)."""
    if cfg.storage:
        spec = parse_storage(cfg.storage)
        if cfg.workers > 1 and spec.location.startswith("sqlite:"):
            say("note: several workers on one sqlite file may hit 'database is locked'; a journal file "
                "or PostgreSQL is safer")
        return spec
    defaults = default_storages(settings, name)
    preferred, other = ("journal", "sqlite") if cfg.workers > 1 else ("sqlite", "journal")
    if not sweep_exists(defaults[preferred], name) and sweep_exists(defaults[other], name):
        say(f"note: sweep {name!r} lives in {defaults[other].describe}; continuing it there")
        return defaults[other]
    return defaults[preferred]


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
    study_decl = get_study(cfg.study)
    variant = cfg.variant or study_decl.variants[0].name
    base, paper = check_space(study_decl, variant, cfg.scale, cfg.seed, cfg.sets, cfg.sampler)
    if base.init_from is not None:
        from suite.worker import checkpoint_dir

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
    storage = resolve_storage(cfg, tracker.settings, name, say)
    cfg = dataclasses.replace(cfg, variant=variant, name=name, storage=storage.location)
    study = optuna.create_study(study_name=name, storage=_storage_for(storage, cfg, tracker.settings),
                                direction="minimize", load_if_exists=True)
    _check_identity(study, cfg, say)
    experiment_id = tracker.experiment_id(study_decl.name)
    parent = ensure_parent(tracker, study, experiment_id,
                           {"study": study_decl.name, "variant": variant, "scale": cfg.scale, "seed": cfg.seed,
                            "sampler": cfg.sampler, "pruner": cfg.pruner, "storage": storage.shown,
                            "git_commit": git_commit()}, study_decl.search_space)
    if not study.get_trials(deepcopy=False):
        study.enqueue_trial(dict(paper), user_attrs={"paper": True}, skip_if_exists=True)
        say(f"sweep {name}: the paper's configuration is the first trial [{_fmt_params(paper)}]")
    recover_stale(study, cfg.stale_after_s, cfg.max_retry, tracker, say)
    return Plan(cfg, storage, study, tracker, parent)


def _child_env(settings: TrackingSettings, workers: int) -> dict[str, str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": settings.tracking_uri, "HUMMUSS_MLFLOW_CONFIG": settings.source,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_DIR), os.environ.get("PYTHONPATH")]))}
    env.setdefault("HUMMUSS_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
    return env


def _spawn_workers(plan: Plan, workers: int, deadline: float | None, say: Callable[[str], None]) -> list[str]:
    """`workers` processes on this machine; their exit codes as stop reasons."""
    cfg = plan.cfg
    payload = json.dumps({**dataclasses.asdict(cfg), "sets": dict(cfg.sets)})
    env = _child_env(plan.tracker.settings, workers)
    procs = {}
    for i in range(workers):
        cmd = [sys.executable, "-m", "suite.sweep", "--worker", str(i), "--deadline", str(deadline or 0),
               "--config", payload]
        proc = subprocess.Popen(cmd, env=env, start_new_session=True)
        procs[proc.pid] = (i, proc)
        say(f"worker {i}: pid {proc.pid}")
    stops = []
    try:
        while procs:
            for pid, (i, proc) in list(procs.items()):
                code = proc.poll()
                if code is None:
                    continue
                del procs[pid]
                if code < 0:
                    stops.append(f"worker {i} killed by {signal.Signals(-code).name}")
                    say(f"worker {i} (pid {pid}) was killed by {signal.Signals(-code).name}; its trial is "
                        f"retried by the others (or by the next run of this command)")
                    recover_stale(plan.study, cfg.stale_after_s, cfg.max_retry, plan.tracker, say)
                else:
                    stops.append({0: "done", 3: "failing", 130: "interrupted"}.get(code, f"exit code {code}"))
            time.sleep(0.5)
    except KeyboardInterrupt:
        say("interrupted: stopping the workers (their trials are marked failed and re-enqueued)")
        for _i, proc in procs.values():  # SIGTERM: a worker turns it into KeyboardInterrupt
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGTERM)
        for _i, proc in procs.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        raise
    return stops


def summarise(plan: Plan, started: float, stops: list[str]) -> SweepResult:
    """Counts and the best trial, also written on the parent run."""
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
    if best:
        metrics["best/value"] = best["value"]
        tracker.set_tags(plan.parent_id, {"best/trial": best["trial"], "best/params": json.dumps(best["params"]),
                                          "best/run_id": best["run_id"]})
    tracker.log_metrics(plan.parent_id, metrics, step=finished)
    ok = finished >= cfg.trials or "grid exhausted" in stops or (
        bool(stops) and all(s in ("timeout", "done") for s in stops))
    return SweepResult(cfg.name, plan.storage, plan.parent_id, tracker.experiment_name(cfg.study), cfg.trials,
                       dict(counts), best, time.time() - started, stops, ok)


def run_sweep(cfg: SweepConfig, tracker: Tracker, say: Callable[[str], None] = print) -> SweepResult:
    """Prepare the sweep, run its workers (in this process for one), summarise."""
    plan = prepare(cfg, tracker, say)
    cfg = plan.cfg
    started = time.time()
    deadline = started + cfg.timeout_s if cfg.timeout_s else None
    needed = cfg.trials - sum(t.state in DONE for t in plan.study.get_trials(deepcopy=False))
    workers = max(0, min(cfg.workers, needed))
    say(f"sweep {cfg.name}: {cfg.trials} trials of {cfg.study}/{cfg.variant} at scale {cfg.scale}, "
        f"sampler {cfg.sampler} (seed {cfg.seed}), pruner {cfg.pruner}; {max(needed, 0)} to run on "
        f"{workers} worker(s); storage {plan.storage.describe}; MLflow parent run {plan.parent_id}")
    tracker.set_status(plan.parent_id, "RUNNING")
    status = "FAILED"
    try:
        if workers == 0:
            stops = ["done"]
        elif workers == 1:
            stops = [work(cfg, 0, deadline, say, tracker).stop]
        else:
            stops = _spawn_workers(plan, workers, deadline, say)
        result = summarise(plan, started, stops)
        status = "FINISHED" if result.ok else "FAILED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracker.set_status(plan.parent_id, status)
    return result


# -- command line ------------------------------------------------------------------------
def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="a registered study with a search space (hummuss-suite show STUDY)")
    p.add_argument("--trials", type=int, required=True,
                   help="finished (complete or pruned) trials to reach, counted over all workers and machines")
    p.add_argument("--storage", help="an SQLAlchemy URL (sqlite:///PATH.db, postgresql://USER@HOST/DB) or the "
                                     "path of a journal file (default: beside the MLflow store)")
    p.add_argument("--workers", type=int, default=1, help="processes on this machine (default: 1)")
    p.add_argument("--sampler", default="tpe", choices=SAMPLERS, help="default: tpe")
    p.add_argument("--pruner", default="median", choices=PRUNERS, help="default: median")
    p.add_argument("--timeout", type=float, help="start no trial after this many seconds (running ones finish)")
    p.add_argument("--name", help="the sweep's name (default: STUDY[-VARIANT]-SCALE)")
    p.add_argument("--scale", default="cpu", help="smoke, cpu or paper (default: cpu)")
    p.add_argument("--seed", type=int, default=0, help="the sampler's and the training's seed (default: 0)")
    p.add_argument("--variant", help="the base variant to tune (default: the study's first)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="fixed overrides of every trial, as for `run` (e.g. max_val_clips=8)")
    p.add_argument("--stale-after", type=float, default=24 * 3600.0,
                   help="a trial running this many seconds is abandoned and retried (default: 86400)")


def add_sweep_parser(subparsers) -> argparse.ArgumentParser:
    """`hummuss-suite sweep ...` on the CLI's subparsers."""
    p = subparsers.add_parser("sweep", help="tune a study's base configuration with Optuna, every trial in MLflow",
                              description=__doc__.split("\n\n")[0])
    _add_arguments(p)
    p.set_defaults(func=cmd_sweep)
    return p


def cmd_sweep(args) -> int:
    """Exit 0 when the sweep has its trials, 1 when it stopped short, 2 on a usage error."""
    from suite.cli import UsageError

    try:
        cfg = SweepConfig(args.study, args.trials, scale=args.scale, variant=args.variant, name=args.name,
                          sampler=args.sampler, pruner=args.pruner, seed=args.seed, workers=args.workers,
                          storage=args.storage, timeout_s=args.timeout, sets=parse_overrides(args.set or []),
                          stale_after_s=args.stale_after)
    except ValueError as err:
        raise UsageError(str(err)) from err
    try:
        settings = load_settings()
    except TrackingError as err:
        print(f"hummuss-suite: error: {err}", file=sys.stderr)
        return 1
    try:  # every name and the search space, before anything is written
        validate(cfg, settings)
    except ValueError as err:
        raise UsageError(str(err)) from err
    try:
        tracker = Tracker(settings)
    except TrackingError as err:
        print(f"hummuss-suite: error: {err}", file=sys.stderr)
        return 1
    if threading.current_thread() is threading.main_thread():  # SIGTERM (a scheduler's stop) as Ctrl-C
        signal.signal(signal.SIGTERM, _sigterm_to_interrupt)
    try:
        result = run_sweep(cfg, tracker)
    except ValueError as err:  # raised by prepare(), before any trial
        raise UsageError(str(err)) from err
    print(result.format())
    return 0 if result.ok else 1


def _sigterm_to_interrupt(signum, frame):
    raise KeyboardInterrupt


def _worker_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m suite.sweep --worker")
    p.add_argument("--worker", type=int, required=True)
    p.add_argument("--deadline", type=float, default=0.0)
    p.add_argument("--config", required=True, help="the prepared SweepConfig as JSON")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm_to_interrupt)
    threads = os.environ.get("HUMMUSS_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    cfg = SweepConfig(**json.loads(args.config))
    prefix = f"[worker {args.worker}] "
    try:
        outcome = work(cfg, args.worker, args.deadline or None, lambda m: print(prefix + m, flush=True))
    except KeyboardInterrupt:
        return 130
    return 3 if outcome.stop == "failing" else 0


def main(argv: list[str] | None = None) -> int:
    """`python -m suite.sweep STUDY --trials N ...` (as `hummuss-suite sweep`), or a worker."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":
        return _worker_main(argv)
    from suite.cli import UsageError

    parser = argparse.ArgumentParser(prog="python -m suite.sweep", description=__doc__.split("\n\n")[0])
    _add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return cmd_sweep(args)
    except UsageError as err:
        parser.exit(2, f"hummuss-suite sweep: error: {err}\n")
    except KeyboardInterrupt:
        print("hummuss-suite sweep: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

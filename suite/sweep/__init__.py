"""Optuna sweeps: tune a study's base configuration; one trial is one training run.

    hummuss-suite sweep STUDY --trials 40 --scale cpu               # one process, sqlite
    hummuss-suite sweep STUDY --trials 40 --scale cpu --workers 2   # two processes, a journal file
    hummuss-suite sweep STUDY --trials 200 --scale paper \\
        --storage postgresql://user@db:5432/optuna                 # the same command on every machine

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

Dead workers (suite/sweep/stale.py): every trial records its worker (host, pid); the
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
is summarised on the parent (metric `best/val/mpjpe_mm`, tags `best/trial`, `best/params`).

The package, by concern: config (the invocation), space (search spaces), samplers,
storage (where a sweep lives), stale (dead workers), objective (one trial), prepare
(validation, the Optuna study, the parent run), workers (the trial loop and worker
processes), results (the summary). The command line is suite/cli/sweep.py.
"""

from suite.sweep.config import SweepConfig
from suite.sweep.objective import ReportToTrial, TrialObjective, trial_dir
from suite.sweep.prepare import Plan, ensure_parent, prepare, validate
from suite.sweep.results import SweepResult, summarise
from suite.sweep.samplers import PRUNERS, SAMPLERS, derive_seed, make_pruner, make_sampler
from suite.sweep.space import (
    apply_params,
    check_space,
    contains,
    format_params,
    grid_values,
    suggest,
)
from suite.sweep.stale import recover_stale, retry_attrs, stale_reason, worker_identity
from suite.sweep.storage import (
    StorageSpec,
    default_storages,
    open_storage,
    parse_storage,
    resolve_storage,
)
from suite.sweep.workers import WorkerOutcome, run_sweep, spawn_workers, work, worker_process

__all__ = [
    "PRUNERS", "SAMPLERS", "Plan", "ReportToTrial", "StorageSpec", "SweepConfig", "SweepResult", "TrialObjective",
    "WorkerOutcome", "apply_params", "check_space", "contains", "default_storages", "derive_seed", "ensure_parent",
    "format_params", "grid_values", "make_pruner", "make_sampler", "open_storage", "parse_storage", "prepare",
    "recover_stale", "resolve_storage", "retry_attrs", "run_sweep", "spawn_workers", "stale_reason", "suggest",
    "summarise", "trial_dir", "validate", "work", "worker_identity", "worker_process",
]

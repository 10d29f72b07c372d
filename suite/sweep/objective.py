"""The objective: one trial trains the base run spec with the trial's values, through the
runs' own training path (`suite.worker.train_spec`), reporting every epoch to Optuna.

A trial is a child MLflow run of the sweep's parent (tags `kind=trial`, `sweep`, `trial`,
the full config as params, per-epoch metrics); its checkpoints live in
`<checkpoint_dir>/sweeps/<sweep>/trial-<n>/`, and a retried trial resumes from those of
the trial it retries. A trial whose training configuration (`train_hash`) another run or
an earlier trial of the sweep has already trained to the end does not train again: it
reads that training's per-epoch validation into Optuna epoch by epoch, asking the pruner
after each as a training would (so it is pruned where a training of those curves would
be), evaluates nothing new, and is tagged `trained_by` with the run that trained it (its
own id when it trained).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
import socket
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import optuna

from hummuss.train import Callback, TrainResult
from suite.registry import Param, Study
from suite.runspec import RunSpec
from suite.sweep.space import apply_params, format_params, suggest
from suite.sweep.stale import retry_attrs, worker_identity
from suite.tracking import BEST_EPOCH, BEST_VAL_MPJPE, Tracker, TrackingSettings, git_commit
from suite.worker import MlflowCallback, finished_training, read_trained_by, train_spec
from suite.worker.datasets import training_dataset, validation_dataset


class ReportToTrial(Callback):
    """Per-epoch validation MPJPE into the Optuna trial; stops training when it is pruned.

    `replay`: the training is finished already (reused): its epochs are reported one by one,
    each followed by the pruner's question, as a training of those curves would be, and the
    first epoch the pruner stops is the trial's `pruned_at`."""

    def __init__(self, trial: optuna.Trial, replay: bool = False):
        self.trial, self.replay = trial, replay
        self.pruned_at: int | None = None
        self.resumed_at = 0

    def on_train_start(self, trainer) -> None:
        self.resumed_at = trainer.epoch
        for h in trainer.history:  # epochs of the trial this one retries, or of the reused training
            if "val/mpjpe" in h:
                self.trial.report(float(h["val/mpjpe"]), int(h["epoch"]))
                if self.replay and self.trial.should_prune():
                    self.pruned_at = int(h["epoch"])
                    return

    def on_epoch_end(self, epoch, metrics):
        if "val/mpjpe" not in metrics:
            return False
        self.trial.report(float(metrics["val/mpjpe"]), epoch)
        if self.trial.should_prune():
            self.pruned_at = epoch
            return True
        return False

    def cut(self, result: TrainResult) -> TrainResult:
        """A replayed training as a training pruned at `pruned_at` would have ended: its
        epochs up to there, the best of them (the first of equal ones, as the Trainer keeps)."""
        if not self.replay or self.pruned_at is None:
            return result
        history = [h for h in result.history if int(h["epoch"]) <= self.pruned_at]
        scored = [(float(h["val/mpjpe"]), int(h["epoch"])) for h in history if "val/mpjpe" in h]
        best_val, best_epoch = min(scored, key=lambda s: s[0])  # min keeps the first of equal values
        return dataclasses.replace(result, epochs_run=self.pruned_at, best_epoch=best_epoch, best_val_mpjpe=best_val,
                                   history=history, stopped_early=True)


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
                "git_commit": git_commit(), "host": socket.gethostname(), "sweep.params": json.dumps(params),
                "mlflow.note.content": f"Trial {n} of Optuna sweep {self.sweep}: {base.study}/{base.variant} at "
                                       f"scale {base.scale} with {json.dumps(params)}."}
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
            reuse = finished_training(self.tracker.settings, spec, sorted(out.parent.glob("trial-*")))
            if reuse is None:
                self._carry_over(retry_of, out)
            with self.tracker.system_metrics(run_id):
                result, report, trained_by = self._train(trial, spec, run_id, out, reuse)
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
        self.tracker.log_metrics(run_id, {BEST_VAL_MPJPE: value, BEST_EPOCH: result.best_epoch},
                                 step=result.epochs_run)
        if report.resumed_at and trained_by["run_id"] == run_id:
            self.tracker.set_tags(run_id, {"resumed_from_epoch": report.resumed_at})
        seconds = time.time() - started
        if report.pruned_at is not None:
            self.tracker.set_tags(run_id, {"optuna.state": "PRUNED", "pruned": "true",
                                           "pruned_at_epoch": report.pruned_at})
            self.tracker.set_status(run_id, "KILLED")
            self.last_state = "PRUNED"
            self.say(f"trial {n}: pruned at epoch {report.pruned_at} (val MPJPE {value:.1f} mm) in {seconds:.0f} s"
                     f"  [{format_params(params)}]")
            raise optuna.TrialPruned(f"pruned at epoch {report.pruned_at}")
        self.tracker.set_tags(run_id, {"optuna.state": "COMPLETE"})
        self.tracker.set_status(run_id, "FINISHED")
        self.last_state = "COMPLETE"
        how = "" if trained_by["run_id"] == run_id else f" (trained by {trained_by['run']}, run {trained_by['run_id']})"
        self.say(f"trial {n}: complete, val MPJPE {value:.1f} mm in {seconds:.0f} s{how}  [{format_params(params)}]")
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

    def _train(self, trial: optuna.Trial, spec: RunSpec, run_id: str, out: Path, reuse: Path | None = None):
        """Train the trial (or resume it) in `out`, or read the finished training in `reuse`:
        (the training result, its ReportToTrial, {"run_id", "run"} of the run that trained it)."""
        out.mkdir(parents=True, exist_ok=True)
        handle = open(out / "train.log", "a", buffering=1)

        def log(msg: str) -> None:
            line = f"{time.strftime('%H:%M:%S')} {self.sweep}/trial-{trial.number}: {msg}"
            print(line, file=sys.stderr, flush=True)
            handle.write(line + "\n")

        try:
            report = ReportToTrial(trial, replay=reuse is not None)
            me = {"run_id": run_id, "run": f"{self.sweep}/trial-{trial.number}"}
            if reuse is not None:
                log(f"training {spec.train_hash} finished before in {reuse}: not trained again")
            trained = train_spec(spec, self.tracker.settings, [MlflowCallback(self.tracker, run_id), report], log,
                                 out=reuse or out, trainer=me)
            by = (read_trained_by(reuse) if reuse is not None else None) or me
            self.tracker.set_tags(run_id, {"trained_by": by["run_id"]})
            datasets = [training_dataset(spec, trained.source, trained.train, trained.val)]
            if trained.val is not None:  # a trial is scored on the held-out training sequences
                datasets.append(validation_dataset(spec, trained.source, trained.val))
            self.tracker.log_datasets(run_id, datasets)
            return report.cut(trained.result), report, by
        finally:
            handle.close()
            with contextlib.suppress(Exception):
                self.tracker.log_artifact(run_id, out / "train.log")

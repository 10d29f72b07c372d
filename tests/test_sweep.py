"""Optuna sweeps (suite/sweep/): search spaces, workers, storages, dead workers, MLflow runs.

The end-to-end tests run `python -m suite.sweep` at the smoke scale (2 epochs a trial)
against a private MLflow store in tmp_path; the PostgreSQL test needs
HUMMUSS_TEST_POSTGRES_URL (`.ci/run` sets it when a server answers on loopback).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from suite import sweep
from suite.cli.sweep import main as sweep_main
from suite.registry import Param, get_study
from suite.sweep import SweepConfig, check_space, grid_values, open_storage, parse_storage
from suite.sweep import config as sweep_config
from suite.sweep import workers as sweep_workers
from suite.tracking import Tracker, load_settings, postgres_driver

ROOT = Path(__file__).resolve().parents[1]
DONE = (TrialState.COMPLETE, TrialState.PRUNED)
PG_URL = os.environ.get("HUMMUSS_TEST_POSTGRES_URL")


# -- helpers --------------------------------------------------------------------------------
def write_store(folder: Path, tracking_uri: str = "sqlite:///mlruns.db") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "mlflow.yaml"
    config.write_text(f"tracking_uri: {tracking_uri}\nartifact_location: mlartifacts\ncheckpoint_dir: checkpoints\n")
    return config


def cli_env(config: Path) -> dict[str, str]:
    env = {**os.environ, "HUMMUSS_MLFLOW_CONFIG": str(config), "MLFLOW_DISABLE_TELEMETRY": "true",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def sweep_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "suite.sweep", "context-length", "--scale", "smoke", *args]


def run_cli(config: Path, *args: str, timeout: float = 300) -> tuple[subprocess.CompletedProcess, float]:
    started = time.time()
    proc = subprocess.run(sweep_command(*args), cwd=config.parent, env=cli_env(config), capture_output=True,
                          text=True, timeout=timeout)
    return proc, time.time() - started


def summary_lines(proc: subprocess.CompletedProcess) -> str:
    keep = ("sweep ", "best:", "storage:", "MLflow:", "trial ", "worker")
    return "\n".join(line for line in proc.stdout.splitlines() if any(k in line for k in keep))


def load_sweep(storage: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(parse_storage(storage)))


def settings_of(config: Path):
    """The settings of `config` alone (mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        return load_settings(config)


def children(config: Path, parent: str):
    tracker = Tracker(settings_of(config), check=False)
    exp = tracker.experiment_id("context-length", create=False)
    return tracker, tracker.search([exp], f"tags.mlflow.parentRunId = '{parent}'")


def check_sweep(config: Path, study: optuna.Study, n: int) -> dict:
    """n finished trials, the paper's configuration first, one child run per trial with its
    state, one parent with the best trial; returns figures for the report."""
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in DONE]
    assert len(finished) == n
    paper = check_space(get_study("context-length"), "hummuss", "smoke")[1]
    assert trials[0].params == paper and trials[0].user_attrs["paper"] is True
    parent = study.user_attrs["mlflow_parent_run_id"]
    tracker, runs = children(config, parent)
    by_trial = {int(r.data.tags["trial"]): r for r in runs}
    assert len(runs) == len(by_trial) == len(trials)  # one child run per trial, no duplicates
    for t in finished:
        run = by_trial[t.number]
        assert run.data.tags["sweep"] == study.study_name and run.data.tags["kind"] == "trial"
        assert run.data.params["model.state_size"] == str(t.params["state_size"])
        assert float(run.data.params["train.lr"]) == pytest.approx(t.params["lr"])
        if t.state == TrialState.COMPLETE:
            assert run.info.status == "FINISHED"
            assert run.data.metrics["best/val/mpjpe_mm"] == pytest.approx(t.value)
        else:
            assert run.info.status == "KILLED" and run.data.tags["pruned"] == "true"
        epochs = [m.step for m in tracker.client.get_metric_history(run.info.run_id, "val/mpjpe_mm")]
        trained = run.data.tags.get("trained_by", run.info.run_id) == run.info.run_id
        assert epochs == (sorted(t.intermediate_values) if trained else [])  # every reported epoch, once
    top = tracker.get_run(parent)
    assert top.data.tags["kind"] == "sweep" and top.data.tags["sweep"] == study.study_name
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = min(complete, key=lambda t: (t.value, t.number))
    assert top.data.tags["best/trial"] == str(best.number)
    assert top.data.metrics["best/val/mpjpe_mm"] == pytest.approx(best.value)
    assert json.loads(top.data.tags["best/params"]) == best.params
    return {"trials": len(trials), "complete": len(complete), "pruned": len(finished) - len(complete),
            "children": len(runs), "best": (best.number, round(best.value, 1))}


FAST = ("--set", "max_steps_per_epoch=2", "max_val_clips=8")  # 2 of the smoke scale's 4 steps, 8 val clips
FAST_SETS = {"max_steps_per_epoch": "2", "max_val_clips": "8"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One private MLflow store (sqlite, created once) for every sweep of this module but
    the PostgreSQL one; each sweep has its own name and Optuna storage."""
    folder = tmp_path_factory.mktemp("store")
    config = write_store(folder)
    with pytest.MonkeyPatch.context() as mp:  # undone after the module, also what Tracker exports
        mp.setenv("HUMMUSS_MLFLOW_CONFIG", str(config))
        mp.setenv("MLFLOW_TRACKING_URI", settings_of(config).tracking_uri)
        tracker = Tracker(load_settings(config))
        tracker.experiment_id("context-length")  # creates the tables and the experiment
        yield config, tracker


# -- search spaces ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["context-length", "gdssm-aggregation", "stream-aggregation", "init-schemes"])
@pytest.mark.parametrize("scale", ["smoke", "cpu"])
def test_the_studies_declare_valid_search_spaces(name, scale):
    study = get_study(name)
    spec, base = check_space(study, study.variants[0].name, scale)
    assert set(base) == set(study.search_space) and len(base) >= 3
    for key, p in study.search_space.items():
        values = spec.model_config if p.target == "model" else spec.train_config
        assert base[key] == values[key]


def test_grid_values_and_trial_overrides():
    study = get_study("gdssm-aggregation")
    space = {k: study.search_space[k] for k in ("expand", "temporal_channels", "gdssm_aggregation")}
    grid = grid_values({**space, "weight_decay": Param("float", 0.0, 0.02, step=0.01, target="train")})
    assert grid["expand"] == [1.5, 2.0, 2.5, 3.0, 3.5, 4.0]
    assert grid["temporal_channels"] == [1, 2, 3, 4]
    assert grid["gdssm_aggregation"] == ["gate", "mean", "learned"]
    assert grid["weight_decay"] == [0.0, 0.01, 0.02]
    with pytest.raises(ValueError, match="parameter 'lr' has no finite set of values"):
        grid_values(study.search_space)
    spec, _ = check_space(study, "gate-causal", "smoke")
    tuned = sweep.apply_params(spec, {"expand": 3.5, "lr": 2e-4, "gdssm_aggregation": "mean"}, study.search_space)
    assert (tuned.model_config["expand"], tuned.model_config["gdssm_aggregation"]) == (3.5, "mean")
    assert tuned.model_config["causal"] is True and tuned.train_config["lr"] == 2e-4
    assert tuned.train_hash != spec.train_hash


BAD_SPACES = [
    ({"lr": Param("float", 3e-3, 1e-4, log=True, target="train")}, "parameter 'lr': empty range"),
    ({"state_sise": Param("int", 8, 64)}, "parameter 'state_sise': unknown parameter, not a field of HumMUSSConfig"),
    ({"lr": Param("float", 1e-4, 3e-3, log=True)}, "parameter 'lr': unknown parameter, not a field of HumMUSSConfig"),
    ({"weight_decay": Param("float", 0.0, 0.1, log=True, target="train")},
     "parameter 'weight_decay': a log range must be > 0, got low=0.0"),
    ({"init": Param("categorical")}, "parameter 'init': empty choice list"),
    ({"init": Param("categorical", choices=("lin", "lnn"))}, "parameter 'init': HumMUSSConfig refuses init='lnn'"),
    ({"state_size": Param("categorical", choices=(16, 32))}, "parameter 'state_size': the base configuration's value 8"),
    ({"dt_min": Param("float", 1e-4, 1e-2, log=True)}, None),  # valid, but the grid sampler needs a step
]


@pytest.mark.parametrize("space,message", BAD_SPACES)
def test_bad_search_spaces_fail_before_any_trial(space, message, tmp_path, monkeypatch, capsys):
    config = write_store(tmp_path)
    monkeypatch.setenv("HUMMUSS_MLFLOW_CONFIG", str(config))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    bad = dataclasses.replace(get_study("context-length"), search_space=space)
    monkeypatch.setattr(sweep_config, "get_study", lambda name: bad)
    sampler = "random" if message else "grid"
    with pytest.raises(SystemExit) as exit_info:
        sweep_main(["context-length", "--scale", "smoke", "--trials", "2", "--sampler", sampler])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert (message or "parameter 'dt_min': the grid sampler needs a finite set of values") in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.yaml"]  # no store, no study, no trial


def test_storage_argument_is_a_url_or_a_journal_file(tmp_path):
    assert parse_storage(str(tmp_path / "s.journal")).kind == "journal"
    assert parse_storage("postgresql://u:secret@db/optuna").shown == "postgresql://u:***@db/optuna"
    with pytest.raises(ValueError, match="looks like an SQLite file.*sqlite:///"):
        parse_storage(str(tmp_path / "optuna.db"))
    with pytest.raises(ValueError, match="redis:// is not an SQLAlchemy URL"):
        parse_storage("redis://localhost:6379")
    url = postgres_driver("postgresql://postgres@127.0.0.1:5432/x")
    assert url.endswith("@127.0.0.1:5432/x") and url.split("://")[0] in ("postgresql", "postgresql+psycopg2")


# -- one process: pruned trials end KILLED, tagged --------------------------------------------
def test_pruned_trials_end_killed_and_tagged(store, monkeypatch):
    monkeypatch.setattr(sweep_workers, "make_pruner", lambda kind, epochs: optuna.pruners.ThresholdPruner(upper=1.0))
    _, tracker = store
    cfg = SweepConfig("context-length", trials=2, scale="smoke", name="pruned", sampler="random", sets=FAST_SETS)
    result = sweep.run_sweep(cfg, tracker, say=lambda m: None)
    study = load_sweep(result.storage.location, "pruned")
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 2
    assert [sorted(t.intermediate_values) for t in study.trials] == [[1], [1]]  # stopped after epoch 1 of 2
    runs = tracker.search([tracker.experiment_id("context-length")], f"tags.mlflow.parentRunId = '{result.parent_run_id}'")
    assert sorted(r.info.status for r in runs) == ["KILLED", "KILLED"]
    assert {r.data.tags["pruned"] for r in runs} == {"true"} and {r.data.tags["pruned_at_epoch"] for r in runs} == {"1"}
    assert result.ok and result.best is None and result.storage.location.endswith("optuna.db")
    assert load_sweep(result.storage.location, "pruned").metric_names == ["val/mpjpe_mm (best epoch)"]

    # the finished sweep again: nothing to do, its parent run keeps its metrics and end time
    def parent_state():
        run = tracker.get_run(result.parent_run_id)
        history = {k: [(m.step, m.value) for m in tracker.client.get_metric_history(run.info.run_id, k)]
                   for k in run.data.metrics}
        return run.info.status, run.info.end_time, history, run.data.tags

    before = parent_state()
    assert before[0] == "FINISHED" and before[2]["trials/pruned"] == [(2, 2.0)]
    said = []
    again = sweep.run_sweep(cfg, tracker, say=said.append)
    assert again.ok and again.stops == ["nothing to do"] and "nothing to do" in again.format()
    assert said[-1].startswith("sweep pruned: nothing to do: 2 trials already finished")
    assert parent_state() == before
    assert len(load_sweep(result.storage.location, "pruned").trials) == 2


def test_a_grid_sweep_tries_every_combination_once(store, monkeypatch):
    _, tracker = store
    space = {"init": Param("categorical", choices=("lin", "inv")), "expand": Param("float", 2.0, 2.5, step=0.5)}
    grid_study = dataclasses.replace(get_study("context-length"), search_space=space)
    monkeypatch.setattr(sweep_config, "get_study", lambda name: grid_study)
    cfg = SweepConfig("context-length", trials=10, scale="smoke", name="grid", sampler="grid", pruner="none",
                      sets={**FAST_SETS, "epochs": "1"})
    result = sweep.run_sweep(cfg, tracker, say=lambda m: None)
    trials = load_sweep(result.storage.location, "grid").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4  # 2 x 2 points, the paper's among them
    assert trials[0].params == {"init": "lin", "expand": 2.0} and trials[0].user_attrs["paper"] is True
    assert {(t.params["init"], t.params["expand"]) for t in trials} == {("lin", 2.0), ("lin", 2.5), ("inv", 2.0),
                                                                       ("inv", 2.5)}
    assert result.ok and result.stops == ["grid exhausted"] and "the grid is exhausted" in result.format()


def test_failing_trials_end_failed_and_stop_the_worker(store, monkeypatch):
    _, tracker = store

    def explode(self, trial, spec, run_id, out, reuse=None):
        raise RuntimeError(f"non-finite loss in trial {trial.number}")

    monkeypatch.setattr(sweep.TrialObjective, "_train", explode)
    cfg = SweepConfig("context-length", trials=2, scale="smoke", name="failing", sampler="random")
    result = sweep.run_sweep(cfg, tracker, say=lambda m: None)
    trials = load_sweep(result.storage.location, "failing").trials
    assert [t.state for t in trials] == [TrialState.FAIL] * 3  # not retried; 3 in a row stop the worker
    runs = tracker.search([tracker.experiment_id("context-length")], f"tags.mlflow.parentRunId = '{result.parent_run_id}'")
    assert sorted(r.info.status for r in runs) == ["FAILED"] * 3
    assert {r.data.tags["error"] for r in runs} == {f"RuntimeError: non-finite loss in trial {i}" for i in range(3)}
    assert not result.ok and result.stops == ["failing"] and "run the same command again" in result.format()
    assert tracker.get_run(result.parent_run_id).info.status == "FAILED"


# -- a journal file, two workers ---------------------------------------------------------------
@pytest.fixture(scope="module")
def journal_sweep(store):
    config, _ = store
    storage = str(config.parent / "eight.journal")
    proc, seconds = run_cli(config, "--trials", "8", "--workers", "2", "--storage", storage, "--name", "eight", *FAST)
    print(f"\n8 trials, 2 workers, journal: {seconds:.1f} s\n{summary_lines(proc)}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return config, storage, proc


def test_eight_trials_with_two_workers_on_a_journal_file(journal_sweep):
    config, storage, proc = journal_sweep
    study = load_sweep(storage, "eight")
    figures = check_sweep(config, study, 8)
    print("journal:", figures)
    assert figures["trials"] == 8 and figures["children"] == 8  # no trial beyond --trials
    assert len({t.user_attrs["worker"]["pid"] for t in study.trials}) == 2  # both workers ran trials
    assert "sweep eight: 8/8 trials finished" in proc.stdout


def test_a_rerun_of_a_finished_sweep_adds_no_trial(journal_sweep):
    config, storage, _ = journal_sweep
    before = load_sweep(storage, "eight")
    parent = before.user_attrs["mlflow_parent_run_id"]
    proc, seconds = run_cli(config, "--trials", "8", "--workers", "2", "--storage", storage, "--name", "eight", *FAST)
    print(f"\nrerun: {seconds:.1f} s")
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = load_sweep(storage, "eight")
    assert len(after.trials) == 8 and after.user_attrs["mlflow_parent_run_id"] == parent
    assert len(children(config, parent)[1]) == 8
    assert "sweep eight: nothing to do: 8 trials already finished" in proc.stdout and "[worker" not in proc.stdout


def test_a_rerun_with_another_scale_is_refused(journal_sweep):
    config, storage, _ = journal_sweep
    proc = subprocess.run([sys.executable, "-m", "suite.sweep", "context-length", "--scale", "cpu", "--trials", "8",
                           "--storage", storage, "--name", "eight", *FAST], cwd=config.parent, env=cli_env(config),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "sweep 'eight' was created with scale='smoke'; this command asks for scale='cpu'" in proc.stderr


# -- a worker killed in the middle of a trial ---------------------------------------------------
def _study_if_created(storage: str, name: str) -> optuna.Study | None:
    if not Path(storage).exists():
        return None
    names = optuna.study.get_all_study_names(storage=open_storage(parse_storage(storage)))
    return load_sweep(storage, name) if name in names else None


def test_a_killed_worker_trial_is_failed_and_retried(store, tmp_path):
    config, _ = store
    storage = str(tmp_path / "kill.journal")
    started = time.time()
    with open(tmp_path / "out.log", "w") as out, open(tmp_path / "err.log", "w") as err:
        launcher = subprocess.Popen(sweep_command("--trials", "4", "--workers", "2", "--storage", storage, "--name",
                                                  "kill", "--pruner", "none", "--set", "epochs=3", *FAST[1:]),
                                    cwd=config.parent, env=cli_env(config), stdout=out, stderr=err)
        killed, study = None, None
        try:
            while killed is None and time.time() - started < 200 and launcher.poll() is None:
                time.sleep(0.1)
                study = study or _study_if_created(storage, "kill")
                for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if study else ():
                    worker = t.user_attrs.get("worker", {})
                    if worker.get("trial") == t.number and t.intermediate_values:  # after epoch 1 of 3
                        os.kill(worker["pid"], signal.SIGKILL)
                        killed = (t.number, max(t.intermediate_values), worker["pid"])
                        break
            launcher.wait(timeout=300)
        finally:
            if launcher.poll() is None:
                launcher.kill()
    seconds = time.time() - started
    stdout, stderr = (tmp_path / "out.log").read_text(), (tmp_path / "err.log").read_text()
    assert killed is not None, "no trial was seen running after its first epoch"
    number, epoch, pid = killed
    print(f"\nkilled worker pid {pid} in trial {number} after epoch {epoch}; the sweep took {seconds:.1f} s")
    print("\n".join(line for line in stdout.splitlines() if "trial" in line or "worker" in line))
    assert launcher.returncode == 0, stderr[-3000:]
    study = load_sweep(storage, "kill")
    trials = study.trials
    print("states:", [t.state.name for t in trials])
    assert sum(t.state in DONE for t in trials) == 4
    assert trials[number].state == TrialState.FAIL
    retries = [t for t in trials if t.user_attrs.get("retry_of") == number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    retry = retries[0]
    assert retry.params == trials[number].params and "is gone" in retry.user_attrs["retry_reason"]
    assert sorted(retry.intermediate_values) == [1, 2, 3]
    tracker, runs = children(config, study.user_attrs["mlflow_parent_run_id"])
    by_trial = {int(r.data.tags["trial"]): r for r in runs}
    assert len(runs) == len(trials) == 5
    assert by_trial[number].info.status == "FAILED" and "is gone" in by_trial[number].data.tags["error"]
    assert by_trial[retry.number].info.status == "FINISHED"
    assert by_trial[retry.number].data.tags["retry_of"] == str(number)
    assert int(by_trial[retry.number].data.tags["resumed_from_epoch"]) >= epoch  # the killed trial's checkpoint
    assert "marked failed and re-enqueued" in stdout


# -- heartbeats (RDB storages): a trial of a machine that went silent -----------------------------
def test_a_trial_without_heartbeat_is_retried(store):
    _, tracker = store
    cfg = SweepConfig("context-length", trials=2, scale="smoke", name="beats", sampler="random", pruner="none",
                      heartbeat_s=1.0, grace_s=2.0, sets=FAST_SETS)
    plan = sweep.prepare(cfg, tracker, say=lambda m: None)
    study = plan.study
    lost = study.ask()  # the paper's trial, taken by a machine that then died
    sweep.suggest(lost, get_study("context-length").search_space)
    lost.set_user_attr("worker", {"host": "elsewhere", "pid": 1, "trial": lost.number, "since": time.time()})
    study._storage.record_heartbeat(lost._trial_id)
    time.sleep(2.5)
    outcome = sweep.work(plan.cfg, tracker, 0, None, lambda m: None)
    assert outcome.stop == "done"
    trials = study.trials
    assert trials[0].state == TrialState.FAIL
    retry = [t for t in trials if t.user_attrs.get("retry_of") == 0]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    assert retry[0].system_attrs["failed_trial"] == 0  # RetryHeartbeatStaleTrialCallback made it
    assert retry[0].params["state_size"] == 8 and retry[0].user_attrs["paper"] is True
    assert sum(t.state in DONE for t in trials) == 2


# -- PostgreSQL: the many-machines storage ---------------------------------------------------------
@pytest.fixture
def postgres_databases():
    """Two fresh databases (Optuna and MLflow both keep an alembic_version table), dropped afterwards."""
    if not PG_URL:
        pytest.skip("HUMMUSS_TEST_POSTGRES_URL is not set (e.g. postgresql://postgres@127.0.0.1:5432/test); "
                    ".ci/run sets it when a PostgreSQL server answers on loopback")
    import psycopg2

    admin = psycopg2.connect(postgres_driver(PG_URL).replace("postgresql+psycopg2://", "postgresql://"))
    admin.autocommit = True
    tag = uuid.uuid4().hex[:8]
    names = [f"hummuss_sweep_optuna_{tag}", f"hummuss_sweep_mlflow_{tag}"]
    for name in names:
        admin.cursor().execute(f'CREATE DATABASE "{name}"')
    base = PG_URL.rsplit("/", 1)[0]
    try:
        yield [f"{base}/{name}" for name in names]
    finally:
        for name in names:
            admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.mark.postgres
def test_eight_trials_with_two_workers_on_postgresql(postgres_databases, tmp_path):
    optuna_url, mlflow_url = postgres_databases
    config = write_store(tmp_path, postgres_driver(mlflow_url))
    proc, seconds = run_cli(config, "--trials", "8", "--workers", "2", "--storage", optuna_url, "--name", "pg", *FAST)
    print(f"\n8 trials, 2 workers, PostgreSQL: {seconds:.1f} s\n{summary_lines(proc)}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = load_sweep(optuna_url, "pg")
    figures = check_sweep(config, study, 8)
    print("postgresql:", figures)
    assert figures["trials"] == 8 and figures["children"] == 8
    assert len({t.user_attrs["worker"]["pid"] for t in study.trials}) == 2

"""Device discovery and placement, launch options, and Slurm through submitit's local executor."""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from suite.cli.runs import add_launch_options, runner_kwargs
from suite.launch import (
    DEVICES_TAG,
    DevicePool,
    SlurmOptions,
    discover_gpus,
    parse_minutes,
    plan_devices,
)
from suite.leases import take_lease
from suite.runspec import expand_runs
from suite.tracking import PROJECT_DIR, Tracker, load_settings

# the smallest run that still trains, checkpoints and evaluates
TINY = {"epochs": "1", "max_steps_per_epoch": "1", "max_val_clips": "2", "eval.lengths": "27",
        "eval.flip": "false", "eval.max_sequences": "1"}


def _forget_tracking_uri(monkeypatch) -> None:
    """Unset MLFLOW_TRACKING_URI (it would override mlflow.yaml) for this test only; a bare
    delenv of an unset variable would not undo a value set meanwhile."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh sqlite store in tmp_path, named by HUMMUSS_MLFLOW_CONFIG."""
    config = tmp_path / "mlflow.yaml"
    config.write_text("tracking_uri: sqlite:///mlruns.db\nartifact_location: mlartifacts\n"
                      "checkpoint_dir: checkpoints\nclaim_ttl_s: 30\n")
    monkeypatch.setenv("HUMMUSS_MLFLOW_CONFIG", str(config))
    _forget_tracking_uri(monkeypatch)
    return config


def _env(config: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(HUMMUSS_MLFLOW_CONFIG=str(config), PYTHONPATH=str(PROJECT_DIR), PYTHONUNBUFFERED="1",
               MLFLOW_DISABLE_TELEMETRY="true", **extra)
    return env


def _child_runs(tracker: Tracker, study: str):
    exp = tracker.experiment_id(study, create=False)
    return [r for r in tracker.search([exp]) if r.data.tags.get("kind") not in ("parent", "floor")]


# -- discovery and placement ----------------------------------------------------------------
def test_fake_gpu_count_is_what_discovery_reports(monkeypatch):
    monkeypatch.setenv("HUMMUSS_FAKE_GPUS", "4")
    assert discover_gpus() == ["0", "1", "2", "3"]
    monkeypatch.setenv("HUMMUSS_FAKE_GPUS", "0")
    assert discover_gpus() == []
    monkeypatch.setenv("HUMMUSS_FAKE_GPUS", "two")
    with pytest.raises(ValueError, match="HUMMUSS_FAKE_GPUS='two'"):
        discover_gpus()


def test_four_jobs_on_four_gpus_get_one_gpu_each():
    plan = plan_devices(["0", "1", "2", "3"], jobs=4)
    assert (plan.slots, plan.per_run, plan.nproc, plan.torchrun) == (4, 1, 1, False)
    pool = DevicePool(plan)
    taken = [pool.acquire() for _ in range(4)]
    assert taken == [("0",), ("1",), ("2",), ("3",)]
    assert [pool.env(d)["CUDA_VISIBLE_DEVICES"] for d in taken] == ["0", "1", "2", "3"]
    assert pool.acquire() is None  # a fifth run waits


def test_more_jobs_than_gpus_never_share_a_gpu():
    plan = plan_devices(["0", "1"], jobs=4)
    assert plan.slots == 2
    pool = DevicePool(plan)
    assert pool.acquire() == ("0",) and pool.acquire() == ("1",)
    assert pool.acquire() is None
    pool.release(("0",))
    assert pool.acquire() == ("0",)
    assert "up to 2 run(s) at once" in plan.describe()


def test_gpus_per_run_zero_trains_on_the_cpu_with_gpus_hidden():
    plan = plan_devices(["0", "1"], jobs=4, gpus_per_run=0)
    assert (plan.slots, plan.per_run, plan.torchrun) == (4, 0, False)
    pool = DevicePool(plan)
    assert [pool.env(pool.acquire()) for _ in range(4)] == [{"CUDA_VISIBLE_DEVICES": ""}] * 4


def test_gpus_per_run_two_runs_torchrun_on_its_own_pair():
    plan = plan_devices(["0", "1", "2", "3"], jobs=4, gpus_per_run=2)
    assert (plan.slots, plan.nproc, plan.torchrun) == (2, 2, True)
    pool = DevicePool(plan)
    assert [pool.env(pool.acquire()) for _ in range(2)] == [{"CUDA_VISIBLE_DEVICES": "0,1"},
                                                            {"CUDA_VISIBLE_DEVICES": "2,3"}]
    # torchrun's --nproc-per-node picks the GPUs per run when --gpus-per-run is not given
    assert plan_devices(["0", "1", "2", "3"], 2, None, "torchrun", 2).per_run == 2


def test_without_gpus_runs_use_the_cpu():
    plan = plan_devices([], jobs=3)
    assert (plan.slots, plan.per_run) == (3, 0)
    assert DevicePool(plan).env(()) == {}
    assert plan.describe().startswith("no GPU found: runs train on the CPU")


def test_impossible_placements_are_refused():
    with pytest.raises(ValueError, match="--gpus-per-run 3 .* only 2 GPU"):
        plan_devices(["0", "1"], jobs=1, gpus_per_run=3)
    with pytest.raises(ValueError, match="no GPU was found"):
        plan_devices([], jobs=1, gpus_per_run=1)
    with pytest.raises(ValueError, match="--nproc-per-node 4 with --gpus-per-run 2"):
        plan_devices(["0", "1"], 1, 2, "torchrun", 4)
    with pytest.raises(ValueError, match="--jobs must be >= 1"):
        plan_devices(["0"], jobs=0)


def test_runner_says_once_that_it_uses_the_cpu(monkeypatch):
    from suite.runner import Runner

    monkeypatch.setenv("HUMMUSS_FAKE_GPUS", "0")
    said = []
    runner = Runner(tracker=None, jobs=2, say=said.append)  # placement needs no store
    runner.device_plan()
    assert said == ["no GPU found: runs train on the CPU, 2 at once"]
    monkeypatch.setenv("HUMMUSS_FAKE_GPUS", "2")
    with pytest.raises(ValueError, match="only 2 GPU"):
        Runner(tracker=None, jobs=2, gpus_per_run=3, say=said.append)


def test_a_child_gets_the_store_the_project_and_its_share_of_the_threads(monkeypatch):
    from suite.launch import THREADS_ENV, child_env
    from suite.tracking import TrackingSettings

    settings = TrackingSettings("sqlite:////x/mlruns.db", "/x/mlartifacts", source="/x/mlflow.yaml")
    monkeypatch.delenv(THREADS_ENV, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    env = child_env(settings, 4, {"CUDA_VISIBLE_DEVICES": "2"})
    assert (env["MLFLOW_TRACKING_URI"], env["HUMMUSS_MLFLOW_CONFIG"]) == ("sqlite:////x/mlruns.db", "/x/mlflow.yaml")
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(PROJECT_DIR)
    assert (env[THREADS_ENV], env["CUDA_VISIBLE_DEVICES"]) == ("2", "2")  # 8 cores over 4 children
    assert child_env(settings, 16)[THREADS_ENV] == "1"
    monkeypatch.setenv(THREADS_ENV, "3")
    assert child_env(settings, 4)[THREADS_ENV] == "3"  # a value the user set wins


@pytest.mark.parametrize("module", ["suite.worker", "suite.launch"])
def test_the_child_entry_points_still_start_by_module_name(module):
    out = subprocess.run([sys.executable, "-m", module, "--help"], env={**os.environ, "PYTHONPATH": str(PROJECT_DIR)},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"usage: python -m {module} [-h] --spec SPEC --run-id RUN_ID")


# -- options --------------------------------------------------------------------------------
def test_slurm_time_limits_in_minutes():
    assert [parse_minutes(t) for t in ("90", "4:00:00", "30:30", "1-0", "1-2:30", "0:10:01")] == \
        [90, 240, 31, 1440, 1590, 11]
    with pytest.raises(ValueError, match="bad time limit '4h'"):
        parse_minutes("4h")


def test_launch_options_become_runner_arguments():
    p = argparse.ArgumentParser()
    add_launch_options(p)
    args = p.parse_args(["--jobs", "8", "--launcher", "slurm", "--gpus-per-run", "2", "--no-wait",
                         "--slurm-partition", "gpu", "--slurm-time", "4:00:00", "--slurm-folder", "logs/%j",
                         "--slurm-cluster", "local"])
    kw = runner_kwargs(args)
    assert (kw["jobs"], kw["launcher"], kw["gpus_per_run"], kw["wait"]) == (8, "slurm", 2, False)
    assert kw["slurm"] == SlurmOptions(folder="logs/%j", partition="gpu", time="4:00:00", gpus_per_task=2,
                                       cluster="local")
    defaults = runner_kwargs(p.parse_args([]))
    assert defaults == dict(jobs=1, launcher="local", nproc_per_node=1, gpus_per_run=None, wait=True)
    with pytest.raises(ValueError, match="unknown Slurm cluster 'pbs'"):
        SlurmOptions(cluster="pbs")


# -- end to end -------------------------------------------------------------------------------
def test_jobs_4_on_4_fake_gpus_pins_every_run_to_its_own_gpu(store):
    sets = [f"{k}={v}" for k, v in TINY.items()]
    cmd = [sys.executable, "-m", "suite", "run", "context-length", "--scale", "smoke", "--variant", "hummuss",
           "--seeds", "0,1,2,3", "--jobs", "4", "--set", *sets]
    out = subprocess.run(cmd, env=_env(store, HUMMUSS_FAKE_GPUS="4"), cwd=store.parent, capture_output=True,
                         text=True, timeout=240)
    logs = sorted((store.parent / "checkpoints" / "logs").glob("*/*"))
    assert out.returncode == 0, out.stdout + out.stderr + "".join(f"\n--- {p}\n{p.read_text()}" for p in logs)
    assert "4 GPU(s) found (0,1,2,3): up to 4 run(s) at once, 1 GPU(s) each" in out.stdout
    runs = _child_runs(Tracker(load_settings()), "context-length")
    seen = sorted(r.data.tags[DEVICES_TAG] for r in runs)  # written by each child from its own environment
    print("CUDA_VISIBLE_DEVICES per run:", {r.data.tags["seed"]: r.data.tags[DEVICES_TAG] for r in runs})
    assert seen == ["0", "1", "2", "3"]
    assert {r.info.status for r in runs} == {"FINISHED"}


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                    reason="torchrun not installed beside this Python")
def test_a_run_under_torchrun_trains_on_two_processes_and_rank_zero_logs(store, tmp_path):
    """What `--gpus-per-run 2` starts, on two CPU processes: every rank trains (only rank 0
    takes the checkpoint folder's lock, so the ranks meet in the process group), rank 0 logs."""
    tracker = Tracker(load_settings())
    spec = expand_runs("motionbert-baseline", "smoke", sets={**TINY, "epochs": "2"}, variants=("lite",))[0]
    run_id = take_lease(tracker, tracker.experiment_id(spec.study), spec, None).run_id
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec.to_dict()))
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    cmd = [torchrun, "--standalone", "--nproc-per-node", "2", "-m", "suite.launch", "--spec", str(spec_file),
           "--run-id", run_id]
    out = subprocess.run(cmd, env=_env(store), cwd=store.parent, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    run = tracker.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["trained_by"] == run_id
    assert run.data.metrics["test/mpjpe/as_trained"] > 0
    assert sorted(m.step for m in tracker.client.get_metric_history(run_id, "train/loss/total")) == [1, 2]


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def test_slurm_array_runs_a_smoke_study_and_requeues_a_preempted_run(store, tmp_path):
    """--launcher slurm through submitit's local executor: the array task is preempted
    (SIGUSR2, as Slurm signals before preemption or time-out) after its first epoch,
    requeued, and resumes from its checkpoint into the same MLflow run."""
    from suite.runner import Runner, summary

    tracker = Tracker(load_settings())
    log = Path(tracker.settings.checkpoint_dir) / "logs" / "context-length" / "hummuss-seed0.log"
    preempted = []

    def preempt():  # the moment epoch 1 is in the log, signal the array task
        deadline = time.time() + 180
        while time.time() < deadline and not preempted:
            if log.exists() and "epoch 1/" in log.read_text():
                runs = _child_runs(tracker, "context-length")
                job = runs[0].data.tags.get("slurm_job") if runs else None
                tasks = _children(int(job)) if job else []
                if tasks:
                    os.kill(tasks[0], signal.SIGUSR2)
                    preempted.append(tasks[0])
                    return
            time.sleep(0.05)

    watcher = threading.Thread(target=preempt, daemon=True)
    watcher.start()
    said = []
    runner = Runner(tracker, jobs=2, launcher="slurm", say=said.append,
                    slurm=SlurmOptions(folder=str(tmp_path / "slurm" / "%j"), time="20", gpus_per_task=0,
                                       cluster="local"))
    sets = {**TINY, "epochs": "6", "max_steps_per_epoch": "2"}
    outcomes = runner.run_study("context-length", "smoke", variants=("hummuss",), sets=sets)
    watcher.join(timeout=5)
    print(summary(outcomes))
    assert [(o.spec.name, o.status) for o in outcomes] == [
        ("hummuss/seed0", "FINISHED"), ("floor/mean-pose", "FINISHED"), ("floor/linear-lift", "FINISHED")], \
        summary(outcomes) + "\n" + "\n".join(said)  # the floors run in the launching process meanwhile
    assert preempted, "the array task was never signalled"
    (run,) = _child_runs(tracker, "context-length")
    assert run.info.run_id == outcomes[0].run_id and run.info.status == "FINISHED"
    assert run.data.tags["preemptions"] == "1"
    assert not Path(run.data.tags["slurm_log"]).is_absolute()  # no path of this machine in a tag
    assert any(line.startswith("  hummuss/seed0: submitted (job ") for line in said)
    text = log.read_text()
    assert text.count("resumed from") == 1 and text.count("epoch 1/6") == 1, text
    steps = sorted(m.step for m in tracker.client.get_metric_history(run.info.run_id, "train/loss/total"))
    assert steps == [1, 2, 3, 4, 5, 6]
    assert list((tmp_path / "slurm").glob("*/*_log.out")), "submitit wrote no log in the named folder"


def test_slurm_without_sbatch_is_refused_before_anything_is_logged(monkeypatch):
    from suite.runner import Runner

    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ValueError, match="sbatch is not on PATH .* --slurm-cluster local"):
        Runner(None, launcher="slurm")

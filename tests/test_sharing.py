"""Train once, evaluate many: runs that share a training configuration (`train_hash`) share
its checkpoint, also when they run at the same time in different processes, and each
names the run that trained it (tag `trained_by`, `trained_by.json` beside the checkpoint)."""

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

from suite.launch import child_env
from suite.leases import take_lease
from suite.runspec import expand_runs
from suite.tracking import Tracker, load_settings
from suite.worker import (
    TRAINED_BY,
    checkpoint_dir,
    execute,
    file_lock,
    log_path,
    read_status,
    read_trained_by,
    status_path,
)

SETS = {"epochs": "3", "max_steps_per_epoch": "2", "max_val_clips": "2", "eval.lengths": "27",
        "eval.flip": "false", "eval.max_sequences": "1"}


def _store(tmp_path: Path, monkeypatch) -> Tracker:
    config = tmp_path / "mlflow.yaml"
    config.write_text("tracking_uri: sqlite:///mlruns.db\nartifact_location: mlartifacts\n"
                      "checkpoint_dir: checkpoints\nclaim_ttl_s: 30\n")
    monkeypatch.setenv("HUMMUSS_MLFLOW_CONFIG", str(config))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    return Tracker(load_settings())


def _wait_for(predicate, what: str, timeout: float = 180.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_two_runs_of_one_training_started_at_once_train_it_once(tmp_path, monkeypatch):
    tracker = _store(tmp_path, monkeypatch)
    settings = tracker.settings
    specs = expand_runs("motionbert-baseline", "smoke", sets=SETS)  # lite and full: one training at smoke
    assert len({s.train_hash for s in specs}) == 1 and len({s.config_hash for s in specs}) == 2
    exp = tracker.experiment_id(specs[0].study)
    ids = [take_lease(tracker, exp, s, None).run_id for s in specs]
    folder = checkpoint_dir(settings, specs[0])
    procs = []
    try:
        # a third process holds the checkpoint while both runs start: both must wait for it
        with file_lock(folder / ".lock"):
            for spec, run_id in zip(specs, ids):
                spec_file = tmp_path / f"{spec.variant}.json"
                spec_file.write_text(json.dumps(spec.to_dict()))
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "suite.worker", "--spec", str(spec_file), "--run-id", run_id],
                    env=child_env(settings, 2), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
            _wait_for(lambda: all(read_status(status_path(settings.checkpoint_dir, r)).get("phase") == "waiting"
                                  for r in ids), "both runs to wait for the checkpoint")
        outs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outs):
        print(out[-3000:])
        assert p.returncode == 0
    status = [read_status(status_path(settings.checkpoint_dir, r)) for r in ids]
    assert sorted(s["trained_epochs"] for s in status) == [0, 3]  # one trained all 3 epochs, the other none
    trainer = ids[[s["trained_epochs"] for s in status].index(3)]
    other = ids[1 - ids.index(trainer)]
    logs = [log_path(settings, s).read_text() for s in specs]
    assert sum(text.count("epoch 1/3") for text in logs) == 1  # trained once
    for text in logs:  # both waited for the third process; the second also for the first
        assert "waiting: another process is training the checkpoint" in text
    other_spec = specs[ids.index(other)]
    trainer_name = f"{specs[ids.index(trainer)].study}/{specs[ids.index(trainer)].name}"
    assert f"evaluating the checkpoint trained by {trainer_name} (run {trainer})" in \
        log_path(settings, other_spec).read_text()
    for run_id in ids:
        run = tracker.get_run(run_id)
        assert run.info.status == "FINISHED" and run.data.tags["trained_by"] == trainer
        assert run.data.metrics["test/mpjpe/as_trained"] > 0
    assert {s["trained_by"]["run_id"] for s in status} == {trainer}
    assert read_trained_by(folder)["run_id"] == trainer and read_trained_by(folder)["run"] == trainer_name

    # a checkpoint from before trained_by.json existed: the trainer is read from the store
    (folder / TRAINED_BY).unlink()
    again = dataclasses.replace(specs[0], variant="again")
    assert again.train_hash == specs[0].train_hash
    run_id = take_lease(tracker, exp, again, None).run_id
    final = execute(again, run_id, settings)
    assert final["trained_epochs"] == 0 and final["trained_by"]["run_id"] == trainer
    assert tracker.get_run(run_id).data.tags["trained_by"] == trainer
    assert read_trained_by(folder)["run_id"] == trainer and read_trained_by(folder)["inferred"] is True

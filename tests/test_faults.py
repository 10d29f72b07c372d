"""Faults that really happen: processes killed, stores locked or gone, nonsense losses,
secrets in URIs. Each test does the real thing (kills real processes, starts real
servers, writes real broken files)."""

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mlflow
import torch

from hummuss.checkpoint import load_checkpoint
from suite.tracking import Tracker, load_settings, redact

ROOT = Path(__file__).resolve().parents[1]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # mlflow exports it
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def _suite(store, *args, timeout=300, **env):
    return subprocess.run([sys.executable, "-m", "suite", *args], cwd=store, env=_env(**env),
                          capture_output=True, text=True, timeout=timeout)


def _children(store, study):
    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlruns.db'}")
    df = mlflow.search_runs(experiment_names=[f"hummuss/{study}"])
    return df[~df["tags.kind"].isin(["parent", "floor"])]


def test_sigkill_during_a_checkpoint_write_leaves_the_previous_one(tmp_path):
    script = textwrap.dedent(f"""
        import torch
        from pathlib import Path
        from hummuss.checkpoint import save_atomic
        path = Path({str(tmp_path / "last.pt")!r})
        i = 0
        while True:
            i += 1
            save_atomic({{"format": "hummuss-train-v1", "i": i, "w": torch.full((3_000_000,), float(i))}}, path)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env=_env())
    try:
        deadline = time.time() + 60
        # wait for a complete checkpoint, then for the next write to be under way
        while not (tmp_path / "last.pt").exists() and time.time() < deadline:
            time.sleep(0.01)
        while not list(tmp_path.glob(".last.pt.*.tmp")) and time.time() < deadline:
            time.sleep(0.001)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert list(tmp_path.glob(".last.pt.*.tmp")), "the kill did not land during a write"
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ckpt["i"] >= 1 and torch.equal(ckpt["w"], torch.full((3_000_000,), float(ckpt["i"])))


def test_sigkill_during_training_resumes_into_the_same_run(suite_store):
    args = ["run", "init-schemes", "--scale", "smoke", "--variant", "lin",
            "--set", "epochs=4", "max_steps_per_epoch=10"]
    proc = subprocess.Popen([sys.executable, "-m", "suite", *args], cwd=suite_store, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts = suite_store / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        lasts = list(ckpts.glob("*/last.pt"))
        logs = list((ckpts / "logs" / "init-schemes").glob("lin-seed0.log"))
        # epoch 1 checkpointed and its log line written (a kill between the two loses the line)
        if lasts and load_checkpoint(lasts[0])["epoch"] >= 1 and logs and ": epoch 1/4 " in logs[0].read_text():
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # somewhere in epoch 2
    proc.wait()
    kept = load_checkpoint(list(ckpts.glob("*/last.pt"))[0])["epoch"]  # where the rerun must go on from
    killed = _children(suite_store, "init-schemes")
    assert len(killed) == 1 and killed.iloc[0]["status"] == "RUNNING"
    run_id = killed.iloc[0].run_id

    # the claim of the killed process expires (no heartbeat), the rerun takes the run over
    (suite_store / "mlflow.yaml").write_text((suite_store / "mlflow.yaml").read_text().replace(
        "claim_ttl_s: 60", "claim_ttl_s: 1"))
    time.sleep(1.5)
    done = _suite(suite_store, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    after = _children(suite_store, "init-schemes")
    assert list(after.run_id) == [run_id] and after.iloc[0]["status"] == "FINISHED"
    client = mlflow.MlflowClient()
    steps = [m.step for m in client.get_metric_history(run_id, "val/mpjpe_mm")]
    assert sorted(steps) == [1, 2, 3, 4]  # none lost, none twice
    # resumed, not restarted: the rerun went on from the kept epoch, and epoch 1 (done before
    # the kill) was trained once (a restart from scratch logs the same steps and metrics)
    log = next((ckpts / "logs" / "init-schemes").glob("lin-seed0.log")).read_text()
    assert re.search(rf"resumed from \S+last\.pt at epoch {kept}, step \d+", log), log[-2000:]
    assert len(re.findall(r": epoch 1/4 ", log)) == 1, log[-2000:]

    # an uninterrupted run in another store gives the same final metrics
    other = suite_store / "straight"
    other.mkdir()
    (other / "mlflow.yaml").write_text((suite_store / "mlflow.yaml").read_text())
    straight = _suite(other, *args, HUMMUSS_MLFLOW_CONFIG=str(other / "mlflow.yaml"))
    assert straight.returncode == 0, straight.stderr[-3000:]
    ref = _children(other, "init-schemes").iloc[0]
    mine = _children(suite_store, "init-schemes").iloc[0]
    for key in ("metrics.test/mpjpe/as_trained", "metrics.best/val/mpjpe_mm"):
        assert abs(ref[key] - mine[key]) <= 1e-6, key


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_tracking_server_fails_fast_naming_the_uri(suite_store):
    uri = f"http://127.0.0.1:{_free_port()}"
    started = time.time()
    done = _suite(suite_store, "run", "context-length", "--scale", "smoke", MLFLOW_TRACKING_URI=uri)
    assert time.time() - started < 60  # no retry loop of minutes (about 3 s on an idle machine)
    assert done.returncode != 0
    assert uri in done.stderr and "cannot reach" in done.stderr
    assert not (suite_store / "checkpoints").exists()  # nothing trained


def test_four_processes_share_the_sqlite_store_without_lock_errors(suite_store):
    script = textwrap.dedent("""
        import sys
        from suite.tracking import Tracker, load_settings
        t = Tracker(load_settings())
        exp = t.experiment_id("concurrency")
        for r in range(3):
            run = t.create_run(exp, f"w{sys.argv[1]}-{r}", {"worker": sys.argv[1]})
            t.log_params(run, {f"p{i}": i for i in range(150)})
            for step in range(40):
                t.log_metrics(run, {"a": step, "b": 2 * step}, step=step)
            t.set_status(run, "FINISHED")
        print("ok")
    """)
    Tracker(load_settings())  # create the schema once, as the runner does before fanning out
    procs = [subprocess.Popen([sys.executable, "-c", script, str(i)], env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(4)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0 and out.strip() == "ok", err[-2000:]
        assert "database is locked" not in err
    mlflow.set_tracking_uri(f"sqlite:///{suite_store / 'mlruns.db'}")
    runs = mlflow.search_runs(experiment_names=["hummuss/concurrency"])
    assert len(runs) == 12 and (runs["status"] == "FINISHED").all()
    client = mlflow.MlflowClient()
    assert all(len(client.get_metric_history(r, "a")) == 40 for r in runs.run_id)


def test_a_non_finite_loss_fails_the_run_naming_epoch_and_step(suite_store):
    done = _suite(suite_store, "run", "init-schemes", "--scale", "smoke", "--variant", "lin", "--set", "lr=1e30")
    assert done.returncode == 1
    run = _children(suite_store, "init-schemes").iloc[0]
    assert run["status"] == "FAILED"
    assert "non-finite loss" in run["tags.error"] and "at epoch 1, step" in run["tags.error"]
    assert "did not finish" in done.stdout and "logs/init-schemes/lin-seed0.log" in done.stdout
    assert "tags.log" not in run or not isinstance(run["tags.log"], str)  # the log is an artifact, not a path tag
    assert "lin-seed0.log" in {a.path for a in mlflow.MlflowClient(f"sqlite:///{suite_store / 'mlruns.db'}")
                               .list_artifacts(run["run_id"])}


def test_secrets_never_reach_params_tags_or_logs(suite_store):
    assert redact("postgresql://bob:hunter2@db:5432/mlflow") == "postgresql://bob:***@db:5432/mlflow"
    assert redact("http://h/x?token=abc&x=1") == "http://h/x?token=***&x=1"
    t = Tracker(load_settings())
    run = t.create_run(t.experiment_id("secrets"), "r", {})
    t.log_params(run, {"data.spec": "h36m:s3://key:hunter2@bucket/x.pkl", "db_password": "hunter2"})
    t.set_tags(run, {"store": "postgresql://bob:hunter2@db/x", "api_token": "hunter2"})
    data = t.client.get_run(run).data
    text = repr(data.params) + repr(data.tags)
    assert "hunter2" not in text
    assert data.params["data.spec"] == "h36m:s3://key:***@bucket/x.pkl"
    assert "db_password" not in data.params and "api_token" not in data.tags

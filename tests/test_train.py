"""The trainer: learning, exact resume (also after SIGKILL), atomic checkpoints, loud
failures, callbacks, and DistributedDataParallel under torchrun."""

import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hummuss.checkpoint import load_checkpoint, save_atomic
from hummuss.data import open_source
from hummuss.model import HumMUSS, HumMUSSConfig
from hummuss.train import Callback, NonFiniteLossError, TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data():
    src = open_source("synthetic:scale=smoke")
    return src.clips("train", 27, 9), src.clips("test", 27)


def _model(seed=0):
    torch.manual_seed(seed)
    return HumMUSS(HumMUSSConfig.preset("smoke", causal=True))


def _fit(data, out, epochs, **kw):
    cfg = TrainConfig.preset("smoke", epochs=epochs, **kw)
    return Trainer(_model(), data[0], data[1], cfg, out, log=lambda m: None).fit()


def test_training_lowers_the_validation_error(data, tmp_path):
    result = _fit(data, tmp_path, epochs=4, max_steps_per_epoch=6)
    first, last = result.history[0], result.history[-1]
    assert last["train/loss"] < first["train/loss"]
    assert result.best_val_mpjpe <= first["val/mpjpe"]
    assert last["lr"] == pytest.approx(1e-3 * 0.99 ** 4)
    assert (tmp_path / "last.pt").exists() and (tmp_path / "best.pt").exists()


def test_resume_continues_exactly(data, tmp_path):
    straight = _fit(data, tmp_path / "a", epochs=3)
    _fit(data, tmp_path / "b", epochs=2)
    resumed = _fit(data, tmp_path / "b", epochs=3)  # picks up last.pt of epoch 2
    assert resumed.epochs_run == 3 and [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert [h["val/mpjpe"] for h in resumed.history] == [h["val/mpjpe"] for h in straight.history]
    a = load_checkpoint(tmp_path / "a" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "b" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_callback_can_stop_training(data, tmp_path):
    seen = []

    class StopAfterOne(Callback):
        def on_epoch_end(self, epoch, metrics):
            seen.append((epoch, sorted(metrics)))
            return True

    cfg = TrainConfig.preset("smoke", epochs=5)
    result = Trainer(_model(), *data, cfg, tmp_path, callbacks=[StopAfterOne()], log=lambda m: None).fit()
    assert result.stopped_early and result.epochs_run == 1
    assert seen[0][0] == 1 and "val/mpjpe" in seen[0][1] and "train/loss" in seen[0][1]


def test_non_finite_loss_names_epoch_and_step(data, tmp_path):
    class Exploding(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))

        def forward(self, x):
            return x * self.w * float("nan")

    cfg = TrainConfig.preset("smoke")
    with pytest.raises(NonFiniteLossError, match=r"at epoch 1, step 1"):
        Trainer(Exploding(), *data, cfg, tmp_path, log=lambda m: None).fit()


def test_a_failed_checkpoint_write_leaves_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_atomic({"format": "x", "value": torch.ones(3)}, path)

    def broken_save(obj, f):
        f.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_atomic({"format": "x", "value": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["value"], torch.ones(3))
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_foreign_and_truncated_checkpoints_are_refused(tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"model_pos": {}}, foreign)
    with pytest.raises(ValueError, match="not a hummuss-suite training checkpoint"):
        load_checkpoint(foreign)
    truncated = tmp_path / "truncated.pt"
    save_atomic({"format": "hummuss-train-v1", "model": {"w": torch.ones(1000)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(ValueError, match="truncated or not a hummuss-suite checkpoint"):
        load_checkpoint(truncated)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def _train_cmd(out, *extra):
    return [sys.executable, "-m", "hummuss.train", "--out", str(out), "--train-set", "epochs=3",
            "max_steps_per_epoch=12", *extra]


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path):
    straight = subprocess.run(_train_cmd(tmp_path / "a"), env=_env(), capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr
    proc = subprocess.Popen(_train_cmd(tmp_path / "b"), env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    last = tmp_path / "b" / "last.pt"
    deadline = time.time() + 240
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    assert last.exists(), "the first epoch never finished"
    os.kill(proc.pid, signal.SIGKILL)  # somewhere in epoch 2
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert load_checkpoint(last)["epoch"] == 1
    resumed = subprocess.run(_train_cmd(tmp_path / "b"), env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(last)
    assert b["epoch"] == 3
    assert abs(a["best_val_mpjpe"] - b["best_val_mpjpe"]) <= 1e-6
    assert all(torch.allclose(a["model"][k], b["model"][k], atol=1e-6, rtol=0) for k in a["model"])


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                    reason="torchrun not installed beside this Python")
def test_torchrun_two_cpu_processes_train_and_rank_zero_writes(tmp_path):
    torchrun = str(Path(sys.executable).parent / "torchrun")
    out = tmp_path / "ddp"
    cmd = [torchrun, "--standalone", "--nproc-per-node", "2", "-m", "hummuss.train", "--out", str(out),
           "--train-set", "epochs=1"]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "last.pt"]
    assert done.stdout.count("done: 1 epochs") == 1  # only rank 0 reports
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["epoch"] == 1 and ckpt["step"] >= 1


def test_train_config_refuses_unknown_fields_and_values():
    with pytest.raises(ValueError, match="unknown TrainConfig field.s. lrr"):
        TrainConfig.preset("smoke", lrr=1.0)
    with pytest.raises(ValueError, match="amp must be auto, bf16 or off"):
        TrainConfig(amp="fp8")


def test_learning_rate_schedules_by_hand():
    from hummuss.schedule import lr_factor

    cos = TrainConfig(epochs=2, schedule="cosine", warmup_steps=10, min_lr_ratio=0.1)
    # warm-up: (step + 1) / 10; then 0.1 + 0.9 * (1 + cos(pi * (step - 10) / 10)) / 2 over 20 - 10 steps
    assert [round(lr_factor(cos, s, 10), 6) for s in (0, 4, 9, 10, 15, 19, 25)] == [
        0.1, 0.5, 1.0, 1.0, 0.55, round(0.1 + 0.45 * (1 + math.cos(math.pi * 0.9)), 6), 0.1]
    exp = TrainConfig(lr_decay=0.5)
    assert [lr_factor(exp, s, 4) for s in (0, 3, 4, 9)] == [1.0, 1.0, 0.5, 0.25]
    with pytest.raises(ValueError, match="schedule must be one of exponential, cosine, got 'step'"):
        TrainConfig(schedule="step")


def test_the_trainer_says_when_mkl_runs_its_generic_code(data, tmp_path, monkeypatch):
    """On a CPU that is not an Intel one, in a process started without MKL's Intel code path
    (hummuss/mkl_vendor.py), the trainer says so once, with what it costs and how to start."""
    from hummuss import mkl_vendor

    said = []
    for vendor, loaded in (("AuthenticAMD", False), ("AuthenticAMD", True), ("GenuineIntel", False)):
        monkeypatch.setattr(mkl_vendor, "cpu_vendor", lambda v=vendor: v)
        monkeypatch.setattr(mkl_vendor, "mapped", lambda m=loaded: m)
        lines = []
        Trainer(_model(), data[0], data[1], TrainConfig.preset("smoke", device="cpu"), tmp_path, log=lines.append)
        said.append([line for line in lines if "MKL" in line])
    x86_linux = sys.platform.startswith("linux") and mkl_vendor.platform.machine() == "x86_64"
    assert said[1:] == [[], []]
    assert said[0] == ([
        "MKL's generic code on this AuthenticAMD CPU: about half its matmul rate; start Python with "
        "`python -m hummuss.mkl_vendor -- python ...` (as hummuss-suite does) for its Intel code path"]
        if x86_linux else [])

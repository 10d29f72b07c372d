"""CUDA and bf16 paths (`make gpu-check` runs the tests marked gpu on a GPU), and the
check's own behaviour without a GPU.

bf16 autocast also exists on the CPU, so the dtype paths of training (the SSM kernel's
custom backward, the FFT convolution) are tested here on every machine; the CUDA
parametrisations are marked `gpu` and skip without CUDA."""

import pytest
import torch

from hummuss.losses import PoseLoss
from hummuss.model import HumMUSS, HumMUSSConfig

CUDA = pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA")])


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("frames, causal", [(27, False), (243, False), (27, True)],
                         ids=["toeplitz", "fft", "causal"])
def test_bf16_autocast_training_step_matches_float32(device, frames, causal):
    """Forward and backward under bf16 autocast run (the kernel stays float32, so its
    hand-written backward sees one dtype) and give the float32 loss and gradients to bf16
    precision."""
    torch.manual_seed(0)
    model = HumMUSS(HumMUSSConfig.preset("smoke", causal=causal)).to(device).train()
    x = torch.randn(2, frames, 17, 3, device=device)
    target = 0.3 * torch.randn(2, frames, 17, 3, device=device)
    results = []
    for amp in (False, True):
        model.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
            pred = model(x)
        loss = PoseLoss()(pred.float(), target)[0]
        loss.backward()
        grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        results.append((loss.detach(), grad))
        assert pred.dtype == (torch.bfloat16 if amp else torch.float32)
    (l32, g32), (l16, g16) = results
    assert torch.isfinite(g16).all()
    assert abs(l16 - l32) < 0.02 * abs(l32)
    assert torch.nn.functional.cosine_similarity(g16, g32, dim=0) > 0.98


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_stream_on_cuda_equals_offline():
    torch.manual_seed(0)
    model = HumMUSS(HumMUSSConfig.preset("smoke", causal=True)).cuda().eval()
    x = torch.randn(1, 30, 17, 3, device="cuda")
    with torch.no_grad():
        offline = model(x)
    for compile in (False, True):
        s = model.stream(compile=compile)
        online = torch.stack([s.step(x[:, t]) for t in range(30)], 1)
        assert s.compile == compile
        assert (online - offline).abs().max() < 1e-4


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_trainer_step_on_cuda_uses_bf16():
    from suite.bench import training_step

    step, trainer = training_step("hummuss", "smoke", 243, 4, device="cuda", amp="auto")
    losses = [float(step()) for _ in range(3)]
    assert trainer.use_amp and trainer.step == 3
    assert all(torch.isfinite(torch.tensor(losses)))


def test_gpu_check_without_cuda_says_so_in_one_line_and_exits_0(monkeypatch, capsys, tmp_path):
    import suite.gpucheck
    from suite.cli import main

    monkeypatch.setattr(suite.gpucheck, "cuda_available", lambda: False)
    assert main(["gpu-check", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "no CUDA GPU" in out[0]
    assert not any(tmp_path.iterdir())  # nothing measured, nothing written


def test_gpu_check_markdown_shows_every_part():
    from suite.gpucheck import markdown

    report = dict(device="Test GPU", torch="2.x", seconds=300.0, tests=dict(ok=True, summary="5 passed"),
                  epochs=[dict(model="hummuss-paper-bidirectional", steps=8, batch=16, s_per_step=0.5,
                               peak_gb=12.0, loss=0.4)],
                  train_steps=[dict(model="motionbert-lite", compiled=True, step_ms=80.0, clips_per_s=200.0,
                                    first_step_s=40.0)],
                  stream=[dict(model="hummuss-paper-causal", compiled=True, step_ms=1.5)],
                  ratios={"stream MotionBERT-Lite (243) / HumMUSS compiled": 40.0}, skipped=["x"], errors=[])
    md = markdown(report)
    for text in ("Test GPU", "5 passed", "| hummuss-paper-bidirectional | 8 | 16 | 0.500 |",
                 "| motionbert-lite | True | 80.0 |", "| 1.50 |", "40.00", "Skipped (over the budget): x"):
        assert text in md


def test_gpu_check_dry_run_on_the_cpu_measures_every_part(tmp_path):
    """The GPU check's code, run on the CPU with small models: every part gives its figures,
    none fails, and the JSON and markdown are written."""
    import json

    from suite.gpucheck import Plan, run

    report = run(tmp_path, budget=900, plan=Plan.dry_run())
    assert report["errors"] == [] and report["skipped"] == []
    assert [e["model"] for e in report["epochs"]] == ["hummuss-smoke", "motionbert-smoke"]
    assert all(e["steps"] == 2 and e["loss"] > 0 for e in report["epochs"])
    assert [r["model"] for r in report["train_steps"]] == ["hummuss-smoke", "motionbert-smoke"]
    assert [r["model"] for r in report["stream"]] == ["hummuss-smoke", "motionbert-smoke"]
    assert len(report["ratios"]) == 2 and all(v > 0 for v in report["ratios"].values())
    assert json.loads((tmp_path / "gpu-check.json").read_text())["plan"]["device"] == "cpu"
    assert "| hummuss-smoke | 2 | 2 |" in (tmp_path / "gpu-check.md").read_text()


def test_gpu_check_runs_every_test_file_that_holds_gpu_tests():
    """gpu-check hands pytest only GPU_TEST_FILES (a GPU image may lack MLflow and Optuna,
    which the other test files import): a file with a gpu mark outside that list would never
    run on a GPU."""
    from pathlib import Path

    from suite.gpucheck import GPU_TEST_FILES, ROOT

    marked = {str(f.relative_to(ROOT)) for f in (ROOT / "tests").rglob("test_*.py")
              if "mark.gpu" in f.read_text()}
    assert marked == set(GPU_TEST_FILES)
    assert all(Path(ROOT / f).is_file() for f in GPU_TEST_FILES)


def test_gpu_check_runs_without_mlflow_and_optuna(tmp_path):
    """`python -m suite.gpucheck` on a GPU image that has torch but not MLflow or Optuna: with
    both made unimportable, the check and every module its parts import load, and without
    CUDA it says so and exits 0."""
    import os
    import subprocess
    import sys

    from suite.gpucheck import ROOT

    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('mlflow', 'optuna'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Block())\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    probe = ("import suite.gpucheck, suite.cli.gpucheck, suite.bench, hummuss.train, hummuss.zoo, hummuss.stream\n"
             "try:\n    import optuna\nexcept ModuleNotFoundError:\n    print('blocked')\n")
    imports = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert imports.returncode == 0, imports.stderr
    assert imports.stdout.strip() == "blocked"  # the blocker works: the imports above needed neither
    if not torch.cuda.is_available():
        out = subprocess.run([sys.executable, "-m", "suite.gpucheck", "--out", str(tmp_path / "out")],
                             env=env, capture_output=True, text=True, cwd=tmp_path)
        assert out.returncode == 0 and "no CUDA GPU" in out.stdout, out.stderr


def test_gpu_check_writes_each_figure_as_it_is_measured(tmp_path, monkeypatch):
    """The report is on disk after every part: a part that hangs past the command's time limit
    (torch.compile on an unknown GPU) loses only itself. Here the MotionBERT streaming part
    raises after the epochs, the training steps and HumMUSS's stream were measured; the file
    written at that moment already holds them."""
    import json

    import suite.gpucheck as gpucheck

    seen = {}

    def broken(plan):
        seen.update(json.loads((tmp_path / "gpu-check.json").read_text()))
        raise RuntimeError("no more")

    monkeypatch.setattr(gpucheck, "_motionbert_stream", broken)
    report = gpucheck.run(tmp_path, budget=900, plan=gpucheck.Plan.dry_run())
    assert [e["model"] for e in seen["epochs"]] == ["hummuss-smoke", "motionbert-smoke"]
    assert [r["model"] for r in seen["train_steps"]] == ["hummuss-smoke", "motionbert-smoke"]
    assert [r["model"] for r in seen["stream"]] == ["hummuss-smoke"]
    assert list(seen["ratios"]) == ["train step hummuss-smoke / motionbert-smoke"]
    assert report["errors"] == ["motionbert stream: RuntimeError: no more"]


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_compiled_training_step_matches_eager(device):
    """`torch.compile` of a training forward and backward (what `make gpu-check` times as
    "compiled"): the kernel's complex arithmetic runs eagerly between the compiled graphs
    (`DSSM._kernel`), the Toeplitz index is built without its cache while traced. At 81
    frames the spatial blocks use the Toeplitz operator and the temporal ones `FFTConv`;
    loss and gradients are eager's to float32 round-off."""
    from hummuss.stream import compiler_available

    if not compiler_available(device):
        pytest.skip(f"no compiler for torch.compile on {device}")
    import hummuss.ssm.conv

    hummuss.ssm.conv._TOEPLITZ_INDEX.clear()  # compiled first: the index is made while traced
    torch.manual_seed(0)
    model = HumMUSS(HumMUSSConfig.preset("smoke")).to(device).train()
    x = torch.randn(2, 81, 17, 3, device=device)
    target = 0.3 * torch.randn(2, 81, 17, 3, device=device)
    results = []
    for net in (torch.compile(model), model):
        model.zero_grad(set_to_none=True)
        loss = PoseLoss()(net(x), target)[0]
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (lc, gc), (le, ge) = results
    assert abs(float(lc - le)) <= 1e-5 * abs(float(le))
    for a, b in zip(ge, gc):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-6 * float(a.abs().max()) + 1e-9)

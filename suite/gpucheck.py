"""`make gpu-check`: what only a GPU can tell, in one script of under 8 minutes.

    python -m suite.gpucheck [--out results/gpu-check] [--budget 420] [--steps 8]

On a machine with CUDA, in order (each part is timed; a part that would start past the
budget is skipped and named in the report):
1. the tests marked `gpu` (pytest -m gpu: CUDA and bf16 paths), in a child process;
2. one `paper`-scale training epoch of each model family (HumMUSS paper-bidirectional and
   paper-causal, MotionBERT-Lite) on generated clips of F = 243 frames with bf16 autocast,
   the epoch bounded by --steps (`max_steps_per_epoch`): seconds per step, peak memory,
   the losses;
3. the training-step benchmark on the GPU (`suite.bench.training_step`, the trainer's own
   step) at paper sizes, F = 243, eager and through torch.compile;
4. the streaming benchmark: HumMUSS paper-causal per-frame latency at batch 1, eager and
   compiled, against MotionBERT-Lite re-running a 243-frame window.
It writes `gpu-check.json` (every figure) and `gpu-check.md` (the same as tables) to --out.
Without CUDA it says so in one line and exits 0.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FRAMES = 243
FAMILIES = [("hummuss", "paper-bidirectional", {}), ("hummuss", "paper-causal", {}), ("motionbert", "lite", {})]
TRAIN_BATCH = 16  # clips per step in the epoch and the step benchmark
DATA = "synthetic"  # the cpu-scale generated set: enough clips of F frames for the epochs


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _timed(fn: Callable[[], object], rounds: int, warmup: int = 2) -> list[float]:
    """Seconds per call of fn on the GPU (synchronised), `rounds` calls after `warmup`."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times


def _gpu_tests(timeout: float) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", str(ROOT / "tests")]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return dict(ok=False, summary=f"timed out after {timeout:.0f} s")
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    return dict(ok=proc.returncode == 0, returncode=proc.returncode, summary=lines[-1] if lines else "")


def _epoch(name: str, preset: str, overrides: dict, steps: int) -> dict:
    """One bf16 training epoch of `steps` steps through `Trainer.train_epoch`."""
    import torch

    from suite.bench import training_step

    _, trainer = training_step(name, preset, FRAMES, TRAIN_BATCH, device="cuda", amp="bf16",
                               train_preset="motionbert", data=DATA, **overrides)
    trainer.config.max_steps_per_epoch = trainer.steps_per_epoch = steps
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    metrics = trainer.train_epoch(trainer.model)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return dict(model=f"{name}-{preset}", steps=trainer.step, batch=TRAIN_BATCH, frames=FRAMES,
                epoch_s=seconds, s_per_step=seconds / max(1, trainer.step),
                peak_gb=torch.cuda.max_memory_allocated() / 2**30, amp=trainer.use_amp,
                loss=metrics.get("train/loss"))


def _train_step(name: str, preset: str, overrides: dict, compile: bool, rounds: int) -> dict:
    from suite.bench import training_step

    step, trainer = training_step(name, preset, FRAMES, TRAIN_BATCH, device="cuda", amp="bf16",
                                  compile=compile, train_preset="motionbert", data=DATA, **overrides)
    t0 = time.perf_counter()
    step()  # the first step (compilation when compiling)
    first = time.perf_counter() - t0
    times = _timed(step, rounds)
    return dict(model=f"{name}-{preset}", compiled=compile, batch=TRAIN_BATCH, frames=FRAMES,
                first_step_s=first, step_ms=1e3 * statistics.median(times),
                clips_per_s=TRAIN_BATCH / statistics.median(times))


def _stream(compile: bool, context: int = 100, rounds: int = 200) -> dict:
    import torch

    from hummuss.zoo import build_model
    from suite.bench import bench_input

    torch.manual_seed(0)
    model = build_model("hummuss", "paper-causal").cuda().eval()
    x = bench_input(500).cuda()
    s = model.stream(batch_size=1, compile=compile)
    t0 = time.perf_counter()
    for t in range(context):
        s.step(x[:, t])
    torch.cuda.synchronize()
    warm = time.perf_counter() - t0
    frames = iter(range(10**9))
    times = _timed(lambda: s.step(x[:, next(frames) % 500]), rounds)
    return dict(model="hummuss-paper-causal", compiled=bool(s.compile), context=context,
                warmup_s=warm, step_ms=1e3 * statistics.median(times))


def _motionbert_stream(window: int = FRAMES, rounds: int = 50) -> dict:
    import torch

    from hummuss.zoo import build_model
    from suite.bench import bench_input

    torch.manual_seed(0)
    lite = build_model("motionbert", "lite").cuda().eval()
    x = bench_input(window + rounds + 8).cuda()
    s = lite.stream(window=window)
    s.prefill(x[:, :window])
    frames = iter(range(window, x.shape[1]))
    times = _timed(lambda: s.step(x[:, next(frames)]), rounds, warmup=3)
    return dict(model="motionbert-lite", window=window, step_ms=1e3 * statistics.median(times))


def markdown(report: dict) -> str:
    """The figures of `report` as markdown tables."""
    out = [f"# GPU check: {report['device']}", "",
           f"torch {report['torch']}, {report['seconds']:.0f} s in all.", ""]
    tests = report.get("tests")
    if tests:
        out += [f"Tests marked gpu: {'passed' if tests['ok'] else 'FAILED'} ({tests['summary']})", ""]
    if report.get("epochs"):
        out += [f"## One bf16 training epoch at F = {FRAMES}", "",
                "| model | steps | batch | s/step | peak (GB) | loss |", "|---|---|---|---|---|---|"]
        out += [f"| {e['model']} | {e['steps']} | {e['batch']} | {e['s_per_step']:.3f} | "
                f"{e['peak_gb']:.1f} | {e['loss']:.4f} |" for e in report["epochs"]]
        out.append("")
    if report.get("train_steps"):
        out += [f"## Training step (bf16, F = {FRAMES})", "",
                "| model | compiled | step (ms) | clips/s | first step (s) |", "|---|---|---|---|---|"]
        out += [f"| {r['model']} | {r['compiled']} | {r['step_ms']:.1f} | {r['clips_per_s']:.1f} | "
                f"{r['first_step_s']:.1f} |" for r in report["train_steps"]]
        out.append("")
    if report.get("stream"):
        out += ["## Streaming, batch 1", "", "| model | compiled | per frame (ms) |", "|---|---|---|"]
        out += [f"| {r['model']} | {r.get('compiled', '')} | {r['step_ms']:.2f} |" for r in report["stream"]]
        out.append("")
    for key, value in report.get("ratios", {}).items():
        out.append(f"- {key}: {value:.2f}")
    if report.get("skipped") or report.get("errors"):
        out += ["", "Skipped (over the budget): " + (", ".join(report.get("skipped", [])) or "none"),
                "", "Errors: " + ("; ".join(report.get("errors", [])) or "none")]
    return "\n".join(out) + "\n"


def run(out_dir: Path, budget: float, steps: int) -> dict:
    import torch

    start = time.perf_counter()
    report: dict = dict(device=torch.cuda.get_device_name(0), torch=torch.__version__, budget_s=budget,
                        skipped=[], errors=[], epochs=[], train_steps=[], stream=[], ratios={})

    def part(name: str, cost: float, fn: Callable[..., dict], *args, **kwargs):
        """Run fn if `cost` more seconds fit the budget; record failures instead of stopping."""
        if time.perf_counter() - start + cost > budget:
            report["skipped"].append(name)
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # one broken part must not hide the others' figures
            report["errors"].append(f"{name}: {type(err).__name__}: {err}")
            return None
        finally:
            print(f"gpu-check: {name} done at {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)

    report["tests"] = part("gpu tests", 60, _gpu_tests, timeout=min(150.0, budget / 3))
    for name, preset, over in FAMILIES:
        e = part(f"epoch {name}-{preset}", 20, _epoch, name, preset, over, steps)
        if e:
            report["epochs"].append(e)
    for compile in (False, True):
        for name, preset, over in (FAMILIES[0], FAMILIES[2]):
            r = part(f"train step {name}-{preset}{' compiled' if compile else ''}", 60 if compile else 15,
                     _train_step, name, preset, over, compile, rounds=10)
            if r:
                report["train_steps"].append(r)
    for compile in (False, True):
        r = part(f"stream{' compiled' if compile else ''}", 60 if compile else 15, _stream, compile)
        if r:
            report["stream"].append(r)
    mb = part("motionbert-lite stream", 15, _motionbert_stream)
    if mb:
        report["stream"].append(mb)
    steps_ms = {(r["model"], r["compiled"]): r["step_ms"] for r in report["train_steps"]}
    for compile in (False, True):
        h, m = steps_ms.get(("hummuss-paper-bidirectional", compile)), steps_ms.get(("motionbert-lite", compile))
        if h and m:
            report["ratios"][f"train step HumMUSS / MotionBERT-Lite{' (compiled)' if compile else ''}"] = h / m
    for r in report["stream"][:2]:
        if mb:
            report["ratios"][f"stream MotionBERT-Lite (243) / HumMUSS{' compiled' if r['compiled'] else ''}"] = \
                mb["step_ms"] / r["step_ms"]
    report["seconds"] = time.perf_counter() - start
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gpu-check.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "gpu-check.md").write_text(markdown(report))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m suite.gpucheck", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="results/gpu-check", help="folder for gpu-check.json and .md")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds; parts past it are skipped")
    parser.add_argument("--steps", type=int, default=8, help="training steps in each epoch")
    args = parser.parse_args(argv)
    if not cuda_available():
        print("gpu-check: no CUDA GPU on this machine; nothing to check (exit 0)")
        return 0
    report = run(Path(args.out), args.budget, args.steps)
    print(markdown(report))
    tests = report.get("tests") or {}
    return 0 if tests.get("ok", True) and not report["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())

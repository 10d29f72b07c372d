"""`make gpu-check`: what only a GPU can tell, in one script of under 8 minutes.

    hummuss-suite gpu-check [--out results/gpu-check] [--budget 450] [--steps 8]
    python -m suite.gpucheck [same options]   # where MLflow and Optuna are not installed (__main__.py)

The second form needs torch alone (and pytest for part 1): a GPU machine's own image can run
the check from a checkout, with PYTHONPATH at its root, without installing the suite.

On a machine with CUDA, in order (each part is timed; a part that would start past the
budget is skipped and named in the report):
1. the tests marked `gpu` (pytest -m gpu: CUDA and bf16 paths), in a child process given at
   most half the budget (on an H200 with a cold compile cache they took over 150 s, most
   of it Inductor compiling; 78 s with a warm one);
2. one `paper`-scale training epoch of each model family (HumMUSS paper-bidirectional and
   paper-causal, MotionBERT-Lite) on generated clips of F = 243 frames with bf16 autocast,
   the epoch bounded by --steps (`max_steps_per_epoch`): seconds per step, peak memory,
   the losses;
3. the training-step benchmark on the GPU (`suite.bench.training_step`, the trainer's own
   step) at paper sizes, F = 243, eager and through torch.compile;
4. the streaming benchmark: HumMUSS paper-causal per-frame latency at batch 1, eager and as
   `stream()` gives it by default (compiled), against MotionBERT-Lite re-running a 243-frame window.
It writes `gpu-check.json` (every figure) and `gpu-check.md` (the same as tables) to --out.
Without CUDA it says so in one line and exits 0.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from string import Formatter

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Plan:
    """What the check runs. The default is the GPU check; `Plan.dry_run()` runs the same
    code on the CPU with small models (the tests use it: this script cannot wait for a GPU
    to find its own bugs)."""

    device: str = "cuda"
    frames: int = 243
    batch: int = 16  # clips per step in the epochs and the step benchmark
    steps: int = 8  # steps of each epoch (max_steps_per_epoch)
    data: str = "synthetic"  # the cpu-scale generated set: enough clips of 243 frames
    epochs: tuple = (("hummuss", "paper-bidirectional"), ("hummuss", "paper-causal"), ("motionbert", "lite"))
    compare: tuple = (("hummuss", "paper-bidirectional"), ("motionbert", "lite"))  # training-step pair
    stream: str = "paper-causal"  # HumMUSS preset streamed
    window: int = 243  # MotionBERT-Lite's re-run window when streaming
    compile: tuple = (False, True)
    tests: bool = True  # run pytest -m gpu
    rounds: int = 10

    @classmethod
    def dry_run(cls) -> Plan:
        return cls(device="cpu", frames=27, batch=2, steps=2, data="synthetic:scale=smoke",
                   epochs=(("hummuss", "smoke"), ("motionbert", "smoke")),
                   compare=(("hummuss", "smoke"), ("motionbert", "smoke")), stream="smoke", window=27,
                   compile=(False,), tests=False, rounds=2)


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn: Callable[[], object], rounds: int, device: str, warmup: int = 2) -> list[float]:
    """Seconds per call of fn (synchronised on a GPU), `rounds` calls after `warmup`."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


# The test files holding tests marked `gpu` (tests/test_gpu.py checks that this is all of
# them). pytest -m gpu is given these alone: it imports every file it collects, and the
# rest of the tests need MLflow and Optuna, which a GPU machine's own image may lack
# (the check itself needs neither).
GPU_TEST_FILES = ("tests/test_gpu.py",)


def _gpu_tests(timeout: float) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
           *(str(ROOT / f) for f in GPU_TEST_FILES)]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return dict(ok=False, summary=f"timed out after {timeout:.0f} s")
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    return dict(ok=proc.returncode == 0, returncode=proc.returncode, summary=lines[-1] if lines else "")


def _epoch(plan: Plan, name: str, preset: str) -> dict:
    """One bf16 training epoch of `plan.steps` steps through `Trainer.train_epoch`."""
    import torch

    from suite.bench import training_step

    _, trainer = training_step(name, preset, plan.frames, plan.batch, device=plan.device, amp="bf16",
                               train_preset="motionbert", data=plan.data)
    trainer.config.max_steps_per_epoch = trainer.steps_per_epoch = plan.steps
    cuda = plan.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    metrics = trainer.train_epoch(trainer.model)
    _sync(plan.device)
    seconds = time.perf_counter() - t0
    return dict(model=f"{name}-{preset}", steps=trainer.step, batch=plan.batch, frames=plan.frames,
                epoch_s=seconds, s_per_step=seconds / max(1, trainer.step), amp=trainer.use_amp,
                peak_gb=torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan"),
                loss=metrics.get("train/loss"))


def _train_step(plan: Plan, name: str, preset: str, compile: bool) -> dict:
    from suite.bench import training_step

    step, _ = training_step(name, preset, plan.frames, plan.batch, device=plan.device, amp="bf16",
                            compile=compile, train_preset="motionbert", data=plan.data)
    t0 = time.perf_counter()
    step()  # the first step (compilation when compiling)
    _sync(plan.device)
    first = time.perf_counter() - t0
    median = statistics.median(_timed(step, plan.rounds, plan.device))
    return dict(model=f"{name}-{preset}", compiled=compile, batch=plan.batch, frames=plan.frames,
                first_step_s=first, step_ms=1e3 * median, clips_per_s=plan.batch / median)


def _stream(plan: Plan, compile: bool, context: int = 100, rounds: int = 200) -> dict:
    """HumMUSS per-frame latency at batch 1, after `context` frames; compile False, or
    the default `stream()` (compiled once AUTO_COMPILE_AFTER frames have streamed)."""
    import torch

    from hummuss.zoo import build_model
    from suite.bench import bench_input

    torch.manual_seed(0)
    model = build_model("hummuss", plan.stream, causal=True).to(plan.device).eval()
    x = bench_input(500).to(plan.device)
    s = model.stream(batch_size=1, compile=None if compile else False)
    t0 = time.perf_counter()
    for t in range(context):
        s.step(x[:, t])
    _sync(plan.device)
    warm = time.perf_counter() - t0
    frames = iter(range(context, 10**9))
    times = _timed(lambda: s.step(x[:, next(frames) % 500]), rounds, plan.device)
    return dict(model=f"hummuss-{plan.stream}", compiled=bool(s.compile), context=context,
                warmup_s=warm, step_ms=1e3 * statistics.median(times))


def _motionbert_stream(plan: Plan, rounds: int = 20) -> dict:
    import torch

    from hummuss.zoo import build_model
    from suite.bench import bench_input

    torch.manual_seed(0)
    lite = build_model("motionbert", plan.compare[1][1]).to(plan.device).eval()
    x = bench_input(plan.window + rounds + 8).to(plan.device)
    s = lite.stream(window=plan.window)
    s.prefill(x[:, :plan.window])
    frames = iter(range(plan.window, x.shape[1]))
    times = _timed(lambda: s.step(x[:, next(frames)]), rounds, plan.device, warmup=3)
    return dict(model=f"motionbert-{plan.compare[1][1]}", window=plan.window, step_ms=1e3 * statistics.median(times))


def _table(title: str, rows: list[dict] | None, columns: tuple[tuple[str, str], ...]) -> list[str]:
    """A markdown section: `## title`, then a table of `rows`, one line each, a cell per
    (header, format) column (the format applied to the row; a key the row lacks is blank);
    nothing without rows."""
    if not rows:
        return []
    lines = [f"## {title}", "", "| " + " | ".join(h for h, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [fmt.format_map(row) if next(Formatter().parse(fmt))[1] in row else "" for _, fmt in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def markdown(report: dict) -> str:
    """The figures of `report` as markdown tables."""
    frames = report.get("plan", {}).get("frames", 243)
    out = [f"# GPU check: {report['device']}", "",
           f"torch {report['torch']}, {report['seconds']:.0f} s in all.", ""]
    tests = report.get("tests")
    if tests:
        out += [f"Tests marked gpu: {'passed' if tests['ok'] else 'FAILED'} ({tests['summary']})", ""]
    out += _table(f"One bf16 training epoch at F = {frames}", report.get("epochs"), (
        ("model", "{model}"), ("steps", "{steps}"), ("batch", "{batch}"), ("s/step", "{s_per_step:.3f}"),
        ("peak (GB)", "{peak_gb:.1f}"), ("loss", "{loss:.4f}")))
    out += _table(f"Training step (bf16, F = {frames})", report.get("train_steps"), (
        ("model", "{model}"), ("compiled", "{compiled}"), ("step (ms)", "{step_ms:.1f}"),
        ("clips/s", "{clips_per_s:.1f}"), ("first step (s)", "{first_step_s:.1f}")))
    out += _table("Streaming, batch 1", report.get("stream"), (
        ("model", "{model}"), ("compiled", "{compiled}"), ("per frame (ms)", "{step_ms:.2f}")))
    for key, value in report.get("ratios", {}).items():
        out.append(f"- {key}: {value:.2f}")
    if report.get("skipped") or report.get("errors"):
        out += ["", "Skipped (over the budget): " + (", ".join(report.get("skipped", [])) or "none"),
                "", "Errors: " + ("; ".join(report.get("errors", [])) or "none")]
    return "\n".join(out) + "\n"


def run(out_dir: Path, budget: float, plan: Plan | None = None) -> dict:
    """Every part of `plan` (default: the GPU check) within `budget` seconds; writes
    gpu-check.json and gpu-check.md to out_dir and returns the report."""
    import torch

    plan = plan or Plan()
    start = time.perf_counter()
    device = torch.cuda.get_device_name(0) if plan.device.startswith("cuda") else f"{plan.device} (dry run)"
    report: dict = dict(device=device, torch=torch.__version__, budget_s=budget, plan=asdict(plan),
                        skipped=[], errors=[], epochs=[], train_steps=[], stream=[], ratios={})

    def save() -> None:
        """Write what has been measured so far: a part that overruns the command's time limit
        loses only itself."""
        report["ratios"] = _ratios(report, plan)
        report["seconds"] = time.perf_counter() - start
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "gpu-check.json").write_text(json.dumps(report, indent=2) + "\n")
        (out_dir / "gpu-check.md").write_text(markdown(report))

    def part(key: str, name: str, cost: float, fn: Callable[..., dict], *args) -> None:
        """fn(plan, *args) into report[key] (appended where it is a list) if `cost` more seconds
        fit the budget, then the report written; a failure is recorded, not raised."""
        if time.perf_counter() - start + cost > budget:
            report["skipped"].append(name)
            return
        try:
            result = fn(plan, *args)
            if isinstance(report.get(key), list):
                report[key].append(result)
            else:
                report[key] = result
        except Exception as err:  # one broken part must not hide the others' figures
            report["errors"].append(f"{name}: {type(err).__name__}: {err}")
        finally:
            print(f"gpu-check: {name} done at {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
            save()

    # the cheap parts first, torch.compile's (minutes of compiling each) last
    if plan.tests:
        part("tests", "gpu tests", 60, lambda _: _gpu_tests(timeout=min(240.0, budget / 2)))
    for name, preset in plan.epochs:
        part("epochs", f"epoch {name}-{preset}", 20, _epoch, name, preset)
    for compile in plan.compile:
        for name, preset in plan.compare:
            part("train_steps", f"train step {name}-{preset}{' compiled' if compile else ''}",
                 60 if compile else 15, _train_step, name, preset, compile)
        part("stream", f"stream{' default (compiled)' if compile else ' eager'}", 60 if compile else 15,
             _stream, compile)
        if not compile:
            part("stream", "motionbert stream", 15, _motionbert_stream)
    save()
    return report


def _ratios(report: dict, plan: Plan) -> dict:
    """HumMUSS over MotionBERT-Lite training-step time (eager, compiled) and MotionBERT-Lite's
    window re-run over each HumMUSS streaming step, from what `report` holds so far."""
    ratios = {}
    steps_ms = {(r["model"], r["compiled"]): r["step_ms"] for r in report["train_steps"]}
    (hn, hp), (mn, mp) = plan.compare
    for compile in plan.compile:
        h, m = steps_ms.get((f"{hn}-{hp}", compile)), steps_ms.get((f"{mn}-{mp}", compile))
        if h and m:
            ratios[f"train step {hn}-{hp} / {mn}-{mp}{' (compiled)' if compile else ''}"] = h / m
    mb = next((r for r in report["stream"] if r["model"] == f"{mn}-{mp}"), None)
    for r in report["stream"]:
        if mb and r is not mb:
            kind = "compiled" if r["compiled"] else "eager"
            ratios[f"stream {mb['model']} ({plan.window}-frame window) / {r['model']} {kind}"] = \
                mb["step_ms"] / r["step_ms"]
    return ratios


BUDGET_S = 450.0  # the default budget: the 8 minutes of the check, less its start and writing


def check(out: Path, budget: float = BUDGET_S, steps: int = Plan.steps) -> int:
    """`hummuss-suite gpu-check`: run every part where CUDA is present; without it, one line
    and exit 0. Exit 1 when a part failed or the gpu tests did not pass."""
    if not cuda_available():
        print("gpu-check: no CUDA GPU on this machine; nothing to check (exit 0)")
        return 0
    report = run(Path(out), budget, Plan(steps=steps))
    print(markdown(report))
    tests = report.get("tests") or {}
    return 0 if tests.get("ok", True) and not report["errors"] else 1

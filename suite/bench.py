"""`hummuss-suite bench`: the speed benchmarks of tests/benchmarks, and what they write.

    df = run_benchmarks("results")        # pytest-benchmark over tests/benchmarks
    # -> results/benchmarks.json (pytest-benchmark's JSON, figures in each extra_info)
    #    results/benchmarks.csv, results/benchmarks.md (the table and the target ratios)
    #    results/figures/fig7_latency.png (the report's figure 7)

The benchmarks put their figures in `extra_info` (see `record`): model, mode, frames (F,
the streaming context or the window), batch, latency_ms (median per call), fps,
peak_mb (allocations during one call, from the torch profiler's memory events),
macs_per_frame, gmacs (achieved multiply-accumulate rate) and matmul_fraction (gmacs over
this machine's measured fp32 matmul rate, `gemm_rate`). Reading that JSON belongs to the
report, which shows the same numbers (suite/report/speed.py: `benchmarks_table`, one row
per benchmark; `targets`, the ratios of issue 9 from one run; the latency figure): this
module imports them from there, never the other way round. The measuring helpers live
here so the benchmarks and this module agree on them.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from suite.report.speed import (
    BENCHMARKS_FILE,
    LATENCY_FIGURE,
    benchmarks_table,
    machine_text,
    plot_latency,
    targets,
    targets_markdown,
)

BENCH_DIR = Path(__file__).resolve().parents[1] / "tests" / "benchmarks"
QUICK_ENV = "HUMMUSS_BENCH_QUICK"  # "1": fewer sizes and rounds (a few minutes)


# -- measuring ------------------------------------------------------------------------------
def quick() -> bool:
    """True when the benchmarks run in quick mode (HUMMUSS_BENCH_QUICK=1)."""
    return os.environ.get(QUICK_ENV) == "1"


def bench_input(frames: int, batch: int = 1):
    """A reproducible input (batch, frames, 17, 3) for the benchmarks."""
    import torch

    return torch.randn(batch, frames, 17, 3, generator=torch.Generator().manual_seed(frames))


TRAIN_DATA = "synthetic:scale=smoke"  # generated clips for the training-step benchmarks


def alternate(steps: Sequence[Callable[[], object]], rounds: int, swap: bool = False) -> list[list[float]]:
    """Call `steps` one after the other for `rounds` rounds (the order reversed every other
    round if `swap`), so that whatever else the machine does weighs on all of them alike
    -> the seconds of each call, one list per step."""
    times: list[list[float]] = [[] for _ in steps]
    for r in range(rounds):
        order = range(len(steps)) if not swap or r % 2 == 0 else reversed(range(len(steps)))
        for i in order:
            t0 = time.perf_counter()
            steps[i]()
            times[i].append(time.perf_counter() - t0)
    return times


def training_step(name: str, preset: str, frames: int, batch: int, *, device: str = "cpu",
                  amp: str = "off", compile: bool = False, train_preset: str = "cpu", data: str = TRAIN_DATA,
                  **overrides):
    """A training step as the trainer takes it, for timing: -> (step, trainer).

    Builds `name`'s `preset` (with `overrides`) and a `hummuss.train.Trainer` over generated
    clips of `frames` frames (`data`, a data source spec), so the step runs with everything the trainer sets
    (on the CPU its allocator setting, `hummuss.allocator`; on CUDA bf16 autocast unless
    amp="off"), on real motion, with its loss, flips, clipping, AdamW and schedule.
    step() takes one `Trainer.train_step` on a fixed batch of `batch` clips and returns the
    loss (a tensor: reading it is the caller's choice). compile: the step's forward and
    backward through torch.compile of the model.
    """
    import tempfile

    import torch

    from hummuss.train import TrainConfig, Trainer
    from hummuss.zoo import build_model

    clips = _clips(data, frames)
    if len(clips) < batch:
        raise ValueError(f"{data} has {len(clips)} clips of {frames} frames, fewer than batch {batch}")
    torch.manual_seed(0)
    model = build_model(name, preset, **overrides)
    config = TrainConfig.preset(train_preset, batch_size=batch, device=device, amp=amp, num_workers=0,
                                max_val_clips=1)
    trainer = Trainer(model, clips, None, config, out_dir=tempfile.gettempdir(), log=lambda msg: None)
    net = torch.compile(trainer.model) if compile else trainer.model
    net.train()
    pick = torch.randperm(len(trainer.train_set), generator=torch.Generator().manual_seed(0))[:batch]
    x, y = trainer.train_set.inputs[pick], trainer.train_set.labels[pick]

    def step():
        return trainer.train_step(net, *trainer._batch(x, y))[0]

    return step, trainer


@functools.cache
def _clips(data: str, frames: int):
    from hummuss.data import open_source

    return open_source(data).clips("train", frames, max(1, frames // 9))


def gemm_rate(m: int = 1024, k: int = 1024, n: int = 1024, seconds: float = 0.5) -> float:
    """This machine's fp32 matrix-multiply rate in GMAC/s: (m, k) @ (k, n), median of runs."""
    import torch

    a, b = torch.randn(m, k), torch.randn(k, n)
    c = torch.empty(m, n)
    torch.mm(a, b, out=c)
    reps = max(1, int(2e8 // (m * k * n)))  # about 0.2 GMAC per timed call
    times, start = [], time.perf_counter()
    while len(times) < 5 or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b, out=c)
        times.append(time.perf_counter() - t0)
    times.sort()
    return m * k * n * reps / times[len(times) // 2] / 1e9


def peak_memory_mb(fn: Callable[[], object]) -> float:
    """Peak of the bytes allocated during fn() (torch profiler memory events), in MiB.

    Counts what fn allocates on top of what existed before (parameters, caches and inputs
    allocated earlier are not counted); run fn once before to fill the model's caches.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    total = peak = 0
    for _, nbytes in events:
        total += nbytes
        peak = max(peak, total)
    return peak / 2**20


def linear_macs_per_frame(model) -> int:
    """Multiply-accumulates of a model's Linear layers per frame (num_joints tokens).

    HumMUSS offline and in training: its matmul work (its `macs_per_frame` counts the
    streaming recurrence instead; the FFT and Toeplitz convolutions add about 1%).
    """
    import torch

    return model.config.num_joints * sum(m.in_features * m.out_features for m in model.modules()
                                         if isinstance(m, torch.nn.Linear))


def clear_caches(model) -> None:
    """Drop a model's evaluation-time caches (HumMUSS's kernels and operators), so that a
    measured call pays for, and counts the memory of, everything it uses."""
    from hummuss.ssm import ParamCache

    for module in model.modules():
        cache = getattr(module, "cache", None)
        if isinstance(cache, ParamCache):
            cache.clear()


def record(benchmark, *, model: str, mode: str, frames: int, frames_per_call: int, macs_per_frame: int,
           rate: float, batch: int = 1, **extra) -> dict:
    """Put the standard figures of a finished `benchmark.pedantic` into its extra_info.

    frames: the x value of the comparison (F, context or window); frames_per_call: output
    frames one timed call produces (batch included); rate: the measured matmul GMAC/s.
    """
    median = benchmark.stats.stats.median  # robust to a busy machine's outliers
    fps = frames_per_call / median
    gmacs = macs_per_frame * fps / 1e9
    info = dict(model=model, mode=mode, frames=frames, batch=batch, latency_ms=1e3 * median, fps=fps,
                macs_per_frame=int(macs_per_frame), gmacs=gmacs, matmul_gmacs=rate,
                matmul_fraction=gmacs / rate, **extra)
    benchmark.extra_info.update(info)
    return info


# -- the table ------------------------------------------------------------------------------
def markdown(df: pd.DataFrame, goals: pd.DataFrame, machine: str = "") -> str:
    """The table and the target ratios as markdown, after a line naming the machine
    (`machine_text`) where given."""
    def fmt(v, spec):
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)

    lines = ["| group | model | mode | frames | batch | latency (ms) | fps | peak (MB) | GMAC/frame | "
             "GMAC/s | of matmul rate |", "|" + "---|" * 11]
    for _, r in df.iterrows():
        macs = r["macs_per_frame"] / 1e9 if pd.notna(r["macs_per_frame"]) else None
        lines.append(f"| {r['group']} | {r['model']} | {r['mode']} | {fmt(r['frames'], '.0f')} | "
                     f"{fmt(r['batch'], '.0f')} | {fmt(r['latency_ms'], '.2f')} | {fmt(r['fps'], '.1f')} | "
                     f"{fmt(r['peak_mb'], '.1f')} | {fmt(macs, '.3f')} | {fmt(r['gmacs'], '.1f')} | "
                     f"{fmt(r['matmul_fraction'], '.1%')} |")
    head = [f"Measured on {machine}.", ""] if machine else []
    return "\n".join(head + lines + [""] + targets_markdown(goals)) + "\n"


# -- running --------------------------------------------------------------------------------
def run_benchmarks(out_dir: str | Path = "results", quick: bool = False, select: str | None = None
                   ) -> pd.DataFrame:
    """Run tests/benchmarks with pytest-benchmark; write the JSON, table and figure.

    quick: fewer sizes and rounds (context 1,000 instead of 10,000, F <= 243, no paper-size
    training); select: a pytest -k expression (e.g. "stream or compute"). Raises
    RuntimeError if a benchmark failed (after writing what was measured).
    """
    import pytest

    from suite.report.figures import FigureSkipped

    if not BENCH_DIR.is_dir():
        raise FileNotFoundError(f"benchmarks not found at {BENCH_DIR}; run from a source checkout")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / BENCHMARKS_FILE
    old = os.environ.get(QUICK_ENV)
    os.environ[QUICK_ENV] = "1" if quick else "0"
    try:
        code = pytest.main([str(BENCH_DIR), "--benchmark-only", f"--benchmark-json={json_path}",
                            "--benchmark-columns=median,rounds", "-q", "-p", "no:cacheprovider"]
                           + (["-k", select] if select else []))
    finally:
        if old is None:
            os.environ.pop(QUICK_ENV, None)
        else:
            os.environ[QUICK_ENV] = old
    if not json_path.is_file():
        raise RuntimeError(f"pytest-benchmark wrote no {json_path} (pytest exit code {int(code)})")
    bench = json.loads(json_path.read_text())
    df = benchmarks_table(bench)
    goals = targets(df)
    df.to_csv(out / "benchmarks.csv", index=False)
    (out / "benchmarks.md").write_text(markdown(df, goals, machine_text(bench)))
    try:
        plot_latency(bench, out / "figures" / LATENCY_FIGURE[0])
    except FigureSkipped:
        pass  # nothing streamed or offline was measured
    if int(code) != 0:
        raise RuntimeError(f"some benchmarks failed (pytest exit code {int(code)}); "
                           f"the others are in {json_path}")
    return df

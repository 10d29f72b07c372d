"""The speed results: pytest-benchmark JSON (what `hummuss-suite bench` writes) -> a table,
the target ratios (issues 9 and 21), and the latency figure (the report's figure 7).

The benchmarks put their figures in `extra_info` (see `suite.bench.record`): model, mode,
frames (F, the streaming context or the window), batch, latency_ms, fps, peak_mb,
macs_per_frame, gmacs and matmul_fraction. `benchmarks_table` turns the JSON into one row
per benchmark; `targets` computes the ratios from one run. suite/bench.py runs the
benchmarks and writes these; the report reads `<out>/benchmarks.json` with them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from suite.operations import operation_floor
from suite.report.stats import median_interval

BENCHMARKS_FILE = "benchmarks.json"  # `make bench` writes <out>/benchmarks.json
LATENCY_FIGURE = ("fig7_latency.png", "Latency against context length (benchmarks)")  # file, README title
STREAM_MODELS = {"hummuss-paper-causal": "eager", "hummuss-paper-causal, default": "default"}
# MotionBERT-Lite (243-frame window) / HumMUSS stream latency: the default `stream()` (the planned
# eager frame where the CPU kernels run every block, else compiled where a compiler exists) >= 120
# (issue 21), the eager step (`stream(compile=False)`) >= 100 (issue 9)
STREAM_GOALS = {"eager": 100, "default": 120}
FLATNESS_GOAL = 1.05  # the step at 10,000 frames of context / at 100 (issue 21: within 5%; issue 9 allowed 10%)
OFFLINE_GOALS = {243: 1.5, 2187: 2.0}  # HumMUSS / MotionBERT-Lite offline fps (issue 21: 1.5 at F = 243)
# training step time HumMUSS / MotionBERT(-Lite) at F = 243 (issue 21): (size, HumMUSS, MotionBERT)
TRAIN_PAIRS = [("cpu", "hummuss-cpu", "motionbert-cpu"), ("paper", "hummuss-paper-bidirectional", "motionbert-lite")]
TRAIN_GOAL = 0.75
COLUMNS = ["group", "name", "model", "mode", "frames", "batch", "latency_ms", "fps", "peak_mb",
           "macs_per_frame", "gmacs", "matmul_fraction", "rounds", "stddev_ms"]


# -- the table and the targets ---------------------------------------------------------------
def load_benchmarks(path: Path) -> tuple[dict | None, str]:
    """pytest-benchmark JSON from `path`, or (None, why it could not be read)."""
    if not path.is_file():
        return None, f"{path} not found (run `make bench`)"
    try:
        return json.loads(path.read_text()), ""
    except ValueError as err:
        return None, f"{path} is not pytest-benchmark JSON ({err})"


def benchmarks_table(bench: dict) -> pd.DataFrame:
    """pytest-benchmark JSON -> one row per benchmark (COLUMNS, then any other extra_info)."""
    rows = []
    for b in bench.get("benchmarks", []):
        info, stats = b.get("extra_info", {}), b.get("stats", {})
        row = {"group": b.get("group"), "name": b.get("name"), "rounds": stats.get("rounds"),
               "stddev_ms": 1e3 * stats["stddev"] if "stddev" in stats else math.nan}
        row.update(info)
        if "latency_ms" not in info and "median" in stats:
            row["latency_ms"] = 1e3 * stats["median"]
        rows.append(row)
    df = pd.DataFrame(rows)
    for col in COLUMNS:
        if col not in df:
            df[col] = math.nan
    return df[COLUMNS + [c for c in df.columns if c not in COLUMNS]]


def _pick(df: pd.DataFrame, **where) -> pd.Series | None:
    rows = df
    for key, value in where.items():
        rows = rows[rows[key] == value]
    return rows.iloc[0] if len(rows) else None


def _paired(row: pd.Series | None, unpaired: float | None) -> float | None:
    """The row's `paired_ratio` (the two measurements taken alternately in one loop) where its
    benchmark recorded one, else the ratio of two separately measured medians."""
    if row is not None and pd.notna(row.get("paired_ratio", math.nan)):
        return float(row["paired_ratio"])
    return unpaired


def _rounds_interval(row: pd.Series | None, key: str = "paired_ratios"):
    """The median of the row's per-round ratios (`key`, a list: the rounds of two measurements
    taken alternately, each round's ratio in the target's sense) and its 95% distribution-free
    interval (`median_interval`), or None where it recorded none."""
    ratios = None if row is None else row.get(key)
    if not isinstance(ratios, (list, tuple)) or not ratios:
        return None
    return median_interval(ratios)


def _floor_ms(row: pd.Series | None, rates: pd.Series | None, best_gmacs: float) -> float | None:
    """The operation floor (ms) of a benchmark that recorded its `operations`, at the rates of the
    "operation rates" benchmark and the fastest matmul rate of the run (its own or `best_gmacs`,
    the compute benchmarks': a lower rate would raise the floor); None where either is missing."""
    if row is None or rates is None or not isinstance(row.get("operations"), dict) \
            or not isinstance(rates.get("rates"), dict):
        return None
    gmacs = max(float(row["matmul_gmacs"]), best_gmacs)
    floor = operation_floor(row["operations"], rates["rates"], gmacs)
    return None if floor is None else 1e3 * floor["total"]


def _todays_names(df: pd.DataFrame) -> pd.DataFrame:
    """Benchmark files from before 9e0946a named the default `stream()` "compiled" (it compiled
    then: model "hummuss-paper-causal, compiled", `paired_*_compiled` in the window's row): the
    same stream under today's names, so that their targets still read."""
    old, new = "hummuss-paper-causal, compiled", "hummuss-paper-causal, default"
    if "model" not in df or not (df["model"] == old).any() or (df["model"] == new).any():
        return df
    df = df.copy()
    df.loc[df["model"] == old, "model"] = new
    renames = {c: c.replace("_compiled", "_default") for c in df.columns
               if c.startswith("paired_") and "_compiled" in c and c.replace("_compiled", "_default") not in df}
    return df.rename(columns=renames)


def targets(df: pd.DataFrame) -> pd.DataFrame:
    """The ratios of issues 9 and 21 from one run: target, goal, measured value, interval and
    met: True / False, None if not measured, and also None where the value has an interval
    (the per-round ratios of two measurements alternated: the training steps, the offline
    passes at F = 243, MotionBERT-Lite's window against the stream step, the stream step against
    the matmul rate) that straddles the goal; `verdict` says "yes",
    "no", "undecided" (or "" when not measured)."""
    df = _todays_names(df)
    out = []

    def add(name, goal, value, ok, iv=None):
        """ok(value): the goal met (None: a bound, no goal). With an interval iv, met where
        both its ends meet the goal, not met where neither does, undecided (None) between."""
        met = None if value is None or ok is None else bool(ok(value))
        interval = ""
        if iv is not None:
            ends = (ok(iv.low), ok(iv.high)) if iv.known else (False, True)
            met = ends[0] if ends[0] == ends[1] else None
            interval = f"{iv.low:.3g}-{iv.high:.3g} (median of {iv.n} rounds)" if iv.known else \
                f"none ({iv.n} rounds, fewer than 6)"
        verdict = "" if value is None or ok is None else ("yes" if met else "no" if met is False else "undecided")
        out.append(dict(target=name, goal=goal, value=value, interval=interval, met=met, verdict=verdict))

    def ratio(a, b, col):
        return None if a is None or b is None else float(a[col] / b[col])

    mb243 = _pick(df, model="motionbert-lite", mode="stream", frames=243)
    streams = {}
    for model, label in STREAM_MODELS.items():
        h100 = _pick(df, model=model, mode="stream", frames=100)
        rows = df[(df["model"] == model) & (df["mode"] == "stream")]
        longest = int(rows["frames"].max()) if len(rows) and rows["frames"].max() > 100 else 10_000
        h_long = _pick(df, model=model, mode="stream", frames=longest)
        streams[label] = h100
        goal = STREAM_GOALS[label]
        iv = _rounds_interval(mb243, f"paired_ratios_{label}")  # the window and the steps alternated
        add(f"stream latency MotionBERT-Lite (243-frame window) / HumMUSS ({label})", f">= {goal}",
            iv.estimate if iv else ratio(mb243, h100, "latency_ms"), lambda v, g=goal: v >= g, iv)
        flat = _paired(h_long, ratio(h_long, h100, "latency_ms"))
        add(f"HumMUSS ({label}) stream latency at {longest:,} / at 100 frames of context", f"<= {FLATNESS_GOAL}",
            flat, lambda v: v <= FLATNESS_GOAL)
    for frames, goal in OFFLINE_GOALS.items():
        h = _pick(df, model="hummuss-paper-bidirectional", mode="offline", frames=frames)
        m = _pick(df, model="motionbert-lite", mode="offline", frames=frames)
        iv = _rounds_interval(m)  # the two passes alternated (F = 243)
        add(f"offline fps HumMUSS / MotionBERT-Lite (one pass), F = {frames}", f">= {goal:g}",
            iv.estimate if iv else ratio(h, m, "fps"), lambda v, g=goal: v >= g, iv)
    h = _pick(df, model="hummuss-paper-bidirectional", mode="offline", frames=2187)
    m = _pick(df, model="motionbert-lite", mode="offline", frames=2187)
    add("offline peak memory HumMUSS / MotionBERT-Lite, F = 2187", "<= 0.5",
        ratio(h, m, "peak_mb"), lambda v: v <= 0.5)
    for size, hummuss, motionbert in TRAIN_PAIRS:
        h, m = _pick(df, model=hummuss, mode="train"), _pick(df, model=motionbert, mode="train")
        iv = _rounds_interval(m)
        add(f"training step time {hummuss} / {motionbert}, F = 243 ({size} size)", f"<= {TRAIN_GOAL}",
            iv.estimate if iv else _paired(m, ratio(h, m, "latency_ms")), lambda v: v <= TRAIN_GOAL, iv)
    for label, h100 in streams.items():
        iv = _rounds_interval(mb243, f"paired_fractions_{label}")  # the window's rounds, with the matmul
        add(f"HumMUSS ({label}) stream step: fraction of the measured matmul rate", ">= 0.40",
            iv.estimate if iv else None if h100 is None else float(h100["matmul_fraction"]),
            lambda v: v >= 0.40, iv)
    # what the hardware allows: the step's projections alone (as it runs them) plus one frame's
    # state traffic (the staggered update's share of the state rewritten, of its coefficients
    # read); no step can be faster than both
    proj = _pick(df, model="packed", mode="matmul, streaming step's projections")
    copy = _pick(df, mode="bandwidth")
    h100 = streams.get("default")
    bound = None if proj is None or copy is None else float(proj["latency_ms"] + copy["latency_ms"])
    add("HumMUSS stream step floor, ms: its projections alone + its state traffic", "(bound)", bound, None)
    overhead = _pick(df, mode="overhead")
    add("HumMUSS stream step fixed cost, ms: the same network at dim 16 (default)", "(bound)",
        None if overhead is None else float(overhead["latency_ms"]), None)

    def fraction_at(ms):  # the default step's MACs in `ms` milliseconds, over the matmul rate
        return None if ms is None or h100 is None else \
            float(h100["macs_per_frame"] / (ms * 1e-3) / 1e9 / h100["matmul_gmacs"])

    add("fraction of the measured matmul rate at that floor", "(bound)", fraction_at(bound), None)
    # the same step's memory traffic in one pass, as the step interleaves it: its weights read
    # and its state traffic block by block, where together they may outgrow the cache
    moved = _pick(df, mode="working set")
    memory = None if moved is None else float(moved["latency_ms"])
    add("HumMUSS stream step memory floor, ms: its weights read and its state traffic, block by block",
        "(bound)", memory, None)
    add("fraction of the measured matmul rate at that memory floor", "(bound)", fraction_at(memory), None)
    # what the hardware allows offline and in training: the matmuls, GELUs and FFTs a pass or
    # step ran (counted in its benchmark) at the rates measured for them (`suite.operations`)
    rates = _pick(df, mode="operation rates")
    matmuls = pd.to_numeric(df.loc[df["mode"] == "matmul", "gmacs"], errors="coerce").dropna()
    best = float(matmuls.max()) if len(matmuls) else 0.0
    h = _pick(df, model="hummuss-paper-bidirectional", mode="offline", frames=243)
    m = _pick(df, model="motionbert-lite", mode="offline", frames=243)
    floor = _floor_ms(h, rates, best)
    add("HumMUSS offline floor at F = 243, ms: its matmuls, GELUs and FFTs at their measured rates", "(bound)",
        floor, None)
    add("offline fps HumMUSS / MotionBERT-Lite at that floor, F = 243: the most this machine allows", "(bound)",
        None if floor is None or m is None else float(m["latency_ms"]) / floor, None)
    lite_floor = _floor_ms(m, rates, best)
    add("offline fps HumMUSS / MotionBERT-Lite with both at their floors, F = 243", "(bound)",
        None if floor is None or lite_floor is None else lite_floor / floor, None)
    for size, hummuss, motionbert in TRAIN_PAIRS:
        h, m = _pick(df, model=hummuss, mode="train"), _pick(df, model=motionbert, mode="train")
        floor = _floor_ms(h, rates, best)
        add(f"{hummuss} training step floor, ms ({size} size): its matmuls, GELUs and FFTs at their measured "
            "rates", "(bound)", floor, None)
        own = None if m is None else float(m["latency_ms"] if pd.isna(m.get("paired_own_ms", math.nan))
                                           else m["paired_own_ms"])  # MotionBERT's step in the alternated rounds
        add(f"training step time at that floor / {motionbert}'s, F = 243 ({size} size): the least this machine "
            "allows", "(bound)", None if floor is None or own is None else floor / own, None)
    return pd.DataFrame(out, columns=["target", "goal", "value", "interval", "met", "verdict"])


def targets_markdown(goals: pd.DataFrame) -> list[str]:
    """The lines of a markdown table of `targets`: target, goal, measured, its 95% interval
    (where it has one), met (yes / no / undecided)."""
    lines = ["| target | goal | measured | 95% interval | met |", "|---|---|---|---|---|"]
    for _, g in goals.iterrows():
        value = "" if g["value"] is None or pd.isna(g["value"]) else format(g["value"], ".3g")
        lines.append(f"| {g['target']} | {g['goal']} | {value} | {g['interval']} | {g['verdict']} |")
    return lines


def machine_text(bench: dict) -> str:
    """One line naming where a pytest-benchmark JSON was measured: the CPU (its brand, vendor,
    family and model, as a VM reports them), cores, caches (per core, from sysfs), torch with the vector
    instructions and threads it used, the GPU, the code MKL ran, glibc's tunables, the commit and the time;
    what the JSON does not hold is left out. Every figure and ratio of a run depends on these
    (the same commit measured 0.743 on one 2-core CPU and 0.881 on another)."""
    info = bench.get("machine_info") or {}
    cpu, tch, commit = info.get("cpu") or {}, info.get("torch") or {}, bench.get("commit_info") or {}
    ident = ", ".join(part for part in (
        cpu.get("vendor_id_raw"),
        f"family {cpu['family']} model {cpu['model']}" if "family" in cpu and "model" in cpu else None) if part)
    parts = [" ".join(part for part in (cpu.get("brand_raw") or "an unnamed CPU", f"({ident})" if ident else "") if part)]
    if cpu.get("count"):
        parts[0] += f", {cpu['count']} cores" + (f" at {cpu['hz_advertised_friendly']}"
                                                 if cpu.get("hz_advertised_friendly") else "")
    caches = [f"{level} {_mib(size)}" for level, size in (info.get("caches") or {}).items()
              if level in ("L2", "L3") and isinstance(size, int) and size > 0]  # from sysfs (conftest.py)
    if caches:
        parts[0] += ", " + ", ".join(caches)
    if tch.get("version"):
        used = ", ".join(part for part in (tch.get("cpu_capability"),
                                           f"{tch['threads']} threads" if tch.get("threads") else None) if part)
        parts.append(f"torch {tch['version']}" + (f" ({used})" if used else ""))
    if tch.get("cuda_device"):
        parts.append(f"GPU {tch['cuda_device']}")
    if tch.get("mkl"):
        parts.append(tch["mkl"])
    if tch.get("glibc_tunables"):
        parts.append(f"GLIBC_TUNABLES={tch['glibc_tunables']}")
    if commit.get("id"):
        parts.append(f"commit {commit['id'][:7]}" + (" with changes in its working tree" if commit.get("dirty") else ""))
    if bench.get("datetime"):
        parts.append(str(bench["datetime"])[:16].replace("T", " ") + " UTC")
    return "; ".join(parts)


def _mib(n: int) -> str:
    return f"{n / 2**20:g} MiB" if n >= 2**20 else f"{n / 2**10:g} KiB"


# -- the latency figure -------------------------------------------------------------------------
def latency_points(bench: dict) -> pd.DataFrame:
    """pytest-benchmark JSON -> model, mode, frames, latency_ms, fps (from `benchmarks_table`).

    frames is the benchmark's x value: the context of a stream, the window MotionBERT re-runs
    per frame (extra_info "window"), or the sequence length F offline; benchmarks without one
    are left out. A benchmark without a model is named by its group.
    """
    table = benchmarks_table(bench)
    if "window" in table:
        table["frames"] = table["frames"].fillna(table["window"])
    table = table.dropna(subset=["frames"]).reset_index(drop=True)
    table["model"] = table["model"].fillna(table["group"]).fillna("?").astype(str)
    table["mode"] = table["mode"].fillna("").astype(str)
    columns = ["model", "mode", "frames", "latency_ms", "fps"]
    return table[columns].astype({"frames": float, "latency_ms": float, "fps": float})


def _log_axes(ax, frames: pd.Series, xlabel: str, ylabel: str) -> None:
    from matplotlib.ticker import NullLocator

    ax.set_xscale("log")
    ax.set_yscale("log")
    ticks = []
    for t in sorted(frames.unique()):  # one label per value, but none crowding the last one
        if not ticks or t >= 1.4 * ticks[-1]:
            ticks.append(t)
    ax.set_xticks(ticks, [f"{t:,.0f}" for t in ticks])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)


def plot_latency(bench: dict, path: Path) -> Path:
    """Left: streaming latency per frame against context (HumMUSS steps its state, MotionBERT
    re-runs its window). Right: offline frames per second against sequence length F."""
    from suite.report.figures import COLORS, FigureSkipped, figure, save

    points = latency_points(bench)
    stream = points[points["mode"] == "stream"]
    offline = points[points["mode"].str.startswith("offline")].dropna(subset=["fps"])
    if not len(stream) and not len(offline):
        raise FigureSkipped("the benchmark results carry no streaming or offline entries")
    fig = figure((12, 4.6), left=0.06, right=0.98, bottom=0.12, top=0.86, wspace=0.22)
    left, right = fig.subplots(1, 2)
    for i, (model, part) in enumerate(stream.groupby("model", sort=True)):
        part = part.sort_values("frames")
        how = "re-runs the last `window` frames" if model.startswith("motionbert") else "steps its state"
        left.plot(part["frames"], part["latency_ms"], marker="o", color=COLORS[i % len(COLORS)],
                  label=f"{model} ({how})")
    if len(stream):
        _log_axes(left, stream["frames"], "context (frames seen, or window re-run)",
                  "latency per frame (ms, median, batch 1)")
    left.set_title("Streaming, frame by frame")
    for i, ((model, mode), part) in enumerate(offline.groupby(["model", "mode"], sort=True)):
        part = part.sort_values("frames")
        right.plot(part["frames"], part["fps"], marker="o", color=COLORS[i % len(COLORS)],
                   label=f"{model}, {mode}")
    if len(offline):
        _log_axes(right, offline["frames"], "sequence length F (frames)", "frames per second (batch 1)")
    right.set_title("Offline, whole sequence")
    cpu = bench.get("machine_info", {}).get("cpu", {}).get("brand_raw", "CPU")
    fig.suptitle(f"Speed against context length ({cpu})")
    return save(fig, path)



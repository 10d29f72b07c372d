"""The report's figures: matplotlib (Agg, no pyplot state), one PNG each.

Every function takes what suite/report.py read from MLflow (a study's table frame: one
row per cell with row, row_label, column, column_label, n, mean, std, paper, values; or
per-epoch histories; or pytest-benchmark JSON) and writes one PNG with a title, axis
units and a legend. A figure without data raises `FigureSkipped` with the reason.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator, NullLocator  # noqa: E402

from hummuss.data.skeleton import H36M_BONES  # noqa: E402

DPI = 100
COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:gray")
GT_COLOR, PRED_COLOR = "tab:green", "tab:red"


class FigureSkipped(Exception):
    """A figure cannot be drawn (its data is absent); the message says why."""


def _figure(size: tuple[float, float], **margins) -> Figure:
    """A figure with fixed margins (fractions of the figure; cheaper than a layout engine)."""
    fig = Figure(figsize=size)
    fig.subplots_adjust(**margins)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def _values(cell: pd.Series) -> np.ndarray:
    """The per-seed values of a table cell."""
    text = cell["values"]
    return np.array([float(v) for v in str(text).split(";")]) if isinstance(text, str) and text else np.array([])


def _line(ax, frame: pd.DataFrame, row: str, xs: dict[str, float], label: str, color: str, **kw) -> bool:
    """Our mean +- std of one table row against x; False when the row has no data."""
    cells = frame[(frame["row"] == row) & frame["column"].isin(list(xs)) & (frame["n"] > 0)]
    if not len(cells):
        return False
    x = np.array([xs[c] for c in cells["column"]])
    order = np.argsort(x)
    y, err = cells["mean"].to_numpy()[order], np.nan_to_num(cells["std"].to_numpy()[order])
    ax.errorbar(x[order], y, yerr=err, marker="o", capsize=3, label=label, color=color, **kw)
    return True


def _missing_mark(ax, x: float) -> None:
    """'—' at the foot of a bar that has no finished run."""
    ax.text(x, 0.03, "—\nno run", ha="center", va="bottom", fontsize=7, color="gray",
            transform=ax.get_xaxis_transform())


def _no_data(ax, text: str = "no finished runs") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")


# -- figure 1: context length ------------------------------------------------------------------
def _frames_of(column: str) -> float | None:
    m = re.fullmatch(r"F_(\d+)", column)
    return float(m.group(1)) if m else None


def plot_context_length(frame: pd.DataFrame, study, subtitle: str, path: Path) -> Path:
    """MPJPE against the test window length: ours per row, and the change relative to the
    training length, ours beside the paper's."""
    xs = {c: _frames_of(c) for c, _ in study.table.columns if _frames_of(c) is not None}
    if not xs:
        raise FigureSkipped("the context-length table has no F_<n> columns")
    fig = _figure((11, 4.4), left=0.06, right=0.98, bottom=0.12, top=0.85, wspace=0.2)
    left, right = fig.subplots(1, 2)
    first = min(xs, key=xs.get)
    for i, (row, label) in enumerate(study.table.rows):
        color = COLORS[i % len(COLORS)]
        _line(left, frame, row, xs, label, color)
        base = frame[(frame["row"] == row) & (frame["column"] == first)].iloc[0]
        if base["n"] > 0:
            rel = frame[(frame["row"] == row) & frame["column"].isin(list(xs)) & (frame["n"] > 0)]
            x = np.array([xs[c] for c in rel["column"]])
            order = np.argsort(x)
            right.plot(x[order], (rel["mean"].to_numpy()[order] / base["mean"] - 1) * 100, marker="o",
                       color=color, label=f"{label} (ours)")
        paper = {c: study.paper.numbers[(row, c)] for c in xs if (row, c) in study.paper.numbers}
        if first in paper:
            x = np.array(sorted(xs[c] for c in paper))
            y = [(paper[c] / paper[first] - 1) * 100 for c in sorted(paper, key=xs.get)]
            right.plot(x, y, marker="s", linestyle="--", mfc="none", color=color, label=f"{label} (paper)")
    for ax in (left, right):
        ax.set_xscale("log", base=3)
        ax.set_xticks(sorted(xs.values()), [f"{int(v)}" for v in sorted(xs.values())])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("test window length F (frames)")
        ax.grid(alpha=0.3)
    left.set_ylabel("MPJPE (mm)")
    left.set_title("Ours: MPJPE against test length")
    right.axhline(0, color="black", linewidth=0.8)
    right.set_ylabel(f"MPJPE change from F={int(xs[first])} (%)")
    right.set_title("Relative to the training length: ours and the paper's")
    for ax in (left, right):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        else:
            _no_data(ax)
    fig.suptitle(f"Trained on F={int(xs[first])}, tested on longer windows ({subtitle})")
    return _save(fig, path)


# -- figure 2: frame rate --------------------------------------------------------------------------
def _rate_of(column: str) -> float | None:
    """x1 -> 1, x<k> (subsampled) -> 1/k, up<k> -> k."""
    if m := re.fullmatch(r"x(\d+)", column):
        return 1.0 / float(m.group(1))
    if m := re.fullmatch(r"up(\d+)", column):
        return float(m.group(1))
    return None


def _drop_of(column: str) -> float | None:
    if column == "x1":
        return 0.0
    m = re.fullmatch(r"drop_([\d.]+)", column)
    return 100 * float(m.group(1)) if m else None


def plot_frame_rate(frame: pd.DataFrame, subtitle: str, path: Path) -> Path:
    """MPJPE against the frame-rate factor (and against dropped frames) per row."""
    columns = list(dict.fromkeys(frame["column"]))
    rates = {c: _rate_of(c) for c in columns if _rate_of(c) is not None}
    drops = {c: _drop_of(c) for c in columns if _drop_of(c) is not None}
    fig = _figure((11, 4.4), left=0.06, right=0.98, bottom=0.13, top=0.85, wspace=0.2)
    left, right = fig.subplots(1, 2)
    rows = list(dict.fromkeys(zip(frame["row"], frame["row_label"])))
    styles = {0: "-", 1: "--", 2: "-."}
    for i, (row, label) in enumerate(rows):
        kw = dict(label=label, color=COLORS[i % len(COLORS)], linestyle=styles.get(i, "-"))
        _line(left, frame, row, rates, **kw)
        if len(drops) > 1:
            _line(right, frame, row, drops, **kw)
    left.set_xscale("log", base=2)
    ticks = sorted(rates.values())
    left.set_xticks(ticks, [f"×{v:g}" if v >= 1 else f"×1/{1 / v:g}" for v in ticks])
    left.set_xlabel("frame rate relative to training (×1/8 = subsampled 8 times)")
    left.set_title("Sub- and up-sampled input")
    right.set_xlabel("frames dropped at random (%)")
    right.set_title("Dropped frames")
    for ax in (left, right):
        ax.set_ylabel("MPJPE (mm)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        else:
            _no_data(ax)
    fig.suptitle(f"Frame-rate robustness: HumMUSS with and without the step rescaled, MotionBERT ({subtitle})")
    return _save(fig, path)


# -- figures 4 and 5: bars ---------------------------------------------------------------------------
def _grouped_bars(ax, frame: pd.DataFrame, study, which: str) -> bool:
    """Groups = table rows, bars = table columns; `which` is 'ours' or 'paper'."""
    rows, cols = study.table.rows, study.table.columns
    width = 0.8 / max(1, len(cols))
    drawn = False
    for j, (col, col_label) in enumerate(cols):
        xs, ys, errs = [], [], []
        for i, (row, _) in enumerate(rows):
            cell = frame[(frame["row"] == row) & (frame["column"] == col)].iloc[0]
            x = i + (j - (len(cols) - 1) / 2) * width
            if which == "paper":
                value = study.paper.numbers.get((row, col))
                if value is not None:
                    xs.append(x), ys.append(value), errs.append(0.0)
            elif cell["n"] > 0:
                xs.append(x), ys.append(cell["mean"]), errs.append(np.nan_to_num(cell["std"]))
                seeds = _values(cell)
                ax.scatter(np.full(len(seeds), x), seeds, s=10, color="black", zorder=3)
            else:
                _missing_mark(ax, x)
        if xs:
            ax.bar(xs, ys, width=width * 0.95, yerr=errs if which == "ours" else None, capsize=3,
                   label=col_label, color=COLORS[j % len(COLORS)])
            drawn = True
    ax.set_xticks(range(len(rows)), [label for _, label in rows], fontsize=8)
    ax.set_ylabel("MPJPE (mm)")
    ax.grid(axis="y", alpha=0.3)
    if drawn:
        values = [b.get_height() for b in ax.patches]
        low, high = min(values), max(values)
        pad = max(0.5, 0.25 * (high - low))
        ax.set_ylim(max(0.0, low - pad), high + pad)  # bars start near the smallest value: differences show
        ax.legend(fontsize=8)
    return drawn


def plot_aggregation(items: dict, path: Path) -> Path:
    """Tables 2 and 3 as grouped bars: ours (top) and the paper's (bottom), causal and
    bidirectional side by side. items: study name -> (frame, study, subtitle)."""
    if not items:
        raise FigureSkipped("neither aggregation study is in this report")
    fig = _figure((6 * len(items), 8), left=0.07, right=0.98, bottom=0.05, top=0.89, hspace=0.4, wspace=0.2)
    axes = np.asarray(fig.subplots(2, len(items), squeeze=False))
    for k, (name, (frame, study, subtitle)) in enumerate(items.items()):
        if not _grouped_bars(axes[0, k], frame, study, "ours"):
            _no_data(axes[0, k])
        axes[0, k].set_title(f"{name}: ours\n({subtitle})", fontsize=10)
        if not _grouped_bars(axes[1, k], frame, study, "paper"):
            _no_data(axes[1, k], "no paper numbers")
        axes[1, k].set_title(f"{name}: paper\n({study.paper.table})", fontsize=10)
    fig.suptitle("Aggregation ablations: lower is better (dots: seeds, bars: mean ± std)")
    return _save(fig, path)


def plot_init_schemes(frame: pd.DataFrame, subtitle: str, path: Path) -> Path:
    """One bar per initialisation scheme (mean ± std over seeds, seeds as dots)."""
    fig = _figure((7.5, 4.6), left=0.1, right=0.98, bottom=0.08, top=0.88)
    ax = fig.subplots()
    done = frame[frame["n"] > 0]
    labels = list(frame["row_label"])
    for i, cell in enumerate(frame.itertuples()):
        if cell.n > 0:
            ax.bar(i, cell.mean, yerr=np.nan_to_num(cell.std), capsize=4, color=COLORS[i % len(COLORS)],
                   label=f"{cell.row_label} (n={cell.n})")
            seeds = _values(frame.iloc[i])
            ax.scatter(np.full(len(seeds), i), seeds, s=12, color="black", zorder=3)
        else:
            _missing_mark(ax, i)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel("MPJPE (mm)")
    ax.grid(axis="y", alpha=0.3)
    if len(done):
        low, high = done["mean"].min(), done["mean"].max()
        pad = max(0.5, 0.5 * (high - low), float(np.nan_to_num(done["std"]).max()) * 1.5)
        ax.set_ylim(max(0.0, low - pad), high + pad)
        ax.legend(fontsize=8)
    else:
        _no_data(ax)
    ax.set_title(f"DSSM initialisation schemes; paper: all similar, no numbers\n({subtitle})", fontsize=10)
    return _save(fig, path)


# -- figure 6: training curves -------------------------------------------------------------------
def plot_training_curves(history: pd.DataFrame, labels: dict[str, str], study: str, subtitle: str,
                         path: Path) -> Path:
    """Validation MPJPE and training loss per epoch; per variant the mean over seeds
    (line) and the range over seeds (band)."""
    if not len(history):
        raise FigureSkipped(f"the runs of {study} logged no per-epoch metrics")
    fig = _figure((11, 4.2), left=0.07, right=0.98, bottom=0.12, top=0.88, wspace=0.22)
    axes = fig.subplots(1, 2)
    for ax, (key, ylabel) in zip(axes, (("val/mpjpe", "validation MPJPE (mm)"), ("train/loss", "training loss"))):
        part = history[history["key"] == key]
        variants = [v for v in labels if v in set(part["variant"])]
        variants += [v for v in dict.fromkeys(part["variant"]) if v not in labels]
        for i, variant in enumerate(variants):
            per_step = part[part["variant"] == variant].groupby("step")["value"]
            mean, low, high = per_step.mean(), per_step.min(), per_step.max()
            color = COLORS[i % len(COLORS)]
            n = part.loc[part["variant"] == variant, "seed"].nunique()
            ax.plot(mean.index, mean.to_numpy(), color=color, marker="o" if len(mean) < 12 else None,
                    markersize=3, label=f"{labels.get(variant, variant)} (n={n})")
            if n > 1:
                ax.fill_between(mean.index, low.to_numpy(), high.to_numpy(), color=color, alpha=0.2)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        else:
            _no_data(ax, f"no {key} logged")
    fig.suptitle(f"Training curves: {study} ({subtitle}; band: range over seeds)")
    return _save(fig, path)


# -- figure 7: latency -------------------------------------------------------------------------------
def latency_points(bench: dict) -> pd.DataFrame:
    """pytest-benchmark JSON -> model, mode, frames, latency_ms, fps (`suite.bench.benchmarks_table`).

    frames is the benchmark's x value: the context of a stream, the window MotionBERT re-runs
    per frame (extra_info "window"), or the sequence length F offline; benchmarks without one
    are left out. A benchmark without a model is named by its group.
    """
    from suite.bench import benchmarks_table

    table = benchmarks_table(bench)
    if "window" in table:
        table["frames"] = table["frames"].fillna(table["window"])
    table = table.dropna(subset=["frames"]).reset_index(drop=True)
    table["model"] = table["model"].fillna(table["group"]).fillna("?").astype(str)
    table["mode"] = table["mode"].fillna("").astype(str)
    columns = ["model", "mode", "frames", "latency_ms", "fps"]
    return table[columns].astype({"frames": float, "latency_ms": float, "fps": float})


def _log_axes(ax, frames: pd.Series, xlabel: str, ylabel: str) -> None:
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
    points = latency_points(bench)
    stream = points[points["mode"] == "stream"]
    offline = points[points["mode"].str.startswith("offline")].dropna(subset=["fps"])
    if not len(stream) and not len(offline):
        raise FigureSkipped("the benchmark results carry no streaming or offline entries")
    fig = _figure((12, 4.6), left=0.06, right=0.98, bottom=0.12, top=0.86, wspace=0.22)
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
    return _save(fig, path)


# -- figure 3: skeletons ---------------------------------------------------------------------------
def predict_subsampled(model, spec, factor: int = 8):
    """The first test sequence of the run's data source subsampled `factor` times, and the
    model's prediction (a continuous-time model is told the step: dt_scale = factor).
    Returns (ground truth, prediction), each (T, 17, 3) root-relative in mm."""
    from hummuss.data import open_source
    from hummuss.evaluate import predict_sequences, to_mm

    seqs = open_source(spec.data).sequences("test", rate=1.0 / factor)
    if not seqs:
        raise FigureSkipped(f"data source {spec.data!r} has no test sequences")
    seq = seqs[0]
    window = int(spec.eval_config.get("rate_length", spec.frames))
    pred = predict_sequences(model, [seq], window, flip=bool(spec.eval_config.get("flip", True)),
                             batch_size=8, dt_scale=float(factor))[0]
    mmpu = seq.extras["mm_per_unit"]
    return to_mm(seq.labels, mmpu), to_mm(pred, mmpu)


def _draw_pose(ax, pose: np.ndarray, color: str, label: str) -> None:
    """pose (17, 3): x right, y down, z depth -> plotted with y up."""
    for k, (a, b) in enumerate(H36M_BONES):
        ax.plot([pose[a, 0], pose[b, 0]], [pose[a, 2], pose[b, 2]], [-pose[a, 1], -pose[b, 1]],
                color=color, linewidth=2, label=label if k == 0 else None)


def plot_skeletons(models: list, subtitle: str, path: Path, factor: int = 8, frames: int = 4) -> Path:
    """Rows: models; columns: frames of one test sequence subsampled `factor` times;
    ground truth green, prediction red. models: (label, model, spec) triples."""
    results = [(label, *predict_subsampled(model, spec, factor)) for label, model, spec in models]
    length = min(len(gt) for _, gt, _ in results)
    picks = np.unique(np.linspace(0, length - 1, min(frames, length)).round().astype(int))
    fig = _figure((3.0 * len(picks), 3.2 * len(results)), left=0.0, right=1.0, bottom=0.02, top=0.86,
                  wspace=0.05, hspace=0.2)
    reach = max(float(np.abs(gt).max()) for _, gt, _ in results)
    for r, (label, gt, pred) in enumerate(results):
        for c, t in enumerate(picks):
            ax = fig.add_subplot(len(results), len(picks), r * len(picks) + c + 1, projection="3d")
            _draw_pose(ax, gt[t], GT_COLOR, "ground truth")
            _draw_pose(ax, pred[t], PRED_COLOR, "prediction")
            for set_lim in (ax.set_xlim, ax.set_ylim, ax.set_zlim):
                set_lim(-reach, reach)
            ax.set_xticklabels([]), ax.set_yticklabels([]), ax.set_zticklabels([])
            ax.view_init(elev=12, azim=-70)
            ax.set_box_aspect((1, 1, 1), zoom=1.25)
            ax.set_title(f"{label}\nframe {t} of {length} (×{factor} subsampled)", fontsize=8)
            if r == 0 and c == 0:
                ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"One test sequence subsampled ×{factor}: ground truth (green), prediction (red); "
                 f"HumMUSS told the step (dt_scale={factor}) ({subtitle}; root-relative, mm)", fontsize=9)
    return _save(fig, path)

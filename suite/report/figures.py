"""The report's plotting helpers: matplotlib (Agg, no pyplot state), one PNG per figure.

A study's figures (`Study.figures`, drawn in its own file) and the report's own (training
curves here, latency in suite/report/speed.py) are built from these: a figure with fixed
margins, saving, a table row as a line with error bars, grouped bars of a table, a pose.
They read a study's table frame (one row per cell with kind, row, row_label, column,
column_label, n, mean, std, ci_low, ci_high, paper, values; kind "floor" for the floors) or
per-epoch histories. Every figure of MPJPE draws the floors (`floor_lines`): the mean pose
and the linear lift as labelled horizontal lines where their runs exist. A figure without
data raises `FigureSkipped` with the reason.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from hummuss.data.skeleton import H36M_BONES  # noqa: E402
from suite.report.agg import attach  # noqa: E402
from suite.report.tables import FLOORS, floor_values, model_rows, table_cell  # noqa: E402
from suite.report.unchanged import png_metadata  # noqa: E402
from suite.tracking import TRAIN_LOSS, VAL_MPJPE  # noqa: E402

DPI = 100
PNG_COMPRESSION = 3  # zlib level: PIL's default 6 took 1.5x as long on the report's figures for 3% less size
COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:gray")
GT_COLOR, PRED_COLOR = "tab:green", "tab:red"
FLOOR_STYLES = {"mean-pose": dict(color="black", linestyle=":"), "linear-lift": dict(color="dimgray", linestyle="--")}


class FigureSkipped(Exception):
    """A figure cannot be drawn (its data is absent); the message says why."""


def figure(size: tuple[float, float], **margins) -> Figure:
    """A figure with fixed margins (fractions of the figure; cheaper than a layout engine),
    drawn with the report's text cache (suite/report/agg.py)."""
    fig = Figure(figsize=size)
    attach(fig)
    fig.subplots_adjust(**margins)
    return fig


def save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, metadata=png_metadata(), pil_kwargs={"compress_level": PNG_COMPRESSION})
    return path


def values(cell: pd.Series) -> np.ndarray:
    """The per-seed values of a table cell."""
    text = cell["values"]
    return np.array([float(v) for v in str(text).split(";")]) if isinstance(text, str) and text else np.array([])


def line(ax, frame: pd.DataFrame, row: str, xs: dict[str, float], label: str, color: str, **kw) -> bool:
    """Our mean +- std of one table row against x (column -> x); False when the row has no data."""
    frame = model_rows(frame)
    cells = frame[(frame["row"] == row) & frame["column"].isin(list(xs)) & (frame["n"] > 0)]
    if not len(cells):
        return False
    x = np.array([xs[c] for c in cells["column"]])
    order = np.argsort(x)
    y, err = cells["mean"].to_numpy()[order], np.nan_to_num(cells["std"].to_numpy()[order])
    ax.errorbar(x[order], y, yerr=err, marker="o", capsize=3, label=label, color=color, **kw)
    return True


def missing_mark(ax, x: float) -> None:
    """'—' at the foot of a bar that has no finished run."""
    ax.text(x, 0.03, "—\nno run", ha="center", va="bottom", fontsize=7, color="gray",
            transform=ax.get_xaxis_transform())


def no_data(ax, text: str = "no finished runs") -> None:
    """Grey text in the middle of an empty panel."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")


def grouped_bars(ax, frame: pd.DataFrame, study, which: str) -> bool:
    """Groups = table rows, bars = table columns; `which` is 'ours' (mean +- std, seeds as dots,
    '—' where a cell has no run, the floors as lines) or 'paper'. False when nothing was drawn."""
    rows, cols = study.table.rows, study.table.columns
    width = 0.8 / max(1, len(cols))
    drawn = False
    for j, (col, col_label) in enumerate(cols):
        xs, ys, errs = [], [], []
        for i, (row, _) in enumerate(rows):
            cell = table_cell(frame, row, col)
            x = i + (j - (len(cols) - 1) / 2) * width
            if which == "paper":
                value = study.paper.numbers.get((row, col))
                if value is not None:
                    xs.append(x), ys.append(value), errs.append(0.0)
            elif cell["n"] > 0:
                xs.append(x), ys.append(cell["mean"]), errs.append(np.nan_to_num(cell["std"]))
                seeds = values(cell)
                ax.scatter(np.full(len(seeds), x), seeds, s=10, color="black", zorder=3)
            else:
                missing_mark(ax, x)
        if xs:
            ax.bar(xs, ys, width=width * 0.95, yerr=errs if which == "ours" else None, capsize=3,
                   label=col_label, color=COLORS[j % len(COLORS)])
            drawn = True
    ax.set_xticks(range(len(rows)), [label for _, label in rows], fontsize=8)
    ax.set_ylabel("MPJPE (mm)")
    ax.grid(axis="y", alpha=0.3)
    if drawn:
        heights = [b.get_height() for b in ax.patches]
        low, high = min(heights), max(heights)
        pad = max(0.5, 0.25 * (high - low))
        ax.set_ylim(max(0.0, low - pad), high + pad)  # bars start near the smallest value: differences show
        if which == "ours":
            floor_lines(ax, table_floors(frame))
        ax.legend(fontsize=8)
    return drawn


def table_floors(frame: pd.DataFrame, columns=None) -> dict[str, dict[str, float]]:
    """floor -> {column: value} of a table frame (only `columns` when given; floors without a
    value left out)."""
    out = {}
    for name, _ in FLOORS:
        values = {c: v for c, v in floor_values(frame, name).items() if columns is None or c in columns}
        if values:
            out[name] = values
    return out


def floor_lines(ax, floors: dict[str, dict[str, float] | float], xs: dict[str, float] | None = None) -> int:
    """The floors as labelled lines on an MPJPE axis: horizontal at one value, or through the
    per-column values at `xs` (column -> x) where they differ. Call it after the data (and
    before the legend): a floor far above the data's range is named in the legend with an
    arrow and its value instead of stretching the axis. Returns how many floors were shown."""
    lo, hi = ax.get_ylim()
    reach = hi + max(2 * (hi - lo), 0.25 * abs(hi))
    new_lo, new_hi, shown = lo, hi, 0
    labels = dict(FLOORS)
    for name, per_column in floors.items():
        values = per_column if isinstance(per_column, dict) else {None: float(per_column)}
        if xs is not None:
            values = {c: v for c, v in values.items() if c in xs}
        if not values:
            continue
        shown += 1
        ys = np.array(list(values.values()), dtype=float)
        text = f"{labels.get(name, name)}: {ys.min():.1f}" + (f"–{ys.max():.1f}" if np.ptp(ys) >= 0.05 else "") + " mm"
        style = FLOOR_STYLES.get(name, dict(color="gray", linestyle="-."))
        if ys.min() > reach:
            ax.plot([], [], linestyle="none", marker=r"$\uparrow$", color=style["color"], label=f"{text} (above this axis)")
            continue
        if xs is None or np.ptp(ys) < 1e-9:
            ax.axhline(float(ys.mean()), linewidth=1.2, label=text, **style)
        else:
            order = sorted(values, key=xs.get)
            ax.plot([xs[c] for c in order], [values[c] for c in order], linewidth=1.2, label=text, **style)
        pad = 0.05 * max(hi - lo, 1.0)
        new_lo, new_hi = min(new_lo, float(ys.min()) - pad), max(new_hi, float(ys.max()) + pad)
    ax.set_ylim(max(0.0, new_lo) if lo >= 0 else new_lo, new_hi)
    return shown


def draw_pose(ax, pose: np.ndarray, color: str, label: str) -> None:
    """pose (17, 3): x right, y down, z depth -> plotted with y up."""
    for k, (a, b) in enumerate(H36M_BONES):
        ax.plot([pose[a, 0], pose[b, 0]], [pose[a, 2], pose[b, 2]], [-pose[a, 1], -pose[b, 1]],
                color=color, linewidth=2, label=label if k == 0 else None)


# -- the report's own: training curves -----------------------------------------------------------
CURVE_PANELS = ((VAL_MPJPE, "validation MPJPE (mm)"), (TRAIN_LOSS, "training loss"))


class CurvesFigure:
    """The training curves' figure, built once per report and drawn again for each study: its
    two panels keep their axes and tick artists from one study to the next (creating them
    was a fifth of drawing the figure), everything a study drew is taken off in between."""

    def __init__(self):
        self.fig = figure((11, 4.2), left=0.07, right=0.98, bottom=0.12, top=0.88, wspace=0.22)
        self.axes = self.fig.subplots(1, 2)
        for ax, (_, ylabel) in zip(self.axes, CURVE_PANELS):
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)

    def clear(self) -> None:
        """The panels as built: no data, legend or text; limits (0, 1) and autoscaled."""
        for ax in self.axes:
            for artist in [*ax.lines, *ax.collections, *ax.texts, *ax.patches]:
                artist.remove()
            if ax.get_legend() is not None:
                ax.get_legend().remove()
            ax.relim()
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_autoscale_on(True)


def plot_training_curves(history: pd.DataFrame, labels: dict[str, str], study: str, subtitle: str,
                         path: Path, floors: dict[str, float] | None = None,
                         canvas: CurvesFigure | None = None) -> Path:
    """Validation MPJPE and training loss per epoch; per variant the mean over seeds
    (line) and the range over seeds (band), one colour per variant in both panels; the
    floors (floor -> MPJPE) on the MPJPE panel. The variants' legend is drawn once (on the
    loss panel) when both panels have the same variants and seed counts, else per panel.
    `canvas`: the figure to draw on (cleared first), e.g. one for all of a report's studies."""
    if not len(history):
        raise FigureSkipped(f"the runs of {study} logged no per-epoch metrics")
    if canvas is None:
        canvas = CurvesFigure()
    else:
        canvas.clear()
    fig, axes = canvas.fig, canvas.axes
    present = set(history["variant"])
    order = [v for v in labels if v in present] + [v for v in dict.fromkeys(history["variant"]) if v not in labels]
    colors = {v: COLORS[i % len(COLORS)] for i, v in enumerate(order)}
    entries = []  # per panel: the variants' legend labels
    for ax, (key, _) in zip(axes, CURVE_PANELS):
        part = history[history["key"] == key]
        entries.append([])
        per_step = part.groupby(["variant", "step"])["value"].agg(["mean", "min", "max"])  # one pass per panel
        seeds = part.groupby("variant")["seed"].nunique()
        for variant in (v for v in order if v in seeds.index):
            mean, low, high = (per_step.loc[variant][stat] for stat in ("mean", "min", "max"))
            n = seeds[variant]
            entries[-1].append(f"{labels.get(variant, variant)} (n={n})")
            ax.plot(mean.index, mean.to_numpy(), color=colors[variant], marker="o" if len(mean) < 12 else None,
                    markersize=3, label=entries[-1][-1])
            if n > 1:
                ax.fill_between(mean.index, low.to_numpy(), high.to_numpy(), color=colors[variant], alpha=0.2)
        if key == VAL_MPJPE and floors and len(part):
            floor_lines(ax, floors)
        if not ax.get_legend_handles_labels()[0]:
            no_data(ax, f"no {key} logged")
    once = entries[0] and sorted(entries[0]) == sorted(entries[1])
    for ax, mine in zip(axes, ([] if once else entries[0], entries[1])):
        handles, names = ax.get_legend_handles_labels()
        keep = [(h, n) for h, n in zip(handles, names) if n not in entries[0] or n in mine]
        if keep:
            ax.legend(*zip(*keep), fontsize=7)
    fig.suptitle(f"Training curves: {study} ({subtitle}; band: range over seeds)")
    return save(fig, path)

"""Frame-rate robustness: input sub- or up-sampled, with dropped frames, or at a rate that
changes inside each test window.

HumMUSS is evaluated twice on each condition: told the new step (dt_scale, or per-frame
dt for dropped frames and changing rates) and not told. MotionBERT has no notion of time
and gets the resampled frames as they come. The supplement's Figure 1 shows x8
subsampling. At the `paper` scale HumMUSS starts from the pre-training stage (`pretrain`).

Variants: the default HumMUSS (zero-order hold), `hummuss-foh` (its temporal DSSMs
discretised with first-order hold, issue 20; hummuss/ssm/README.md) and `hummuss-causal`
(zero-order hold, forward-only in time), which also runs frame by frame through `stream()`.
The changing-rate columns (hummuss/rate_schedules.py): `segments` reads each window at
strides 1, 2, 4, 1 of the native frames (60 -> 30 -> 15 -> 60 fps on the generated data),
`walk` at a seeded random walk of the stride between 1 and 4 (60 to 15 fps). The streamed
rows read the same frames one at a time (their x1 column: the native rate streamed); the
other columns of those rows are blank. No first-order-hold twin of the causal model: a
causal model streamed computes the offline per-frame-dt map (tests/test_rate_schedules.py),
so the bidirectional pair answers first- against zero-order hold on the same frames.

The claim: rescaling the step helps at x2, x4 and x8, judged from the paired (by seed)
difference fixed − rescaled and its 95% interval per factor; MotionBERT-Lite at x8, fixed −
rescaled at the other conditions (streamed too) and, per condition, whether first-order hold
beats zero-order hold (ZOH − FOH, step rescaled, with its interval; undecided when the
interval holds 0, as it always does at one seed) are stated beside it. Figures: error against
the frame-rate factor, dropped frames and the changing rates, with the floors; one test
sequence at x8 with both models' predictions.
"""

import re
from pathlib import Path

import numpy as np
import pandas as pd

from suite.registry import Figure, PaperRef, Study, Table, Variant, readonly
from suite.report import ClaimCheck, FigureContext
from suite.report.judging import cell, conclude, difference, part
from suite.report.stats import Interval, above

MARGIN_MM = 0.0  # rescaling "helps" at a factor: fixed − rescaled above this, with 95% confidence
FACTORS = ("x2", "x4", "x8")  # the sub-sampling factors the claim is judged at
CHANGING = ("segments", "walk")  # the columns whose rate changes inside the window
STREAMED = ("x1", *CHANGING)  # the columns the streamed rows have

COLUMNS = (("x1", "x1"), ("x2", "x2 sub"), ("x4", "x4 sub"), ("x8", "x8 sub"), ("up2", "x2 up"),
           ("drop_0.1", "10% dropped"), ("drop_0.3", "30% dropped"),
           ("segments", "rate 1, 1/2, 1/4, 1 per window"), ("walk", "rate walk 1 to 1/4"))
ROWS = (("hummuss-dt", "HumMUSS, step rescaled"), ("hummuss-fixed", "HumMUSS, step fixed"),
        ("hummuss-foh-dt", "HumMUSS first-order hold, step rescaled"),
        ("hummuss-foh-fixed", "HumMUSS first-order hold, step fixed"),
        ("hummuss-causal-dt", "HumMUSS causal, step rescaled"),
        ("hummuss-causal-fixed", "HumMUSS causal, step fixed"),
        ("hummuss-causal-stream-dt", "HumMUSS causal streamed, step rescaled"),
        ("hummuss-causal-stream-fixed", "HumMUSS causal streamed, step fixed"),
        ("motionbert-lite", "MotionBERT-Lite"))


def _streamed(row: str) -> bool:
    return "-stream-" in row


def _cell(row: str, column: str) -> tuple[str, str]:
    variant = row.rpartition("-")[0] if row.endswith(("-dt", "-fixed")) else row
    dt = "_dt" if row.endswith("-dt") else ""
    if _streamed(row):
        variant = variant.removesuffix("-stream")
        return variant, "stream" if column == "x1" else f"stream_{column}{dt}"
    if column == "x1":
        return variant, "as_trained"
    if column in CHANGING:
        return variant, f"rate_{column}{dt}"
    condition = column if column.startswith("drop") else f"fps_{column}"
    return variant, condition + dt


BLANK = frozenset((r, c) for r, _ in ROWS if _streamed(r) for c, _ in COLUMNS if c not in STREAMED)


def hold_verdict(iv: Interval) -> str:
    """ZOH − FOH (mm) -> which hold is better, from its 95% interval (undecided when it holds 0
    or there is none)."""
    if not iv.known:
        return "undecided"
    return "first-order hold better" if iv.low > 0 else "zero-order hold better" if iv.high < 0 else "undecided"


def hold_comparison(frame: pd.DataFrame, labels: dict[str, str]) -> str:
    """Per column with both cells: ZOH − FOH with the step rescaled, its interval and the verdict."""
    out = []
    for col, label in labels.items():
        zoh, foh = cell(frame, "hummuss-dt", col), cell(frame, "hummuss-foh-dt", col)
        if zoh is not None and foh is not None:
            iv = difference(zoh, foh)
            out.append(f"{label}: {iv.text()}, {hold_verdict(iv)}")
    if not out:
        return ""
    return "first-order against zero-order hold, step rescaled (ZOH − FOH; > 0: first-order better): " + \
        "; ".join(out)


def judge(frame: pd.DataFrame, study: Study) -> ClaimCheck:
    """Rescaling the step helps: per factor x2, x4, x8 the paired (by seed) difference
    fixed − rescaled with its 95% interval, held when every interval lies above MARGIN_MM,
    did not hold when one lies below it, else undecided (also when HumMUSS at the training
    rate is no better than the linear lift). MotionBERT-Lite at x8, the other conditions
    (streamed too) and first- against zero-order hold per condition are stated beside it."""
    labels = dict(study.table.columns)
    parts = [part(f"{labels[col]}: step fixed − rescaled", cell(frame, "hummuss-fixed", col),
                  cell(frame, "hummuss-dt", col), f"held when > {MARGIN_MM:g} mm",
                  lambda iv: above(iv, MARGIN_MM), f"no finished HumMUSS runs at {labels[col]}")
             for col in FACTORS]
    beside = []
    dt8, mb8 = cell(frame, "hummuss-dt", "x8"), cell(frame, "motionbert-lite", "x8")
    if dt8 is not None and mb8 is not None:
        beside.append(f"at {labels['x8']} MotionBERT-Lite − HumMUSS rescaled = {difference(mb8, dt8).text()}")
    for prefix, name, cols in (("hummuss", "", ("up2", "drop_0.1", "drop_0.3", *CHANGING)),
                               ("hummuss-causal-stream", "streamed causal HumMUSS ", CHANGING)):
        for col in cols:
            dt, fixed = cell(frame, f"{prefix}-dt", col), cell(frame, f"{prefix}-fixed", col)
            if dt is not None and fixed is not None:
                beside.append(f"{name}{labels.get(col, col)}: fixed − rescaled = {difference(fixed, dt).text()}")
    holds = hold_comparison(frame, labels)
    if holds:
        beside.append(holds)
    learned = [("hummuss-dt", "x1"), ("hummuss-fixed", "x1")]
    shifted = [(r, c) for r in ("hummuss-dt", "hummuss-fixed") for c in FACTORS]
    return conclude(study, parts, frame, learned, "rescaling the step helps HumMUSS at sub-sampled input "
                    "(paper: qualitative, Figure 1 at x8)", "; ".join(beside), shifted=shifted)


def rate_of(column: str) -> float | None:
    """x1 -> 1, x<k> (subsampled) -> 1/k, up<k> -> k."""
    if m := re.fullmatch(r"x(\d+)", column):
        return 1.0 / float(m.group(1))
    if m := re.fullmatch(r"up(\d+)", column):
        return float(m.group(1))
    return None


def drop_of(column: str) -> float | None:
    """x1 -> 0, drop_<p> -> 100 p (percent of frames dropped)."""
    if column == "x1":
        return 0.0
    m = re.fullmatch(r"drop_([\d.]+)", column)
    return 100 * float(m.group(1)) if m else None


def _base(row: str) -> str:
    """The row without its step suffix: a row's colour (rescaled and fixed share one)."""
    return row.rpartition("-")[0] if row.endswith(("-dt", "-fixed")) else row


def _changing(ax, frame: pd.DataFrame, rows, styles: dict, colors: dict) -> dict[str, float]:
    """Mean +- std of each row at the changing-rate columns (x: the column, rows side by side)."""
    cols = [c for c in CHANGING if c in set(frame["column"])]
    xs = {c: float(j) for j, c in enumerate(cols)}
    width = 0.8 / max(len(rows), 1)
    for i, (row, label) in enumerate(rows):
        cells = frame[(frame["row"] == row) & frame["column"].isin(cols) & (frame["n"] > 0)]
        if len(cells):
            x = np.array([xs[c] for c in cells["column"]]) + (i - (len(rows) - 1) / 2) * width
            ax.errorbar(x, cells["mean"], yerr=np.nan_to_num(cells["std"].to_numpy(float)), marker="o",
                        capsize=3, linestyle="none", label=label, color=colors[row],
                        mfc="none" if styles[row] == "--" else None)
    labels = dict(zip(frame["column"], frame["column_label"]))
    ax.set_xticks(list(xs.values()), [labels.get(c, c) for c in xs], fontsize=8)
    if xs:
        ax.set_xlim(-0.6, len(xs) - 0.4)
    return xs


def draw_rates(ctx: FigureContext) -> Path:
    """MPJPE against the frame-rate factor, dropped frames and the changing rates per row
    (solid: step rescaled, dashed or hollow: fixed), with the floors."""
    from suite.report.figures import COLORS, figure, floor_lines, line, no_data, save, table_floors
    from suite.report.tables import model_rows

    frame = model_rows(ctx.frame)
    columns = list(dict.fromkeys(frame["column"]))
    rates = {c: rate_of(c) for c in columns if rate_of(c) is not None}
    drops = {c: drop_of(c) for c in columns if drop_of(c) is not None}
    fig = figure((16, 4.8), left=0.05, right=0.99, bottom=0.13, top=0.86, wspace=0.22)
    left, middle, right = fig.subplots(1, 3)
    rows = list(dict.fromkeys(zip(frame["row"], frame["row_label"])))
    styles = {row: "--" if row.endswith("-fixed") else "-" for row, _ in rows}
    bases = list(dict.fromkeys(_base(row) for row, _ in rows))
    colors = {row: COLORS[bases.index(_base(row)) % len(COLORS)] for row, _ in rows}
    for row, label in rows:
        if _streamed(row):  # only x1 and the changing rates
            continue
        kw = dict(label=label, color=colors[row], linestyle=styles[row])
        line(left, frame, row, rates, **kw)
        if len(drops) > 1:
            line(middle, frame, row, drops, **kw)
    changing = _changing(right, frame, rows, styles, colors)
    floor_lines(left, table_floors(ctx.frame, rates), rates)
    if len(drops) > 1:
        floor_lines(middle, table_floors(ctx.frame, drops), drops)
    if changing:
        floor_lines(right, table_floors(ctx.frame, changing), changing)
    left.set_xscale("log", base=2)
    ticks = sorted(rates.values())
    left.set_xticks(ticks, [f"×{v:g}" if v >= 1 else f"×1/{1 / v:g}" for v in ticks])
    left.set_xlabel("frame rate relative to training (×1/8 = subsampled 8 times)")
    left.set_title("Sub- and up-sampled input")
    middle.set_xlabel("frames dropped at random (%)")
    middle.set_title("Dropped frames")
    right.set_xlabel("the frame rate inside each window (relative to training)")
    right.set_title("Rate changing inside each window")
    for ax in (left, middle, right):
        ax.set_ylabel("MPJPE (mm)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        else:
            no_data(ax)
    fig.suptitle("Frame-rate robustness: HumMUSS with and without the step rescaled, MotionBERT "
                 f"({ctx.subtitle()})")
    return save(fig, ctx.path)


def plot_skeletons(models: list, subtitle: str, path: Path, factor: int = 8, frames: int = 4) -> Path:
    """Rows: models; columns: frames of one test sequence subsampled `factor` times;
    ground truth green, prediction red. models: (label, model, spec) triples."""
    from suite.report.checkpoints import predict_subsampled
    from suite.report.figures import GT_COLOR, PRED_COLOR, draw_pose, figure, save

    results = [(label, *predict_subsampled(model, spec, factor)) for label, model, spec in models]
    length = min(len(gt) for _, gt, _ in results)
    picks = np.unique(np.linspace(0, length - 1, min(frames, length)).round().astype(int))
    fig = figure((3.0 * len(picks), 3.2 * len(results)), left=0.0, right=1.0, bottom=0.02, top=0.86,
                 wspace=0.05, hspace=0.2)
    reach = max(float(np.abs(gt).max()) for _, gt, _ in results)
    for r, (label, gt, pred) in enumerate(results):
        for c, t in enumerate(picks):
            ax = fig.add_subplot(len(results), len(picks), r * len(picks) + c + 1, projection="3d")
            draw_pose(ax, gt[t], GT_COLOR, "ground truth")
            draw_pose(ax, pred[t], PRED_COLOR, "prediction")
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
    return save(fig, path)


def draw_skeletons(ctx: FigureContext) -> Path:
    """The lowest seed's HumMUSS and MotionBERT from their checkpoints on one test sequence at x8."""
    from suite.report.checkpoints import skeleton_models
    from suite.report.figures import FigureSkipped

    models, scale = skeleton_models(ctx.tracker, ctx.selection)
    try:
        return plot_skeletons(models, f"scale {scale}", ctx.path)
    except (FileNotFoundError, ValueError) as err:  # e.g. the run's data set is not on this machine
        raise FigureSkipped(f"cannot predict the test sequence: {err}") from None


STUDY = Study(
    name="frame-rate",
    question="Does rescaling the SSM step keep HumMUSS accurate when the frame rate changes at test time?",
    paper=PaperRef(
        table="Supplement Figure 1 and Section 4",
        caption="Qualitative: HumMUSS and MotionBERT on input subsampled x8",
        note="The supplement gives no numbers for this claim.",
    ),
    variants=(
        Variant("hummuss", init_from="pretrain/bidirectional", label="HumMUSS"),
        Variant("hummuss-foh", config=readonly(discretization="foh"), init_from="pretrain/bidirectional",
                label="HumMUSS, first-order hold"),
        Variant("hummuss-causal", config=readonly(causal=True), init_from="pretrain/causal",
                label="HumMUSS, causal"),
        Variant("motionbert-lite", model="motionbert", label="MotionBERT-Lite"),
    ),
    eval=readonly(rates=("x2", "x4", "x8", "up2"), drops=(0.1, 0.3), schedules=CHANGING, stream=True),
    table=Table(rows=ROWS, columns=COLUMNS, blank=BLANK,
                cells=readonly({(r, c): _cell(r, c) for r, _ in ROWS for c, _ in COLUMNS if (r, c) not in BLANK})),
    claims=judge,
    figures=(
        Figure("frame-rate", "fig2_frame_rate.png",
               "MPJPE against frame-rate factor, dropped frames and rates changing mid-window, "
               "with and without dt rescaling", draw_rates),
        Figure("skeletons", "fig3_skeletons_x8.png",
               "One test sequence subsampled x8: ground truth and prediction", draw_skeletons),
    ),
)

"""Table 1: does a HumMUSS trained on 27-frame clips generalise to longer test windows?

MotionBERT-Lite trained at the same length runs beside it, evaluated both in one pass
over the longer window (its temporal embedding beyond 27 frames untrained) and in
sliding 27-frame windows (how a transformer is normally run on longer input).
At the `paper` scale HumMUSS starts from the pre-training stage (`pretrain`).

The claim is judged on HumMUSS's row from the paired (by seed) difference F_243 - F_27 and
its 95% interval against TOLERANCE_PCT of the F_27 error (held / did not hold / undecided at
this scale). The figure shows the error against the window length with the floors, and the
change from the training length beside the paper's.
"""

import re
from pathlib import Path

import numpy as np
import pandas as pd

from suite.registry import Figure, PaperRef, Param, Study, Table, Variant, readonly
from suite.report import ClaimCheck, FigureContext
from suite.report.judging import NOT_JUDGED, cell, conclude, difference, part, pct, signed
from suite.report.stats import below

TOLERANCE_PCT = 10.0  # "held": error at the longest window at most this much higher (of the shortest's)
CLAIM = "{row} keeps its accuracy on longer windows"


def judge(frame: pd.DataFrame, study: Study) -> ClaimCheck:
    """The paired (by seed) difference longest − shortest window of the first row with paper
    numbers at both ends, with its 95% interval: held when the interval's upper end is below
    TOLERANCE_PCT of the shortest window's error, did not hold when its lower end is above
    it, else undecided (also when the row is no better than the linear lift at the training
    length)."""
    cols = [c for c, _ in study.table.columns]
    labels = dict(study.table.columns)
    first, last = cols[0], cols[-1]
    rows = [r for r, _ in study.table.rows if (r, first) in study.paper.numbers and (r, last) in study.paper.numbers]
    if not rows:
        return ClaimCheck(study.name, NOT_JUDGED, "the study declares no paper numbers at both ends")
    row = rows[0]
    row_label = dict(study.table.rows)[row]
    a, b = cell(frame, row, first), cell(frame, row, last)
    tol = TOLERANCE_PCT / 100 * a["mean"] if a is not None else float("nan")
    paper = pct(study.paper.numbers[(row, first)], study.paper.numbers[(row, last)])
    main = part(f"{row_label} {labels[last]} − {labels[first]}", b, a,
                f"held when < +{tol:.1f} mm ({TOLERANCE_PCT:g}% of {labels[first]}; paper: {signed(paper)})",
                lambda iv: below(iv, tol), f"no finished runs at {labels[first]} or {labels[last]}")
    beside = []
    for col in cols[1:-1]:
        c = cell(frame, row, col)
        if a is not None and c is not None:
            beside.append(f"{row_label} {labels[col]} − {labels[first]} = {difference(c, a).text()}")
    for other, other_label in study.table.rows:
        x, y = cell(frame, other, first), cell(frame, other, last)
        if other != row and x is not None and y is not None:
            beside.append(f"{other_label} {labels[last]} − {labels[first]} = {difference(y, x).text()}")
    return conclude(study, [main], frame, [(row, first)], CLAIM.format(row=row_label), "; ".join(beside),
                    shifted=[(row, col) for col in cols[1:]])


def frames_of(column: str) -> float | None:
    """F_<n> -> n."""
    m = re.fullmatch(r"F_(\d+)", column)
    return float(m.group(1)) if m else None


def draw(ctx: FigureContext) -> Path:
    """MPJPE against the test window length: ours per row with the floors, and the change
    relative to the training length, ours beside the paper's."""
    from matplotlib.ticker import NullLocator

    from suite.report.figures import (
        COLORS,
        FigureSkipped,
        figure,
        floor_lines,
        line,
        no_data,
        save,
        table_floors,
    )

    frame, study = ctx.frame, ctx.study
    xs = {c: frames_of(c) for c, _ in study.table.columns if frames_of(c) is not None}
    if not xs:
        raise FigureSkipped("the context-length table has no F_<n> columns")
    fig = figure((11, 4.4), left=0.06, right=0.98, bottom=0.12, top=0.85, wspace=0.2)
    left, right = fig.subplots(1, 2)
    first = min(xs, key=xs.get)
    for i, (row, label) in enumerate(study.table.rows):
        color = COLORS[i % len(COLORS)]
        line(left, frame, row, xs, label, color)
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
    floor_lines(left, table_floors(frame, xs), xs)
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
            no_data(ax)
    fig.suptitle(f"Trained on F={int(xs[first])}, tested on longer windows ({ctx.subtitle()})")
    return save(fig, ctx.path)


STUDY = Study(
    name="context-length",
    question="Does a model trained on 27 frames keep its accuracy on 81- and 243-frame windows?",
    paper=PaperRef(
        table="Supplement Table 1",
        caption="MPJPE (mm) on MPI-INF-3DHP of HumMUSS trained on F=27 and tested on longer sequences",
        numbers=readonly({("hummuss", "F_27"): 25.1, ("hummuss", "F_81"): 25.8, ("hummuss", "F_243"): 26.2}),
        note="The supplement does not say whether this model is causal or bidirectional; we train the "
             "bidirectional one.",
    ),
    frames=27,
    variants=(
        Variant("hummuss", init_from="pretrain/bidirectional", label="HumMUSS"),
        Variant("motionbert-lite", model="motionbert", eval=readonly(model_windows=(27,)),
                label="MotionBERT-Lite"),
    ),
    eval=readonly(lengths=(27, 81, 243)),
    table=Table(
        rows=(("hummuss", "HumMUSS"), ("motionbert-lite", "MotionBERT-Lite, one pass"),
              ("motionbert-lite-win", "MotionBERT-Lite, 27-frame windows")),
        columns=(("F_27", "F=27"), ("F_81", "F=81"), ("F_243", "F=243")),
        cells=readonly({("motionbert-lite-win", "F_27"): ("motionbert-lite", "F_27"),
                        ("motionbert-lite-win", "F_81"): ("motionbert-lite", "F_81_win27"),
                        ("motionbert-lite-win", "F_243"): ("motionbert-lite", "F_243_win27")}),
    ),
    # tune HumMUSS trained on 27 frames (its validation is at the training length)
    search_space=readonly(
        state_size=Param("categorical", choices=(8, 16, 32, 64, 128)),  # N
        dt_min=Param("float", 1e-4, 1e-2, log=True),
        dt_max=Param("float", 2e-2, 1.0, log=True),
        lr=Param("float", 1e-4, 3e-3, log=True, target="train"),
        weight_decay=Param("float", 1e-4, 1e-1, log=True, target="train"),
    ),
    claims=judge,
    figures=(Figure("context-length", "fig1_context_length.png", "MPJPE against test window length (Table 1)",
                    draw),),
)

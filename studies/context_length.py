"""Table 1: does a HumMUSS trained on 27-frame clips generalise to longer test windows?

MotionBERT-Lite trained at the same length runs beside it, evaluated both in one pass
over the longer window (its temporal embedding beyond 27 frames untrained) and in
sliding 27-frame windows (how a transformer is normally run on longer input).
At the `paper` scale HumMUSS starts from the pre-training stage (`pretrain`).

The claim is judged on HumMUSS's row: held when its error grows by at most TOLERANCE_PCT
from 27 to 243 frames. The figure shows the error against the window length, and the
change from the training length beside the paper's.
"""

import re
from pathlib import Path

import numpy as np
import pandas as pd

from suite.registry import Figure, PaperRef, Param, Study, Table, Variant, readonly
from suite.report import ClaimCheck, FigureContext
from suite.report.judging import cell, grew, pct, signed

TOLERANCE_PCT = 10.0  # "held": error at the longest window at most this much higher


def judge(frame: pd.DataFrame, study: Study) -> ClaimCheck:
    """Held when the error of the first row with paper numbers at both ends grows by at most
    TOLERANCE_PCT from the shortest to the longest window."""
    cols = [c for c, _ in study.table.columns]
    labels = dict(study.table.columns)
    first, last = cols[0], cols[-1]
    rows = [r for r, _ in study.table.rows if (r, first) in study.paper.numbers and (r, last) in study.paper.numbers]
    if not rows:
        return ClaimCheck(study.name, "not judged", "the study declares no paper numbers at both ends")
    row = rows[0]
    row_label = dict(study.table.rows)[row]
    a, b = cell(frame, row, first), cell(frame, row, last)
    if a is None or b is None:
        return ClaimCheck(study.name, "not judged",
                          f"{row_label} lacks finished runs at {labels[first]} or {labels[last]}")
    ours = pct(a["mean"], b["mean"])
    paper = pct(study.paper.numbers[(row, first)], study.paper.numbers[(row, last)])
    text = f"{row_label}'s MPJPE {grew(ours)} from {labels[first]} to {labels[last]} (paper: {signed(paper)})"
    middle = []
    for col in cols[1:-1]:
        c = cell(frame, row, col)
        if c is not None and (row, col) in study.paper.numbers:
            paper_mid = pct(study.paper.numbers[(row, first)], study.paper.numbers[(row, col)])
            middle.append(f"{labels[col]}: {signed(pct(a['mean'], c['mean']))} (paper: {signed(paper_mid)})")
    if middle:
        text += "; " + "; ".join(middle)
    others = []
    for other, other_label in study.table.rows:
        x, y = cell(frame, other, first), cell(frame, other, last)
        if other != row and x is not None and y is not None:
            others.append(f"{other_label} {signed(pct(x['mean'], y['mean']))}")
    if others:
        text += f"; beside it, from {labels[first]} to {labels[last]}: " + ", ".join(others)
    verdict = "held" if ours <= TOLERANCE_PCT else "did not hold"
    return ClaimCheck(study.name, verdict, text + f" (held = at most {TOLERANCE_PCT:g}% worse)")


def frames_of(column: str) -> float | None:
    """F_<n> -> n."""
    m = re.fullmatch(r"F_(\d+)", column)
    return float(m.group(1)) if m else None


def draw(ctx: FigureContext) -> Path:
    """MPJPE against the test window length: ours per row, and the change relative to the
    training length, ours beside the paper's."""
    from matplotlib.ticker import NullLocator

    from suite.report.figures import COLORS, FigureSkipped, figure, line, no_data, save

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

"""Initialisation of the DSSM eigenvalues: S4D-Lin (the paper's) against the others.

The paper says only that all schemes perform similarly: judged from each scheme's difference
to S4D-Lin (the paper's) with its 95% interval against a band of ± SPREAD_PCT of S4D-Lin's
error. The figure is one bar per scheme, with the floors.
"""

from pathlib import Path

import numpy as np
import pandas as pd

from suite.registry import Figure, PaperRef, Param, Study, Table, Variant, readonly
from suite.report import ClaimCheck, FigureContext
from suite.report.judging import cell, conclude, part
from suite.report.stats import within

SPREAD_PCT = 5.0  # "all similar": each scheme's difference to the reference within ± this much of it
REFERENCE = "lin"  # the paper's scheme; every other is compared with it

SCHEMES = (("lin", "S4D-Lin"), ("inv", "S4D-Inv"), ("legs", "S4D-LegS"), ("real", "S4D-Real"),
           ("rand", "Random"))


def judge(frame: pd.DataFrame, study: Study) -> ClaimCheck:
    """All similar: per scheme the difference scheme − S4D-Lin (paired by seed where the seeds
    agree) and its 95% interval against the band ± SPREAD_PCT of S4D-Lin's error: held when
    every interval lies inside the band, did not hold when one lies wholly outside, else
    undecided."""
    labels = dict(study.table.rows)
    col = study.table.columns[0][0]
    ref = cell(frame, REFERENCE, col)
    band = SPREAD_PCT / 100 * ref["mean"] if ref is not None else float("nan")
    rule = f"held when within ±{band:.1f} mm ({SPREAD_PCT:g}% of {labels[REFERENCE]})"
    parts = [part(f"{label} − {labels[REFERENCE]}", cell(frame, row, col), ref, rule,
                  lambda iv: within(iv, -band, band),
                  f"no finished run of {label if ref is not None else labels[REFERENCE]}")
             for row, label in study.table.rows if row != REFERENCE]
    learned = [(row, col) for row, _ in study.table.rows]
    return conclude(study, parts, frame, learned, "all initialisation schemes perform similarly (paper: no numbers)")


def draw(ctx: FigureContext) -> Path:
    """One bar per initialisation scheme (mean ± std over seeds, seeds as dots), the floors as lines."""
    from suite.report.figures import (
        COLORS,
        figure,
        floor_lines,
        missing_mark,
        no_data,
        save,
        table_floors,
        values,
    )
    from suite.report.tables import model_rows

    floors = table_floors(ctx.frame)
    frame = model_rows(ctx.frame).reset_index(drop=True)
    fig = figure((7.5, 4.6), left=0.1, right=0.98, bottom=0.08, top=0.88)
    ax = fig.subplots()
    done = frame[frame["n"] > 0]
    labels = list(frame["row_label"])
    for i, c in enumerate(frame.itertuples()):
        if c.n > 0:
            ax.bar(i, c.mean, yerr=np.nan_to_num(c.std), capsize=4, color=COLORS[i % len(COLORS)],
                   label=f"{c.row_label} (n={c.n})")
            seeds = values(frame.iloc[i])
            ax.scatter(np.full(len(seeds), i), seeds, s=12, color="black", zorder=3)
        else:
            missing_mark(ax, i)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel("MPJPE (mm)")
    ax.grid(axis="y", alpha=0.3)
    if len(done):
        low, high = done["mean"].min(), done["mean"].max()
        pad = max(0.5, 0.5 * (high - low), float(np.nan_to_num(done["std"]).max()) * 1.5)
        ax.set_ylim(max(0.0, low - pad), high + pad)
        floor_lines(ax, floors)
        ax.legend(fontsize=8)
    else:
        no_data(ax)
    ax.set_title(f"DSSM initialisation schemes; paper: all similar, no numbers\n({ctx.subtitle()})", fontsize=10)
    return save(fig, ctx.path)


STUDY = Study(
    name="init-schemes",
    question="Does the choice of DSSM eigenvalue initialisation change accuracy?",
    paper=PaperRef(
        table="Supplement Section 3",
        caption="All initialisation schemes lead to similar performance",
        note="The supplement gives no numbers, only that all schemes perform similarly.",
    ),
    variants=tuple(Variant(name, config=readonly(init=name), label=label) for name, label in SCHEMES),
    table=Table(rows=SCHEMES, columns=(("as_trained", "MPJPE"),)),
    # the eigenvalue init together with the range of the learned step dt
    search_space=readonly(
        init=Param("categorical", choices=tuple(name for name, _ in SCHEMES)),
        dt_min=Param("float", 1e-4, 1e-2, log=True),
        dt_max=Param("float", 2e-2, 1.0, log=True),
        lr=Param("float", 1e-4, 3e-3, log=True, target="train"),
    ),
    claims=judge,
    figures=(Figure("init-schemes", "fig5_init_schemes.png", "DSSM initialisation schemes", draw),),
)

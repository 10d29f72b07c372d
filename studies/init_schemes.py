"""Initialisation of the DSSM eigenvalues: S4D-Lin (the paper's) against the others.

The paper says only that all schemes perform similarly: held when every scheme's mean
error is within SPREAD_PCT of the best. The figure is one bar per scheme.
"""

from pathlib import Path

import numpy as np
import pandas as pd

from suite.registry import Figure, PaperRef, Param, Study, Table, Variant, readonly
from suite.report import ClaimCheck, FigureContext
from suite.report.judging import pct

SPREAD_PCT = 5.0  # "all similar": means within this much of the best

SCHEMES = (("lin", "S4D-Lin"), ("inv", "S4D-Inv"), ("legs", "S4D-LegS"), ("real", "S4D-Real"),
           ("rand", "Random"))


def judge(frame: pd.DataFrame, study: Study) -> ClaimCheck:
    """Held when every scheme's mean is within SPREAD_PCT of the best."""
    done = frame[frame["n"] > 0].sort_values("mean")
    if len(done) < 2:
        return ClaimCheck(study.name, "not judged", "fewer than two schemes have finished runs")
    best, worst = done.iloc[0], done.iloc[-1]
    spread = pct(best["mean"], worst["mean"])
    stds = done["std"].dropna()
    text = (f"the {len(done)} schemes' MPJPE spans {best['mean']:.1f} ({best['row_label']}) to "
            f"{worst['mean']:.1f} mm ({worst['row_label']}), {spread:.1f}% above the best"
            + (f"; largest seed std {stds.max():.1f} mm" if len(stds) else "")
            + f" (paper: all similar, no numbers; held = within {SPREAD_PCT:g}%)")
    if len(done) < len(frame):
        text += f"; {len(frame) - len(done)} scheme(s) missing"
    return ClaimCheck(study.name, "held" if spread <= SPREAD_PCT else "did not hold", text)


def draw(ctx: FigureContext) -> Path:
    """One bar per initialisation scheme (mean ± std over seeds, seeds as dots)."""
    from suite.report.figures import COLORS, figure, missing_mark, no_data, save, values

    frame = ctx.frame
    fig = figure((7.5, 4.6), left=0.1, right=0.98, bottom=0.08, top=0.88)
    ax = fig.subplots()
    done = frame[frame["n"] > 0]
    labels = list(frame["row_label"])
    for i, cell in enumerate(frame.itertuples()):
        if cell.n > 0:
            ax.bar(i, cell.mean, yerr=np.nan_to_num(cell.std), capsize=4, color=COLORS[i % len(COLORS)],
                   label=f"{cell.row_label} (n={cell.n})")
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

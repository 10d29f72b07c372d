"""Table 2: how should a GDSSM block combine its forward, backward and identity paths?

The claim (an ablation: the paper's best aggregation is best in each model type) is judged by
the shared `claim_ablation`, from the paired differences other − gating per column and their
95% intervals. The figure draws this table beside the stream fusions' (Table 3, study
`stream-aggregation`) as grouped bars with the floors, ours above the paper's.
"""

from pathlib import Path

import numpy as np

from suite.registry import Figure, PaperRef, Param, Study, Table, Variant, readonly
from suite.report import FigureContext
from suite.report.judging import claim_ablation

AGGREGATIONS = (("gate", "Multiplicative gating"), ("mean", "Average pool"),
                ("learned", "Pooling with learnable weights"))
KINDS = (("causal", "Causal"), ("bidirectional", "Bidirectional"))


def draw(ctx: FigureContext) -> Path:
    """Tables 2 and 3 as grouped bars: ours (top) and the paper's (bottom), causal and
    bidirectional side by side, one column per study in the report."""
    from suite.report.figures import figure, grouped_bars, no_data, save

    items = {name: (frame, ctx.selections[name].study, ctx.subtitle(name)) for name, frame in ctx.frames.items()}
    fig = figure((6 * len(items), 8), left=0.07, right=0.98, bottom=0.05, top=0.89, hspace=0.4, wspace=0.2)
    axes = np.asarray(fig.subplots(2, len(items), squeeze=False))
    for k, (name, (frame, study, subtitle)) in enumerate(items.items()):
        if not grouped_bars(axes[0, k], frame, study, "ours"):
            no_data(axes[0, k])
        axes[0, k].set_title(f"{name}: ours\n({subtitle})", fontsize=10)
        if not grouped_bars(axes[1, k], frame, study, "paper"):
            no_data(axes[1, k], "no paper numbers")
        axes[1, k].set_title(f"{name}: paper\n({study.paper.table})", fontsize=10)
    fig.suptitle("Aggregation ablations: lower is better (dots: seeds, bars: mean ± std)")
    return save(fig, ctx.path)

STUDY = Study(
    name="gdssm-aggregation",
    question="Which aggregation of x_f, x_b and x_id inside a GDSSM block predicts 3D pose best?",
    paper=PaperRef(
        table="Supplement Table 2",
        caption="MPJPE (mm) on MPI-INF-3DHP of HumMUSS with different aggregations inside GDSSM blocks",
        numbers=readonly({("gate", "causal"): 24.6, ("gate", "bidirectional"): 18.7,
                          ("learned", "causal"): 25.3, ("learned", "bidirectional"): 20.1,
                          ("mean", "causal"): 25.8, ("mean", "bidirectional"): 20.5}),
        note="The supplement's text quotes 40.2 and 45.1 mm for gating; its table says 18.7 and 24.6.",
    ),
    variants=tuple(
        Variant(f"{agg}-{kind}", config=readonly(gdssm_aggregation=agg, causal=kind == "causal"),
                label=f"{label}, {kind}")
        for agg, label in AGGREGATIONS for kind, _ in KINDS
    ),
    table=Table(
        rows=AGGREGATIONS,
        columns=KINDS,
        cells=readonly({(agg, kind): (f"{agg}-{kind}", "as_trained") for agg, _ in AGGREGATIONS for kind, _ in KINDS}),
    ),
    # sweep around the causal gating block (the first variant): `hummuss-suite sweep gdssm-aggregation`
    search_space=readonly(
        gdssm_aggregation=Param("categorical", choices=("gate", "mean", "learned")),
        expand=Param("float", 1.5, 4.0, step=0.5),  # m
        temporal_channels=Param("int", 1, 4),  # k of the temporal blocks
        lr=Param("float", 1e-4, 3e-3, log=True, target="train"),
        weight_decay=Param("float", 1e-4, 1e-1, log=True, target="train"),
    ),
    claims=claim_ablation,
    figures=(Figure("aggregation", "fig4_aggregation.png", "Aggregation ablations (Tables 2 and 3)", draw,
                    studies=("stream-aggregation",)),),
)

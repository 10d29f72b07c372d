"""Table 2: how should a GDSSM block combine its forward, backward and identity paths?"""

from suite.registry import PaperRef, Param, Study, Table, Variant, frozen

AGGREGATIONS = (("gate", "Multiplicative gating"), ("mean", "Average pool"),
                ("learned", "Pooling with learnable weights"))
KINDS = (("causal", "Causal"), ("bidirectional", "Bidirectional"))

STUDY = Study(
    name="gdssm-aggregation",
    question="Which aggregation of x_f, x_b and x_id inside a GDSSM block predicts 3D pose best?",
    paper=PaperRef(
        table="Supplement Table 2",
        caption="MPJPE (mm) on MPI-INF-3DHP of HumMUSS with different aggregations inside GDSSM blocks",
        numbers=frozen({("gate", "causal"): 24.6, ("gate", "bidirectional"): 18.7,
                        ("learned", "causal"): 25.3, ("learned", "bidirectional"): 20.1,
                        ("mean", "causal"): 25.8, ("mean", "bidirectional"): 20.5}),
        note="The supplement's text quotes 40.2 and 45.1 mm for gating; its table says 18.7 and 24.6.",
    ),
    variants=tuple(
        Variant(f"{agg}-{kind}", config=frozen(gdssm_aggregation=agg, causal=kind == "causal"),
                label=f"{label}, {kind}")
        for agg, label in AGGREGATIONS for kind, _ in KINDS
    ),
    table=Table(
        rows=AGGREGATIONS,
        columns=KINDS,
        cells=frozen({(agg, kind): (f"{agg}-{kind}", "as_trained") for agg, _ in AGGREGATIONS for kind, _ in KINDS}),
    ),
    # sweep around the causal gating block (the first variant): `hummuss-suite sweep gdssm-aggregation`
    search_space=frozen(
        gdssm_aggregation=Param("categorical", choices=("gate", "mean", "learned")),
        expand=Param("float", 1.5, 4.0, step=0.5),  # m
        temporal_channels=Param("int", 1, 4),  # k of the temporal blocks
        lr=Param("float", 1e-4, 3e-3, log=True, target="train"),
        weight_decay=Param("float", 1e-4, 1e-1, log=True, target="train"),
    ),
)

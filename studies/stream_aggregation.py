"""Table 3: how should a layer fuse its spatial-temporal and temporal-spatial streams?

The claim (the paper's learned fusion is best) is judged by the shared `claim_ablation`, from
the paired differences other − learned per column and their 95% intervals; the figure
beside Table 2 is declared by `gdssm-aggregation` (studies/gdssm_aggregation.py).
"""

from suite.registry import PaperRef, Param, Study, Table, Variant, readonly
from suite.report.judging import claim_ablation

FUSIONS = (("gate", "Multiplicative gating"), ("mean", "Average pool"),
           ("learned", "Pooling with learnable weights"))
KINDS = (("causal", "Causal"), ("bidirectional", "Bidirectional"))

STUDY = Study(
    name="stream-aggregation",
    question="Which fusion of the two spatio-temporal streams predicts 3D pose best?",
    paper=PaperRef(
        table="Supplement Table 3",
        caption="MPJPE (mm) on MPI-INF-3DHP of HumMUSS with different fusions of the two streams",
        numbers=readonly({("gate", "causal"): 26.6, ("gate", "bidirectional"): 21.1,
                          ("mean", "causal"): 25.1, ("mean", "bidirectional"): 19.5,
                          ("learned", "causal"): 24.6, ("learned", "bidirectional"): 18.7}),
    ),
    variants=tuple(
        Variant(f"{fusion}-{kind}", config=readonly(stream_fusion=fusion, causal=kind == "causal"),
                label=f"{label}, {kind}")
        for fusion, label in FUSIONS for kind, _ in KINDS
    ),
    table=Table(
        rows=FUSIONS,
        columns=KINDS,
        cells=readonly({(f, kind): (f"{f}-{kind}", "as_trained") for f, _ in FUSIONS for kind, _ in KINDS}),
    ),
    # sweep around the causal gated fusion (the first variant): `hummuss-suite sweep stream-aggregation`
    search_space=readonly(
        stream_fusion=Param("categorical", choices=("gate", "mean", "learned")),
        state_size=Param("categorical", choices=(8, 16, 32, 64, 128)),  # N
        lr=Param("float", 1e-4, 3e-3, log=True, target="train"),
        weight_decay=Param("float", 1e-4, 1e-1, log=True, target="train"),
    ),
    claims=claim_ablation,
)

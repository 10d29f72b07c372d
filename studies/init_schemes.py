"""Initialisation of the DSSM eigenvalues: S4D-Lin (the paper's) against the others."""

from suite.registry import PaperRef, Study, Table, Variant, frozen

SCHEMES = (("lin", "S4D-Lin"), ("inv", "S4D-Inv"), ("legs", "S4D-LegS"), ("real", "S4D-Real"),
           ("rand", "Random"))

STUDY = Study(
    name="init-schemes",
    question="Does the choice of DSSM eigenvalue initialisation change accuracy?",
    paper=PaperRef(
        table="Supplement Section 3",
        caption="All initialisation schemes lead to similar performance",
        note="The supplement gives no numbers, only that all schemes perform similarly.",
    ),
    variants=tuple(Variant(name, config=frozen(init=name), label=label) for name, label in SCHEMES),
    table=Table(rows=SCHEMES, columns=(("as_trained", "MPJPE"),)),
)

"""Initialisation of the DSSM eigenvalues: S4D-Lin (the paper's) against the others."""

from suite.registry import PaperRef, Param, Study, Table, Variant, frozen

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
    # the eigenvalue init together with the range of the learned step dt
    search_space=frozen(
        init=Param("categorical", choices=tuple(name for name, _ in SCHEMES)),
        dt_min=Param("float", 1e-4, 1e-2, log=True),
        dt_max=Param("float", 2e-2, 1.0, log=True),
        lr=Param("float", 1e-4, 3e-3, log=True, target="train"),
    ),
)

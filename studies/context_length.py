"""Table 1: does a HumMUSS trained on 27-frame clips generalise to longer test windows?

MotionBERT-Lite trained at the same length runs beside it, evaluated both in one pass
over the longer window (its temporal embedding beyond 27 frames untrained) and in
sliding 27-frame windows (how a transformer is normally run on longer input).
At the `paper` scale HumMUSS starts from the pre-training stage (`pretrain`).
"""

from suite.registry import PaperRef, Param, Study, Table, Variant, frozen

STUDY = Study(
    name="context-length",
    question="Does a model trained on 27 frames keep its accuracy on 81- and 243-frame windows?",
    paper=PaperRef(
        table="Supplement Table 1",
        caption="MPJPE (mm) on MPI-INF-3DHP of HumMUSS trained on F=27 and tested on longer sequences",
        numbers=frozen({("hummuss", "F_27"): 25.1, ("hummuss", "F_81"): 25.8, ("hummuss", "F_243"): 26.2}),
        note="The supplement does not say whether this model is causal or bidirectional; we train the "
             "bidirectional one.",
    ),
    frames=27,
    variants=(
        Variant("hummuss", init_from="pretrain/bidirectional", label="HumMUSS"),
        Variant("motionbert-lite", model="motionbert", eval=frozen(model_windows=(27,)),
                label="MotionBERT-Lite"),
    ),
    eval=frozen(lengths=(27, 81, 243)),
    table=Table(
        rows=(("hummuss", "HumMUSS"), ("motionbert-lite", "MotionBERT-Lite, one pass"),
              ("motionbert-lite-win", "MotionBERT-Lite, 27-frame windows")),
        columns=(("F_27", "F=27"), ("F_81", "F=81"), ("F_243", "F=243")),
        cells=frozen({("motionbert-lite-win", "F_27"): ("motionbert-lite", "F_27"),
                      ("motionbert-lite-win", "F_81"): ("motionbert-lite", "F_81_win27"),
                      ("motionbert-lite-win", "F_243"): ("motionbert-lite", "F_243_win27")}),
    ),
    # tune HumMUSS trained on 27 frames (its validation is at the training length)
    search_space=frozen(
        state_size=Param("categorical", choices=(8, 16, 32, 64, 128)),  # N
        dt_min=Param("float", 1e-4, 1e-2, log=True),
        dt_max=Param("float", 2e-2, 1.0, log=True),
        lr=Param("float", 1e-4, 3e-3, log=True, target="train"),
        weight_decay=Param("float", 1e-4, 1e-1, log=True, target="train"),
    ),
)

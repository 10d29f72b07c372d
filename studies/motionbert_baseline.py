"""MotionBERT and MotionBERT-Lite trained and evaluated under the suite's protocol.

No claim of the paper to judge: the report states our numbers (`claim_summary`).
"""

from suite.registry import PaperRef, Study, Table, Variant
from suite.report.judging import claim_summary

STUDY = Study(
    name="motionbert-baseline",
    question="How accurate is the transformer baseline under exactly the same protocol?",
    paper=PaperRef(
        table="MotionBERT (Zhu et al., ICCV 2023)",
        caption="MotionBERT's own numbers are on Human3.6M, not on MPI-INF-3DHP",
        note="MotionBERT reports 39.2 mm MPJPE on Human3.6M from scratch (SH 2D, 243 frames) and no "
             "MPI-INF-3DHP result, so no paper number sits beside ours here.",
    ),
    variants=(
        Variant("lite", model="motionbert", label="MotionBERT-Lite"),
        Variant("full", model="motionbert", preset_key="motionbert-full", label="MotionBERT"),
    ),
    table=Table(rows=(("lite", "MotionBERT-Lite"), ("full", "MotionBERT")),
                columns=(("as_trained", "MPJPE"),)),
    claims=claim_summary,
)

"""Frame-rate robustness: input sub- or up-sampled, or with dropped frames, at test time.

HumMUSS is evaluated twice on each condition: told the new step (dt_scale, or per-frame
dt for dropped frames) and not told. MotionBERT has no notion of time and gets the
resampled sequence as it is. The supplement's Figure 1 shows x8 subsampling.
At the `paper` scale HumMUSS starts from the pre-training stage (`pretrain`).
"""

from suite.registry import PaperRef, Study, Table, Variant, frozen

COLUMNS = (("x1", "x1"), ("x2", "x2 sub"), ("x4", "x4 sub"), ("x8", "x8 sub"), ("up2", "x2 up"),
           ("drop_0.1", "10% dropped"), ("drop_0.3", "30% dropped"))
ROWS = (("hummuss-dt", "HumMUSS, step rescaled"), ("hummuss-fixed", "HumMUSS, step fixed"),
        ("motionbert-lite", "MotionBERT-Lite"))


def _cell(row: str, column: str) -> tuple[str, str]:
    variant = "motionbert-lite" if row == "motionbert-lite" else "hummuss"
    if column == "x1":
        return variant, "as_trained"
    condition = column if column.startswith("drop") else f"fps_{column}"
    return variant, condition + ("_dt" if row == "hummuss-dt" else "")


STUDY = Study(
    name="frame-rate",
    question="Does rescaling the SSM step keep HumMUSS accurate when the frame rate changes at test time?",
    paper=PaperRef(
        table="Supplement Figure 1 and Section 4",
        caption="Qualitative: HumMUSS and MotionBERT on input subsampled x8",
        note="The supplement gives no numbers for this claim.",
    ),
    variants=(
        Variant("hummuss", init_from="pretrain/bidirectional", label="HumMUSS"),
        Variant("motionbert-lite", model="motionbert", label="MotionBERT-Lite"),
    ),
    eval=frozen(rates=("x2", "x4", "x8", "up2"), drops=(0.1, 0.3)),
    table=Table(rows=ROWS, columns=COLUMNS,
                cells=frozen({(r, c): _cell(r, c) for r, _ in ROWS for c, _ in COLUMNS})),
)

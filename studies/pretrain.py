"""Pre-training stage: 2D-to-3D lifting from corrupted 2D input, as MotionBERT pre-trains.

Learning rate 3e-4 for HumMUSS (the supplement), MotionBERT's corruption (2D noise, 5%
joint and 10% frame masking). Other studies start their paper-configuration HumMUSS
from these checkpoints at the `paper` scale (`init_from="pretrain/<variant>"`).
"""

from suite.registry import PaperRef, Study, Table, Variant, readonly

TRAIN = readonly(corruption=True, lr=3e-4)

STUDY = Study(
    name="pretrain",
    question="Pre-train HumMUSS on lifting corrupted 2D motion, for the fine-tuning studies to start from.",
    paper=PaperRef(table="Supplement Section 1", caption="Pre-training with learning rate 3e-4"),
    variants=(
        Variant("bidirectional", train=TRAIN, label="HumMUSS, bidirectional"),
        Variant("causal", config=readonly(causal=True), train=TRAIN, label="HumMUSS, causal"),
    ),
    table=Table(rows=(("bidirectional", "Bidirectional"), ("causal", "Causal")),
                columns=(("as_trained", "MPJPE"),)),
    stage=True,
)

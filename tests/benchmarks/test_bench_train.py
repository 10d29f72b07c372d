"""Training: time per optimisation step at F = 243, for both models at the `cpu` preset
(batch 8: the suite's cpu-scale studies) and at paper size (HumMUSS paper-bidirectional,
MotionBERT-Lite; batch 2). The step is the trainer's own (`suite.bench.training_step`:
`Trainer.train_step` with the `cpu` training recipe: forward, MotionBERT's pose loss,
backward, clipping, AdamW, schedule) on generated clips (real motion, normalised screen
coordinates), with the trainer's allocator setting: what a training run pays per step.
MACs per frame are counted as 3 x the forward's matmul MACs (backward ~ 2 x forward;
HumMUSS: its Linear layers, `linear_macs_per_frame`).
"""

import pytest
import torch

from suite.bench import linear_macs_per_frame, quick, record, training_step

QUICK_MODE = quick()


FRAMES = 243
CASES = [  # (model, preset, overrides, batch, rounds, group)
    ("hummuss", "cpu", {}, 8, 5, "cpu"),
    ("hummuss", "cpu", {"causal": True}, 8, 5, "cpu"),
    ("motionbert", "cpu", {}, 8, 5, "cpu"),
    ("hummuss", "paper-bidirectional", {}, 2, 2, "paper"),
    ("motionbert", "lite", {}, 2, 2, "paper"),
]
if QUICK_MODE:
    CASES = [c[:4] + (2,) + c[5:] for c in CASES if c[5] == "cpu"]


def _name(case):
    model, preset, overrides = case[:3]
    return f"{'motionbert' if model == 'motionbert' else 'hummuss'}-{preset}" + \
        ("-causal" if overrides.get("causal") else "")


@pytest.mark.parametrize("case", CASES, ids=_name)
def test_train_step(benchmark, matmul_rate, case):
    name, preset, overrides, batch, rounds, size = case
    step, trainer = training_step(name, preset, FRAMES, batch, **overrides)
    model = trainer.model
    losses = []

    def timed_step():
        losses.append(step().item())

    benchmark.group = f"train step F={FRAMES} ({size} size)"
    benchmark.pedantic(timed_step, rounds=rounds, iterations=1, warmup_rounds=1)
    assert all(torch.isfinite(torch.tensor(losses)))
    macs = model.macs_per_frame(FRAMES) if name == "motionbert" else linear_macs_per_frame(model)
    record(benchmark, model=_name(case), mode="train", frames=FRAMES, frames_per_call=batch * FRAMES,
           batch=batch, macs_per_frame=3 * macs, rate=matmul_rate, steps_per_s=1 / benchmark.stats.stats.median)

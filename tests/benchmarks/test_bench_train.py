"""Training: time per optimisation step at F = 243, for both models at the `cpu` preset
(batch 8: the suite's cpu-scale studies) and at paper size (HumMUSS paper-bidirectional,
MotionBERT-Lite; batch 2). The step is the trainer's own (`suite.bench.training_step`:
`Trainer.train_step` with the `cpu` training recipe: forward, MotionBERT's pose loss,
backward, clipping, AdamW, schedule) on generated clips (real motion, normalised screen
coordinates), with the trainer's allocator setting: what a training run pays per step.
MACs per frame are counted as 3 x the forward's matmul MACs (backward ~ 2 x forward;
HumMUSS: its Linear layers, `linear_macs_per_frame`).

The step times of the two models of a size vary by 15-30% from round to round on a shared
machine, and the cases run one after the other, so the ratio of their medians moves with
whatever else the machine did meanwhile. The MotionBERT case of each size therefore also
steps both models alternately (`paired_ratio`: the HumMUSS step's median over
MotionBERT's, taken from the same rounds; the spread of the per-round ratios beside it),
the figure the training targets use.
"""

import statistics
import time

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
PAIRED_ROUNDS = {"cpu": 6, "paper": 3}  # alternate steps of HumMUSS and MotionBERT, per size
if QUICK_MODE:
    CASES = [c[:4] + (2,) + c[5:] for c in CASES if c[5] == "cpu"]
    PAIRED_ROUNDS = {"cpu": 3, "paper": 2}


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
    extra = {}
    if name == "motionbert":  # against the HumMUSS case of the same size, stepped alternately
        hummuss = next(c for c in CASES if c[5] == size and c[0] == "hummuss" and not c[2])
        other, _ = training_step(*hummuss[:2], FRAMES, batch)
        other()  # its warm-up round
        h_ms, m_ms, ratios = _alternate(other, step, PAIRED_ROUNDS[size])
        extra = dict(paired_model=_name(hummuss), paired_ms=h_ms, paired_own_ms=m_ms, paired_ratio=h_ms / m_ms,
                     paired_ratio_min=min(ratios), paired_ratio_max=max(ratios), paired_rounds=len(ratios))
    record(benchmark, model=_name(case), mode="train", frames=FRAMES, frames_per_call=batch * FRAMES,
           batch=batch, macs_per_frame=3 * macs, rate=matmul_rate, steps_per_s=1 / benchmark.stats.stats.median,
           **extra)


def _alternate(first, second, rounds: int) -> tuple[float, float, list[float]]:
    """Steps of two trainings taken alternately, the order swapped every round, so that what
    else the machine does weighs on both alike -> (median ms of `first`, of `second`, the
    per-round ratios first / second)."""
    times: tuple[list[float], list[float]] = ([], [])
    for r in range(rounds):
        for i in ((0, 1) if r % 2 == 0 else (1, 0)):
            t0 = time.perf_counter()
            (first, second)[i]().item()
            times[i].append(time.perf_counter() - t0)
    ratios = [a / b for a, b in zip(*times)]
    return 1e3 * statistics.median(times[0]), 1e3 * statistics.median(times[1]), ratios

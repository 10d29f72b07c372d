"""Training: time per optimisation step at F = 243 (forward, MotionBERT's pose loss,
backward, AdamW), for both models at the `cpu` preset (batch 8: the suite's cpu-scale
studies) and at paper size (HumMUSS paper-bidirectional, MotionBERT-Lite; batch 2).
MACs per frame are counted as 3 x the forward's matmul MACs (backward ~ 2 x forward;
HumMUSS: its Linear layers, `linear_macs_per_frame`).
"""

import pytest
import torch

from hummuss.losses import PoseLoss
from hummuss.zoo import build_model
from suite.bench import bench_input as clip
from suite.bench import linear_macs_per_frame, quick, record

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
    torch.manual_seed(0)
    model = build_model(name, preset, **overrides).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    loss_fn = PoseLoss()
    x = clip(FRAMES, batch)
    target = torch.randn(batch, FRAMES, 17, 3, generator=torch.Generator().manual_seed(1)) * 0.3
    losses = []

    def step():
        loss, _ = loss_fn(model(x), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())

    benchmark.group = f"train step F={FRAMES} ({size} size)"
    benchmark.pedantic(step, rounds=rounds, iterations=1, warmup_rounds=1)
    assert all(torch.isfinite(torch.tensor(losses)))
    macs = model.macs_per_frame(FRAMES) if name == "motionbert" else linear_macs_per_frame(model)
    record(benchmark, model=_name(case), mode="train", frames=FRAMES, frames_per_call=batch * FRAMES,
           batch=batch, macs_per_frame=3 * macs, rate=matmul_rate, steps_per_s=1 / benchmark.stats.stats.median)

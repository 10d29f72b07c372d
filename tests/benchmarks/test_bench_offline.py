"""Offline: frames per second and peak memory of one forward pass over F frames, batch 1.

HumMUSS `paper-bidirectional` against MotionBERT-Lite over the whole sequence in one pass
(built with maxlen = F) and, for F > 243, MotionBERT-Lite in 243-frame windows. Both
under torch.inference_mode. HumMUSS's MACs per frame are those of its Linear layers
(`linear_macs_per_frame`: offline its convolutions are FFTs and small Toeplitz matmuls,
about 1% of that); MotionBERT's `macs_per_frame(F)` counts its Linear layers and attention
matmuls. Peak memory: what one pass allocates (torch profiler events),
measured on a first pass with HumMUSS's evaluation caches cleared (so it counts building its
convolution operators too); the timed passes follow (with HumMUSS's caches warm). At F = 243
both models also count the matmul MACs, GELUs and FFTs of one pass (`operations`, for the
floors of the F = 243 target: suite/operations.py). The target's ratio at F = 243 comes from
the two models' passes taken alternately in one loop (`suite.bench.alternate`, PAIRED_ROUNDS
rounds, in the MotionBERT-Lite case): each round's fps ratio (`paired_ratios`), their median and
its 95% distribution-free interval, "undecided" where it straddles the goal, as for the
training steps. One pass of either model moved by 10% or more between runs on a shared machine
(HumMUSS 520-630 ms a pass at F = 243 within an hour on a 2-core Xeon), more than the margin of most
runs' ratios to the goal.
"""

import statistics

import pytest
import torch

from hummuss.windows import sliding_window_forward
from suite.bench import (
    alternate,
    clear_caches,
    linear_macs_per_frame,
    peak_memory_mb,
    quick,
    record,
)
from suite.bench import bench_input as clip
from suite.operations import count_operations

QUICK_MODE = quick()


FRAMES = (27, 81, 243) if QUICK_MODE else (27, 81, 243, 729, 2187)
HUMMUSS_ROUNDS = {27: 10, 81: 5, 243: 5, 729: 2, 2187: 2}
LITE_ROUNDS = {27: 5, 81: 3, 243: 4, 729: 1, 2187: 1}
COUNTED = 243  # the target's F: one more pass counts its operations, for the floors
PAIRED_ROUNDS = 6 if QUICK_MODE else 12  # at F = COUNTED: rounds of one pass of each model, alternated (6: the fewest with a 95% interval)


def _run(benchmark, model_fn, x, rounds, model) -> dict:
    """Peak memory, then the timed passes -> extra_info: peak_mb, and at F = COUNTED the
    pass's `operations` (suite.operations.count_operations)."""
    clear_caches(model)
    with torch.inference_mode():
        extra = dict(peak_mb=peak_memory_mb(lambda: model_fn(x)))
        y = benchmark.pedantic(model_fn, args=(x,), rounds=rounds, iterations=1)
        if x.shape[1] == COUNTED:
            extra["operations"] = count_operations(lambda: model_fn(x))
    assert y.shape == x.shape and torch.isfinite(y).all()
    return extra


@pytest.mark.parametrize("frames", FRAMES)
def test_hummuss_offline(benchmark, models, matmul_rate, frames):
    model = models("hummuss", "paper-bidirectional")
    benchmark.group = f"offline F={frames}"
    extra = _run(benchmark, model, clip(frames), HUMMUSS_ROUNDS[frames], model)
    record(benchmark, model="hummuss-paper-bidirectional", mode="offline", frames=frames,
           frames_per_call=frames, macs_per_frame=linear_macs_per_frame(model), rate=matmul_rate, **extra)


@pytest.mark.parametrize("frames", FRAMES)
def test_motionbert_lite_offline(benchmark, models, matmul_rate, frames):
    lite = models("motionbert", "lite", maxlen=max(frames, 243))
    benchmark.group = f"offline F={frames}"
    extra = _run(benchmark, lite, clip(frames), LITE_ROUNDS[frames], lite)
    if frames == COUNTED:  # the target's ratio: both models' passes alternated
        extra.update(_paired_passes(models("hummuss", "paper-bidirectional"), lite, clip(frames)))
    record(benchmark, model="motionbert-lite", mode="offline", frames=frames, frames_per_call=frames,
           macs_per_frame=lite.macs_per_frame(frames), rate=matmul_rate, maxlen=lite.config.maxlen, **extra)


def _paired_passes(hummuss, lite, x) -> dict:
    """One pass of each model per round, alternately (the order swapped every other round),
    after one untimed pass of each -> the medians (paired_ms: HumMUSS's, paired_own_ms:
    MotionBERT-Lite's, ms) and each round's fps ratio HumMUSS / MotionBERT-Lite (paired_ratios)."""
    with torch.inference_mode():
        hummuss(x), lite(x)
        h_s, m_s = alternate([lambda: hummuss(x), lambda: lite(x)], PAIRED_ROUNDS, swap=True)
    h_ms, m_ms = 1e3 * statistics.median(h_s), 1e3 * statistics.median(m_s)
    return dict(paired_model="hummuss-paper-bidirectional", paired_ms=h_ms, paired_own_ms=m_ms,
                paired_ratio=m_ms / h_ms, paired_ratios=[m / h for h, m in zip(h_s, m_s)])


@pytest.mark.parametrize("frames", [f for f in FRAMES if f > 243])
def test_motionbert_lite_windows(benchmark, models, matmul_rate, frames):
    lite = models("motionbert", "lite")

    def windows(x):
        return sliding_window_forward(lite, x, 243)

    benchmark.group = f"offline F={frames}"
    extra = _run(benchmark, windows, clip(frames), LITE_ROUNDS[frames], lite)
    record(benchmark, model="motionbert-lite", mode="offline, windows of 243", frames=frames,
           frames_per_call=frames, macs_per_frame=lite.macs_per_frame(243), rate=matmul_rate,
           windows=-(-frames // 243), **extra)

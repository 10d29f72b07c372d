"""MotionBERT-Lite speed on CPU: offline forward, sliding windows beyond 243 frames, streaming.

Collected only with --benchmark-only (`make bench`). Batch 1, eval mode, no autograd.
"""

import pytest
import torch

from hummuss.baselines.motionbert import MotionBERT, MotionBERTConfig
from hummuss.windows import sliding_window_forward

# frames -> rounds: few rounds for the long inputs keep the whole file to a few minutes
OFFLINE = {27: 10, 81: 5, 243: 3}
WINDOWED = {729: 2, 2187: 1}
STREAM_WINDOWS = {27: 20, 81: 10, 243: 5}


@pytest.fixture(scope="module")
def lite():
    torch.manual_seed(0)
    return MotionBERT(MotionBERTConfig.preset("lite")).eval()


def _clip(frames):
    return torch.randn(1, frames, 17, 3, generator=torch.Generator().manual_seed(frames))


def _record(benchmark, frames, **extra):
    median = benchmark.stats.stats.median  # robust to a busy machine's outliers
    benchmark.extra_info.update(model="motionbert-lite", frames=frames, fps=frames / median, **extra)


@pytest.mark.parametrize("frames", list(OFFLINE))
def test_offline_forward(benchmark, lite, frames):
    x = _clip(frames)
    with torch.no_grad():
        y = benchmark.pedantic(lite, args=(x,), rounds=OFFLINE[frames], iterations=1, warmup_rounds=1)
    assert y.shape == (1, frames, 17, 3)
    _record(benchmark, frames, mode="offline")


@pytest.mark.parametrize("frames", list(WINDOWED))
def test_sliding_window_forward(benchmark, lite, frames):
    x = _clip(frames)
    with torch.no_grad():
        y = benchmark.pedantic(sliding_window_forward, args=(lite, x, 243), rounds=WINDOWED[frames],
                               iterations=1)
    assert y.shape == (1, frames, 17, 3)
    _record(benchmark, frames, mode="windows of 243", windows=frames // 243)


@pytest.mark.parametrize("window", list(STREAM_WINDOWS))
def test_stream_step(benchmark, lite, window):
    """Per-frame latency once the buffer is full: each step re-runs `window` frames."""
    x = _clip(window + STREAM_WINDOWS[window] + 1)
    s = lite.stream(window=window)
    s.prefill(x[:, :window])  # a full buffer, as after `window` steps
    frames = iter(range(window, x.shape[1]))

    def step():
        return s.step(x[:, next(frames)])

    y = benchmark.pedantic(step, rounds=STREAM_WINDOWS[window], iterations=1, warmup_rounds=1)
    assert y.shape == (1, 17, 3)
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(model="motionbert-lite", mode="stream", window=window,
                                latency_ms=1e3 * median, fps=1.0 / median)

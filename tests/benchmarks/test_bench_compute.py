"""Compute: this machine's fp32 matmul rate, and the multiply-accumulates per frame of both
models, so each figure of the other benchmarks reads as a fraction of what the hardware allows.
"""

import pytest
import torch

from suite.bench import quick

QUICK_MODE = quick()


# (m, k, n): the large reference, the streaming step's shapes (17 joints x 256 -> 768 and
# back) and an offline block projection at F = 243 (4131 tokens x 256 -> 640)
SHAPES = [(1024, 1024, 1024), (17, 256, 768), (17, 768, 256), (4131, 256, 640)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matmul_rate(benchmark, shape):
    m, k, n = shape
    a, b, c = torch.randn(m, k), torch.randn(k, n), torch.empty(m, n)
    reps = max(1, int(5e7 // (m * k * n)))

    def run():
        for _ in range(reps):
            torch.mm(a, b, out=c)

    benchmark.group = "compute: fp32 matmul rate"
    benchmark.pedantic(run, rounds=5 if QUICK_MODE else 20, iterations=1, warmup_rounds=2)
    rate = m * k * n * reps / benchmark.stats.stats.median / 1e9
    benchmark.extra_info.update(model="torch.mm", mode="matmul", m=m, k=k, n=n, gmacs=rate)
    assert rate > 0 and rate == rate  # positive and not NaN


def test_streaming_linear_rate(benchmark, models):
    """The streaming step's projections alone: 60 distinct weights of paper-causal applied to
    one frame's 17 tokens, so the weights come from memory as in the real step."""
    model = models("hummuss", "paper-causal")
    weights = [lin.weight.detach() for layer in model.layers
               for block in (layer.spatial_st, layer.temporal_st, layer.temporal_ts, layer.spatial_ts)
               for lin in (block.proj_id, block.proj_in, block.proj_out)]
    x = {w.shape[1]: torch.randn(17, w.shape[1]) for w in weights}
    macs = sum(17 * w.numel() for w in weights)

    def run():
        for w in weights:
            torch.mm(x[w.shape[1]], w.t())

    benchmark.group = "compute: fp32 matmul rate"
    benchmark.pedantic(run, rounds=20 if QUICK_MODE else 100, iterations=1, warmup_rounds=5)
    rate = macs / benchmark.stats.stats.median / 1e9
    benchmark.extra_info.update(model="torch.mm", mode="matmul, streaming step's 60 projections",
                                macs=macs, weights_mb=sum(w.numel() for w in weights) * 4 / 2**20, gmacs=rate)
    assert len(weights) == 60


def test_macs_per_frame(benchmark, models, matmul_rate):
    """Multiply-accumulates per output frame of both models (the streaming comparison's ratio)."""
    hummuss = models("hummuss", "paper-causal")
    lite = models("motionbert", "lite")

    def count():
        return dict(hummuss_stream=hummuss.macs_per_frame(),
                    motionbert_lite_window_243=243 * lite.macs_per_frame(243),
                    motionbert_lite_offline_243=lite.macs_per_frame(243),
                    hummuss_bidirectional=models("hummuss", "paper-bidirectional").macs_per_frame())

    benchmark.group = "compute: MACs per frame"
    macs = benchmark.pedantic(count, rounds=1, iterations=1)
    ratio = macs["motionbert_lite_window_243"] / macs["hummuss_stream"]
    benchmark.extra_info.update(model="both", mode="macs", matmul_gmacs=matmul_rate,
                                stream_macs_ratio=ratio, **macs)
    assert 200 < ratio < 300  # "about 240"


def test_memory_bandwidth(benchmark):
    """Read + write bandwidth on 64 MiB blocks (the size of paper-causal's streaming state),
    the floor of a streaming step that must read and rewrite its whole state every frame."""
    src = [torch.randn(16 * 2**20) for _ in range(4)]  # 4 x 64 MiB: more than the caches
    dst = [torch.empty_like(s) for s in src]

    def run():
        for s, d in zip(src, dst):
            d.copy_(s)

    benchmark.group = "compute: memory bandwidth"
    benchmark.pedantic(run, rounds=5 if QUICK_MODE else 20, iterations=1, warmup_rounds=2)
    moved = 2 * sum(s.numel() * 4 for s in src)  # bytes read + written
    gbs = moved / benchmark.stats.stats.median / 1e9
    benchmark.extra_info.update(model="copy_", mode="bandwidth", bytes=moved, gb_per_s=gbs)
    assert gbs > 0

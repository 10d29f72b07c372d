"""Compute: this machine's fp32 matmul rate, and the multiply-accumulates per frame of both
models, so each figure of the other benchmarks reads as a fraction of what the hardware allows.
"""

import itertools
import json
import os
import subprocess
import sys

import pytest
import torch

from hummuss import mkl_vendor
from hummuss.ssm import planar_state, stagger
from hummuss.ssm.conv import fft_size
from hummuss.stream import AUTO_COMPILE_AFTER
from suite.bench import quick
from suite.operations import operation_rates

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


@pytest.mark.parametrize("kind", ["torch.mm", "packed"])
def test_streaming_linear_rate(benchmark, models, kind):
    """The streaming step's projections alone: the 60 weights of paper-causal applied to one
    frame's 17 tokens, each read from memory as in the real step. torch.mm: each weight
    separately through torch.mm; packed: as the step runs them, the 40 prepacked products of
    `stream_constants` (each block's input projections fused in one; `packed_linear`: the
    suite's few-rows kernel where it is built, else oneDNN)."""
    model = models("hummuss", "paper-causal")
    blocks = [block for layer in model.layers
              for block in (layer.spatial_st, layer.temporal_st, layer.temporal_ts, layer.spatial_ts)]
    weights = [lin.weight.detach() for block in blocks for lin in (block.proj_id, block.proj_in, block.proj_out)]
    x = {w.shape[1]: torch.randn(17, w.shape[1]) for w in weights}
    macs = sum(17 * w.numel() for w in weights)
    if kind == "torch.mm":
        def run():
            for w in weights:
                torch.mm(x[w.shape[1]], w.t())
    else:
        packed = [c[key] for c in (block.stream_constants(17) for block in blocks) for key in ("proj", "out")]

        def run():
            for lin in packed:
                lin(x[lin.weight.shape[1]])

    benchmark.group = "compute: fp32 matmul rate"
    with torch.inference_mode():
        benchmark.pedantic(run, rounds=20 if QUICK_MODE else 100, iterations=1, warmup_rounds=5)
    rate = macs / benchmark.stats.stats.median / 1e9
    benchmark.extra_info.update(model=kind, mode="matmul, streaming step's projections", macs=macs,
                                weights_mb=sum(w.numel() for w in weights) * 4 / 2**20, gmacs=rate,
                                latency_ms=1e3 * benchmark.stats.stats.median)
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


def _planar_state(block, joints: int) -> torch.Tensor:
    """A temporal block's streaming state at batch 1 as the CPU step holds it: planar (2, H, J, M)."""
    return torch.randn(2, block.width, joints, block.ssm_f.modes)


def _state_traffic(block, joints: int):
    """A temporal block's share of one streaming frame's state traffic, as the staggered update
    (`hummuss.ssm.stagger`) moves it: the next group of its channels (a T-th) has its state
    rewritten in place (`mul_`) and its coefficients read (a sum), the groups in turn frame
    by frame as the step advances them. Left out: the read-out's every-frame reads of the free
    responses, the last inputs and the taps K (about 0.3 MB a block at paper-causal's sizes, a
    few percent of the rest). Returns (the frame, bytes moved a frame)."""
    s = _planar_state(block, joints)
    dA, dB = (planar_state(t) for t in block.ssm_f.discretise_step(1.0)[:2])
    coef, _ = stagger.coefficients(dA, dB, *block.ssm_f.readout_planes())
    H, T = s.shape[1], stagger.FRAMES
    groups = itertools.cycle([(g * H // T, (g + 1) * H // T) for g in range(T)])

    def frame():
        lo, hi = next(groups)
        s[:, lo:hi].mul_(1.0)
        coef[lo:hi].sum()

    return frame, (2 * s.numel() + coef.numel()) * 4 // T


def test_memory_bandwidth(benchmark, models):
    """One streaming frame's state traffic of paper-causal alone: each of its 10 temporal
    blocks (2, 768, 17, 64) rewrites a quarter of its state in place and reads a quarter of its
    staggered update's coefficients (`_state_traffic`): 16.7 MB rewritten and 12.8 MB read a
    frame, of 66.8 MB of state and 51 MB of coefficients. No step that moves them is faster.
    (The per-frame update, `hummuss.ssm.state_kernel`, rewrites the whole state every frame.)"""
    model = models("hummuss", "paper-causal")
    blocks = [block for layer in model.layers for block in (layer.temporal_st, layer.temporal_ts)]
    traffic = [_state_traffic(block, model.config.num_joints) for block in blocks]

    def run():
        for frame, _ in traffic:
            frame()

    benchmark.group = "compute: memory bandwidth"
    benchmark.pedantic(run, rounds=20 if QUICK_MODE else 200, iterations=1, warmup_rounds=stagger.FRAMES)
    moved = sum(n for _, n in traffic)
    benchmark.extra_info.update(model="staggered state traffic", mode="bandwidth", bytes=moved,
                                gb_per_s=moved / benchmark.stats.stats.median / 1e9,
                                latency_ms=1e3 * benchmark.stats.stats.median)
    assert len(traffic) == 10 and moved == 10 * (2 * 2 * 768 * 17 * 64 + 768 * 13 * 2 * 64) * 4 // 4


def test_stream_working_set(benchmark, models):
    """One frame's memory traffic as paper-causal's streaming step moves it, without its
    arithmetic: block by block in the step's order, each block's packed projection weights
    read once (a sum over them) and each temporal block's share of the state traffic
    (`_state_traffic`). The step's weights (45 MB), states (66.8 MB) and coefficients (51 MB)
    together outgrow a 2-core VM's share of its cache, where each alone may fit
    (`test_memory_bandwidth` and `test_streaming_linear_rate` measure them apart). No step
    that reads every weight once a frame and moves that share of its state is faster."""
    model = models("hummuss", "paper-causal")
    J = model.config.num_joints
    frame = []  # (weights to read, the block's state traffic or None), in the step's order
    for layer in model.layers:
        for block in (layer.spatial_st, layer.temporal_st, layer.temporal_ts, layer.spatial_ts):
            consts = block.stream_constants(J, J)
            weights = [consts[key].weight for key in ("proj", "out")]
            frame.append((weights, _state_traffic(block, J) if block.temporal else None))

    def run():
        for weights, traffic in frame:
            for w in weights:
                w.sum()
            if traffic is not None:
                traffic[0]()

    benchmark.group = "compute: memory bandwidth"
    benchmark.pedantic(run, rounds=20 if QUICK_MODE else 200, iterations=1, warmup_rounds=stagger.FRAMES)
    state_bytes = sum(t[1] for _, t in frame if t is not None)
    weight_bytes = sum(w.numel() * w.element_size() for ws, _ in frame for w in ws)
    moved = state_bytes + weight_bytes
    benchmark.extra_info.update(model="states and weights", mode="working set", bytes=moved,
                                state_mb=state_bytes / 1e6, weights_mb=weight_bytes / 1e6,
                                gb_per_s=moved / benchmark.stats.stats.median / 1e9,
                                latency_ms=1e3 * benchmark.stats.stats.median)
    assert len([t for _, t in frame if t is not None]) == 10 and weight_bytes > 40e6


def test_stream_step_overhead(benchmark, models):
    """The default streaming step (`stream()`, as the stream benchmark's "default" rows) of
    paper-causal's network shrunk to dim 16 and state size 2: the same 5 layers, 20 blocks and 40
    projections, each kernel tiny. What it takes is the step's fixed cost (dispatch, guards,
    kernel launches, the threads' hand-offs), paid at any size."""
    model = models("hummuss", "paper-causal", dim=16, dim_rep=32, state_size=2)
    stream = model.stream(batch_size=1)
    x = torch.randn(1, 17, 3)
    for _ in range(AUTO_COMPILE_AFTER + 3):  # past the default's choice of step (a compilation), warm
        stream.step(x)

    benchmark.group = "compute: stream step overhead"
    benchmark.pedantic(stream.step, args=(x,), rounds=50 if QUICK_MODE else 300, iterations=1, warmup_rounds=5)
    path = stream.path
    assert path != "eager", "the default stream() is on neither the planned frame nor the compiled step"
    benchmark.extra_info.update(model="hummuss-paper-causal, dim 16, default", mode="overhead", path=path,
                                latency_ms=1e3 * benchmark.stats.stats.median)


def test_operation_rates(benchmark):
    """The best rates of GELU (forward and backward) and of the FFTs of the F = 243 convolutions
    (rfft and irfft of 512 points) on data in cache: with the matmul rate, what the operation
    floors of the offline and training targets divide their counts by (suite/operations.py)."""
    n = fft_size(2 * 243 - 1)
    rates = {}

    def measure():
        rates.update(operation_rates([f"r2c:{n}", f"c2r:{n}"], repeats=10 if QUICK_MODE else 30))

    benchmark.group = "compute: operation rates"
    benchmark.pedantic(measure, rounds=1, iterations=1)
    benchmark.extra_info.update(model="gelu, fft", mode="operation rates", rates=rates)
    assert rates["gelu_per_s"] > 0 and rates["gelu_backward_per_s"] > 0 and len(rates["fft_us"]) == 2


CODE_PATH_PROBE = ("import json; from suite.bench import gemm_rate; from suite.operations import operation_rates; "
                   "print(json.dumps(dict(gmacs=gemm_rate(2048, 2048, 2048, seconds=2.0), "
                   "fft_us=operation_rates(['r2c:512', 'c2r:512'], repeats=30)['fft_us'])))")


@pytest.mark.skipif(not mkl_vendor.applies(), reason="an Intel CPU (or not x86-64 Linux): MKL has one code path here")
def test_mkl_code_paths(benchmark):
    """MKL's two code paths on a CPU that is not an Intel one (hummuss/mkl_vendor.py): a 2048^3
    matmul's rate and 512-point rfft / irfft, each measured in a process of its own, one
    started with MKL's generic code and one with its Intel code path, alternated for 3 rounds:
    the speed-up every model gets from the library the suite's processes start with."""
    plain = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    paths = {"generic": {**plain, mkl_vendor.ENV: "0"}, "intel": mkl_vendor.with_intel_path({**plain, mkl_vendor.ENV: "1"})}
    found: dict[str, list[dict]] = {name: [] for name in paths}

    def measure():
        for name, env in paths.items():
            out = subprocess.run([sys.executable, "-c", CODE_PATH_PROBE], env=env, capture_output=True, text=True,
                                 check=True, timeout=300)
            found[name].append(json.loads(out.stdout.strip().splitlines()[-1]))

    benchmark.group = "compute: MKL code paths"
    benchmark.pedantic(measure, rounds=1 if QUICK_MODE else 3, iterations=1)
    best = {name: dict(gmacs=max(r["gmacs"] for r in runs),
                       fft_us={k: min(r["fft_us"][k] for r in runs) for k in runs[0]["fft_us"]})
            for name, runs in found.items()}
    benchmark.extra_info.update(model="torch.mm, torch.fft", mode="MKL code paths", code_path=mkl_vendor.code_path(),
                                paths=best, rounds=found,
                                matmul_speedup=best["intel"]["gmacs"] / best["generic"]["gmacs"],
                                fft_speedup={k: best["generic"]["fft_us"][k] / best["intel"]["fft_us"][k]
                                             for k in best["intel"]["fft_us"]})
    assert all(r["gmacs"] > 0 for runs in found.values() for r in runs)

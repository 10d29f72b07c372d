"""Streaming: per-frame latency at batch 1.

HumMUSS `paper-causal` steps its state eagerly (`model.stream(compile=False)`) and as a user
gets it by default (`model.stream()`, the rows named "default": the planned eager frame where
the CPU kernels run every block in one call, else compiled once AUTO_COMPILE_AFTER frames have
streamed, where a compiler exists; `path` says which), measured after 100 and after 10,000
frames of context (the cost must not grow). Each context has its own stream; at 10,000 the two streams are also
stepped alternately (`paired_ratio`), so that the flatness ratio does not depend on what the
machine did between the two measurements; MotionBERT-Lite
re-runs its last `window` frames for every new frame (windows 27, 81, 243). Peak memory is
what one step allocates (torch profiler events).

The streaming targets' ratios (MotionBERT-Lite's 243-frame window over HumMUSS's step, eager and
default) come from rounds that alternate the two (`WINDOW_ROUNDS`, in the window-243 case): one
window, then STEPS_PER_ROUND steps of each HumMUSS stream at the shortest context (after
WARM_STEPS untimed ones: a stream steps continuously, and its first step after a window finds its
64 MB of state out of cache), the order swapped every other round; each round's ratio is the
window's time over the median of its steps (`paired_ratios_eager`, `paired_ratios_default`), and
the target reads their median and its 95% interval, "undecided" where that straddles the goal.
The step's fraction of the matmul rate comes from the same rounds: each also measures the
1024 x 1024 matmul's rate (`gemm_rate`, for FRACTION_MATMUL_S), and each round's fraction is the
step's MACs per second over that round's matmul rate (`paired_fractions_eager`, `_default`):
the ratios and the fractions of the targets read the same steps, and a stretch in which the
machine runs slower weighs on the matmul too.
"""

import itertools
import statistics

import pytest
import torch

from suite.bench import alternate, gemm_rate, peak_memory_mb, quick, record
from suite.bench import bench_input as clip

QUICK_MODE = quick()

GROUP = "stream: per-frame latency, batch 1"
CONTEXTS = (100, 1_000) if QUICK_MODE else (100, 10_000)
ROUNDS = 30 if QUICK_MODE else 300
PAIRED_ROUNDS = 50 if QUICK_MODE else 300  # alternate steps of the short and the long stream
WINDOWS = {27: 5, 243: 2} if QUICK_MODE else {27: 20, 81: 10, 243: 5}  # window -> rounds
TARGET_WINDOW = 243
WINDOW_ROUNDS = 6 if QUICK_MODE else 12  # rounds of one window and the HumMUSS steps, alternated (6: the fewest with an interval)
STEPS_PER_ROUND = 30
WARM_STEPS = 10
FRACTION_MATMUL_S = 0.1  # each window round's matmul rate: the median of its calls over this long


class _Stepper:
    """A HumMUSS stream fed with a looping clip, advanced to a requested context."""

    def __init__(self, model, default: bool):
        self.stream = model.stream(batch_size=1, compile=None if default else False)  # None: the default
        self.x, self.t = clip(500), 0

    def step(self):
        y = self.stream.step(self.x[:, self.t % self.x.shape[1]])
        self.t += 1
        return y

    def advance_to(self, context: int):
        while self.stream.frames_seen < context:
            self.step()


@pytest.fixture(scope="module")
def steppers(models):
    """(default, context) -> a stream of its own, advanced to `context` on first use."""
    model, made = models("hummuss", "paper-causal"), {}

    def get(default: bool, context: int) -> _Stepper:
        if (default, context) not in made:
            made[default, context] = _Stepper(model, default)
            made[default, context].advance_to(context)
        return made[default, context]

    return get


def _round_of_steps(stepper: _Stepper) -> float:
    """WARM_STEPS untimed steps (the state back in cache), then STEPS_PER_ROUND timed -> their
    median, in seconds."""
    for _ in range(WARM_STEPS):
        stepper.step()
    return statistics.median(alternate([stepper.step], STEPS_PER_ROUND)[0])


def _paired(short: _Stepper, long: _Stepper, rounds: int) -> tuple[float, float]:
    """Median step latency (ms) of two streams stepped alternately (`suite.bench.alternate`)."""
    times = alternate([short.step, long.step], rounds)
    return 1e3 * statistics.median(times[0]), 1e3 * statistics.median(times[1])


@pytest.mark.parametrize("default", [False, True], ids=["eager", "default"])
@pytest.mark.parametrize("context", CONTEXTS)
def test_hummuss_stream_step(benchmark, models, matmul_rate, steppers, context, default):
    model, stepper = models("hummuss", "paper-causal"), steppers(default, context)
    start = stepper.stream.frames_seen
    assert start >= context
    peak = peak_memory_mb(stepper.step)

    benchmark.group = GROUP
    y = benchmark.pedantic(stepper.step, rounds=ROUNDS, iterations=1, warmup_rounds=3)
    assert y.shape == (1, 17, 3) and torch.isfinite(y).all()
    path = stepper.stream.path
    if default:  # past AUTO_COMPILE_AFTER frames: the planned frame where it applies, else compiled
        assert path != "eager", "the default stream() is on neither the planned frame nor the compiled step"
    state_mb = sum(s.numel() * s.element_size() for s in stepper.stream.state_tensors()) / 2**20
    extra = {}
    if context > CONTEXTS[0]:  # flatness, measured alternately against a stream at the shortest context
        short_ms, long_ms = _paired(steppers(default, CONTEXTS[0]), stepper, PAIRED_ROUNDS)
        extra = dict(paired_context=CONTEXTS[0], paired_short_ms=short_ms, paired_long_ms=long_ms,
                     paired_ratio=long_ms / short_ms)
    record(benchmark, model="hummuss-paper-causal" + (", default" if default else ""), mode="stream",
           frames=context, frames_per_call=1, macs_per_frame=model.macs_per_frame(), rate=matmul_rate,
           peak_mb=peak, state_mb=state_mb, frames_seen=start, path=path, **extra)


def _window_rounds(window_step, steppers, macs_per_frame: int) -> dict:
    """`WINDOW_ROUNDS` rounds of one MotionBERT-Lite window step, STEPS_PER_ROUND steps of each
    HumMUSS stream (eager, default) at the shortest context after WARM_STEPS untimed, and the
    matmul rate (`gemm_rate`), alternated -> {"paired_ratios_eager": [...],
    "paired_ratios_default": [...]}: each round's window time over the median of its HumMUSS
    steps; {"paired_fractions_eager": [...], ...}: each round's MACs per second of the step
    (`macs_per_frame` over its median) over that round's matmul rate; and the medians over the
    rounds of the window's time, of each stream's step and of the matmul rate
    (`paired_window_ms`, `paired_eager_ms`, `paired_default_ms`, `paired_matmul_gmacs`)."""
    labels = ("eager", "default")
    medians = {label: [] for label in labels}  # per round: the stream's median step (s)
    rates = []  # per round: the matmul rate (GMAC/s)

    def steps(label):
        stepper = steppers(label == "default", CONTEXTS[0])
        return lambda: medians[label].append(_round_of_steps(stepper))

    def matmul():
        rates.append(gemm_rate(seconds=FRACTION_MATMUL_S))

    # the window's own time from `alternate`, the streams' medians and the rates from their calls
    window_s = alternate([window_step, *(steps(label) for label in labels), matmul], WINDOW_ROUNDS,
                         swap=True)[0]
    out = {f"paired_ratios_{label}": [w / m for w, m in zip(window_s, medians[label])] for label in labels}
    out.update({f"paired_fractions_{label}": [macs_per_frame / m / 1e9 / r for m, r in zip(medians[label], rates)]
                for label in labels})
    out["paired_matmul_gmacs"] = statistics.median(rates)
    out["paired_window_ms"] = 1e3 * statistics.median(window_s)
    out.update({f"paired_{label}_ms": 1e3 * statistics.median(medians[label]) for label in labels})
    return out


@pytest.mark.parametrize("window", list(WINDOWS))
def test_motionbert_lite_stream_step(benchmark, models, matmul_rate, steppers, window):
    """Per-frame latency once the buffer is full: each step re-runs `window` frames."""
    lite = models("motionbert", "lite")
    x = clip(window + WINDOWS[window] + 2)
    s = lite.stream(window=window)
    s.prefill(x[:, :window])  # a full buffer, as after `window` steps
    frames = itertools.cycle(range(window, x.shape[1]))  # each step's cost does not depend on the frame
    peak = peak_memory_mb(lambda: s.step(x[:, next(frames)]))

    benchmark.group = GROUP
    y = benchmark.pedantic(lambda: s.step(x[:, next(frames)]), rounds=WINDOWS[window], iterations=1)
    assert y.shape == (1, 17, 3)
    hummuss = models("hummuss", "paper-causal")
    extra = _window_rounds(lambda: s.step(x[:, next(frames)]), steppers, hummuss.macs_per_frame()) \
        if window == TARGET_WINDOW else {}
    record(benchmark, model="motionbert-lite", mode="stream", frames=window, frames_per_call=1,
           macs_per_frame=window * lite.macs_per_frame(window), rate=matmul_rate, peak_mb=peak, **extra)

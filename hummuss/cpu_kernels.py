"""The suite's hand-written CPU kernels (`hummuss/csrc/*.cpp`), compiled on first use.

Eleven sources: `mix_gate` (mix_gate.cpp), a GDSSM block's read-out mix and gate aggregation,
forward and backward, in one pass over the convolutions' outputs (`hummuss.fusion.MixGate`
is the same function in PyTorch operations, and stays the reference and the path on GPUs),
and beside it `joint_conv_mix_gate`, a streaming spatial block's convolution over the joints
from its taps, mix and gate in one pass (`hummuss.ssm.apply_taps` and `MixGate` the reference),
and `joint_block`, that block's whole streaming step around it (layer norm, both projections and
the residual in one call; `GDSSM.forward`'s operations the reference);
`state_step_` (state_step.cpp), the streaming step's state update in place, and
`state_step_mix_`, the same followed by the read-out's GELU and mix
(`hummuss.ssm.state_kernel`; `hummuss.ssm.recurrence.advance_state_planar` is the reference);
`state_stagger_mix_` (state_stagger.cpp), the staggered streaming update, a quarter of the
channels advanced by four frames a frame, with the same mix, `state_stagger_sync_`, its
states brought to the last frame (`hummuss.ssm.stagger`; the per-frame recurrence the reference),
and `stagger_block_`, a temporal block's whole streaming step around that update (layer norm,
both projections, gate and residual in one call; `GDSSM.step`'s operations the reference);
and `spectral_backward` (spectral.cpp), the FFT convolution's backward products in one pass
(`hummuss.ssm.fft_conv.FFTConv`, whose PyTorch operations stay beside it as the reference);
and `few_rows_linear` (few_rows_linear.cpp), a linear layer for the streaming step's few rows
(17 a frame) from a weight packed once (`hummuss.packed_linear`; torch.addmm the reference).
And `bias_gelu_` with `gelu_bias_backward` (bias_gelu.cpp), a training block's input
projection's bias and GELU after its matmul and their backward, one pass each
(`hummuss.channel_linear.ChannelMajorGelu`; `F.gelu` of `channel_major` the reference).
And `power_factors`, `factored_kernel` and `kernel_sums` (vandermonde.cpp), the DSSM
kernel's Vandermonde factors, the kernel from them and its backward's sums over them
(`hummuss.ssm.conv.power_factors`, `VandermondeKernel`; their PyTorch operations the reference); and `toeplitz_product` with
its two backward products (toeplitz_product.cpp), a spatial block's convolution over the
joints in training (`hummuss.ssm.conv.ToeplitzProduct`; torch.bmm the reference). And
`fft_mix_gate_into`, `fft_mix_gate_backward` and `fft_lane_operator` (fft_mix_gate.cpp), a
temporal block's FFT convolution, mix and gate in one pass each way, its transforms written out
and vectorised across channels (`hummuss.conv_mix_gate.FFTMixGate`, `fft_mix_gate_into`;
`FFTConv` then `MixGate` the reference). mix_gate.cpp, bias_gelu.cpp, state_step.cpp,
state_stagger.cpp and fft_mix_gate.cpp share one GELU (gelu.h); state_stagger.cpp calls
few_rows_linear.cpp's product and layer norm (few_rows.h), and so does mix_gate.cpp. And
`learned_fusion` (learned_fusion.cpp), the streaming step's learned fusion of a layer's two
streams for one frame's tokens (`hummuss.fusion.Aggregate`, kind "learned", the reference),
and `stream_layer` (stream_layer.cpp), a layer's four one-call blocks in one call, its two
streams at once where ATen's pool has two threads (the blocks called one by one the reference;
blocks.h declares them for it).

`ops()` compiles the sources with `torch.utils.cpp_extension` for this CPU's vector
instructions (ATen's `Vectorized` at the width that `torch.backends.cpu.get_cpu_capability()`
reports: AVX512, AVX2, or plain C++), about 15 s once per machine and checkout; the library
is cached under torch's extensions directory (`build_directory`: TORCH_EXTENSIONS_DIR, one
folder per torch version, capability and checkout), rebuilt where the sources or flags
change, and later processes load it in milliseconds. Processes that start together build it
once (torch's lock file); a lock left by a process killed while building is removed once it
is 10 minutes old, also by processes already waiting for it. Where it cannot be built (no C++ compiler, no
ninja) or HUMMUSS_CPU_KERNELS=0, `ops()` returns None after one warning and the callers run
their PyTorch operations instead: the same numbers up to float rounding.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import threading
import time
import warnings
from pathlib import Path

import torch

SOURCES = [Path(__file__).with_name("csrc") / name for name in ("mix_gate.cpp", "state_step.cpp", "spectral.cpp",
                                                                   "few_rows_linear.cpp", "bias_gelu.cpp",
                                                                   "vandermonde.cpp", "toeplitz_product.cpp",
                                                                   "fft_mix_gate.cpp", "state_stagger.cpp",
                                                                   "learned_fusion.cpp", "stream_layer.cpp")]
HEADERS = [Path(__file__).with_name("csrc") / h for h in ("gelu.h", "few_rows.h", "blocks.h")]  # included by sources: their text is in the build flags
ENV = "HUMMUSS_CPU_KERNELS"  # "0": never build or use them
STALE_LOCK_S = 600  # a build lock older than this was left by a process that died while building
LOCK_CHECK_S = 30  # while building or waiting for another process's build: how often to look for one

# per vector capability: the compiler's instruction set and ATen's `Vectorized` selection
_CAPABILITY_FLAGS = {
    "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma",
               "-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512"],
    "AVX2": ["-mavx2", "-mfma", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"],
}


def enabled() -> bool:
    return os.environ.get(ENV, "1") != "0"


def runs_on(device: torch.device | str, dtype: torch.dtype) -> bool:
    """Whether the kernels that take float32 CPU tensors (the streaming step's: the state
    update, the spatial block, the few-rows projections; training's Toeplitz products and
    Vandermonde factors) run on tensors of this device and dtype: the CPU, float32, and the
    kernels built (building them on first call)."""
    return torch.device(device).type == "cpu" and dtype == torch.float32 and ops() is not None


def capability() -> str:
    """The vector capability the kernels are built for: ATen's own choice on this CPU, where
    we have flags for it; otherwise "DEFAULT" (portable C++)."""
    cap = torch.backends.cpu.get_cpu_capability()
    return cap if cap in _CAPABILITY_FLAGS else "DEFAULT"


def build_directory(cap: str) -> Path:
    """Where the kernels for `cap` are built and cached: torch's extensions directory
    (TORCH_EXTENSIONS_DIR, else ~/.cache/torch_extensions), one folder per torch version,
    capability and checkout. (torch's build file names the sources by their absolute paths:
    two checkouts sharing a folder rebuilt it for each other whenever a process of the other
    loaded the kernels, 15-60 s each time, while the other's processes waited on the lock.)"""
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions"
    version = re.sub(r"[^0-9A-Za-z.]+", "_", torch.__version__)
    checkout = hashlib.sha1(str(SOURCES[0].parent.resolve()).encode()).hexdigest()[:8]
    return Path(root) / f"hummuss-torch{version}-{cap.lower()}-{checkout}"


@contextlib.contextmanager
def _stale_lock_watch(folder: Path):
    """Clear a stale lock now and, while the block runs (torch's build, or its wait for another
    process's build), every LOCK_CHECK_S: a lock that goes stale while we wait (its builder
    killed mid-build) would otherwise keep us waiting forever."""
    _clear_stale_lock(folder)
    done = threading.Event()

    def watch():
        while not done.wait(LOCK_CHECK_S):
            _clear_stale_lock(folder)

    watcher = threading.Thread(target=watch, name="hummuss-build-lock-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()


def _clear_stale_lock(folder: Path) -> None:
    """torch's build waits for as long as a `lock` file exists in the folder; one left by a
    process killed during its build (15 s) would make every later process wait forever."""
    lock = folder / "lock"
    try:
        if time.time() - lock.stat().st_mtime > STALE_LOCK_S:
            warnings.warn(f"hummuss: removing a stale build lock {lock}", stacklevel=3)
            lock.unlink(missing_ok=True)
    except FileNotFoundError:
        pass


@functools.cache
def ops():
    """torch.ops.hummuss_cpu with the compiled kernels registered, or None (one warning) where
    they are disabled or cannot be built."""
    if not enabled():
        return None
    cap = capability()
    try:
        from torch.utils import cpp_extension

        try:  # the ninja of the `ninja` package, where the environment has it and PATH does not
            import ninja

            os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
        except ImportError:
            pass
        folder = build_directory(cap)
        folder.mkdir(parents=True, exist_ok=True)
        with _stale_lock_watch(folder):
            cpp_extension.load(
                name=f"hummuss_cpu_kernels_{cap.lower()}", sources=[str(s) for s in SOURCES],
                build_directory=str(folder),
                extra_cflags=["-O3", "-fopenmp", *_CAPABILITY_FLAGS.get(cap, []), f"-DHUMMUSS_HEADERS={_headers_hash()}"],
                extra_ldflags=["-fopenmp"],
                is_python_module=False, verbose=False)
    except Exception as err:  # noqa: BLE001 (a compiler's or loader's failure of any kind)
        warnings.warn(f"hummuss: the CPU kernels could not be built ({type(err).__name__}: "
                      f"{str(err).strip().splitlines()[-1] if str(err).strip() else ''}); "
                      f"using PyTorch operations instead (set {ENV}=0 to skip the attempt)", stacklevel=2)
        return None
    _register_fakes()
    return torch.ops.hummuss_cpu


def _headers_hash() -> str:
    """A digest of the included headers: torch rebuilds the library where the sources or the
    flags change, and does not read the headers, so their text changes a flag."""
    return hashlib.sha1(b"".join(h.read_bytes() for h in HEADERS)).hexdigest()[:12]


def _register_fakes() -> None:
    """Shapes of the ops' outputs without running them, for torch.compile's tracing."""
    @torch.library.register_fake("hummuss_cpu::joint_conv_mix_gate")
    def _(both, Kz, idx, w, b):
        return both.new_empty(both.shape[0], both.shape[1] // 2)

    @torch.library.register_fake("hummuss_cpu::joint_block")
    def _(x, ln_w, ln_b, eps, Wp_in, bp_in, Kz, idx, w, b, Wp_out, bp_out):
        return x.new_empty(x.shape)  # (N, Dm)

    @torch.library.register_fake("hummuss_cpu::learned_fusion")
    def _(a, b, W, c):
        return a.new_empty(a.shape)  # (N, D)

    @torch.library.register_fake("hummuss_cpu::few_rows_linear")
    def _(x, Wp, bp, N, gelu):
        return x.new_empty(x.shape[0], N)

    @torch.library.register_fake("hummuss_cpu::state_step_")
    def _(s, a, b, u, Rr, Ri, D):
        return s.new_empty(Rr.shape[1], s.shape[2], s.shape[1]).permute(1, 2, 0)  # k planes (N, H)

    @torch.library.register_fake("hummuss_cpu::state_step_mix_")
    def _(s, a, b, u, Rr, Ri, D, mw, mb):
        return s.new_empty(s.shape[2], s.shape[1])  # (N, H)

    @torch.library.register_fake("hummuss_cpu::state_stagger_mix_")
    def _(s, ring, free, clock, coef, u, K, D, mw, mb):
        return s.new_empty(s.shape[2], s.shape[1])  # (N, H)

    @torch.library.register_fake("hummuss_cpu::stagger_block_")
    def _(x, ln_w, ln_b, eps, Wp_in, bp_in, s, ring, free, clock, coef, K, D, mw, mb, Wp_out, bp_out):
        return x.new_empty(x.shape)  # (N, Dm)

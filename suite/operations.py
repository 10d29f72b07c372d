"""The heavy operations of a call, counted while it runs, and the least time they can take.

    counts = count_operations(lambda: model(x))        # {"matmul_macs", "gelu", "gelu_backward", "fft"}
    rates = operation_rates(["r2c:512", "c2r:512"])    # this machine's GELU and FFT rates
    floor = operation_floor(counts, rates, gmacs)      # {"matmul", "gelu", ..., "total"}: seconds

`count_operations` runs the call under a `TorchDispatchMode` and counts, from the shapes of
the operations that reach the dispatcher (a backward run inside the call included):
- matmul_macs: multiply-accumulates of mm, addmm, bmm, baddbmm, linear and matmul (the
  result's elements times the length of the contracted dimension), of fused attention
  (`scaled_dot_product_attention`'s kernels, forward and backward) and of the spatial
  convolution's compiled products (`hummuss.ssm.conv.ToeplitzProduct`);
- gelu, gelu_backward: elements of GELU's forward and backward (those of the compiled
  mix-and-gate kernel, `hummuss.fusion.KernelMixGate`, of the input projections' bias and
  GELU kernels, `hummuss.channel_linear.ChannelMajorGelu`, and of the temporal blocks' FFT
  kernels, `hummuss.conv_mix_gate.FFTMixGate`, included: they evaluate them inside);
- fft: real transforms by kind and size, "r2c:512" (rfft) and "c2r:512" (irfft) -> how many
  (complex transforms as "c2c:n"); multi-dimensional ones as "r2c:16x16". The FFT kernels'
  own transforms (hummuss/csrc/fft_mix_gate.cpp) count as the real transforms they stand for.

`operation_floor` divides each count by its rate: the MACs by the measured fp32 matmul rate,
the GELUs and transforms by the best rate `operation_rates` measured for them on data that
stays in cache. Everything else the call does (elementwise products, LayerNorm, copies,
softmax, the optimizer) counts as free. A call that runs these operations through these
libraries at these rates takes at least the floor: `hummuss-suite bench` puts it beside the
speed targets (suite/report/speed.py), where it tells what a target asks of the code (the
time above the floor) from what it asks of the machine.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

MATMULS = ("mm", "addmm", "bmm", "baddbmm", "linear", "matmul")
# fused attention, forward and backward: its q k^T and attention-times-v products (and the
# backward's five: q k^T again, dV, dP, dQ, dK)
ATTENTION = ("scaled_dot_product_attention", "_scaled_dot_product_attention_math",
             "_scaled_dot_product_flash_attention", "_scaled_dot_product_flash_attention_for_cpu",
             "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention")
FFT_KINDS = ("r2c", "c2r", "c2c")


def _fft_key(kind: str, sizes: Iterable[int]) -> str:
    return f"{kind}:{'x'.join(str(int(s)) for s in sizes)}"


def _arg(args: tuple, kwargs: dict, index: int, name: str, default=None):
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else default


def _fft(name: str, args: tuple, kwargs: dict) -> tuple[str, int] | None:
    """(size key, number of transforms) of one FFT operation, or None if `name` is none."""
    if name not in ("_fft_r2c", "_fft_c2c", "_fft_c2r", "fft_rfft", "fft_irfft"):
        return None
    x = args[0]
    if name in ("_fft_r2c", "_fft_c2c", "_fft_c2r"):  # the transforms themselves: dims given
        dims = [d % x.dim() for d in _arg(args, kwargs, 1, "dim")]
        sizes = [x.shape[d] for d in dims]
        if name == "_fft_c2r":
            sizes[-1] = int(_arg(args, kwargs, 3, "last_dim_size"))
        kind = {"_fft_r2c": "r2c", "_fft_c2c": "c2c", "_fft_c2r": "c2r"}[name]
        return _fft_key(kind, sizes), x.numel() // math.prod(x.shape[d] for d in dims)
    if name in ("fft_rfft", "fft_irfft"):  # the composites, where they reach the mode (inference)
        dim = int(_arg(args, kwargs, 2, "dim", -1)) % x.dim()
        n = _arg(args, kwargs, 1, "n")
        if n is None:
            n = x.shape[dim] if name == "fft_rfft" else 2 * (x.shape[dim] - 1)
        return _fft_key("r2c" if name == "fft_rfft" else "c2r", [n]), x.numel() // x.shape[dim]
    return None


def _attention_macs(name: str, args: tuple) -> int | None:
    """MACs of a fused attention call, or None if `name` is none: per batch and head, with L
    queries of size E, S keys and values of size Ev, forward L S (E + Ev), backward
    L S (3 E + 2 Ev)."""
    backward = name.endswith("_backward")
    if (name[:-len("_backward")] if backward else name) not in ATTENTION:
        return None
    q, k, v = args[1:4] if backward else args[:3]
    rows, E, S, Ev = q.numel() // q.shape[-1], q.shape[-1], k.shape[-2], v.shape[-1]
    return rows * S * ((3 * E + 2 * Ev) if backward else (E + Ev))


TOEPLITZ_PRODUCTS = ("toeplitz_product", "toeplitz_input_grad", "toeplitz_weight_grad")


def _toeplitz_macs(name: str, args: tuple) -> int:
    """MACs of the spatial convolution's compiled products: u (H, P, L) @ T (H, L, C), gy (H, P, C)
    @ T^T, u^T @ gy: H P L C each."""
    a, b = args[0], args[1]  # (u, T), (gy, T), (u, gy)
    H, P = a.shape[0], a.shape[1]
    L, C = (a.shape[2], b.shape[2]) if name != "toeplitz_input_grad" else (b.shape[1], a.shape[2])
    return H * P * L * C


def _count_lane_fft(counts: dict, u, PQ, forward: bool, activate: bool = False) -> None:
    """The transforms and GELUs inside the temporal blocks' compiled FFT kernels (u (H, P, L),
    PQ (G, R, n/2, 4, lanes)), per channel and sequence: forward, one rfft of size n and R
    irffts, R GELUs a frame (and both projections' where `activate`); backward, 1 + R rffts
    (u and each gy_r), one irfft (grad u) and R GELU backwards a frame."""
    rows, frames, R, n = u.numel() // u.shape[-1], u.shape[-1], PQ.shape[1], 2 * PQ.shape[2]
    r2c, c2r = _fft_key("r2c", [n]), _fft_key("c2r", [n])
    fft = counts["fft"]
    fft[r2c] = fft.get(r2c, 0) + rows * (1 if forward else 1 + R)
    fft[c2r] = fft.get(c2r, 0) + rows * (R if forward else 1)
    if forward:
        counts["gelu"] += rows * frames * (R + (2 if activate else 0))
    else:
        counts["gelu_backward"] += rows * frames * R


def count_operations(fn: Callable[[], object]) -> dict:
    """Run fn() and count its matmul MACs, GELU evaluations (forward and backward) and FFT
    transforms (see the module docstring) -> a dict that JSON can hold."""
    from torch.utils._python_dispatch import TorchDispatchMode

    counts = {"matmul_macs": 0, "gelu": 0, "gelu_backward": 0, "fft": {}}

    class Counter(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            name = func.overloadpacket.__name__
            if name in MATMULS:
                first = args[1] if name in ("addmm", "baddbmm") else args[0]
                result = out[0] if isinstance(out, (tuple, list)) else out
                counts["matmul_macs"] += result.numel() * first.shape[-1]
            elif (macs := _attention_macs(name, args)) is not None:
                counts["matmul_macs"] += macs
            elif name == "gelu":
                counts["gelu"] += args[0].numel()
            elif name == "gelu_backward":
                counts["gelu_backward"] += args[0].numel()
            elif name == "mix_gate":  # hummuss/csrc/mix_gate.cpp: a GELU of each element of y
                counts["gelu"] += args[0].numel()
            elif name == "mix_gate_into":  # evaluation: y's GELUs, and x_id's if it came before its GELU
                counts["gelu"] += args[0].numel() + (args[3].numel() if args[5] else 0)
            elif name == "mix_gate_backward":  # GELU's backward of each element of y (args: go, y, ...)
                counts["gelu_backward"] += args[1].numel()
            elif name in TOEPLITZ_PRODUCTS:  # hummuss/csrc/toeplitz_product.cpp: products of (H, ., .) factors
                counts["matmul_macs"] += _toeplitz_macs(name, args)
            elif name == "fft_mix_gate_into":  # hummuss/csrc/fft_mix_gate.cpp (args: x_id, u, PQ, ..., activate)
                _count_lane_fft(counts, args[1], args[2], forward=True, activate=args[6])
            elif name == "fft_mix_gate_backward":  # (args: go, u, x_id, y, PQa, ...)
                _count_lane_fft(counts, args[1], args[4], forward=False)
            elif name == "bias_gelu_":  # hummuss/csrc/bias_gelu.cpp: an input projection's GELU (args: pre, b, act)
                counts["gelu"] += args[0].numel()
            elif name == "gelu_bias_backward":  # and its backward (args: g, pre)
                counts["gelu_backward"] += args[1].numel()
            else:
                fft = _fft(name, args, kwargs)
                if fft is not None:
                    counts["fft"][fft[0]] = counts["fft"].get(fft[0], 0) + fft[1]
            return out

    with Counter():
        fn()
    return counts


def _fastest(fn: Callable[[], object], repeats: int) -> float:
    """The shortest of `repeats` timed calls of fn (after one untimed), in seconds."""
    fn()
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _transform(kind: str, sizes: list[int], batch: int) -> Callable[[], object]:
    """A call of `batch` transforms of `kind` and `sizes` on random data."""
    import torch

    dims = list(range(1, len(sizes) + 1))
    if kind == "r2c":
        a = torch.randn(batch, *sizes)
        return lambda: torch.fft.rfftn(a, dim=dims)
    if kind == "c2r":
        a = torch.randn(batch, *sizes[:-1], sizes[-1] // 2 + 1, dtype=torch.complex64)
        return lambda: torch.fft.irfftn(a, s=sizes, dim=dims)
    a = torch.randn(batch, *sizes, dtype=torch.complex64)
    return lambda: torch.fft.fftn(a, dim=dims)


def operation_rates(fft_keys: Iterable[str] = (), repeats: int = 20, elements: int = 1 << 20,
                    batches: tuple[int, ...] = (256, 1024, 2048)) -> dict:
    """This machine's best rates for the operations `operation_floor` counts, on data that
    stays in cache: GELU forward and backward (elements per second, over `elements` floats,
    written into preallocated outputs) and, for each FFT key ("r2c:512", "c2r:512", "c2c:64"),
    microseconds per transform (the fastest of `batches` transforms at a time)."""
    import torch

    x, g, out = torch.randn(elements), torch.randn(elements), torch.empty(elements)
    rates = {
        "gelu_per_s": elements / _fastest(lambda: torch.ops.aten.gelu.out(x, out=out), repeats),
        "gelu_backward_per_s": elements / _fastest(
            lambda: torch.ops.aten.gelu_backward.grad_input(g, x, grad_input=out), repeats),
        "fft_us": {},
    }
    for key in dict.fromkeys(fft_keys):
        kind, _, size = key.partition(":")
        if kind not in FFT_KINDS or not size:
            raise ValueError(f"unknown FFT key {key!r}; expected <kind>:<size> with kind in {FFT_KINDS}")
        sizes = [int(s) for s in size.split("x")]
        best = min(_fastest(_transform(kind, sizes, batch), repeats) / batch for batch in batches)
        rates["fft_us"][key] = 1e6 * best
    return rates


def operation_floor(counts: dict, rates: dict, matmul_gmacs: float) -> dict | None:
    """Seconds the counted operations take at the measured rates: {"matmul", "gelu",
    "gelu_backward", "fft", "total"}; None where a transform size has no measured rate."""
    fft = 0.0
    for key, transforms in counts.get("fft", {}).items():
        us = rates.get("fft_us", {}).get(key)
        if us is None:
            return None
        fft += transforms * us * 1e-6
    parts = {"matmul": counts["matmul_macs"] / (matmul_gmacs * 1e9),
             "gelu": counts["gelu"] / rates["gelu_per_s"],
             "gelu_backward": counts["gelu_backward"] / rates["gelu_backward_per_s"],
             "fft": fft}
    return {**parts, "total": sum(parts.values())}

"""The GDSSM block's projections between token-major and channel-major activations.

A block computes its paths channel-major (hummuss/gdssm.py): the input projections give
GELU(W z^T + b), (H, N) for N tokens z (N, D), and the output projection reads the paths
(H, N) back into tokens, y^T W_o^T + b_o (N, D).

In training (float32 on the CPU) an input projection is `ChannelMajorGelu`: the matmul W z^T,
then the bias and the GELU in one pass of a compiled kernel (`bias_gelu_`, hummuss/csrc/
bias_gelu.cpp), and backward GELU's derivative and the bias's gradient in one pass
(`gelu_bias_backward`) before the two matmuls. Eagerly the same takes five passes over the
(H, N) tensors: addmm copies the bias into its output before the product, GELU reads and
writes, its backward reads two and writes one, and the bias's gradient is a sum of its own.
On a 2-core AVX-512 Intel Xeon (MKL, 2 threads) a paper-bidirectional training step at F = 243,
batch 2 (40 such projections, H 640, N 8262, D 256) took 3.78 s with the kernels against 3.91 s
with addmm and F.gelu (medians of 5 alternated steps, whole products both). Alone, in cache, the
two ran level (27-28 ms forward and backward): the kernels' GELU is slower than ATen's (oneDNN's)
and the passes they save are passes over memory.

Two of these products, and one in each backward, write an (H, N) result: H rows thousands
of columns wide, from a short inner dimension (D = 256). On one CPU, an AMD EPYC (AVX-512,
MKL, 2 threads), MKL's sgemm ran those far below its rate, and computing the result in blocks
of BLOCK_COLUMNS columns, each of which stays in cache, restored it (H 640, N 8262, D 256):

    product                                  whole       in 512-column blocks
    W z^T + b           (forward, input)     36.8 ms     19.5 ms
    W_o^T g^T           (backward, output)   26.7 ms     19.7 ms
    g^T W   (N, D)      (backward, input)    23.0 ms     18.6 ms

(1024^3 fp32 matmul on that machine: 87 GMAC/s; the blocked products ran at 69-82.) On the
Intel Xeon the whole products were the faster: W z^T + b 6.8 ms whole against 7.7 in blocks,
g^T W 6.5 against 7.4 (the bare W z^T 6.3 ms whole: 215 GMAC/s), and a paper-bidirectional
training step took 3.80 s with whole products against 3.98 s with blocks (medians of 4
alternated steps). Whole or in blocks, the products gave the same bits (MKL, Xeon).

The EPYC's figures were MKL's generic code, which it runs on CPUs that are not Intel's. With
its Intel code path (`hummuss.mkl_vendor`, which the suite's processes start with), on a Zen 5
EPYC, the whole products were the faster too: a paper-bidirectional training step 2.11 s against 2.18 s
in blocks (medians of 8 alternated steps, whole faster in all 8), an offline pass at F = 243
348 against 355 ms. `blocks_pay` is therefore whether MKL runs its generic code
(`hummuss.mkl_vendor.intel_code_path`). Even then blocks pay only for wide results and an
inner dimension that is not short: for N = 2048 (H 640 or 768; evaluation's chunks of tokens)
the whole product was 5-15% faster on the EPYC, and a paper-size offline pass at F = 243 took
1,070 ms with blocks against 992 ms without; for the `cpu` preset's D = 64 (H 128, N 33048)
blocks of 512 were 5-15% slower and larger ones level; for N = 4131 (H 640) and N = 16524
(H 320, D 128) blocks ran 1.3-1.4x as fast. Hence BLOCK_MIN_TOKENS and BLOCK_MIN_INNER.

`channel_major(z, weight, bias)`, `channel_major_gelu(z, weight, bias)` and
`token_major(y, weight, bias)` compute these maps, with autograd through
`ChannelMajorLinear`, `ChannelMajorGelu` and `TokenMajorLinear` (backwards written out, the
(H, N)-shaped and (N, D)-shaped products blocked where `_blocked`). On a GPU, under autocast
or torch.compile they are the plain `torch.addmm` and `F.gelu` (one launch each; the compiler
chooses its own tiling and fuses the GELU).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

from hummuss import cpu_kernels
from hummuss.mkl_vendor import intel_code_path

BLOCK_COLUMNS = 512  # tokens per block: an (H, 512) float32 block is 1.3 MB at H = 640
BLOCK_MIN_TOKENS = 4096  # an (H, N) result at least this wide goes block by block ...
BLOCK_MIN_INNER = 128  # ... if the model width D is at least this


@functools.cache
def blocks_pay() -> bool:
    """Whether wide products run faster in column blocks in this process: where MKL runs its
    generic code (see the module docstring), as it does on a CPU whose vendor cannot be read."""
    return not intel_code_path()


def _eager_cpu_float32(x: Tensor) -> bool:
    return (x.device.type == "cpu" and x.dtype == torch.float32
            and not torch.compiler.is_compiling() and not torch.is_autocast_enabled("cpu"))


def _blocked(x: Tensor, tokens: int, width: int) -> bool:
    """Whether a layer's products over N = `tokens` tokens (activations `x`), between its
    channels and its width D = `width`, go block by block: float32 on the CPU, eager, no autocast,
    N >= BLOCK_MIN_TOKENS and D >= BLOCK_MIN_INNER, on a CPU where blocks pay (`blocks_pay`)."""
    return (_eager_cpu_float32(x) and width >= BLOCK_MIN_INNER and tokens >= BLOCK_MIN_TOKENS
            and blocks_pay())


def _blocks(n: int, blocked: bool = True):
    if not blocked:
        return [slice(0, n)]
    return (slice(i, min(i + BLOCK_COLUMNS, n)) for i in range(0, n, BLOCK_COLUMNS))


def _wide_product(a: Tensor, b_t: Tensor, bias: Tensor | None = None) -> Tensor:
    """a (H, K) @ b_t.T, b_t (N, K) -> (H, N) (+ bias (H,) on every column), block by block."""
    out = a.new_empty(a.shape[0], b_t.shape[0])
    for s in _blocks(b_t.shape[0]):
        if bias is None:
            torch.mm(a, b_t[s].t(), out=out[:, s])
        else:
            torch.addmm(bias.unsqueeze(-1), a, b_t[s].t(), out=out[:, s])
    return out


def _tall_product(g: Tensor, w: Tensor) -> Tensor:
    """g (H, N), w (H, K) -> g^T w (N, K), block by block of N."""
    out = w.new_empty(g.shape[1], w.shape[1])
    for s in _blocks(g.shape[1]):
        torch.mm(g[:, s].t(), w, out=out[s])
    return out


class ChannelMajorLinear(torch.autograd.Function):
    """z (N, D), weight (H, D), bias (H,) -> W z^T + b (H, N)."""

    @staticmethod
    def forward(ctx, z, weight, bias):
        ctx.save_for_backward(z, weight)
        return _wide_product(weight, z, bias)

    @staticmethod
    def backward(ctx, g):  # g (H, N)
        z, weight = ctx.saved_tensors
        gz = _tall_product(g, weight) if ctx.needs_input_grad[0] else None  # (N, D)
        gw = g @ z if ctx.needs_input_grad[1] else None  # (H, D): a long inner dimension, fast whole
        gb = g.sum(1) if ctx.needs_input_grad[2] else None
        return gz, gw, gb


class ChannelMajorGelu(torch.autograd.Function):
    """z (N, D), weight (H, D), bias (H,) -> GELU(W z^T + b) (H, N), with the compiled kernels
    for the bias and GELU (see the module docstring); saves z, W and W z^T + b."""

    @staticmethod
    def forward(ctx, z, weight, bias):
        k = cpu_kernels.ops()  # loaded (cached) in this process
        blocked = _blocked(z, z.shape[0], z.shape[1])
        pre = weight.new_empty(weight.shape[0], z.shape[0])  # (H, N)
        act = torch.empty_like(pre)
        for s in _blocks(z.shape[0], blocked):  # a block's bias and GELU while it is in cache
            torch.mm(weight, z[s].t(), out=pre[:, s])
            k.bias_gelu_(pre[:, s], bias, act[:, s])
        ctx.save_for_backward(z, weight, pre)
        ctx.blocked = blocked
        return act

    @staticmethod
    def backward(ctx, g):  # g (H, N)
        z, weight, pre = ctx.saved_tensors
        gp, gb = cpu_kernels.ops().gelu_bias_backward(g if g.stride(-1) == 1 else g.contiguous(), pre)
        gz = None
        if ctx.needs_input_grad[0]:  # (N, D)
            gz = _tall_product(gp, weight) if ctx.blocked else gp.t() @ weight
        gw = gp @ z if ctx.needs_input_grad[1] else None  # (H, D): a long inner dimension, fast whole
        return gz, gw, gb if ctx.needs_input_grad[2] else None


class TokenMajorLinear(torch.autograd.Function):
    """y (H, N) channel-major, weight (D, H), bias (D,) -> y^T W^T + b (N, D)."""

    @staticmethod
    def forward(ctx, y, weight, bias):
        ctx.save_for_backward(y, weight)
        return torch.addmm(bias, y.t(), weight.t())  # an (N, D) result: fast whole

    @staticmethod
    def backward(ctx, g):  # g (N, D)
        y, weight = ctx.saved_tensors
        gy = _wide_product(weight.t(), g) if ctx.needs_input_grad[0] else None  # (H, N)
        gw = g.t() @ y.t() if ctx.needs_input_grad[1] else None  # (D, H)
        gb = g.sum(0) if ctx.needs_input_grad[2] else None
        return gy, gw, gb


def channel_major(z: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Tokens z (N, D) -> W z^T + b (H, N), for weight (H, D) and bias (H,)."""
    if not _blocked(z, z.shape[0], z.shape[1]):
        return torch.addmm(bias.unsqueeze(-1), weight, z.t())
    if torch.is_grad_enabled() and (z.requires_grad or weight.requires_grad or bias.requires_grad):
        return ChannelMajorLinear.apply(z, weight, bias)
    return _wide_product(weight, z, bias)


def channel_major_gelu(z: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Tokens z (N, D) -> GELU(W z^T + b) (H, N), for weight (H, D) and bias (H,): in training
    on the CPU (float32, eager, the kernels built) `ChannelMajorGelu`, else GELU of `channel_major`."""
    if (torch.is_grad_enabled() and _eager_cpu_float32(z) and weight.dtype == bias.dtype == torch.float32
            and cpu_kernels.ops() is not None):
        return ChannelMajorGelu.apply(z, weight, bias)
    return F.gelu(channel_major(z, weight, bias))


def token_major(y: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Channel-major y (H, N) -> y^T W^T + b (N, D), for weight (D, H) and bias (D,)."""
    training = torch.is_grad_enabled() and (y.requires_grad or weight.requires_grad or bias.requires_grad)
    if training and _blocked(y, y.shape[1], weight.shape[0]):  # its backward's (H, N) product
        return TokenMajorLinear.apply(y, weight, bias)
    return torch.addmm(bias, y.t(), weight.t())

"""The GDSSM block's projections between token-major and channel-major activations.

A block computes its paths channel-major (hummuss/gdssm.py): the input projections give
W z^T + b, (H, N) for N tokens z (N, D), and the output projection reads the paths (H, N)
back into tokens, y^T W_o^T + b_o (N, D). Two of these products, and one in each backward,
write an (H, N) result: H rows thousands of columns wide, from a short inner dimension
(D = 256). MKL's sgemm runs those far below its rate on a CPU, and computing the result in
blocks of BLOCK_COLUMNS columns, each of which stays in cache, restores it. Measured on a
2-core AVX-512 CPU (AMD EPYC, MKL, 2 threads), H 640, N 8262, D 256 (a paper-size training
step at F = 243, batch 2):

    product                                  whole       in 512-column blocks
    W z^T + b           (forward, input)     36.8 ms     19.5 ms
    W_o^T g^T           (backward, output)   26.7 ms     19.7 ms
    g^T W   (N, D)      (backward, input)    23.0 ms     18.6 ms

(1024^3 fp32 matmul on that machine: 87 GMAC/s; the blocked products ran at 69-82.) Blocks
pay only for wide results and an inner dimension that is not short: for N = 2048 (H 640 or
768; evaluation's chunks of tokens) the whole product was 5-15% faster, and a paper-size
offline pass at F = 243 took 1,070 ms with blocks against 992 ms without; for the `cpu`
preset's D = 64 (H 128, N 33048) blocks of 512 were 5-15% slower and larger ones level; for
N = 4131 (H 640) and N = 16524 (H 320, D 128) blocks ran 1.3-1.4x as fast. Hence
BLOCK_MIN_TOKENS and BLOCK_MIN_INNER.

`channel_major(z, weight, bias)` and `token_major(y, weight, bias)` compute these two maps,
with autograd through `ChannelMajorLinear` and `TokenMajorLinear` (backwards written out,
the (H, N)-shaped and (N, D)-shaped products blocked the same way). On a GPU, under
autocast or torch.compile they are the plain `torch.addmm` (one launch; the compiler
chooses its own tiling).
"""

from __future__ import annotations

import torch
from torch import Tensor

BLOCK_COLUMNS = 512  # tokens per block: an (H, 512) float32 block is 1.3 MB at H = 640
BLOCK_MIN_TOKENS = 4096  # an (H, N) result at least this wide goes block by block ...
BLOCK_MIN_INNER = 128  # ... if the model width D is at least this


def _blocked(x: Tensor, tokens: int, width: int) -> bool:
    """Whether a layer's products over N = `tokens` tokens (activations `x`), between its
    channels and its width D = `width`, go block by block: float32 on the CPU, eager, no autocast,
    N >= BLOCK_MIN_TOKENS and D >= BLOCK_MIN_INNER."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and width >= BLOCK_MIN_INNER
            and tokens >= BLOCK_MIN_TOKENS
            and not torch.compiler.is_compiling() and not torch.is_autocast_enabled("cpu"))


def _blocks(n: int):
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


def token_major(y: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Channel-major y (H, N) -> y^T W^T + b (N, D), for weight (D, H) and bias (D,)."""
    training = torch.is_grad_enabled() and (y.requires_grad or weight.requires_grad or bias.requires_grad)
    if training and _blocked(y, y.shape[1], weight.shape[0]):  # its backward's (H, N) product
        return TokenMajorLinear.apply(y, weight, bias)
    return torch.addmm(bias, y.t(), weight.t())

"""Aggregation of parallel paths: multiplicative gating, average pooling, learned pooling.

Used twice in HumMUSS: inside a GDSSM block to combine x_f, x_b and x_id (the paper's
Table 2), and in every layer to combine the two spatio-temporal streams (Table 3).

    gate     prod_i x_i
    mean     (1/n) sum_i x_i
    learned  sum_i alpha_i x_i,  alpha = softmax(W [x_1, .., x_n] + b) per token, with
             W = 0 and b = 1/2 at initialisation (DSTformer's `ts_attn`), so every path
             starts with weight 1/n.

A GDSSM block's read-out mix followed by the gate, x_id prod_i (b_i + sum_c w_ic GELU(y_ic)),
also comes fused: `MixGate` (PyTorch operations, a written-out backward; the reference and
the GPU path), `KernelMixGate` and `mix_gate_into` (the compiled CPU kernel of
hummuss/csrc/mix_gate.cpp, for training and evaluation), `mix_gate` choosing between them.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from hummuss import cpu_kernels

AGGREGATIONS = ("gate", "mean", "learned")


def check_aggregation(kind: str, what: str = "aggregation") -> str:
    if kind not in AGGREGATIONS:
        raise ValueError(f"unknown {what} {kind!r}; known: {', '.join(AGGREGATIONS)}")
    return kind


class Aggregate(nn.Module):
    """Combine n tensors of shape (..., width) into one of the same shape."""

    def __init__(self, kind: str, n_inputs: int, width: int):
        super().__init__()
        self.kind, self.n_inputs = check_aggregation(kind), n_inputs
        if kind == "learned":
            self.weights = nn.Linear(n_inputs * width, n_inputs)
            nn.init.zeros_(self.weights.weight)
            nn.init.constant_(self.weights.bias, 0.5)

    def forward(self, *xs: torch.Tensor, dim: int = -1, out: torch.Tensor | None = None,
                linear=None) -> torch.Tensor:
        """n tensors of one shape -> that shape; `dim` is the channel (width) dimension.
        `out` (gate and mean, without autograd): a tensor of that shape to write the result into.
        `linear` (learned, channels last): a layer to use instead of `self.weights`, such as its
        `hummuss.packed_linear` copy in a streaming step."""
        if len(xs) != self.n_inputs:
            raise ValueError(f"{self.kind} aggregation built for {self.n_inputs} inputs, got {len(xs)}")
        if out is not None and (self.kind == "learned" or torch.is_grad_enabled()):
            raise ValueError("Aggregate(out=...) is for the gate and mean aggregations without autograd")
        if self.kind == "gate":
            if len(xs) == 1:
                return xs[0] if out is None else out.copy_(xs[0])
            res = torch.mul(xs[0], xs[1], out=out)
            for x in xs[2:]:
                res = res * x if torch.is_grad_enabled() else res.mul_(x)
            return res
        if self.kind == "mean":
            res = torch.add(xs[0], xs[1], out=out) if len(xs) > 1 else \
                (xs[0].clone() if out is None else out.copy_(xs[0]))
            for x in xs[2:]:
                res = res + x if torch.is_grad_enabled() else res.add_(x)
            return res.div_(len(xs))
        n = len(xs)
        if dim in (0, -xs[0].dim()):  # channel-major (width, ...): W (n, n width) @ cat
            cat = torch.cat(xs, 0)
            logits = torch.addmm(self.weights.bias.unsqueeze(-1), self.weights.weight,
                                 cat.reshape(cat.shape[0], -1)).view(n, *xs[0].shape[1:])
            alpha = torch.softmax(logits, dim=0)  # (n, ...)
            out = alpha[0:1] * xs[0]
            for i in range(1, n):
                out = out.addcmul_(alpha[i:i + 1], xs[i])
            return out
        if dim not in (-1, xs[0].dim() - 1):
            raise ValueError(f"learned aggregation needs the channels on the first or last dim, got dim={dim}")
        alpha = torch.softmax((self.weights if linear is None else linear)(torch.cat(xs, dim=-1)), dim=-1)  # (..., n)
        out = alpha[..., 0:1] * xs[0]
        for i in range(1, n):
            out = out.addcmul_(alpha[..., i:i + 1], xs[i])
        return out


class MixGate(torch.autograd.Function):
    """A GDSSM block's read-out mix and `gate` aggregation in one step, for training:

        path_i = b_i + sum_c w_ic GELU(y_ic)      (i < n directions, c < k read-outs)
        out    = x_id * prod_i path_i

    y (H, P, n k, L, Q) the convolutions' outputs, w (H, n, k), b (H, n), x_id (H, P, L, Q)
    -> out (H, P, L, Q). The same numbers as `GDSSM._mix` followed by `Aggregate("gate")`;
    the backward is written out (the products' gradients, one GELU backward), instead of
    autograd's passes over strided per-direction views of the paths, whose backward fills a
    zero tensor of all paths for each view.
    """

    @staticmethod
    def forward(ctx, y, w, b, x_id):
        H, P, R, L, Q = y.shape
        n, k = w.shape[1], w.shape[2]
        g = torch.nn.functional.gelu(y).view(H, P, n, k, L, Q)
        paths = []
        for i in range(n):
            p = torch.addcmul(b[:, i].view(H, 1, 1, 1), g[:, :, i, 0], w[:, i, 0].view(H, 1, 1, 1))
            for c in range(1, k):
                p.addcmul_(g[:, :, i, c], w[:, i, c].view(H, 1, 1, 1))
            paths.append(p)
        out = x_id * paths[0]
        for p in paths[1:]:
            out.mul_(p)
        ctx.save_for_backward(y, g, w, x_id, *paths)
        return out

    @staticmethod
    def backward(ctx, go):
        y, g, w, x_id, *paths = ctx.saved_tensors
        H, P, R, L, Q = y.shape
        n, k = w.shape[1], w.shape[2]
        q = go * x_id  # d out / d (prod_i path_i)
        grad_x = None
        if ctx.needs_input_grad[3]:
            grad_x = go * paths[0]
            for p in paths[1:]:
                grad_x.mul_(p)
        gy = torch.empty_like(y).view(H, P, n, k, L, Q)
        gw, gb = torch.empty_like(w), w.new_empty(H, n)
        tmp = torch.empty_like(q)
        for i in range(n):
            others = [paths[j] for j in range(n) if j != i]  # d out / d path_i = q prod_{j != i} path_j
            gp = torch.mul(q, others[0]) if others else q
            for p in others[1:]:
                gp.mul_(p)
            gb[:, i] = gp.sum((1, 2, 3))
            for c in range(k):  # products written into place, no temporaries to copy
                gw[:, i, c] = torch.mul(gp, g[:, :, i, c], out=tmp).sum((1, 2, 3))
                torch.mul(gp, w[:, i, c].view(H, 1, 1, 1), out=gy[:, :, i, c])
        gy = gy.view(H, P, R, L, Q)  # GELU's backward written over its input: no second tensor of y's size
        torch.ops.aten.gelu_backward.grad_input(gy, y, grad_input=gy)
        return gy, gw, gb, grad_x


class KernelMixGate(torch.autograd.Function):
    """`MixGate` by the compiled CPU kernel (`hummuss/csrc/mix_gate.cpp`, `hummuss.cpu_kernels`):
    GELU, mix and gate in one pass forward, and one pass backward that recomputes GELU and
    the paths from y, so only the inputs are saved. Same arguments and shapes as `MixGate`;
    CPU tensors of one floating dtype; use it where `hummuss.cpu_kernels.ops()` is not None."""

    @staticmethod
    def forward(ctx, y, w, b, x_id):
        H, P, R, L, Q = y.shape
        y, w, b, x_id = y.contiguous(), w.contiguous(), b.contiguous(), x_id.contiguous()
        ctx.save_for_backward(y, w, b, x_id)
        out = cpu_kernels.ops().mix_gate(y.view(H, P, R, L * Q), w, b, x_id.view(H, P, L * Q))
        return out.view(H, P, L, Q)

    @staticmethod
    def backward(ctx, go):
        y, w, b, x_id = ctx.saved_tensors
        H, P, R, L, Q = y.shape
        grads = cpu_kernels.ops().mix_gate_backward(go.contiguous().view(H, P, L * Q), y.view(H, P, R, L * Q), w, b,
                                          x_id.view(H, P, L * Q), ctx.needs_input_grad[3])
        gx = grads[3].view(H, P, L, Q) if ctx.needs_input_grad[3] else None
        return grads[0].view(y.shape), grads[1], grads[2], gx


def _kernel_applies(y: torch.Tensor) -> bool:
    """Whether the compiled kernel takes y (H, P, R, L, Q): on the CPU, float32 or float64, at
    most 16 read-outs, not under torch.compile, and the kernels built (torch.ops.hummuss_cpu)."""

    return (y.device.type == "cpu" and y.dtype in (torch.float32, torch.float64) and y.shape[2] <= 16
            and not torch.compiler.is_compiling() and cpu_kernels.ops() is not None)


def mix_gate(y: torch.Tensor, w: torch.Tensor, b: torch.Tensor, x_id: torch.Tensor) -> torch.Tensor:
    """x_id prod_i (b_i + sum_c w_ic GELU(y_ic)) with its backward: the compiled CPU kernel
    where it applies (CPU, float32 or float64, at most 16 read-outs, not under torch.compile,
    the kernels built: `hummuss.cpu_kernels.ops`), otherwise `MixGate`."""
    return (KernelMixGate if _kernel_applies(y) else MixGate).apply(y, w, b, x_id)


def mix_gate_into(y: torch.Tensor, w: torch.Tensor, b: torch.Tensor, pre_id: torch.Tensor, out: torch.Tensor) -> bool:
    """Evaluation (no autograd): out = GELU(pre_id) prod_i (b_i + sum_c w_ic GELU(y_ic)) by the
    compiled kernel, y (g, P, R, L, Q) possibly a view with spaced rows (the FFT convolution's
    first L frames of each transform), pre_id (g, P, L, Q) before its GELU, out of its shape.
    -> False, with nothing written, where the kernel does not apply (`mix_gate`'s conditions,
    and out contiguous); the caller then runs its PyTorch operations."""
    g, P, R, L, Q = y.shape
    if not (out.is_contiguous() and pre_id.is_contiguous() and _kernel_applies(y)):
        return False
    rows = y.flatten(3)  # (g, P, R, L Q): a view where L and Q merge
    M, step = L * Q, rows.stride(2)
    if (M > 1 and rows.stride(3) != 1) or step < M or rows.stride(1) != R * step or rows.stride(0) != P * R * step:
        rows = rows.contiguous()  # the kernel reads rows of M contiguous numbers, evenly spaced
    cpu_kernels.ops().mix_gate_into(rows, w.contiguous(), b.contiguous(), pre_id.view(g, P, L * Q),
                                        out.view(g, P, L * Q), True)
    return True

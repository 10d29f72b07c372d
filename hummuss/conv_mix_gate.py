"""A GDSSM block's convolution, read-out mix and gate in the compiled CPU kernels, for
training: a temporal block's FFT convolution (`FFTMixGate` where the transform's size is a
power of two, `ConvMixGate` channel group by channel group otherwise), a spatial block's
Toeplitz product (`ToeplitzMixGate`); and for evaluation the temporal block's in one kernel
call (`fft_mix_gate_into`).

In training a bidirectional temporal block computes, per channel h (hummuss/gdssm.py):

    y   = irfft(rfft(u) W)[:L]                   (H, P, R, L)   both directions' R read-outs
    out = x_id prod_i (b_i + sum_c w_ic GELU(y_ic))   (H, P, L)

as `FFTConv` (hummuss/ssm/fft_conv.py) followed by `KernelMixGate` (hummuss/fusion.py).
Each goes through memory on its own: y, R times as large as u, is written by the
convolution and read back by the mix; its gradient gy is written by the mix's backward and
read back (and zero-padded) by the convolution's. Every operation involved works on one
channel at a time, so `ConvMixGate` runs both, forward and backward, one channel group of
about FFT_CHUNK_BYTES of spectra at a time: y is still written once (the backward needs
it) but read while in cache, and gy never reaches memory. The numbers are those of the two
operations one after the other; measured apart on a 2-core AVX-512 CPU for paper size's
temporal block (H 640, P 34 sequences, R 4, L 243, forward and backward, medians of 12
alternated rounds): 219 ms for the two operations, 193 ms in groups; at the `cpu` preset's
block (H 128, P 136) level (0.99 of the two, 30 rounds).

Within a group nothing is copied or padded on its own: the inputs go into a buffer of n
frames whose tail stays zero (one per pass), the spectra rfft(u) are kept as the transform
writes them, one tensor per group, the mix kernel reads y from the inverse transform's
first L of n outputs and writes the copy the backward keeps while it reads them
(`mix_gate_into`'s y_copy), and the backward's kernel writes gy straight into a zero-tailed
buffer of n frames for its transform (`mix_gate_backward`'s gy_out). The copies and
zero-fills this removed (out=, padding, y[group] = ...) took about 225 ms of a
paper-bidirectional training step on a 2-core AVX-512 Xeon: 3.78 s against 4.00 s, medians of
6 steps alternated between the two versions in one process.

The spatial blocks' convolution over the 17 joints is a Toeplitz product per channel
(hummuss/ssm/conv.py); `ToeplitzMixGate` runs it with the mix and gate the same way, channel
group by group through the compiled kernels (toeplitz_product.cpp, mix_gate.cpp), and
recomputes y in the backward rather than keeping it (nothing of y's size is kept; keeping
it was not measured). A paper-bidirectional training step on a 2-core EPYC: 4.99 s against 5.17 s
with the product and `KernelMixGate` each over the whole block (6 rounds alternated in one
process); at the `cpu` preset level (0.961 against 0.949 s, 10 rounds, per-round ratios 0.93-1.10).

`FFTMixGate` and `fft_mix_gate_into` go further (hummuss/csrc/fft_mix_gate.cpp): the
transforms are the suite's own, written out in the kernel and vectorised across channels (a
vector's lanes carry 16 channels with AVX-512), so that one task takes a few channels of one
sequence through the input's transform, each read-out's product and inverse transform, its
GELU, the mix and the gate in buffers of tens of KB: no spectra in memory, and in training y
written once (for the backward) in the kernel's own layout; the backward recomputes u's
transform rather than keeping its spectra (paper size: 45 MB a block). Measured on a 2-core
AMD EPYC (family 25 model 17, MKL's Intel code path), paper size's temporal block (H 640, P
34, R 4, L 243) inside training steps (6 steps alternated between the two in one process,
perf_counter around each Function): forward 23.5 ms against 28.1 ms for `ConvMixGate`,
backward 39.8 against 39.3 ms a block; evaluation at F = 243 (P 17) 11-12 ms a block against
14-23 ms for `_grouped`'s groups (MKL's transforms), an offline pass of paper-bidirectional
612 against 663 ms (medians of 8 alternated passes). The kernel's 256-point complex transform
of 16 lanes took 1.93 us (0.12 us a 512-point real transform; MKL's through torch.fft.rfft
0.29 us each, in batches of 64).

`conv_mix_gate_applies` says where they run: in training, Q = 1 (sequences along a contiguous
axis, the training layout of both block kinds), float32 on the CPU, not under torch.compile,
the compiled kernels built (`hummuss.cpu_kernels`), and an FFT operator built with autograd
(`ConvMixGate`) or a Toeplitz one of layout "cols" with at most 64 = R L columns (`ToeplitzMixGate`).
"""

from __future__ import annotations

import torch

from hummuss import cpu_kernels
from hummuss.ssm.conv import ConvOperator, toeplitz_kernels_take
from hummuss.ssm.fft_conv import channel_group, kernel_grads, spectral_grads


def conv_mix_gate_applies(op: ConvOperator, u: torch.Tensor, x_id: torch.Tensor) -> bool:
    if not (torch.is_grad_enabled() and u.shape[3] == 1 and x_id.dtype == u.dtype):
        return False
    if op.kind == "fft":
        return (op.kernel is not None and op.weight.dtype == torch.complex64 and op.weight.shape[2] <= 16
                and not torch.compiler.is_compiling() and cpu_kernels.runs_on(u.device, u.dtype))
    return (op.kind == "toeplitz" and op.layout == "cols" and op.weight.shape[2] // op.length <= 16
            and toeplitz_kernels_take(u, op.weight))


def conv_mix_gate(op: ConvOperator, u: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
                  x_id: torch.Tensor) -> torch.Tensor:
    """u (H, P, L, 1), op's R kernels, mix weights w (H, n, k) and biases b (H, n), x_id
    (H, P, L, 1) -> the gated paths (H, P, L, 1), = mix_gate(apply_conv(op, u), w, b, x_id),
    where `conv_mix_gate_applies`: `ConvMixGate` for an FFT operator, `ToeplitzMixGate` for a
    Toeplitz one (layout "cols", the spatial blocks')."""
    if op.kind == "toeplitz":
        return ToeplitzMixGate.apply(u, op.weight, w, b, x_id)
    K, D, anticausal = op.kernel
    if lane_fft_applies(op):
        return FFTMixGate.apply(u, K, D, w, b, x_id, anticausal, op.n_fft, op.weight)
    return ConvMixGate.apply(u, K, D, w, b, x_id, anticausal, op.n_fft, op.weight)


def lane_fft_applies(op: ConvOperator) -> bool:
    """An FFT operator of a power-of-two size: the kernels of hummuss/csrc/fft_mix_gate.cpp take it."""
    n = op.n_fft
    return op.kind == "fft" and n >= 4 and n & (n - 1) == 0


def fft_mix_gate_into(op: ConvOperator, pre: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
                      out: torch.Tensor) -> bool:
    """Evaluation (no autograd) of a block whose sequences lie along a contiguous axis (Q = 1):
    the input projections before GELU, pre (2H, P, L) ([x_id; u]), the FFT operator `op` of
    a power-of-two size, mix weights w (H, n, k) and biases b (H, n) -> out (H, P, L) =
    GELU(pre_id) prod_i (b_i + sum_c w_ic GELU(y_ic)), y = apply_conv(op, GELU(pre_u)), in one
    call of the compiled kernel (hummuss/csrc/fft_mix_gate.cpp: V::size() channels at a time
    through the transforms, nothing of y's size in memory). -> False, with nothing written,
    where it does not apply; the caller then goes group by group."""
    if not (lane_fft_applies(op) and not torch.is_grad_enabled() and not torch.compiler.is_compiling()
            and pre.dim() == 3 and pre.is_contiguous()
            and out.is_contiguous() and w.shape[1] * w.shape[2] == op.weight.shape[2]
            and cpu_kernels.runs_on(pre.device, pre.dtype)):
        return False
    H = pre.shape[0] // 2
    cpu_kernels.ops().fft_mix_gate_into(pre[:H], pre[H:], op.lane_spectra(), w.contiguous(), b.contiguous(), out, True, None)
    return True


class FFTMixGate(torch.autograd.Function):
    """`FFTConv` then `KernelMixGate` for an FFT operator of a power-of-two size n, in the
    compiled kernels of hummuss/csrc/fft_mix_gate.cpp: forward `fft_mix_gate_into`, backward
    `fft_mix_gate_backward`. The forward writes y once, in the kernels' layout, for the
    backward; nothing else of y's or the spectra's size goes to memory."""

    @staticmethod
    def forward(ctx, u, K, D, w, b, x_id, anticausal, n, W):
        k = cpu_kernels.ops()
        H, P, L, _ = u.shape
        u3, x3 = u.reshape(H, P, L).contiguous(), x_id.reshape(H, P, L).contiguous()
        w, b = w.contiguous(), b.contiguous()
        Wr = torch.view_as_real(W[:, 0, :, :, 0])  # (H, R, n/2+1, 2), a view: no copy
        PQ = k.fft_lane_operator(Wr, False)
        lanes = k.fft_mix_gate_lanes()
        out, y = u.new_empty(H, P, L), u.new_empty(-(-H // lanes), P, PQ.shape[1], L, lanes)
        k.fft_mix_gate_into(x3, u3, PQ, w, b, out, False, y)
        ctx.save_for_backward(u3, x3, Wr, y, w, b)
        ctx.anticausal, ctx.n = anticausal, n
        return out.view(H, P, L, 1)

    @staticmethod
    def backward(ctx, go):
        k = cpu_kernels.ops()
        u3, x3, Wr, y, w, b = ctx.saved_tensors
        H, P, L = u3.shape
        go3 = go.reshape(H, P, L).contiguous()
        gu, gx, gw, gb, S = k.fft_mix_gate_backward(go3, u3, x3, y, k.fft_lane_operator(Wr, True), w, b)
        gK, gD = (kernel_grads(torch.view_as_complex(S), ctx.anticausal, ctx.n, L)
                  if ctx.needs_input_grad[1] or ctx.needs_input_grad[2] else (None, None))
        return gu.view(H, P, L, 1), gK, gD, gw, gb, gx.view(H, P, L, 1), None, None, None


TOEPLITZ_GROUP_BYTES = 2 << 20  # `ToeplitzMixGate` works on channel groups whose y takes about this much
# (paper size on a 2-core EPYC: 8 MiB level, 512 KiB 3% slower a step)


class ToeplitzMixGate(torch.autograd.Function):
    """A spatial block's convolution over the joints (u (H, P, L, 1) by the Toeplitz matrices T
    (H, L, R L)), then `KernelMixGate`, channel group by group: the compiled kernels
    `toeplitz_product`, `mix_gate` forward; backward `toeplitz_product` again (y is not kept),
    `mix_gate_backward`, `toeplitz_input_grad` and `toeplitz_weight_grad`. A group's y and gy
    (TOEPLITZ_GROUP_BYTES) stay in cache between them instead of going to memory and back."""

    @staticmethod
    def forward(ctx, u, T, w, b, x_id):
        k = cpu_kernels.ops()
        H, P, L, _ = u.shape
        u3, x3 = u.reshape(H, P, L).contiguous(), x_id.reshape(H, P, L).contiguous()
        T, w, b = T.contiguous(), w.contiguous(), b.contiguous()
        R = T.shape[2] // L
        out = u.new_empty(H, P, L)
        group = channel_group(P * R * L, T.element_size(), torch.get_num_threads(), TOEPLITZ_GROUP_BYTES)
        for h in range(0, H, group):
            s = slice(h, h + group)
            y = k.toeplitz_product(u3[s], T[s]).view(-1, P, R, L)
            out[s] = k.mix_gate(y, w[s], b[s], x3[s])
        ctx.save_for_backward(u3, T, w, b, x3)
        ctx.group = group
        return out.view(H, P, L, 1)

    @staticmethod
    def backward(ctx, go):
        k = cpu_kernels.ops()
        u3, T, w, b, x3 = ctx.saved_tensors
        H, P, L = u3.shape
        R = T.shape[2] // L
        need_u, need_T, need_x = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[4]
        go3 = go.reshape(H, P, L).contiguous()
        gu = u3.new_empty(H, P, L) if need_u else None
        gT = torch.empty_like(T) if need_T else None
        gx = u3.new_empty(H, P, L) if need_x else None
        gw, gb = torch.empty_like(w), torch.empty_like(b)
        group = ctx.group
        for h in range(0, H, group):
            s = slice(h, h + group)
            y = k.toeplitz_product(u3[s], T[s]).view(-1, P, R, L)
            gy, gw[s], gb[s], *gxs = k.mix_gate_backward(go3[s], y, w[s], b[s], x3[s], need_x)
            gy = gy.view(-1, P, R * L)
            if need_x:
                gx[s] = gxs[0]
            if need_u:
                gu[s] = k.toeplitz_input_grad(gy, T[s])
            if need_T:
                gT[s] = k.toeplitz_weight_grad(u3[s], gy)
        return (None if gu is None else gu.view(H, P, L, 1), gT, gw, gb,
                None if gx is None else gx.view(H, P, L, 1))


class ConvMixGate(torch.autograd.Function):
    """`FFTConv` then `KernelMixGate`, channel group by group (see the module docstring)."""

    @staticmethod
    def forward(ctx, u, K, D, w, b, x_id, anticausal, n, W):
        k = cpu_kernels.ops()  # loaded (cached) in this process
        H, P, L, _ = u.shape
        R, f = W.shape[2], W.shape[3]
        x3 = x_id.reshape(H, P, L).contiguous()
        w, b = w.contiguous(), b.contiguous()
        y = u.new_empty(H, P, R, L)  # kept for the backward
        out = u.new_empty(H, P, L)
        group = channel_group(P * R * f, W.element_size(), torch.get_num_threads())
        padded = u.new_zeros(min(group, H), P, n)  # a group's inputs, zero past L: no padding per transform
        Uf = []  # rfft(u) by group, kept for the backward (as the transform writes it: no copy into one tensor)
        for h in range(0, H, group):
            s = slice(h, h + group)
            g = min(group, H - h)
            padded[:g, :, :L] = u[s, :, :, 0]
            Uf.append(torch.fft.rfft(padded[:g], dim=2))  # (g, P, f)
            Y = torch.fft.irfft(Uf[-1].unsqueeze(2) * W[s, :, :, :, 0], n=n, dim=3)  # (g, P, R, n)
            k.mix_gate_into(Y[..., :L], w[s], b[s], x3[s], out[s], False, y[s])  # y[s]: copied from cache
        ctx.save_for_backward(W.reshape(H, R, f).contiguous(), y, w, b, x3, *Uf)
        ctx.anticausal, ctx.n, ctx.group = anticausal, n, group
        return out.view(H, P, L, 1)

    @staticmethod
    def backward(ctx, go):
        k = cpu_kernels.ops()  # loaded (cached) in this process
        Wk, y, w, b, x3, *Uf = ctx.saved_tensors
        n, group = ctx.n, ctx.group
        H, P, R, L = y.shape
        need_u, need_x = ctx.needs_input_grad[0], ctx.needs_input_grad[5]
        need_kernel = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        go3 = go.reshape(H, P, L).contiguous()
        gu = y.new_empty(H, P, L) if need_u else None
        gx = y.new_empty(H, P, L) if need_x else None
        S = Wk.new_empty(H, R, Wk.shape[2]) if need_kernel else None
        gw, gb = torch.empty_like(w), torch.empty_like(b)
        padded = y.new_zeros(min(group, H), P, R, n)  # a group's gy, zero past L, for its transform
        for i, h in enumerate(range(0, H, group)):
            s = slice(h, h + group)
            g = min(group, H - h)
            gy = padded[:g, :, :, :L]  # written by the kernel, in cache for the transform
            _, gw[s], gb[s], *gxs = k.mix_gate_backward(go3[s], y[s], w[s], b[s], x3[s], need_x, gy)
            if need_x:
                gx[s] = gxs[0]
            if need_u or need_kernel:
                gu_s, S_s = spectral_grads(k, torch.fft.rfft(padded[:g], dim=3), Wk[s], Uf[i], n, L, need_u, need_kernel)
                if need_u:
                    gu[s] = gu_s
                if need_kernel:
                    S[s] = S_s
        gK, gD = kernel_grads(S, ctx.anticausal, n, L) if need_kernel else (None, None)
        return (None if gu is None else gu.view(H, P, L, 1), gK, gD, gw, gb,
                None if gx is None else gx.view(H, P, L, 1), None, None, None)

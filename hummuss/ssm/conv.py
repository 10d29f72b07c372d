"""Convolution mode of the DSSM: its kernel, and the operators that apply it.

The kernel K_l = 2 Re(sum_n W_n dA_n^l) (W = C dB) is a Vandermonde product; `vandermonde`
computes it from two small factors. How the convolution by K (plus the skip D) is then
computed (the same numbers either way, to float round-off):
- short sequences (L <= TOEPLITZ_MAX_LENGTH, e.g. the 17 joints of a frame) multiply by
  the (L x L) Toeplitz matrix of the kernel, one small matmul per channel (`toeplitz`; in
  training on the CPU by the compiled kernels, `ToeplitzProduct`);
- long ones use an FFT of a mostly-two size >= 2L - 1 (`fft_size`); the anti-causal
  (backward) direction multiplies by the conjugate spectrum instead of flipping. The FFT
  convolution itself lives in hummuss/ssm/fft_conv.py (with `FFTConv`, its training form).
`conv_method` chooses between them, `conv_operator` prepares either as a `ConvOperator`,
`apply_conv` applies it. With autograd (training rebuilds the kernel and operator every
step) three pieces have hand-written backwards: `FFTConv` (fft_conv.py), `VandermondeKernel` (the kernel from its two
small factors both ways, in real matmuls; factors below float32's normal range are zero,
so no subnormals; on the CPU in float32 the factors, the kernel from them and the backward's
sums over them come from the compiled kernels of hummuss/csrc/vandermonde.cpp) and `ToeplitzWeight` (the operator as one gather; its backward sums
diagonals). The operators work on channel-major activations u (H, P, L, Q) (the sequence
on dim 2), so a block that computes its projections as W z^T needs no transposes (see
hummuss/gdssm.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch

from hummuss import cpu_kernels
from hummuss.ssm.fft_conv import FFTConv, channel_group, fft_conv, fft_size, fft_weight

# direct (Toeplitz) convolution up to TOEPLITZ_MAX_LENGTH frames, or up to
# TOEPLITZ_WIDE_MAX_LENGTH when the matmul has at least TOEPLITZ_WIDE_COLUMNS columns
# (sequences per channel); FFT beyond. Measured on a 2-core AVX-512 CPU, see `conv_method`.
TOEPLITZ_MAX_LENGTH, TOEPLITZ_WIDE_MAX_LENGTH, TOEPLITZ_WIDE_COLUMNS = 40, 128, 64
TOEPLITZ_KERNEL_COLUMNS = 64  # the compiled Toeplitz products take L and R L up to this (toeplitz_product.cpp)
POWER_MASK_MARGIN = 30.0  # |cos| or |sin| of a float32 angle below e^-30 does not occur in practice
# log of the smallest power kept: e^POWER_MASK_MARGIN times float32's smallest normal number
LOG_POWER_FLOOR = math.log(torch.finfo(torch.float32).tiny) + POWER_MASK_MARGIN


def vandermonde(W: torch.Tensor, dtlam: torch.Tensor, length: int) -> torch.Tensor:
    """K[c, h, l] = 2 Re(sum_n W[c, h, n] exp(dtlam[h, n] l)) for l < length.

    W (k, H, M) complex, dtlam (H, M) complex -> K (k, H, L) real. With l = q b + r,
    dA^l = dA^(q b) dA^r: two small Vandermonde factors (`power_factors`) instead of the
    (H, M, L) powers, and the sum over modes as one real batched matmul. With autograd
    (training) the same numbers come from `VandermondeKernel`, whose backward is factored too.
    """
    if torch.is_grad_enabled() and (W.requires_grad or dtlam.requires_grad):
        return VandermondeKernel.apply(W, dtlam, length)
    return _factored_kernel(W, *power_factors(dtlam, length), length)


def power_factors(dtlam: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The factors of dA^l = dA^(q b) dA^r, l = q b + r, with b = ceil(sqrt(L)), q < nq = ceil(L / b):
    Q (H, nq, M) complex, dA^(q b), and R (H, 2M, b) real, the rows (Re dA_n^r, Im dA_n^r)
    interleaved mode by mode (as `torch.view_as_real` lays out a complex (H, M) tensor).

    Factors whose modulus is below e^POWER_MASK_MARGIN times float32's smallest normal number
    are zero, so that neither their Re nor their Im part is subnormal (that would take a
    |cos| or |sin| below e^-30) and no subnormals reach the matmuls. On the CPU the masking
    pass runs only when the smallest Re(dtlam) (L - 1) comes that close, which the learned
    steps rarely do; elsewhere (GPUs) it always runs, rather than wait for that number to come
    back from the device once per DSSM and step, with the same factors either way.
    """
    H, M = dtlam.shape
    b = math.isqrt(length - 1) + 1 if length > 1 else 1
    nq = -(-length // b)
    if _kernels_apply(dtlam):  # one pass (hummuss/csrc/vandermonde.cpp); the same numbers to float32 rounding
        Q, R = cpu_kernels.ops().power_factors(dtlam.real.contiguous(), dtlam.imag.contiguous(), b, nq,
                                               LOG_POWER_FLOOR)
        return torch.view_as_complex(Q), R.view(H, 2 * M, b)
    steps = torch.arange(max(b, nq), device=dtlam.device, dtype=dtlam.real.dtype)
    lr, li = dtlam.real, dtlam.imag
    # off the CPU, reading the smallest step back would wait for the device: mask always
    mask = lr.device.type != "cpu" or float(lr.min()) * (length - 1) < LOG_POWER_FLOOR

    def power(lr, li, st, out_re, out_im):  # Re and Im of exp((lr + i li) st) into out_re, out_im
        x = lr * st
        mag = torch.exp(x)
        if mask:  # the (Re, Im) parts get within e^-30 of |exp(z)| only near a zero of cos or sin
            mag.masked_fill_(x < LOG_POWER_FLOOR, 0.0)
        ang = li * st
        torch.mul(mag, torch.cos(ang), out=out_re)
        torch.mul(mag, torch.sin(ang), out=out_im)

    Q = lr.new_empty(H, nq, M, 2)  # (Re, Im) last: view_as_complex
    power(lr.unsqueeze(1), li.unsqueeze(1), (steps[:nq] * b).unsqueeze(-1), Q[..., 0], Q[..., 1])
    R = lr.new_empty(H, M, 2, b)
    power(lr.unsqueeze(-1), li.unsqueeze(-1), steps[:b], R[:, :, 0], R[:, :, 1])
    return torch.view_as_complex(Q), R.view(H, 2 * M, b)


def _kernels_apply(z: torch.Tensor) -> bool:
    """Whether the compiled kernels of hummuss/csrc/vandermonde.cpp take a complex64 CPU tensor
    z (eager, the kernels built); PyTorch operations otherwise (float64, GPUs, tracing)."""
    return (z.dtype == torch.complex64 and not torch.compiler.is_compiling()
            and cpu_kernels.runs_on(z.device, torch.float32))


def _factored_kernel(W: torch.Tensor, Q: torch.Tensor, R: torch.Tensor, length: int) -> torch.Tensor:
    """K (k, H, L) = 2 Re(sum_n W_n dA_n^(q b) dA_n^r) from the factors of `power_factors`."""
    if _kernels_apply(Q) and W.dtype == Q.dtype:  # one pass per channel (hummuss/csrc/vandermonde.cpp)
        return cpu_kernels.ops().factored_kernel(W.resolve_conj().contiguous(), Q.contiguous(), R.contiguous(), length)
    k, H, M = W.shape
    nq, b = Q.shape[1], R.shape[2]
    # with B = W dA^(q b): Re(B dA^r) = Re B Re dA^r - Im B Im dA^r, one real matmul of
    # conj(B)'s (Re, Im) pairs (view_as_real) by R's interleaved (Re, Im) rows
    A = torch.mul(W.transpose(0, 1).unsqueeze(2), Q.unsqueeze(1), out=Q.new_empty(H, k, nq, M)).conj_physical_()
    # in float32 under autocast too: the decaying powers need its range
    with torch.autocast(W.device.type, enabled=False):
        K = torch.bmm(torch.view_as_real(A).view(H, k * nq, 2 * M), R)  # (H, k nq, b): Re(B dA^r)
    return 2 * K.view(H, k, nq * b)[..., :length].transpose(0, 1)  # (k, H, L)


class VandermondeKernel(torch.autograd.Function):
    """`vandermonde` for training, with a hand-written backward that keeps the factored form
    (real batched matmuls with the small factors, or the same sums per channel in the compiled
    kernels `factored_kernel` and `kernel_sums`; the (H, M, L) powers are never formed).
    With V[h, n, l] = dA^l and g = 2 gK:

        dK/dW:      grad W     = sum_l g conj(V)
        dK/ddtlam:  grad dtlam = conj(sum_c W sum_l g l V)

    and with l = q b + r, sum_l g f(l) V = sum_q dA^(q b) sum_r g[q, r] f(q b + r) dA^r: for
    f = 1 and f = l the inner sums come from one matmul of [g; g l] by dA^r's planes.
    """

    @staticmethod
    def forward(ctx, W, dtlam, length):
        Q, R = power_factors(dtlam, length)
        ctx.save_for_backward(W, Q, R)
        return _factored_kernel(W, Q, R, length)

    @staticmethod
    def backward(ctx, gK):
        W, Q, R = ctx.saved_tensors
        k, H, M = W.shape
        nq, b, L = Q.shape[1], R.shape[2], gK.shape[2]
        if _kernels_apply(Q) and gK.dtype == torch.float32:  # the same sums per channel in one pass
            s = cpu_kernels.ops().kernel_sums(gK.contiguous(), Q, R)  # (hummuss/csrc/vandermonde.cpp)
        else:
            g = gK.new_zeros(H, 2, k, nq * b)  # [g; g l], g = 2 gK, zero at lags past L
            torch.mul(gK.transpose(0, 1), 2, out=g[:, 0, :, :L])
            torch.mul(g[:, 0, :, :L], torch.arange(L, device=g.device, dtype=g.dtype), out=g[:, 1, :, :L])
            with torch.autocast(g.device.type, enabled=False):
                S = torch.bmm(g.view(H, 2 * k * nq, b), R.transpose(1, 2))  # (H, 2k nq, 2M)
            S = torch.view_as_complex(S.view(H, 2, k, nq, M, 2))  # sum_r g f(l) dA^r, f = 1 and l
            s = torch.mul(S, Q.view(H, 1, 1, nq, M)).sum(3)
        # s (H, 2, k, M): sum_l g V, sum_l g l V
        gW = s[:, 0].conj().transpose(0, 1)  # (k, H, M)
        gdt = (W.transpose(0, 1) * s[:, 1]).sum(1).conj()  # (H, M)
        return gW, gdt, None


def conv_method(length: int, columns: int) -> str:
    """"toeplitz" or "fft" for sequences of `length` frames, `columns` sequences per channel.

    The Toeplitz matmul costs R L multiply-adds per frame and channel and runs near the matmul
    rate once it has enough columns; the FFT costs O(log L) but at a fraction of that rate.
    (H = 640, R = 4, 2 threads: with 17 columns the two meet at about 64 frames (Toeplitz
    1.9 ms against FFT 2.9 ms at 48), with 136 columns at about 130. The Toeplitz limit of 40
    frames also keeps a cached operator under hummuss.ssm.cache.CACHE_MAX_BYTES.)
    """
    if length <= TOEPLITZ_MAX_LENGTH or (length <= TOEPLITZ_WIDE_MAX_LENGTH and columns >= TOEPLITZ_WIDE_COLUMNS):
        return "toeplitz"
    return "fft"


def operator_bytes(channels: int, kernels: int, length: int, method: str) -> int:
    """Size of `conv_operator`'s weight for H channels, R kernels, L frames."""
    if method == "auto":
        method = conv_method(length, 1)
    if method == "toeplitz":
        return 4 * channels * kernels * length * length
    return 8 * channels * kernels * (fft_size(2 * length - 1) // 2 + 1)


@dataclass
class ConvOperator:
    """A prepared convolution with R kernels for sequences of `length` frames.

    kind "toeplitz": `weight` (H, R L, L) for layout "rows" (u (H, L, Q)) or (H, L, R L) for
    layout "cols" (u (H, P, L)), the skip D on its diagonal. kind "fft": `weight` (H, 1, R,
    n/2+1, 1) complex spectra of the kernels with D added at lag 0 (conjugated for
    anti-causal kernels), `n_fft` the transform size.
    """

    kind: str
    layout: str
    length: int
    weight: torch.Tensor
    n_fft: int = 0
    kernel: tuple | None = None  # fft with autograd: (K, D, anticausal), for `FFTConv`
    lanes: torch.Tensor | None = field(default=None, repr=False, compare=False)  # `lane_spectra`, once made

    def channels(self, part: slice) -> ConvOperator:
        """The same convolution for the channels `part` only (no autograd: evaluation)."""
        return replace(self, weight=self.weight[part], kernel=None, lanes=None)

    def lane_spectra(self) -> torch.Tensor:
        """kind "fft" of a power-of-two size, evaluation: the operator as the compiled kernel
        `fft_mix_gate_into` applies it (`cpu_kernels.ops().fft_lane_operator`, hummuss/csrc/
        fft_mix_gate.cpp), made once per operator."""
        if self.lanes is None:
            W = torch.view_as_real(self.weight[:, 0, :, :, 0].detach())  # (H, R, n/2+1, 2), a view
            self.lanes = cpu_kernels.ops().fft_lane_operator(W, False)
        return self.lanes

    def channel_group(self, P: int, Q: int) -> int:
        """Channels whose outputs (Toeplitz) or spectra (FFT) for inputs (., P, L, Q) take about
        fft_conv.FFT_CHUNK_BYTES: a group that stays in cache (evaluation, hummuss/gdssm.py `_grouped`)."""
        if self.kind == "fft":
            return channel_group(P * self.weight.shape[2] * self.weight.shape[3] * Q, self.weight.element_size())
        RL = self.weight.shape[1] if self.layout == "rows" else self.weight.shape[2]
        return channel_group(P * RL * Q, self.weight.element_size())


def toeplitz(K: torch.Tensor, D: torch.Tensor, anticausal: Sequence[bool]) -> torch.Tensor:
    """K (R, H, L), D (R, H) -> T (H, R, L, L) with y_i = sum_j T[., ., i, j] u_j.

    Causal kernels: T[i, j] = K[i - j] for j <= i; anti-causal: T[i, j] = K[j - i] for
    j >= i; D is added on the diagonal.
    """
    R, H, L = K.shape
    i = torch.arange(L, device=K.device)
    lag = i[:, None] - i[None, :]  # (L, L): i - j
    Kz = torch.nn.functional.pad(K, (0, 1))  # (R, H, L + 1), index L reads a zero
    T = Kz[:, :, torch.where(lag >= 0, lag, L)]  # (R, H, L, L) causal
    if any(anticausal):
        anti = torch.tensor(list(anticausal), device=K.device).view(R, 1, 1, 1)
        T = torch.where(anti, T.transpose(-1, -2), T)
    T = T + torch.diag_embed(D.unsqueeze(-1).expand(R, H, L))
    return T.permute(1, 0, 2, 3)  # (H, R, L, L)


_TOEPLITZ_INDEX: dict = {}  # (R, H, L, anticausal, layout, device) -> gather index, see `toeplitz_index`


def toeplitz_index(R: int, H: int, L: int, anticausal: tuple[bool, ...], layout: str, device) -> torch.Tensor:
    """Where each entry of a Toeplitz operator's weight reads the padded kernel (R, H, L + 1).

    layout "rows": (H, R L, L), "cols": (H, L, R L), as `conv_operator`; entries off the
    kernel's band read index L of their row, a zero. Cached per shape and device.
    """
    if torch.compiler.is_compiling():  # traced: no cache (a side effect); the compiler folds it
        return _toeplitz_index(R, H, L, anticausal, layout, device)
    key = (R, H, L, anticausal, layout, str(device))
    idx = _TOEPLITZ_INDEX.get(key)
    if idx is None:
        if len(_TOEPLITZ_INDEX) > 64:
            _TOEPLITZ_INDEX.clear()
        idx = _TOEPLITZ_INDEX[key] = _toeplitz_index(R, H, L, anticausal, layout, device)
    return idx


def _toeplitz_index(R: int, H: int, L: int, anticausal: tuple[bool, ...], layout: str, device) -> torch.Tensor:
    i = torch.arange(L, device=device)
    lag = i[:, None] - i[None, :]  # (L, L): i - j
    causal = torch.where(lag >= 0, lag, L)
    lags = torch.stack([causal.t() if a else causal for a in anticausal])  # (R, L, L)
    row = (torch.arange(R, device=device)[:, None] * H + torch.arange(H, device=device)) * (L + 1)
    idx = row[:, :, None, None] + lags[:, None]  # (R, H, L, L): [r, h, i, j]
    idx = idx.permute(1, 0, 2, 3).reshape(H, R * L, L) if layout == "rows" else \
        idx.permute(1, 3, 0, 2).reshape(H, L, R * L)
    return idx.contiguous()


def diagonal_sums(G: torch.Tensor, anticausal: tuple[bool, ...]) -> torch.Tensor:
    """G (R, H, L, L) -> S (R, H, L): S[r, h, l] = sum_i G[r, h, i, i - l] (on and below the
    main diagonal), or sum_i G[r, h, i, i + l] (on and above it) where anticausal[r].

    Each matrix is copied into rows of 2L - 1 with L - 1 zeros on the left (causal) or the
    right; along the stride 2L the diagonals become columns and the zeros fill what lies
    outside the matrix, so the sums are one strided reduction.
    """
    R, H, L, _ = G.shape
    Gp = G.new_zeros(R, H, L, 2 * L - 1)
    for r, a in enumerate(anticausal):
        Gp[r, :, :, slice(0, L) if a else slice(L - 1, None)] = G[r]
    # causal: Gp[i, L - 1 + j] = G[i, j], column i + l' of row i holds lag l = L - 1 - l';
    # anti-causal: Gp[i, j] = G[i, j], column i + l holds lag l
    S = Gp.as_strided((R, H, L, L), ((2 * L - 1) * L * H, (2 * L - 1) * L, 2 * L, 1)).sum(-2)
    causal = torch.tensor([not a for a in anticausal], device=G.device).view(R, 1, 1)
    return torch.where(causal, S.flip(-1), S) if not all(anticausal) else S


def padded_kernels(K: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """K (R, H, L), D (R, H) -> (R, H, L + 1): lag 0 holds K_0 + D (the skip D u), index L a
    zero, which a Toeplitz operator's entries off the kernel's band read (`toeplitz_index`)."""
    Kz = torch.nn.functional.pad(K, (0, 1))
    Kz[..., 0] += D
    return Kz


class ToeplitzWeight(torch.autograd.Function):
    """K (R, H, L), D (R, H) -> a Toeplitz operator's weight (`conv_operator`'s layouts).

    The same numbers as `toeplitz` (then permuted for the layout), as one gather; the
    backward sums the weight's gradient along its diagonals, instead of the index
    operations' scatter-add and the zero-filled `where` branches (a training step at the
    cpu preset spent about a fifth of its time building these operators).
    """

    @staticmethod
    def forward(ctx, K, D, anticausal, layout):
        R, H, L = K.shape
        Kz = padded_kernels(K, D)
        ctx.anticausal, ctx.layout = anticausal, layout
        return Kz.take(toeplitz_index(R, H, L, anticausal, layout, K.device))

    @staticmethod
    def backward(ctx, gw):
        anti, H = ctx.anticausal, gw.shape[0]
        R = len(anti)
        if ctx.layout == "rows":  # (H, R L, L) -> [h, r, i, j]
            L = gw.shape[2]
            G = gw.view(H, R, L, L)
        else:  # (H, L, R L): [h, j, r L + i]
            L = gw.shape[1]
            G = gw.view(H, L, R, L).permute(0, 2, 3, 1)
        gK = diagonal_sums(G.transpose(0, 1), anti)  # (R, H, L)
        return gK, gK[..., 0].clone(), None, None


class ToeplitzProduct(torch.autograd.Function):
    """u (H, P, L) @ T (H, L, C) per channel, forward and backward by the compiled kernels
    (hummuss/csrc/toeplitz_product.cpp): in training, where `toeplitz_product` runs them."""

    @staticmethod
    def forward(ctx, u, T):
        ctx.save_for_backward(u, T)
        return cpu_kernels.ops().toeplitz_product(u, T)

    @staticmethod
    def backward(ctx, gy):
        u, T = ctx.saved_tensors
        k, gy = cpu_kernels.ops(), gy.contiguous()
        gu = k.toeplitz_input_grad(gy, T) if ctx.needs_input_grad[0] else None
        gT = k.toeplitz_weight_grad(u, gy) if ctx.needs_input_grad[1] else None
        return gu, gT


def toeplitz_kernels_take(u: torch.Tensor, T: torch.Tensor) -> bool:
    """Whether the compiled Toeplitz products (hummuss/csrc/toeplitz_product.cpp) take u
    (H, P, L, ...) by T (H, L, C): one dtype, L and C up to TOEPLITZ_KERNEL_COLUMNS, eager,
    float32 on the CPU with the kernels built."""
    return (u.dtype == T.dtype and max(T.shape[1], T.shape[2]) <= TOEPLITZ_KERNEL_COLUMNS
            and not torch.compiler.is_compiling() and cpu_kernels.runs_on(u.device, u.dtype))


def toeplitz_product(u: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """u (H, P, L) @ T (H, L, C), a "cols" Toeplitz operator's product: in training where
    `toeplitz_kernels_take`, `ToeplitzProduct`, else torch.bmm."""
    if torch.is_grad_enabled() and (u.requires_grad or T.requires_grad) and toeplitz_kernels_take(u, T):
        return ToeplitzProduct.apply(u.contiguous(), T.contiguous())
    return torch.bmm(u, T)


def conv_taps(K: torch.Tensor, D: torch.Tensor, anticausal: Sequence[bool]) -> tuple[torch.Tensor, torch.Tensor]:
    """K (R, H, L), D (R, H) -> taps (Kz (R (L + 1), H), idx (L, R L)) for `apply_taps`.

    The Toeplitz operator of layout "cols" without its (H, L, R L) weight: the padded kernels
    (lag 0 holding D, index L of each a zero), channels last, and where the weight's entries
    read them: weight[h, j, o] = Kz[idx[j, o], h] (`toeplitz_index` of one channel). About
    L times smaller than the weight (paper-causal's joints: 111 KB against 1.8 MB a block).
    """
    R, H, L = K.shape
    Kz = padded_kernels(K, D)  # (R, H, L + 1)
    idx = toeplitz_index(R, 1, L, tuple(bool(a) for a in anticausal), "cols", K.device)[0]  # (L, R L) into (R, L + 1)
    return Kz.permute(0, 2, 1).reshape(R * (L + 1), H).contiguous(), idx


def apply_taps(taps: tuple[torch.Tensor, torch.Tensor], u: torch.Tensor) -> torch.Tensor:
    """u (H, P, L, 1) -> y (H, P, R, L, 1): `apply_conv` of the "cols" Toeplitz operator
    whose `conv_taps` these are. For torch.compile, which reads each weight entry from the
    taps where the product needs it, vectorised along the channels (one pass over the small
    taps); eagerly the gathered weight would be written out, and the operator is faster."""
    Kz, idx = taps
    H, P, L, _ = u.shape
    weight = Kz[idx]  # (L, R L, H)
    y = (u.reshape(H, P, L).permute(1, 2, 0).unsqueeze(2) * weight).sum(1)  # (P, R L, H)
    return y.permute(2, 0, 1).reshape(H, P, -1, L, 1)


def conv_operator(K: torch.Tensor, D: torch.Tensor, anticausal: Sequence[bool], layout: str,
                  method: str = "auto") -> ConvOperator:
    """Prepare the convolution by K (R, H, L) with skips D (R, H) for `apply_conv`.

    layout "rows": inputs u (H, 1, L, Q); "cols": u (H, P, L, 1). method "toeplitz",
    "fft" or "auto" (`conv_method` with few columns: Toeplitz up to TOEPLITZ_MAX_LENGTH).
    """
    R, H, L = K.shape
    if method == "auto":
        method = conv_method(L, 1)
    if method == "toeplitz":
        if layout not in ("rows", "cols"):
            raise ValueError(f"unknown layout {layout!r}; known: rows, cols")
        # = `toeplitz` laid out for `layout`, in one gather with a diagonal-sum backward
        weight = ToeplitzWeight.apply(K, D, tuple(bool(a) for a in anticausal), layout)
        return ConvOperator("toeplitz", layout, L, weight)
    if method != "fft":
        raise ValueError(f"unknown convolution method {method!r}; known: auto, toeplitz, fft")
    n = fft_size(2 * L - 1)  # zero padding makes the circular convolution linear
    anticausal = tuple(bool(a) for a in anticausal)
    training = torch.is_grad_enabled() and (K.requires_grad or D.requires_grad)  # then: `FFTConv`
    with torch.no_grad():
        weight = fft_weight(K, D, anticausal, n)
    return ConvOperator("fft", layout, L, weight, n, kernel=(K, D, anticausal) if training else None)


def apply_conv(op: ConvOperator, u: torch.Tensor) -> torch.Tensor:
    """u (H, P, L, Q) -> y (H, P, R, L, Q), the R convolutions of each channel's sequences."""
    H, P, L, Q = u.shape
    if L != op.length:
        raise ValueError(f"operator built for {op.length} frames, got {L}")
    if op.kind == "toeplitz":
        RL = op.weight.shape[1] if op.layout == "rows" else op.weight.shape[2]
        if op.layout == "rows":  # (H, R L, L) @ (H, L, Q)
            if P != 1:
                raise ValueError(f"layout 'rows' needs P = 1, got u of shape {tuple(u.shape)}")
            y = torch.bmm(op.weight, u.reshape(H, L, Q))
        else:  # (H, P, L) @ (H, L, R L)
            if Q != 1:
                raise ValueError(f"layout 'cols' needs Q = 1, got u of shape {tuple(u.shape)}")
            y = toeplitz_product(u.reshape(H, P, L), op.weight)
        return y.view(H, P, RL // L, L, Q)
    n = op.n_fft
    if u.dtype in (torch.float16, torch.bfloat16):  # under autocast: cuFFT has no bfloat16
        u = u.float()
    if op.kernel is not None and torch.is_grad_enabled():
        return FFTConv.apply(u, *op.kernel, n, op.weight)  # the spectra computed once, in `conv_operator`
    return fft_conv(u, op.weight, n)[0]  # (H, P, R, L, Q)

"""Convolution mode of the DSSM: its kernel, and the operators that apply it.

The kernel K_l = 2 Re(sum_n W_n dA_n^l) (W = C dB) is a Vandermonde product; `vandermonde`
computes it from two small factors. How the convolution by K (plus the skip D) is then
computed (the same numbers either way, to float round-off):
- short sequences (L <= TOEPLITZ_MAX_LENGTH, e.g. the 17 joints of a frame) multiply by
  the (L x L) Toeplitz matrix of the kernel, one small matmul per channel (`toeplitz`);
- long ones use an FFT of a mostly-two size >= 2L - 1 (`fft_size`); the anti-causal
  (backward) direction multiplies by the conjugate spectrum instead of flipping.
`conv_method` chooses between them, `conv_operator` prepares either as a `ConvOperator`,
`apply_conv` applies it. Both work on channel-major activations u (H, P, L, Q) (the
sequence on dim 2), so a block that computes its projections as W z^T needs no transposes
(see hummuss/gdssm.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from hummuss.ssm.cache import cexp

# direct (Toeplitz) convolution up to TOEPLITZ_MAX_LENGTH frames, or up to
# TOEPLITZ_WIDE_MAX_LENGTH when the matmul has at least TOEPLITZ_WIDE_COLUMNS columns
# (sequences per channel); FFT beyond. Measured on a 2-core AVX-512 CPU, see `conv_method`.
TOEPLITZ_MAX_LENGTH, TOEPLITZ_WIDE_MAX_LENGTH, TOEPLITZ_WIDE_COLUMNS = 40, 128, 64
FFT_ODD_FACTORS = (1, 3, 5, 9)  # FFT sizes 2^a c, see `fft_size`


def vandermonde(W: torch.Tensor, dtlam: torch.Tensor, length: int) -> torch.Tensor:
    """K[c, h, l] = 2 Re(sum_n W[c, h, n] exp(dtlam[h, n] l)) for l < length.

    W (k, H, M) complex, dtlam (H, M) complex -> K (k, H, L) real. With l = q b + r,
    dA^l = dA^(q b) dA^r: two small Vandermonde factors (H, nq, M) and (H, M, b) instead of
    the (H, M, L) powers, and the sum over modes as one real batched matmul.
    """
    k, H, M = W.shape
    b = max(1, math.isqrt(length - 1) + 1) if length > 1 else 1
    nq = -(-length // b)
    steps = torch.arange(max(b, nq), device=dtlam.device, dtype=torch.float32)
    Vq = cexp(dtlam.unsqueeze(1) * (steps[:nq] * b).unsqueeze(-1))  # (H, nq, M): dA^(q b)
    Vr = cexp(dtlam.unsqueeze(-1) * steps[:b])  # (H, M, b): dA^r
    A = (W.transpose(0, 1).unsqueeze(2) * Vq.unsqueeze(1)).reshape(H, k * nq, M)  # (H, k nq, M)
    # Re(A Vr) = [Re A, -Im A] @ [Re Vr; Im Vr]
    K = torch.bmm(torch.cat([A.real, -A.imag], -1), torch.cat([Vr.real, Vr.imag], 1))  # (H, k nq, b)
    return 2 * K.view(H, k, nq * b)[..., :length].transpose(0, 1)  # (k, H, L)


def fft_size(n: int) -> int:
    """The smallest 2^a c >= n with c in (1, 3, 5, 9): FFT sizes that are mostly twos.

    On this project's 2-core AVX-512 CPU (MKL) they beat the smallest 5-smooth sizes: for
    L = 243 frames (n >= 485) 512 runs about 30% faster than 486 = 2 3^5; for L = 729, 1536
    beats 1458 = 2 3^6.
    """
    best = None
    for c in FFT_ODD_FACTORS:
        m = c
        while m < n:
            m *= 2
        best = m if best is None else min(best, m)
    return best


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
        T = toeplitz(K, D, anticausal)  # (H, R, L, L)
        if layout == "rows":
            weight = T.reshape(H, R * L, L)
        elif layout == "cols":
            weight = T.permute(0, 3, 1, 2).reshape(H, L, R * L)
        else:
            raise ValueError(f"unknown layout {layout!r}; known: rows, cols")
        return ConvOperator("toeplitz", layout, L, weight.contiguous())
    if method != "fft":
        raise ValueError(f"unknown convolution method {method!r}; known: auto, toeplitz, fft")
    n = fft_size(2 * L - 1)  # zero padding makes the circular convolution linear
    K = torch.cat([K[..., :1] + D.unsqueeze(-1), K[..., 1:]], -1)  # the skip D u is lag 0
    Kf = torch.fft.rfft(K.float(), n=n)  # (R, H, n/2+1)
    if any(anticausal):  # correlation with K: y_i = sum_{j >= i} K[j - i] u_j
        anti = torch.tensor(list(anticausal), device=K.device).view(R, 1, 1)
        Kf = torch.where(anti, Kf.conj(), Kf)
    weight = Kf.permute(1, 0, 2)[:, None, :, :, None]  # (H, 1, R, n/2+1, 1)
    return ConvOperator("fft", layout, L, weight, n)


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
            y = torch.bmm(u.reshape(H, P, L), op.weight)
        return y.view(H, P, RL // L, L, Q)
    n = op.n_fft
    Uf = torch.fft.rfft(u, n=n, dim=2)  # (H, P, n/2+1, Q)
    y = torch.fft.irfft(Uf.unsqueeze(2) * op.weight, n=n, dim=3)[:, :, :, :L]  # (H, P, R, L, Q)
    # with autograd a contiguous copy pays for itself: GELU's backward on the strided slice
    # is about 4x slower than on a dense tensor
    return y.contiguous() if torch.is_grad_enabled() else y

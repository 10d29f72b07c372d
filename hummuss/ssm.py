"""DSSM: a diagonal state-space layer in the manner of S4D.

For each of H channels the layer is the continuous-time system

    s'(t) = A s(t) + u(t)          A = diag(lambda_1 .. lambda_M), Re(lambda) < 0
    y_c(t) = 2 Re(C_c . s(t)) + D_c u(t)       c = 1 .. k output channels

with M = N/2 complex modes (conjugate symmetry: "state size N = 128" means 64 complex
modes; the factor 2 Re(.) accounts for the conjugate half). B is absorbed into C.

Discretisation is zero-order hold with a learned per-channel step Delta = exp(log_dt):

    dA = exp(Delta * lambda)        dB = (exp(Delta * lambda) - 1) / lambda
    s_t = dA * s_{t-1} + dB * u_t   y_t = 2 Re(C . s_t) + D u_t

Three computations of the same map, which agree to float round-off:
- `forward` (convolution with the kernel K_l = 2 Re(C dB dA^l), training and offline);
- `step` (recurrence on an explicit state, one frame at a time: streaming);
- `scan` (a recurrence that takes one step size per frame: irregular timestamps).

`dt_scale` multiplies every step (input at half the training frame rate: dt_scale=2);
a per-frame `dt` (B, L), in units of the training step, multiplies it frame by frame.

Eigenvalue initialisations (S4D paper, Gu et al. 2022), n = 0 .. M-1:
    lin   lambda_n = -1/2 + i pi n                        (S4D-Lin, the HumMUSS paper's)
    inv   lambda_n = -1/2 + i (N/pi) (N/(2n+1) - 1)       (S4D-Inv)
    legs  lambda_n = -1/2 + i w_n, w_n > 0 the eigenvalues of the skew part of HiPPO-LegS's
          normal part (S4D-LegS)
    real  lambda_n = -(n+1)                               (S4D-Real)
    rand  lambda_n = -1/2 + i exp(z_n), z_n ~ N(0, 1)
C ~ complex normal (unit variance per component), log Delta ~ U[log dt_min, log dt_max].

How the convolution is computed (the same numbers either way, to float round-off):
- short sequences (L <= TOEPLITZ_MAX_LENGTH, e.g. the 17 joints of a frame) multiply by
  the (L x L) Toeplitz matrix of the kernel, one small matmul per channel;
- long ones use an FFT of a mostly-two size >= 2L - 1 (`fft_size`); the anti-causal
  (backward) direction multiplies by the conjugate spectrum instead of flipping.
Both work on channel-major activations u (H, P, L, Q) (the sequence on dim 2), so a
block that computes its projections as W z^T needs no transposes (see hummuss/gdssm.py).
Kernels, Toeplitz matrices and spectra are cached without autograd until a parameter
changes (`ParamCache`). Complex exponentials go through real exp/cos/sin (`cexp`), which
torch vectorises; its complex exp on CPU is about 5x slower.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

INIT_SCHEMES = ("lin", "inv", "legs", "real", "rand")
# direct (Toeplitz) convolution up to TOEPLITZ_MAX_LENGTH frames, or up to
# TOEPLITZ_WIDE_MAX_LENGTH when the matmul has at least TOEPLITZ_WIDE_COLUMNS columns
# (sequences per channel); FFT beyond. Measured on a 2-core AVX-512 CPU, see `conv_method`.
TOEPLITZ_MAX_LENGTH, TOEPLITZ_WIDE_MAX_LENGTH, TOEPLITZ_WIDE_COLUMNS = 40, 128, 64
CACHE_MAX_BYTES = 16 * 2**20  # evaluation caches keep no value larger than this
FFT_ODD_FACTORS = (1, 3, 5, 9)  # FFT sizes 2^a c, see `fft_size`


def legs_frequencies(state_size: int) -> np.ndarray:
    """The M = N/2 positive imaginary parts of the eigenvalues of HiPPO-LegS's normal part.

    The normal part of LegS is -1/2 I + S with S skew-symmetric,
    S_nk = -sqrt(2n+1) sqrt(2k+1) / 2 for n > k (and +... for n < k).
    """
    n = np.arange(state_size, dtype=np.float64)
    q = np.sqrt(2 * n + 1)
    skew = np.tril(-0.5 * np.outer(q, q), -1)
    skew = skew - skew.T  # (N, N)
    w = np.linalg.eigvals(skew).imag
    w = np.sort(w[w > 0])
    if len(w) != state_size // 2:  # pragma: no cover - the spectrum is symmetric for even N
        raise RuntimeError(f"LegS spectrum has {len(w)} positive frequencies, expected {state_size // 2}")
    return w


def init_eigenvalues(scheme: str, state_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The M = N/2 complex eigenvalues (complex64, shape (M,)) of an init scheme."""
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown DSSM init scheme {scheme!r}; known: {', '.join(INIT_SCHEMES)}")
    if state_size < 2 or state_size % 2:
        raise ValueError(f"state_size must be an even number >= 2 (N real dims = N/2 complex modes), got {state_size}")
    m = state_size // 2
    n = torch.arange(m, dtype=torch.float64)
    re = torch.full((m,), -0.5, dtype=torch.float64)
    if scheme == "lin":
        im = math.pi * n
    elif scheme == "inv":
        im = state_size / math.pi * (state_size / (2 * n + 1) - 1)
    elif scheme == "legs":
        im = torch.from_numpy(legs_frequencies(state_size))
    elif scheme == "real":
        re, im = -(n + 1), torch.zeros(m, dtype=torch.float64)
    else:  # rand
        im = torch.exp(torch.randn(m, generator=generator, dtype=torch.float64))
    return torch.complex(re, im).to(torch.complex64)


def cexp(z: torch.Tensor) -> torch.Tensor:
    """exp of a complex tensor through real exp, cos and sin (vectorised on CPU)."""
    return torch.polar(torch.exp(z.real), z.imag)


def zoh(lam: torch.Tensor, dt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-order hold: dA = exp(dt lam), dB = (exp(dt lam) - 1) / lam (broadcasting)."""
    dA = cexp(dt * lam)
    return dA, (dA - 1) / lam


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


class ParamCache:
    """Values derived from parameters, reused while no parameter changes (no autograd).

    With autograd enabled (training) `get` always recomputes, so gradients flow. Without
    it (evaluation, streaming) a value is kept under `key` until one of `params` changes:
    an optimiser step or load_state_dict bumps the tensor's version, `.to()` moves it.
    Values larger than CACHE_MAX_BYTES (pass their size as `nbytes`) are not kept: long
    sequences' kernels and spectra are cheap to recompute next to their convolution.
    """

    def __init__(self, maxsize: int = 16):
        self.maxsize, self._store = maxsize, {}

    def get(self, key, params: Sequence[torch.Tensor], compute: Callable[[], object], nbytes: int = 0):
        if torch.is_grad_enabled() or nbytes > CACHE_MAX_BYTES:
            return compute()
        version = tuple((p._version, p.data_ptr()) for p in params)
        hit = self._store.get(key)
        if hit is None or hit[0] != version:
            if len(self._store) >= self.maxsize:
                self._store.clear()
            hit = self._store[key] = (version, compute())
        return hit[1]

    def clear(self):
        self._store.clear()


# -- convolution on channel-major activations ---------------------------------------------
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


def conv_method(length: int, columns: int) -> str:
    """"toeplitz" or "fft" for sequences of `length` frames, `columns` sequences per channel.

    The Toeplitz matmul costs R L multiply-adds per frame and channel and runs near the matmul
    rate once it has enough columns; the FFT costs O(log L) but at a fraction of that rate.
    (H = 640, R = 4, 2 threads: with 17 columns the two meet at about 64 frames (Toeplitz
    1.9 ms against FFT 2.9 ms at 48), with 136 columns at about 130. The Toeplitz limit of 40
    frames also keeps a cached operator under CACHE_MAX_BYTES.)
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


class DSSM(nn.Module):
    """Diagonal SSM over H channels with k output channels each: (B, L, H) -> (B, L, H, k).

    Args:
        channels: H, the number of independent input channels.
        state_size: N real state dimensions per channel (N/2 complex modes).
        out_channels: k read-outs C_1..C_k per channel.
        init: eigenvalue initialisation, one of INIT_SCHEMES.
        dt_min, dt_max: range of the log-uniform initial step.
        shared_modes: one set of eigenvalues for all channels (S4's n_ssm=1) if True,
            else one set per channel. Steps, C and D are always per channel.
    """

    def __init__(
        self,
        channels: int,
        state_size: int = 128,
        out_channels: int = 1,
        init: str = "lin",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        shared_modes: bool = True,
    ):
        super().__init__()
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        self.channels, self.state_size, self.out_channels = channels, state_size, out_channels
        self.init_scheme, self.modes = init, state_size // 2
        H, M, k = channels, self.modes, out_channels
        S = 1 if shared_modes else H

        lam = init_eigenvalues(init, state_size).expand(S, M)  # (S, M)
        # Re(lambda) = -exp(log_neg_re) < 0 always
        self.log_neg_re = nn.Parameter(torch.log(-lam.real).clone())  # (S, M)
        self.im = nn.Parameter(lam.imag.clone())  # (S, M)
        self.log_dt = nn.Parameter(
            torch.empty(H).uniform_(math.log(dt_min), math.log(dt_max))
        )  # (H,)
        self.C = nn.Parameter(torch.randn(k, H, M, 2))  # (k, H, M) complex as real pairs
        self.D = nn.Parameter(torch.randn(k, H))  # (k, H)
        self.cache = ParamCache()  # evaluation-time kernels, operators, read-out weights

    # -- parameters in complex form -------------------------------------------------
    def eigenvalues(self) -> torch.Tensor:
        """lambda, complex (S, M) with S = 1 (shared) or H."""
        return torch.complex(-torch.exp(self.log_neg_re), self.im)

    def discretise(self, dt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """dA, dB for steps dt broadcastable to (..., H, 1); returns (..., H, M) complex."""
        return zoh(self.eigenvalues(), dt)

    def _C(self) -> torch.Tensor:
        return torch.view_as_complex(self.C)  # (k, H, M)

    def kernel(self, length: int, dt_scale: float = 1.0) -> torch.Tensor:
        """Convolution kernel K (k, H, L): K[c, h, l] = 2 Re(sum_n C dB dA^l).

        Without autograd (evaluation, streaming) the kernel is cached per length and
        dt_scale until a parameter changes (in-place updates bump tensor versions).
        """
        key = ("kernel", length, float(dt_scale))
        return self.cache.get(key, list(self.parameters()), lambda: self._kernel(length, dt_scale),
                              nbytes=4 * self.out_channels * self.channels * length)

    def _kernel(self, length: int, dt_scale: float) -> torch.Tensor:
        # dA^l = dA^(q b) dA^r with l = q b + r: two small Vandermonde factors instead of
        # the (H, M, L) powers, and the sum over modes as one real batched matmul
        lam = self.eigenvalues()  # (S, M)
        dtlam = (torch.exp(self.log_dt) * dt_scale).unsqueeze(-1) * lam  # (H, M)
        H, M, k = self.channels, self.modes, self.out_channels
        b = max(1, math.isqrt(length - 1) + 1) if length > 1 else 1
        nq = -(-length // b)
        steps = torch.arange(max(b, nq), device=dtlam.device, dtype=torch.float32)
        W = self._C() * ((cexp(dtlam) - 1) / lam)  # (k, H, M): C dB
        Vq = cexp(dtlam.unsqueeze(1) * (steps[:nq] * b).unsqueeze(-1))  # (H, nq, M): dA^(q b)
        Vr = cexp(dtlam.unsqueeze(-1) * steps[:b])  # (H, M, b): dA^r
        A = (W.transpose(0, 1).unsqueeze(2) * Vq.unsqueeze(1)).reshape(H, k * nq, M)
        # Re(A Vr) = [Re A, -Im A] @ [Re Vr; Im Vr]
        K = torch.bmm(torch.cat([A.real, -A.imag], -1), torch.cat([Vr.real, Vr.imag], 1))
        return 2 * K.view(H, k, nq * b)[..., :length].transpose(0, 1)  # (k, H, L)

    def operator(self, length: int, layout: str, dt_scale: float = 1.0, anticausal: bool = False,
                 method: str = "auto") -> ConvOperator:
        """This layer's convolution (cached without autograd), see `conv_operator`."""
        key = ("op", length, layout, float(dt_scale), anticausal, method)
        return self.cache.get(key, list(self.parameters()), lambda: conv_operator(
            self._kernel(length, dt_scale), self.D, [anticausal] * self.out_channels, layout, method),
            nbytes=operator_bytes(self.channels, self.out_channels, length, method))

    # -- convolution mode -----------------------------------------------------------
    def forward(self, u: torch.Tensor, dt_scale: float = 1.0, dt: torch.Tensor | None = None) -> torch.Tensor:
        """u (B, L, H) -> y (B, L, H, k). With per-frame `dt` (B, L) this runs `scan`."""
        if dt is not None:
            return self.scan(u, dt * dt_scale)
        B, L, H = u.shape
        op = self.operator(L, "cols", dt_scale, method=conv_method(L, B))
        y = apply_conv(op, u.permute(2, 0, 1).unsqueeze(-1).to(self.D.dtype))  # (H, B, k, L, 1)
        return y[..., 0].permute(1, 3, 0, 2).to(u.dtype)  # (B, L, H, k)

    # -- scan mode: one step size per frame -----------------------------------------
    def scan(self, u: torch.Tensor, dt: torch.Tensor, state: torch.Tensor | None = None,
             block: int = 32) -> torch.Tensor:
        """u (B, L, H), dt (B, L) in units of the learned step -> y (B, L, H, k).

        Solves s_t = dA_t s_{t-1} + dB_t u_t, with dA_t, dB_t from each frame's own
        step. `state` (B, H, M) continues an earlier sequence. See `scan_frames`.
        """
        B, L, H = u.shape
        if dt.shape != (B, L):
            raise ValueError(f"dt must have shape (batch, frames) = {(B, L)}, got {tuple(dt.shape)}")
        y, _ = self.scan_frames(u.transpose(0, 1), dt.t(), state, block)
        return y.transpose(0, 1)

    def scan_frames(self, u: torch.Tensor, dt: torch.Tensor, state: torch.Tensor | None = None,
                    block: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame-major scan: u (L, N, H), dt (L, N) -> y (L, N, H, k), last state (N, H, M).

        In blocks of `block` frames: the block's dA_t, dB_t u_t in one vectorised pass,
        then the recurrence frame by frame (on CUDA a Hillis-Steele prefix scan, log2(block)
        sweeps over products of |dA| <= 1, so it is stable), then the read-out of the
        block's states at once.
        """
        L, N, H = u.shape
        lam, step = self.eigenvalues(), torch.exp(self.log_dt)  # (S, M), (H,)
        R = self.readout_weight()  # (H, k, 2M)
        ys = []
        for t0 in range(0, L, block):
            a, b = zoh(lam, (dt[t0:t0 + block].unsqueeze(-1) * step).unsqueeze(-1))  # (l, N, H, M)
            b = b * u[t0:t0 + block].unsqueeze(-1)
            if state is not None:  # fold the carried state into the block's first frame
                b = torch.cat([torch.addcmul(b[:1], a[:1], state.unsqueeze(0)), b[1:]], 0)
            s = _linear_scan(a, b) if a.is_cuda else _sequential_scan(a, b)  # (l, N, H, M)
            state = s[-1]
            ys.append(_readout(s, R))
        y = torch.cat(ys, 0) if len(ys) > 1 else ys[0]
        return torch.addcmul(y, u.unsqueeze(-1), self.D.t()), state

    # -- recurrent mode: streaming --------------------------------------------------
    def initial_state(self, batch_size: int, device=None) -> torch.Tensor:
        """Zero state (B, H, M) complex."""
        return torch.zeros(batch_size, self.channels, self.modes, dtype=torch.complex64, device=device)

    def readout_weight(self) -> torch.Tensor:
        """R (H, k, 2M) with 2 Re(C_c s) = <view_as_real(s), R[:, c]> (cached without autograd)."""
        def compute():
            C = self.C  # (k, H, M, 2): 2 Re(C s) = 2 (C_re s_re - C_im s_im)
            R = 2 * torch.stack([C[..., 0], -C[..., 1]], -1)  # (k, H, M, 2)
            return R.transpose(0, 1).reshape(self.channels, self.out_channels, 2 * self.modes)
        return self.cache.get("readout", [self.C], compute)

    def readout_planes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(2 Re C, -2 Im C), each (H, k, M), for `advance_state_planar` (cached without autograd)."""
        return self.cache.get("planes", [self.C], lambda: (
            (2 * self.C[..., 0]).transpose(0, 1).contiguous(), (-2 * self.C[..., 1]).transpose(0, 1).contiguous()))

    def readout(self, state: torch.Tensor) -> torch.Tensor:
        """2 Re(C s): states (..., H, M) complex -> (..., H, k), without the skip D u."""
        return _readout(state, self.readout_weight())

    def step(self, u_t: torch.Tensor, state: torch.Tensor, dt: float | torch.Tensor = 1.0,
             discretised: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One frame: u_t (B, H), state (B, H, M) -> y_t (B, H, k), new state.

        `dt` is this frame's step in units of the learned step (a float or (B,) tensor).
        `discretised` may pass a precomputed (dA, dB) to skip the exponentials.
        """
        if discretised is None:
            discretised = self.discretise_step(dt, u_t.device)
        dA, dB = discretised
        state = torch.addcmul(dB * u_t.unsqueeze(-1), dA, state)  # (B, H, M)
        y = torch.addcmul(_readout(state, self.readout_weight()), u_t.unsqueeze(-1), self.D.t())
        return y, state

    def discretise_step(self, dt: float | torch.Tensor, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(dA, dB) for a step dt: float -> (H, M); (B,) tensor -> (B, H, M)."""
        step = torch.exp(self.log_dt)  # (H,)
        if isinstance(dt, torch.Tensor) and dt.dim() > 0:
            dts = dt.to(step).reshape(-1, 1) * step  # (B, H)
        else:
            dts = step * float(dt)  # (H,)
        return self.discretise(dts.unsqueeze(-1))


def advance_state_(state: torch.Tensor, dA: torch.Tensor, dB: torch.Tensor, u: torch.Tensor,
                   R: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """One recurrence step in place on a complex state (N, H, M): s = dA s + dB u.

    dA, dB (H, M) or (N, H, M); u (N, H); R (H, k, 2M) from `DSSM.readout_weight`; D (k, H).
    Returns y = 2 Re(C s) + D u (N, H, k).
    """
    state.mul_(dA).addcmul_(dB, u.unsqueeze(-1))
    return _readout(state, R).addcmul_(u.unsqueeze(-1), D.t())


def planar_state(z: torch.Tensor) -> torch.Tensor:
    """Complex (N, H, M) -> planar real (2, H, N, M) = (Re, Im), channel-major; complex
    (H, M) -> (2, H, M). The layout of `advance_state_planar`."""
    p = torch.stack([z.real, z.imag], 0)
    return p.transpose(1, 2).contiguous() if z.dim() == 3 else p


def complex_state(p: torch.Tensor) -> torch.Tensor:
    """The inverse of `planar_state`: (2, H, N, M) -> complex (N, H, M)."""
    return torch.complex(p[0], p[1]).transpose(0, 1).contiguous()


def advance_state_planar(s: torch.Tensor, a: torch.Tensor, b: torch.Tensor, u: torch.Tensor,
                         Rr: torch.Tensor, Ri: torch.Tensor, D: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`advance_state_` on planar real states, written for torch.compile: one pass over the state.

    s (2, H, N, M) = (Re, Im) of the state, channel-major (`planar_state`); a, b = dA, dB
    likewise, (2, H, M) or per stream (2, H, N, M); u (N, H); Rr, Ri (H, k, M) = 2 Re C,
    -2 Im C (`DSSM.readout_planes`); D (k, H). Returns the new state (2, H, N, M) (a new
    tensor: no copy-back of an in-place update) and y = 2 Re(C s) + D u (N, H, k).

    Channel-major, the compiled loop runs over channels outside and streams inside, so a
    channel's dA, dB and read-out (a few KB) stay in L1 while its N states stream past; with
    streams outside, every stream re-read all of them (about 1.5 MB per block at H = 768)
    from L3, which made the update take 1.8x as long as a copy of the state.
    """
    if a.dim() == 3:
        a, b = a.unsqueeze(2), b.unsqueeze(2)  # (2, H, 1, M): one step for every stream
    uu = u.t().unsqueeze(-1)  # (H, N, 1)
    nr = a[0] * s[0] - a[1] * s[1] + b[0] * uu  # (H, N, M)
    ni = a[0] * s[1] + a[1] * s[0] + b[1] * uu
    ys = [((nr * Rr[:, c].unsqueeze(1) + ni * Ri[:, c].unsqueeze(1)).sum(-1) + uu[..., 0] * D[c].unsqueeze(-1)).t()
          for c in range(Rr.shape[1])]  # k x (N, H)
    # y is (N, H, k) over storage (k, N, H): what reads it next runs along the channels
    return torch.stack([nr, ni], 0), torch.stack(ys, 0).permute(1, 2, 0)


def _readout(s: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """States s (..., H, M) complex, R (H, k, 2M) -> 2 Re(C s) (..., H, k), a batched matmul.

    (Multiply-and-sum is faster on a state that sits in cache, but writes a k-fold temporary;
    inside a streaming step, whose states do not fit in cache, the matmul is 3x faster.)
    """
    sr = torch.view_as_real(s).flatten(-2)  # (..., H, 2M): (re, im) interleaved
    return torch.einsum("...hj,hkj->...hk", sr, R)


def _sequential_scan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """All prefixes of s_t = a_t s_{t-1} + b_t (s_{-1} = 0) along dim 0, frame by frame."""
    s, out = b[0], [b[0]]
    for t in range(1, a.shape[0]):
        s = torch.addcmul(b[t], a[t], s)
        out.append(s)
    return torch.stack(out, 0)


def _linear_scan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """All prefixes of s_t = a_t s_{t-1} + b_t (s_{-1} = 0) along dim 0, in log2(L) sweeps."""
    L = a.shape[0]
    d = 1
    while d < L:
        b = torch.cat([b[:d], b[d:] + a[d:] * b[:-d]], dim=0)
        a = torch.cat([a[:d], a[d:] * a[:-d]], dim=0)
        d *= 2
    return b

"""DSSM: a diagonal state-space layer in the manner of S4D.

For each of H channels the layer is the continuous-time system

    s'(t) = A s(t) + u(t)          A = diag(lambda_1 .. lambda_M), Re(lambda) < 0
    y_c(t) = 2 Re(C_c . s(t)) + D_c u(t)       c = 1 .. k output channels

with M = N/2 complex modes (conjugate symmetry: "state size N = 128" means 64 complex
modes; the factor 2 Re(.) accounts for the conjugate half). B is absorbed into C.

Discretisation is zero-order hold with a learned per-channel step Delta = exp(log_dt):

    dA = exp(Delta * lambda)        dB = (exp(Delta * lambda) - 1) / lambda
    s_t = dA * s_{t-1} + dB * u_t   y_t = 2 Re(C . s_t) + D u_t

so that, from a zero state, y is the convolution of u with the kernel

    K_l = 2 Re(sum_n C_n dB_n dA_n^l)      (a Vandermonde product)   plus D at lag 0.

Three computations of the same map, which agree to float round-off:
- `forward` (convolution with the kernel K, training and offline);
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

This file is the model; the fast routes it calls live beside it: hummuss/ssm/conv.py (the
kernel's Vandermonde product, Toeplitz and FFT convolution), hummuss/ssm/recurrence.py
(read-out, scan, streaming state updates) and hummuss/ssm/cache.py (`ParamCache`, which
keeps kernels and operators without autograd until a parameter changes, and `cexp`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn

from hummuss.ssm import conv, recurrence
from hummuss.ssm.cache import ParamCache, cexp

INIT_SCHEMES = ("lin", "inv", "legs", "real", "rand")


# -- eigenvalue initialisations -------------------------------------------------------------
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
    n = torch.arange(m, dtype=torch.float64)  # (M,)
    re = torch.full((m,), -0.5, dtype=torch.float64)  # (M,)
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
    return torch.complex(re, im).to(torch.complex64)  # (M,)


# -- discretisation ----------------------------------------------------------------------------
def zoh(lam: torch.Tensor, dt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-order hold: dA = exp(dt lam), dB = (exp(dt lam) - 1) / lam (broadcasting)."""
    dA = cexp(dt * lam)
    return dA, (dA - 1) / lam


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

    def __init__(self, channels: int, state_size: int = 128, out_channels: int = 1, init: str = "lin",
                 dt_min: float = 1e-3, dt_max: float = 1e-1, shared_modes: bool = True):
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
        self.log_dt = nn.Parameter(torch.empty(H).uniform_(math.log(dt_min), math.log(dt_max)))  # (H,)
        self.C = nn.Parameter(torch.randn(k, H, M, 2))  # (k, H, M) complex as real pairs
        self.D = nn.Parameter(torch.randn(k, H))  # (k, H)
        self.cache = ParamCache()  # evaluation-time kernels, operators, read-out weights

    # -- parameters in complex form, discretised -------------------------------------------
    def eigenvalues(self) -> torch.Tensor:
        """lambda, complex (S, M) with S = 1 (shared) or H."""
        return torch.complex(-torch.exp(self.log_neg_re), self.im)

    def discretise(self, dt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """dA, dB for steps dt broadcastable to (..., H, 1); returns (..., H, M) complex."""
        return zoh(self.eigenvalues(), dt)

    def discretise_step(self, dt: float | torch.Tensor, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(dA, dB) for a step dt: float -> (H, M); (B,) tensor -> (B, H, M)."""
        step = torch.exp(self.log_dt)  # (H,)
        if isinstance(dt, torch.Tensor) and dt.dim() > 0:
            dts = dt.to(step).reshape(-1, 1) * step  # (B, H)
        else:
            dts = step * float(dt)  # (H,)
        return self.discretise(dts.unsqueeze(-1))

    # -- convolution mode: training and offline ---------------------------------------------
    def kernel(self, length: int, dt_scale: float = 1.0) -> torch.Tensor:
        """Convolution kernel K (k, H, L): K[c, h, l] = 2 Re(sum_n C dB dA^l).

        Without autograd (evaluation, streaming) the kernel is cached per length and
        dt_scale until a parameter changes (in-place updates bump tensor versions).
        """
        key = ("kernel", length, float(dt_scale))
        return self.cache.get(key, list(self.parameters()), lambda: self._kernel(length, dt_scale),
                              nbytes=4 * self.out_channels * self.channels * length)

    def _kernel(self, length: int, dt_scale: float) -> torch.Tensor:
        lam = self.eigenvalues()  # (S, M)
        dtlam = (torch.exp(self.log_dt) * dt_scale).unsqueeze(-1) * lam  # (H, M): Delta lambda
        W = torch.view_as_complex(self.C) * ((cexp(dtlam) - 1) / lam)  # (k, H, M): C dB
        return conv.vandermonde(W, dtlam, length)  # (k, H, L): 2 Re(sum_n W_n dA_n^l)

    def operator(self, length: int, layout: str, dt_scale: float = 1.0, anticausal: bool = False,
                 method: str = "auto") -> conv.ConvOperator:
        """This layer's convolution, K with D at lag 0 (cached without autograd), see `conv.conv_operator`."""
        key = ("op", length, layout, float(dt_scale), anticausal, method)
        return self.cache.get(key, list(self.parameters()), lambda: conv.conv_operator(
            self._kernel(length, dt_scale), self.D, [anticausal] * self.out_channels, layout, method),
            nbytes=conv.operator_bytes(self.channels, self.out_channels, length, method))

    def forward(self, u: torch.Tensor, dt_scale: float = 1.0, dt: torch.Tensor | None = None) -> torch.Tensor:
        """u (B, L, H) -> y (B, L, H, k): y = K * u + D u. With per-frame `dt` (B, L) this runs `scan`."""
        if dt is not None:
            return self.scan(u, dt * dt_scale)
        B, L, H = u.shape
        op = self.operator(L, "cols", dt_scale, method=conv.conv_method(L, B))
        y = conv.apply_conv(op, u.permute(2, 0, 1).unsqueeze(-1).to(self.D.dtype))  # (H, B, k, L, 1)
        return y[..., 0].permute(1, 3, 0, 2).to(u.dtype)  # (B, L, H, k)

    # -- scan mode: one step size per frame --------------------------------------------------
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

        In blocks of `block` frames, see `recurrence.scan`.
        """
        lam, step = self.eigenvalues(), torch.exp(self.log_dt)  # (S, M), (H,)

        def discretise(dt_block):  # (l, N) -> dA, dB (l, N, H, M)
            return zoh(lam, (dt_block.unsqueeze(-1) * step).unsqueeze(-1))

        return recurrence.scan(u, dt, discretise, self.readout_weight(), self.D, state, block)

    # -- recurrent mode: streaming ------------------------------------------------------------
    def initial_state(self, batch_size: int, device=None) -> torch.Tensor:
        """Zero state (B, H, M) complex."""
        return torch.zeros(batch_size, self.channels, self.modes, dtype=torch.complex64, device=device)

    def step(self, u_t: torch.Tensor, state: torch.Tensor, dt: float | torch.Tensor = 1.0,
             discretised: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One frame: u_t (B, H), state (B, H, M) -> y_t (B, H, k), new state.

        s_t = dA s_{t-1} + dB u_t, y_t = 2 Re(C s_t) + D u_t. `dt` is this frame's step in
        units of the learned step (a float or (B,) tensor); `discretised` may pass a
        precomputed (dA, dB) to skip the exponentials.
        """
        if discretised is None:
            discretised = self.discretise_step(dt, u_t.device)
        dA, dB = discretised  # (H, M) or (B, H, M)
        state = torch.addcmul(dB * u_t.unsqueeze(-1), dA, state)  # (B, H, M)
        y = torch.addcmul(self.readout(state), u_t.unsqueeze(-1), self.D.t())  # (B, H, k)
        return y, state

    def readout(self, state: torch.Tensor) -> torch.Tensor:
        """2 Re(C s): states (..., H, M) complex -> (..., H, k), without the skip D u."""
        return recurrence.readout(state, self.readout_weight())

    def readout_weight(self) -> torch.Tensor:
        """R (H, k, 2M) with 2 Re(C_c s) = <view_as_real(s), R[:, c]> (cached without autograd)."""
        return self.cache.get("readout", [self.C], lambda: recurrence.readout_weight(self.C))

    def readout_planes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(2 Re C, -2 Im C), each (H, k, M), for `advance_state_planar` (cached without autograd)."""
        return self.cache.get("planes", [self.C], lambda: recurrence.readout_planes(self.C))

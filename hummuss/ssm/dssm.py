"""DSSM: a diagonal state-space layer in the manner of S4D.

For each of H channels the layer is the continuous-time system

    s'(t) = A s(t) + u(t)          A = diag(lambda_1 .. lambda_M), Re(lambda) < 0
    y_c(t) = 2 Re(C_c . s(t)) + D_c u(t)       c = 1 .. k output channels

with M = N/2 complex modes (conjugate symmetry: "state size N = 128" means 64 complex
modes; the factor 2 Re(.) accounts for the conjugate half). B is absorbed into C.

Discretisation is zero-order hold (default) with a learned per-channel step Delta = exp(log_dt):

    dA = exp(Delta * lambda)        dB = (exp(Delta * lambda) - 1) / lambda
    s_t = dA * s_{t-1} + dB * u_t   y_t = 2 Re(C . s_t) + D u_t

so that, from a zero state, y is the convolution of u with the kernel

    K_l = 2 Re(sum_n C_n dB_n dA_n^l)      (a Vandermonde product)   plus D at lag 0.

`discretization="foh"` (first-order hold: u linear between frames, exact for such input)
integrates the interval [t - Delta, t] with u interpolated from u_{t-1} to u_t (`foh`):

    s_t = dA s_{t-1} + dB_prev u_{t-1} + dB u_t     (u_{-1} = 0: the signal starts at rest)
    dB = Delta phi_2(Delta lambda)   dB_prev = Delta (phi_1 - phi_2)(Delta lambda)
    K_0 = 2 Re(sum_n C_n dB_n)       K_l = 2 Re(sum_n C_n Delta phi_1^2 dA_n^(l-1)), l >= 1

with phi_1(z) = (e^z - 1)/z, phi_2(z) = (e^z - 1 - z)/z^2 (`phi12`). Still causal: y_t
depends on u_t and the past. Its states carry the last input in one more slot, (..., H, M + 1).
With per-frame steps each interval uses its own Delta. Derivation, the zero-order hold's
lead and the measured errors: hummuss/ssm/README.md.

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
DISCRETIZATIONS = ("zoh", "foh")
# a scan block discretises each distinct step once (then gathers) when it has at most
# 1/SCAN_DISTINCT_STEPS as many distinct steps as frames x sequences
SCAN_DISTINCT_STEPS = 4
PHI_TERMS = 10  # series terms of phi_2 for |z| < 1: the first left out is below 1/12! = 2e-9


def phi12(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """phi_1(z) = (e^z - 1) / z, phi_2(z) = (e^z - 1 - z) / z^2 and phi_1 - phi_2 =
    (e^z (z - 1) + 1) / z^2, elementwise, complex.

    The closed forms cancel for small |z| (in float32 phi_2 keeps no correct digit below
    |z| = 1e-3, and steps times eigenvalues go down to 5e-4), so |z| < 1 takes the series
    phi_2 = sum_n z^n / (n + 2)! (Horner) and phi_1 = 1 + z phi_2. For |z| >= 1 the
    difference has its own closed form (phi_1 - phi_2 would cancel for large |z|).
    """
    small = z.abs() < 1
    zs = torch.where(small, z, torch.zeros_like(z))  # series argument (large z would overflow)
    zl = torch.where(small, torch.ones_like(z), z)  # closed-form argument (never 0)
    p2 = torch.full_like(zs, 1.0 / math.factorial(PHI_TERMS + 1))
    for n in range(PHI_TERMS - 2, -1, -1):
        p2 = p2 * zs + 1.0 / math.factorial(n + 2)
    p1 = 1 + zs * p2
    ez, z2 = cexp(zl), zl * zl
    return (torch.where(small, p1, (ez - 1) / zl), torch.where(small, p2, (ez - 1 - zl) / z2),
            torch.where(small, p1 - p2, (ez * (zl - 1) + 1) / z2))


def zoh(lam: torch.Tensor, dt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-order hold: dA = exp(dt lam), dB = (exp(dt lam) - 1) / lam (broadcasting)."""
    dA = cexp(dt * lam)
    return dA, (dA - 1) / lam


def foh(lam: torch.Tensor, dt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """First-order hold: (dA, dB, dB_prev) for s_t = dA s_{t-1} + dB_prev u_{t-1} + dB u_t.

    With u linear on the interval [t - dt, t] (z = dt lam):
        dA = e^z,   dB = dt phi_2(z),   dB_prev = dt (phi_1(z) - phi_2(z))   (`phi12`)
    (dB + dB_prev = dt phi_1(z) is the zero-order hold's dB).
    """
    z = dt * lam
    _, p2, p12 = phi12(z)
    return cexp(z), dt * p2, dt * p12


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
        discretization: "zoh" (zero-order hold, the paper's) or "foh" (first-order hold:
            the input linear between frames; its states carry the last input, see `foh`).
    """

    def __init__(self, channels: int, state_size: int = 128, out_channels: int = 1, init: str = "lin",
                 dt_min: float = 1e-3, dt_max: float = 1e-1, shared_modes: bool = True,
                 discretization: str = "zoh"):
        super().__init__()
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        if discretization not in DISCRETIZATIONS:
            raise ValueError(f"unknown discretization {discretization!r}; known: {', '.join(DISCRETIZATIONS)}")
        self.discretization = discretization
        self._hold = zoh if discretization == "zoh" else foh
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

    def discretise(self, dt: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(dA, dB) (zoh) or (dA, dB, dB_prev) (foh) for steps dt broadcastable to (..., H, 1);
        each (..., H, M) complex."""
        return self._hold(self.eigenvalues(), dt)

    def discretise_step(self, dt: float | torch.Tensor, device=None) -> tuple[torch.Tensor, ...]:
        """`discretise` for a step dt: float -> (H, M) each; (B,) tensor -> (B, H, M) each."""
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

    @torch.compiler.disable  # complex arithmetic on a few small tensors: eager, not traced
    def _kernel(self, length: int, dt_scale: float) -> torch.Tensor:
        lam = self.eigenvalues()  # (S, M)
        dt = (torch.exp(self.log_dt) * dt_scale).unsqueeze(-1)  # (H, 1)
        dtlam = dt * lam  # (H, M): Delta lambda
        C = torch.view_as_complex(self.C)  # (k, H, M)
        if self.discretization == "zoh":
            W = C * ((cexp(dtlam) - 1) / lam)  # (k, H, M): C dB
            return conv.vandermonde(W, dtlam, length)  # (k, H, L): 2 Re(sum_n W_n dA_n^l)
        # foh: s_t = sum_l dA^l (dB u_{t-l} + dB_prev u_{t-l-1}), so K_0 = 2 Re(sum_n C dB) and
        # K_l = 2 Re(sum_n C (dB dA + dB_prev) dA^(l-1)) for l >= 1, dB dA + dB_prev = dt phi_1^2
        p1, p2, _ = phi12(dtlam)  # (H, M) each
        K0 = 2 * (C * (dt * p2)).real.sum(-1, keepdim=True)  # (k, H, 1)
        if length == 1:
            return K0
        return torch.cat([K0, conv.vandermonde(C * (dt * p1 * p1), dtlam, length - 1)], -1)  # (k, H, L)

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

        Solves s_t = dA_t s_{t-1} + dB_t u_t (+ dB_prev_t u_{t-1}, foh), the coefficients
        from each frame's own step dt_t, the interval [t - dt_t, t]. `state` (B, H, M),
        (B, H, M + 1) for foh (`initial_state`), continues an earlier sequence. See `scan_frames`.
        """
        B, L, H = u.shape
        if dt.shape != (B, L):
            raise ValueError(f"dt must have shape (batch, frames) = {(B, L)}, got {tuple(dt.shape)}")
        y, _ = self.scan_frames(u.transpose(0, 1), dt.t(), state, block)
        return y.transpose(0, 1)

    def scan_frames(self, u: torch.Tensor, dt: torch.Tensor, state: torch.Tensor | None = None,
                    block: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame-major scan: u (L, N, H), dt (L, N) -> y (L, N, H, k), last state (N, H, M)
        ((N, H, M + 1) for foh).

        In blocks of `block` frames, see `recurrence.scan`.
        """
        lam, step, hold = self.eigenvalues(), torch.exp(self.log_dt), self._hold  # (S, M), (H,)

        def discretise(dt_block):  # (l, N) -> dA, dB[, dB_prev] (l, N, H, M)
            if not dt_block.requires_grad:  # few distinct steps (dropped frames, a fixed rate): each once
                vals, inv = torch.unique(dt_block, return_inverse=True)
                if SCAN_DISTINCT_STEPS * vals.numel() <= dt_block.numel():
                    return tuple(c[inv] for c in hold(lam, (vals.unsqueeze(-1) * step).unsqueeze(-1)))
            return hold(lam, (dt_block.unsqueeze(-1) * step).unsqueeze(-1))

        return recurrence.scan(u, dt, discretise, self.readout_weight(), self.D, state, block)

    # -- recurrent mode: streaming ------------------------------------------------------------
    def initial_state(self, batch_size: int, device=None) -> torch.Tensor:
        """Zero state (B, H, M) complex; (B, H, M + 1) for foh, whose last slot holds the
        previous frame's input (real; zero before the first frame: the signal was at rest)."""
        held = self.discretization == "foh"
        return torch.zeros(batch_size, self.channels, self.modes + held, dtype=torch.complex64, device=device)

    def step(self, u_t: torch.Tensor, state: torch.Tensor, dt: float | torch.Tensor = 1.0,
             discretised: tuple[torch.Tensor, ...] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One frame: u_t (B, H), state (B, H, M) ((B, H, M + 1) for foh) -> y_t (B, H, k), new state.

        s_t = dA s_{t-1} + dB u_t (+ dB_prev u_{t-1}, foh), y_t = 2 Re(C s_t) + D u_t. `dt`
        is this frame's step in units of the learned step (a float or (B,) tensor);
        `discretised` may pass a precomputed `discretise_step` to skip the exponentials.
        """
        if discretised is None:
            discretised = self.discretise_step(dt, u_t.device)
        dA, dB, *prev = discretised  # (H, M) or (B, H, M) each
        u = u_t.unsqueeze(-1)  # (B, H, 1)
        if prev:  # foh: the held slot is u_{t-1}
            s = torch.addcmul(torch.addcmul(dB * u, prev[0], state[..., self.modes:]), dA, state[..., :self.modes])
            state = torch.cat([s, u.to(s.dtype)], -1)  # (B, H, M + 1)
        else:
            state = s = torch.addcmul(dB * u, dA, state)  # (B, H, M)
        y = torch.addcmul(self.readout(s), u, self.D.t())  # (B, H, k)
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

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
- `forward` (FFT convolution with the kernel K_l = 2 Re(C dB dA^l), training and offline);
- `step` (recurrence on an explicit state, one frame at a time: streaming);
- `scan` (a parallel prefix scan that takes one step size per frame: irregular timestamps).

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
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn

INIT_SCHEMES = ("lin", "inv", "legs", "real", "rand")


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


def zoh(lam: torch.Tensor, dt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-order hold: dA = exp(dt lam), dB = (exp(dt lam) - 1) / lam (broadcasting)."""
    dtlam = dt * lam
    dA = torch.exp(dtlam)
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
        self._kernels: dict = {}  # evaluation-time kernel cache, see `kernel`

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
        if torch.is_grad_enabled():
            return self._kernel(length, dt_scale)
        key = (length, float(dt_scale))
        version = tuple(p._version for p in self.parameters()) + (self.C.data_ptr(),)
        hit = self._kernels.get(key)
        if hit is None or hit[0] != version:
            if len(self._kernels) > 16:
                self._kernels.clear()
            hit = self._kernels[key] = (version, self._kernel(length, dt_scale))
        return hit[1]

    def _kernel(self, length: int, dt_scale: float) -> torch.Tensor:
        dt = (torch.exp(self.log_dt) * dt_scale).unsqueeze(-1)  # (H, 1)
        dtlam = dt * self.eigenvalues()  # (H, M)
        dB = (torch.exp(dtlam) - 1) / self.eigenvalues()  # (H, M)
        ell = torch.arange(length, device=dtlam.device, dtype=torch.float32)
        powers = torch.exp(dtlam.unsqueeze(-1) * ell)  # (H, M, L): dA^l
        return 2 * torch.einsum("khm,hml->khl", self._C() * dB, powers).real

    # -- convolution mode -----------------------------------------------------------
    def forward(self, u: torch.Tensor, dt_scale: float = 1.0, dt: torch.Tensor | None = None) -> torch.Tensor:
        """u (B, L, H) -> y (B, L, H, k). With per-frame `dt` (B, L) this runs `scan`."""
        if dt is not None:
            return self.scan(u, dt * dt_scale)
        L = u.shape[1]
        K = self.kernel(L, dt_scale)  # (k, H, L)
        n = 2 * L  # zero padding makes the circular convolution linear (causal)
        Uf = torch.fft.rfft(u.transpose(1, 2).float(), n=n)  # (B, H, n/2+1)
        Kf = torch.fft.rfft(K, n=n)  # (k, H, n/2+1)
        y = torch.fft.irfft(Uf.unsqueeze(1) * Kf, n=n)[..., :L]  # (B, k, H, L)
        y = y + self.D.unsqueeze(-1) * u.transpose(1, 2).unsqueeze(1)
        return y.permute(0, 3, 2, 1).to(u.dtype)  # (B, L, H, k)

    # -- scan mode: one step size per frame -----------------------------------------
    def scan(self, u: torch.Tensor, dt: torch.Tensor, state: torch.Tensor | None = None,
             block: int = 32) -> torch.Tensor:
        """u (B, L, H), dt (B, L) in units of the learned step -> y (B, L, H, k).

        Solves s_t = dA_t s_{t-1} + dB_t u_t, with dA_t, dB_t from each frame's own
        step, in blocks of `block` frames: within a block a Hillis-Steele prefix scan
        (log2(block) sweeps over products of |dA| <= 1, so it is stable), the last state
        carried into the next block. `state` (B, H, M) continues an earlier sequence.
        """
        B, L, H = u.shape
        if dt.shape != (B, L):
            raise ValueError(f"dt must have shape (batch, frames) = {(B, L)}, got {tuple(dt.shape)}")
        lam, C = self.eigenvalues(), self._C()  # (S, M), (k, H, M)
        steps = dt.unsqueeze(-1) * torch.exp(self.log_dt)  # (B, L, H)
        ys = []
        for t0 in range(0, L, block):
            a, b = zoh(lam, steps[:, t0:t0 + block].unsqueeze(-1))  # (B, l, H, M)
            b = b * u[:, t0:t0 + block].unsqueeze(-1)
            if state is not None:  # fold the carried state into the block's first frame
                b = torch.cat([b[:, :1] + a[:, :1] * state.unsqueeze(1), b[:, 1:]], 1)
            s = _linear_scan(a, b)  # (B, l, H, M)
            state = s[:, -1]
            ys.append(2 * torch.einsum("blhm,khm->blhk", s, C).real)
        return torch.cat(ys, 1) + u.unsqueeze(-1) * self.D.T

    # -- recurrent mode: streaming --------------------------------------------------
    def initial_state(self, batch_size: int, device=None) -> torch.Tensor:
        """Zero state (B, H, M) complex."""
        return torch.zeros(batch_size, self.channels, self.modes, dtype=torch.complex64, device=device)

    def step(self, u_t: torch.Tensor, state: torch.Tensor, dt: float | torch.Tensor = 1.0,
             discretised: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One frame: u_t (B, H), state (B, H, M) -> y_t (B, H, k), new state.

        `dt` is this frame's step in units of the learned step (a float or (B,) tensor).
        `discretised` may pass a precomputed (dA, dB) to skip the exponentials.
        """
        if discretised is None:
            discretised = self.discretise_step(dt, u_t.device)
        dA, dB = discretised
        state = dA * state + dB * u_t.unsqueeze(-1)  # (B, H, M)
        y = 2 * torch.einsum("bhm,khm->bhk", state, self._C()).real + u_t.unsqueeze(-1) * self.D.T
        return y, state

    def discretise_step(self, dt: float | torch.Tensor, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(dA, dB) for a step dt: float -> (H, M); (B,) tensor -> (B, H, M)."""
        step = torch.exp(self.log_dt)  # (H,)
        if isinstance(dt, torch.Tensor) and dt.dim() > 0:
            dts = dt.to(step).reshape(-1, 1) * step  # (B, H)
        else:
            dts = step * float(dt)  # (H,)
        return self.discretise(dts.unsqueeze(-1))


def _linear_scan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """All prefixes of s_t = a_t s_{t-1} + b_t (s_{-1} = 0) along dim 1, in log2(L) sweeps."""
    L = a.shape[1]
    d = 1
    while d < L:
        b = torch.cat([b[:, :d], b[:, d:] + a[:, d:] * b[:, :-d]], dim=1)
        a = torch.cat([a[:, :d], a[:, d:] * a[:, :-d]], dim=1)
        d *= 2
    return b

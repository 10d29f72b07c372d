"""Recurrent and scan modes of the DSSM: s_t = dA_t s_{t-1} + dB_t u_t, y_t = 2 Re(C s_t) + D u_t.

- `readout`: 2 Re(C s) for many states at once, a batched matmul with the real weight
  R (H, k, 2M) of `readout_weight`.
- `scan`: a recurrence with one step size per frame (irregular timestamps), in blocks of
  frames: each block's dA_t, dB_t u_t in one vectorised pass, then the recurrence (frame by
  frame on the CPU, on CUDA a Hillis-Steele prefix scan), then the block's read-out at once.
- `advance_state_`: one streaming step in place on complex states (N, H, M).
- `advance_state_planar`: the same step on planar real states (2, H, N, M) = (Re, Im),
  channel-major (`planar_state`, `complex_state`), one pass over the state under
  torch.compile; the read-out weights come as planes from `readout_planes`.

First-order hold (hummuss.ssm.dssm.foh) adds dB_prev_t u_{t-1} to each update; its states
have one more slot, M + 1, whose real part holds the last input u_{t-1}.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def readout_weight(C: torch.Tensor) -> torch.Tensor:
    """C (k, H, M, 2) as real pairs -> R (H, k, 2M) with 2 Re(C_c s) = <view_as_real(s), R[:, c]>."""
    k, H, M, _ = C.shape  # 2 Re(C s) = 2 (C_re s_re - C_im s_im)
    R = 2 * torch.stack([C[..., 0], -C[..., 1]], -1)  # (k, H, M, 2)
    return R.transpose(0, 1).reshape(H, k, 2 * M)


def readout_planes(C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """C (k, H, M, 2) -> (2 Re C, -2 Im C), each (H, k, M), for `advance_state_planar`."""
    return (2 * C[..., 0]).transpose(0, 1).contiguous(), (-2 * C[..., 1]).transpose(0, 1).contiguous()


def readout(s: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """States s (..., H, M) complex, R (H, k, 2M) -> 2 Re(C s) (..., H, k), a batched matmul.

    (Multiply-and-sum is faster on a state that sits in cache, but writes a k-fold temporary;
    inside a streaming step, whose states do not fit in cache, the matmul is 3x faster.)
    """
    sr = torch.view_as_real(s).flatten(-2)  # (..., H, 2M): (re, im) interleaved
    return torch.einsum("...hj,hkj->...hk", sr, R)


def scan(u: torch.Tensor, dt: torch.Tensor, discretise: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
         R: torch.Tensor, D: torch.Tensor, state: torch.Tensor | None = None,
         block: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame-major scan: u (L, N, H), dt (L, N) -> y (L, N, H, k), last state (N, H, M).

    `discretise` maps steps (l, N) to dA, dB (l, N, H, M), or dA, dB, dB_prev (first-order
    hold: the state then has a slot M + 1 holding the last input, zero when not given); R
    (H, k, 2M) from `readout_weight`; D (k, H); `state` continues an earlier sequence. In
    blocks of `block` frames; on CUDA the recurrence is a Hillis-Steele prefix scan,
    log2(block) sweeps over products of |dA| <= 1, so it is stable.
    """
    M, held = R.shape[-1] // 2, None
    if state is not None and state.shape[-1] > M:  # foh: the modes, and the last input
        state, held = state[..., :M], state[..., M].real  # (N, H, M), (N, H)
    ys = []
    for t0 in range(0, u.shape[0], block):
        coeffs = discretise(dt[t0:t0 + block])  # (l, N, H, M) each
        ub = u[t0:t0 + block]  # (l, N, H)
        a, b = coeffs[0], coeffs[1] * ub.unsqueeze(-1)
        if len(coeffs) > 2:  # foh: + dB_prev_t u_{t-1}
            first = torch.zeros_like(ub[0]) if held is None else held
            b = torch.addcmul(b, coeffs[2], torch.cat([first.unsqueeze(0), ub[:-1]], 0).unsqueeze(-1))
            held = ub[-1]
        if state is not None:  # fold the carried state into the block's first frame
            b = torch.cat([torch.addcmul(b[:1], a[:1], state.unsqueeze(0)), b[1:]], 0)
        s = _linear_scan(a, b) if a.is_cuda else _sequential_scan(a, b)  # (l, N, H, M)
        state = s[-1]
        ys.append(readout(s, R))
    y = torch.cat(ys, 0) if len(ys) > 1 else ys[0]
    if held is not None:
        state = torch.cat([state, held.unsqueeze(-1).to(state.dtype)], -1)  # (N, H, M + 1)
    return torch.addcmul(y, u.unsqueeze(-1), D.t()), state


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


# -- streaming: one frame at a time --------------------------------------------------------
def advance_state_(state: torch.Tensor, dA: torch.Tensor, dB: torch.Tensor, u: torch.Tensor,
                   R: torch.Tensor, D: torch.Tensor, dB_prev: torch.Tensor | None = None) -> torch.Tensor:
    """One recurrence step in place on a complex state (N, H, M): s = dA s + dB u.

    dA, dB (H, M) or (N, H, M); u (N, H); R (H, k, 2M) from `readout_weight`; D (k, H).
    With `dB_prev` (first-order hold) the state is (N, H, M + 1), its last slot the last
    input u_prev: s = dA s + dB u + dB_prev u_prev, then the slot takes u.
    Returns y = 2 Re(C s) + D u (N, H, k).
    """
    uu = u.unsqueeze(-1)  # (N, H, 1)
    if dB_prev is None:
        s = state.mul_(dA).addcmul_(dB, uu)
    else:
        M = dA.shape[-1]
        s = state[..., :M].mul_(dA).addcmul_(dB, uu).addcmul_(dB_prev, state[..., M:])
        state[..., M:] = uu
    return readout(s, R).addcmul_(uu, D.t())


def planar_state(z: torch.Tensor) -> torch.Tensor:
    """Complex (N, H, M) -> planar real (2, H, N, M) = (Re, Im), channel-major; complex
    (H, M) -> (2, H, M). The layout of `advance_state_planar`."""
    p = torch.stack([z.real, z.imag], 0)
    return p.transpose(1, 2).contiguous() if z.dim() == 3 else p


def complex_state(p: torch.Tensor) -> torch.Tensor:
    """The inverse of `planar_state`: (2, H, N, M) -> complex (N, H, M)."""
    return torch.complex(p[0], p[1]).transpose(0, 1).contiguous()


def advance_state_planar(s: torch.Tensor, a: torch.Tensor, b: torch.Tensor, u: torch.Tensor,
                         Rr: torch.Tensor, Ri: torch.Tensor, D: torch.Tensor,
                         b_prev: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`advance_state_` on planar real states, written for torch.compile: one pass over the state.

    s (2, H, N, M) = (Re, Im) of the state, channel-major (`planar_state`); a, b = dA, dB
    likewise, (2, H, M) or per stream (2, H, N, M); u (N, H); Rr, Ri (H, k, M) = 2 Re C,
    -2 Im C (`readout_planes`); D (k, H). Returns the new state (2, H, N, M) (a new tensor:
    no copy-back of an in-place update) and y = 2 Re(C s) + D u (N, H, k). With `b_prev`
    (first-order hold, shaped as b) the states are (2, H, N, M + 1), Re of the last slot
    the last input: its term b_prev u_prev joins the update and the slot takes u.

    Channel-major, the compiled loop runs over channels outside and streams inside, so a
    channel's dA, dB and read-out (a few KB) stay in L1 while its N states stream past; with
    streams outside, every stream re-read all of them (about 1.5 MB per block at H = 768)
    from L3, which made the update take 1.8x as long as a copy of the state.
    """
    if a.dim() == 3:
        a, b = a.unsqueeze(2), b.unsqueeze(2)  # (2, H, 1, M): one step for every stream
        b_prev = None if b_prev is None else b_prev.unsqueeze(2)
    uu = u.t().unsqueeze(-1)  # (H, N, 1)
    if b_prev is not None:  # foh: the modes, and (H, N, 1) the last input
        M = a.shape[-1]
        held, s = s[0, ..., M:], s[..., :M]
    nr = a[0] * s[0] - a[1] * s[1] + b[0] * uu  # (H, N, M)
    ni = a[0] * s[1] + a[1] * s[0] + b[1] * uu
    if b_prev is not None:
        nr, ni = nr + b_prev[0] * held, ni + b_prev[1] * held
    ys = [((nr * Rr[:, c].unsqueeze(1) + ni * Ri[:, c].unsqueeze(1)).sum(-1) + uu[..., 0] * D[c].unsqueeze(-1)).t()
          for c in range(Rr.shape[1])]  # k x (N, H)
    # y is (N, H, k) over storage (k, N, H): what reads it next runs along the channels
    if b_prev is not None:
        nr, ni = torch.cat([nr, uu], -1), torch.cat([ni, torch.zeros_like(uu)], -1)  # (H, N, M + 1)
    return torch.stack([nr, ni], 0), torch.stack(ys, 0).permute(1, 2, 0)

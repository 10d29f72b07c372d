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

    `discretise` maps steps (l, N) to dA, dB (l, N, H, M); R (H, k, 2M) from
    `readout_weight`; D (k, H); `state` (N, H, M) continues an earlier sequence. In blocks
    of `block` frames; on CUDA the recurrence is a Hillis-Steele prefix scan, log2(block)
    sweeps over products of |dA| <= 1, so it is stable.
    """
    ys = []
    for t0 in range(0, u.shape[0], block):
        a, b = discretise(dt[t0:t0 + block])  # (l, N, H, M)
        b = b * u[t0:t0 + block].unsqueeze(-1)
        if state is not None:  # fold the carried state into the block's first frame
            b = torch.cat([torch.addcmul(b[:1], a[:1], state.unsqueeze(0)), b[1:]], 0)
        s = _linear_scan(a, b) if a.is_cuda else _sequential_scan(a, b)  # (l, N, H, M)
        state = s[-1]
        ys.append(readout(s, R))
    y = torch.cat(ys, 0) if len(ys) > 1 else ys[0]
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
                   R: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """One recurrence step in place on a complex state (N, H, M): s = dA s + dB u.

    dA, dB (H, M) or (N, H, M); u (N, H); R (H, k, 2M) from `readout_weight`; D (k, H).
    Returns y = 2 Re(C s) + D u (N, H, k).
    """
    state.mul_(dA).addcmul_(dB, u.unsqueeze(-1))
    return readout(state, R).addcmul_(u.unsqueeze(-1), D.t())


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
    -2 Im C (`readout_planes`); D (k, H). Returns the new state (2, H, N, M) (a new tensor:
    no copy-back of an in-place update) and y = 2 Re(C s) + D u (N, H, k).

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

"""The staggered streaming update: each frame advances one T-th of a temporal block's
channels by T frames, in the CPU kernel hummuss/csrc/state_stagger.cpp.

The per-frame recurrence s_t = a s_{t-1} + b u_t, y_t = 2 Re(C s_t) + D u_t reads and
rewrites every state every frame; at batch 1 that traffic bounds the streaming step
(paper-causal: 10 blocks of 6.7 MB). Unrolled over T frames it is

    s_t     = a^T s_{t-T} + sum_{l<T} a^l b u_{t-l}
    y_{t+j} = 2 Re(C a^j s_t) + sum_{l<j} 2 Re(C a^l b) u_{t+j-l} + D u_{t+j}     (0 <= j < T)

so a channel's state need only be advanced every T frames, if the "free responses"
f_j = 2 Re(C a^j s_t) are kept for the frames in between, with the last T inputs. The
channels are split into T groups of H / T; group g advances at the frames t with
t mod T = g, so every frame does the same work: a T-th of the state read and rewritten, a
T-th of the channels' coefficients read, and every channel read out from its group's f_j
and a convolution of at most T - 1 inputs. The outputs equal the per-frame recurrence's up to
float rounding (`tests/test_stagger.py` checks them against the per-frame recurrence in
complex float64; `recurrence.advance_state_planar` is that recurrence in PyTorch operations);
`synchronise` brings every channel's state to the last frame.

`coefficients` computes what the kernel reads for one step size, in float64 from the
discretised a, b (planar, (2, H, M)) and the read-out planes (Rr, Ri) = (2 Re C, -2 Im C):
per channel [E = a^T, P_l = a^l b, G_jc = 2 C_c a^j], (H, 1 + T + T k, 2, M), and the
convolution's taps K_l = 2 Re(C a^l b), (T, k, H). They hold for a constant step: a stream
whose step changes synchronises its states and goes on with the per-frame update.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

FRAMES = 4  # T: each channel advanced every FRAMES frames (the kernel has 2, 4 and 8)
READOUTS = (1, 2)  # the numbers of read-outs k the kernel has


class StaggeredState(NamedTuple):
    """A temporal block's staggered streaming state; all updated in place by `advance_mix`."""

    s: torch.Tensor  # (2, H, N, M) planar (Re, Im): each group's state at its last advance
    ring: torch.Tensor  # (T, N, H) the last T inputs, u_t in slot t mod T
    free: torch.Tensor  # (T, k, N, H) the free responses f_j of each channel's last advance
    clock: torch.Tensor  # (1,) int64: the next frame's t mod T


def supported(readouts: int) -> bool:
    """Whether the kernel has a staggered update for `readouts` read-outs (k)."""
    return readouts in READOUTS


def initial_state(planar: torch.Tensor, readouts: int, frames: int = FRAMES) -> StaggeredState:
    """The zero staggered state around a planar state (2, H, N, M) (zeroed, used in place)."""
    _, H, N, _ = planar.shape
    zeros = dict(dtype=planar.dtype, device=planar.device)
    return StaggeredState(planar.zero_(), torch.zeros(frames, N, H, **zeros),
                          torch.zeros(frames, readouts, N, H, **zeros),
                          torch.zeros(1, dtype=torch.long, device=planar.device))


def coefficients(a: torch.Tensor, b: torch.Tensor, Rr: torch.Tensor, Ri: torch.Tensor,
                 frames: int = FRAMES) -> tuple[torch.Tensor, torch.Tensor]:
    """a, b (2, H, M) planar (dA, dB of one step size); Rr, Ri (H, k, M) -> coef
    (H, 1 + T + T k, 2, M) = [a^T, a^l b (l < T), 2 C_c a^j (j < T, c < k) with its imaginary
    row negated], and K (T, k, H) = 2 Re(C a^l b). Computed in float64, returned in a's dtype."""
    T = frames
    a64, b64 = (torch.complex(t[0].double(), t[1].double()) for t in (a, b))  # (H, M)
    C2 = torch.complex(Rr.double(), -Ri.double())  # (H, k, M): 2 C
    H, k, M = C2.shape
    powers = [torch.ones_like(a64)]
    for _ in range(T):
        powers.append(powers[-1] * a64)  # a^0 .. a^T
    P = torch.stack([powers[l] * b64 for l in range(T)], 1)  # (H, T, M)
    G = torch.stack([C2 * powers[j].unsqueeze(1) for j in range(T)], 1).reshape(H, T * k, M)  # (H, T k, M)
    rows = torch.cat([powers[T].unsqueeze(1), P, G], 1)  # (H, 1 + T + T k, M) complex
    coef = torch.stack([rows.real, rows.imag], 2)  # (H, rows, 2, M)
    coef[:, 1 + T:, 1] *= -1  # the read-out's rows: sum Gr Re s + Gi Im s = Re(G s)
    K = (C2.unsqueeze(1) * P.unsqueeze(2)).real.sum(-1).permute(1, 2, 0)  # (T, k, H)
    return coef.to(a.dtype).contiguous(), K.to(a.dtype).contiguous()


def advance_mix(state: StaggeredState, coef: torch.Tensor, K: torch.Tensor, u: torch.Tensor, D: torch.Tensor,
                w: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """One frame: u (N, H) -> x (N, H), x_nh = bias_h + sum_c w_ch GELU(y_nhc) with
    y = 2 Re(C s_t) + D u_t of the per-frame recurrence; the state (all four tensors) is
    updated in place. D, w (k, H); bias (H,). Needs the CPU kernels (`hummuss.cpu_kernels`)."""
    return torch.ops.hummuss_cpu.state_stagger_mix_(*state, coef, u, K, D, w, bias)


def synchronise(state: StaggeredState, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The planar state (2, H, N, M) of the per-frame recurrence after the last frame, in place
    in state.s: each group's inputs since its last advance, one frame at a time. a, b (2, H, M)
    planar, the step size the staggered frames ran with."""
    torch.ops.hummuss_cpu.state_stagger_sync_(state.s, state.ring, state.clock, a.contiguous(), b.contiguous())
    return state.s

"""GDSSM: the gated diagonal state-space block of HumMUSS.

Over a sequence X (B, L, D), where L is the 17 joints of one frame (spatial block) or
the frames of one joint's trajectory (temporal block):

    Z    = LayerNorm(X)
    x_id = GELU(Z W_id + b_id)                      (B, L, mD)  identity path
    u    = GELU(Z W_in + b_in)                      (B, L, mD)  SSM input, shared by both directions
    x_f  = mix_f(GELU(DSSM_f(u)))                   (B, L, mD)  forward path
    x_b  = flip(mix_b(GELU(DSSM_b(flip(u)))))       (B, L, mD)  backward path (bidirectional only)
    Y    = aggregate(x_f, x_b, x_id) W_o + b_o      (B, L, D)
    out  = X + Y

Our reading of the paper's hyper-parameters (the supplement only says they were tuned to
land both models at 16M parameters):
- `m` (expand) is the width expansion of the gated paths: x_id, u, x_f and x_b live in
  R^{mD}, and the DSSMs run on these mD channels;
- `k` (ssm_channels) is the number of SSM read-outs per channel (S4's `channels`): each
  DSSM gives (B, L, mD, k); `mix` combines them per channel after a GELU,
  sum_c w_{c,h} GELU(y_{c,h}) + b_h (a plain sum of k linear read-outs would be one
  read-out);
- the eigenvalues of each DSSM are shared across its channels (S4's n_ssm = 1); steps,
  C and D are per channel.

Parameters of one block (D model width, H = mD, M = N/2 modes, P = 1 or 2 directions):
    LayerNorm 2D; W_id and W_in 2 (D H + H); W_o H D + D;
    per direction: log_dt H, eigenvalues 2M, C 2 k H M, D k H, mix k H + H.
The paper's presets (D = 256, N = 128):
    bidirectional, m = 2.5 (H = 640): spatial (k=1) 662,784; temporal (k=2) 829,184
    causal, m = 3 (H = 768): spatial (k=1, bidirectional) 795,136; temporal (k=2,
    forward only) 793,472
Aggregation `gate` has no parameters; `learned` adds n (n mD + 1).

Spatial blocks ignore dt (the joint axis has no physical step). Temporal blocks take
`dt_scale` and per-frame `dt`. `discretization` ("zoh" or "foh") is that of both DSSMs
(hummuss/ssm/dssm.py); with "foh" a streaming state carries the last input as well.

The block's surface: `forward` (whole sequences), and for forward-only (causal) blocks
`initial_state` and `step` (one frame with its state). Streaming passes `stream_constants`
(projections prepacked for `packed_linear`, the joints' convolution taps, read-out and mix
weights, computed once per stream) to both: a spatial block runs `forward` over one frame's
joints, a temporal block `step`s its state.

Computation (`forward`): tokens X (P, L, Q, D) with the sequence on dim 1 (spatial blocks
of HumMUSS: P = frames, Q = 1; temporal: P = 1, Q = joints). The paths are computed
channel-major, x_id and u as W Z^T (H, P L Q), so both directions' convolutions are one
batched matmul or FFT (hummuss.ssm.apply_conv) with no transposes, and the output
projection reads the gated product back through a transposed matmul. The backward
direction is the anti-causal convolution itself (no flips). Without autograd, long inputs
are processed in chunks of about CHUNK_TOKENS tokens (along P or Q) to bound memory, and
with the `gate` or `mean` aggregation each chunk goes channel group by channel group
(`_grouped`: GELU, convolutions, mix and aggregation of a few MiB at a time, in cache).
On the CPU the mix and the gate run as one compiled kernel (`hummuss.fusion.mix_gate` in
training, `mix_gate_into` in `_grouped`; PyTorch operations where it cannot be built), and a
temporal block's FFT convolution of a power-of-two size (F = 27, 243) goes with them into one
more (`hummuss.conv_mix_gate`: `FFTMixGate` in training, `fft_mix_gate_into` in `_grouped`).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from hummuss import block_kernels, cpu_kernels
from hummuss.channel_linear import channel_major, channel_major_gelu, token_major
from hummuss.conv_mix_gate import conv_mix_gate, conv_mix_gate_applies, fft_mix_gate_into
from hummuss.fusion import Aggregate, mix_gate, mix_gate_into
from hummuss.packed_linear import pack_linear
from hummuss.ssm import (
    DSSM,
    ParamCache,
    advance_state_,
    advance_state_planar,
    apply_conv,
    apply_taps,
    conv_method,
    conv_operator,
    conv_taps,
    operator_bytes,
    planar_state,
    stagger,
    state_kernel,
)

# evaluation works on chunks of about this many tokens, which bounds its memory (the chunk's
# (2H, N) projections: 42 MB at H = 640). 2,048 cut an F = 243 pass into 8 + 8 + 1 joints'
# sequences and 120 + 120 + 3 frames; on a 2-core EPYC, alternated in one process, 8,192 took
# a pass at F = 243 from 851-881 to 786-829 ms (medians of 7 passes, three rounds) and at
# F = 2,187 from 9.8-10.2 to 8.3-8.7 s (single passes, two rounds)
CHUNK_TOKENS = 8192
GROUPED_AGGREGATIONS = ("gate", "mean")  # per channel: evaluation may go channel group by group


class ChannelMix(nn.Module):
    """(..., H, k) -> (..., H): per-channel weighted sum of GELU'd read-outs."""

    def __init__(self, channels: int, k: int):
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels, k), 1.0 / k))  # (H, k)
        self.bias = nn.Parameter(torch.zeros(channels))  # (H,)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return (F.gelu(y) * self.weight).sum(-1) + self.bias


class GDSSM(nn.Module):
    """Gated diagonal SSM block: (B, L, D) -> (B, L, D). See the module docstring."""

    def __init__(
        self,
        dim: int,
        expand: float = 2.5,
        state_size: int = 128,
        ssm_channels: int = 1,
        bidirectional: bool = True,
        aggregation: str = "gate",
        init: str = "lin",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        shared_modes: bool = True,
        temporal: bool = False,
        norm_eps: float = 1e-6,
        discretization: str = "zoh",
    ):
        super().__init__()
        width = int(round(expand * dim))
        if width < 1:
            raise ValueError(f"expand * dim must be >= 1, got {expand} * {dim}")
        self.dim, self.width, self.bidirectional, self.temporal = dim, width, bidirectional, temporal
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.proj_id = nn.Linear(dim, width)
        self.proj_in = nn.Linear(dim, width)
        ssm = dict(state_size=state_size, out_channels=ssm_channels, init=init,
                   dt_min=dt_min, dt_max=dt_max, shared_modes=shared_modes, discretization=discretization)
        self.ssm_f = DSSM(width, **ssm)
        self.mix_f = ChannelMix(width, ssm_channels)
        if bidirectional:
            self.ssm_b = DSSM(width, **ssm)
            self.mix_b = ChannelMix(width, ssm_channels)
        self.aggregate = Aggregate(aggregation, 3 if bidirectional else 2, width)
        self.proj_out = nn.Linear(width, dim)
        self.cache = ParamCache()  # evaluation-time convolution operators and mix weights

    # -- helpers ------------------------------------------------------------------------
    def _directions(self) -> list[tuple[DSSM, ChannelMix]]:
        if self.bidirectional:
            return [(self.ssm_f, self.mix_f), (self.ssm_b, self.mix_b)]
        return [(self.ssm_f, self.mix_f)]

    def _kernels(self, length: int, dt_scale: float):
        """Both directions' kernels K (R, H, L) with R = directions x k, skips D (R, H), and
        which of the R are anti-causal."""
        dirs = self._directions()
        K = torch.cat([s._kernel(length, dt_scale) for s, _ in dirs], 0)
        D = torch.cat([s.D for s, _ in dirs], 0)
        return K, D, [i == 1 for i, (s, _) in enumerate(dirs) for _ in range(s.out_channels)]

    def _operator(self, length: int, layout: str, dt_scale: float, method: str = "auto"):
        """Both directions' convolutions as one operator with R = directions x k kernels."""
        dirs = self._directions()

        def compute():
            return conv_operator(*self._kernels(length, dt_scale), layout, method)

        params = [p for s, _ in dirs for p in s.parameters()]
        R = sum(s.out_channels for s, _ in dirs)
        return self.cache.get(("op", length, layout, float(dt_scale), method), params, compute,
                              nbytes=operator_bytes(self.width, R, length, method))

    def _mix_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(H, directions, k) read-out weights and (H, directions) biases of the mixes."""
        mixes = [m for _, m in self._directions()]
        params = [p for m in mixes for p in m.parameters()]
        return self.cache.get("mix", params, lambda: (
            torch.stack([m.weight for m in mixes], 1), torch.stack([m.bias for m in mixes], 1)))

    def _mix(self, y: torch.Tensor, mix=None) -> torch.Tensor:
        """y (H, P, R, L, Q) -> paths (H, P, directions, L, Q): sum_c w GELU(y_c) + b."""
        H, P, R, L, Q = y.shape
        w, b = self._mix_weights() if mix is None else mix
        n, k = w.shape[1], w.shape[2]
        g = F.gelu(y)
        if k == 1:  # views only: no index ops whose backward would fill zeros
            return torch.addcmul(b.view(H, 1, n, 1, 1), g, w.view(H, 1, n, 1, 1))
        gs = g.view(H, P, n, k, L, Q).unbind(3)  # backward: one stack
        out = torch.addcmul(b.view(H, 1, n, 1, 1), gs[0], w[:, :, 0].view(H, 1, n, 1, 1))
        for c in range(1, k):
            out = out.addcmul_(gs[c], w[:, :, c].view(H, 1, n, 1, 1))
        return out

    def _input_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """[W_id; W_in] (2H, D) and [b_id; b_in] (2H,), cached without autograd."""
        params = [self.proj_id.weight, self.proj_id.bias, self.proj_in.weight, self.proj_in.bias]
        return self.cache.get("proj", params, lambda: (
            torch.cat([self.proj_id.weight, self.proj_in.weight], 0),
            torch.cat([self.proj_id.bias, self.proj_in.bias], 0)))

    def _project(self, z: torch.Tensor, lin: nn.Linear) -> torch.Tensor:
        """GELU(W z^T + b): tokens z (N, D) -> channel-major (H, N)."""
        return channel_major_gelu(z, lin.weight, lin.bias)

    def _scan(self, u: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """Per-frame steps: u (H, P, L, Q), steps (P, L, Q) -> y (H, P, R, L, Q)."""
        H, P, L, Q = u.shape
        tok = u.permute(2, 1, 3, 0).reshape(L, P * Q, H)  # frame-major
        st = steps.permute(1, 0, 2).reshape(L, P * Q)
        ys = [self.ssm_f.scan_frames(tok, st)[0]]  # (L, N, H, k)
        if self.bidirectional:
            # the backward pass over the reversed sequence steps by the gap to the next frame
            st_b = torch.cat([st[1:], st[-1:]], 0).flip(0)
            ys.append(self.ssm_b.scan_frames(tok.flip(0), st_b)[0].flip(0))
        y = torch.cat(ys, -1) if len(ys) > 1 else ys[0]  # (L, N, H, R)
        return y.view(L, P, Q, H, -1).permute(3, 1, 4, 0, 2)

    # -- forward ------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, dt_scale: float = 1.0, dt: torch.Tensor | None = None,
                consts: dict | None = None) -> torch.Tensor:
        """Sequences x (B, L, D) -> (B, L, D), or tokens x (P, L, Q, D) with the sequences
        along dim 1 -> (P, L, Q, D).

        Temporal blocks take dt_scale and per-frame steps dt, (B, L) or (P, L, Q); spatial
        blocks ignore both. `consts` from `stream_constants` (no autograd) runs all tokens in
        one pass with the prepacked projections and precomputed operator: the streaming
        step's spatial blocks over one frame's joints.
        """
        if consts is not None and consts.get("joint_block") and x.dim() == 4 and x.shape[2] == 1:
            return block_kernels.joint_step(self, x, consts)  # the whole block in one call (`_run`: op by op)
        if x.dim() == 3:
            dts = None if dt is None else dt.unsqueeze(-1)
            return self.forward(x.unsqueeze(2), dt_scale, dts, consts).squeeze(2)
        if not self.temporal:
            dt_scale, dt = 1.0, None
        P, L, Q, D = x.shape
        if P > 1 and Q > 1:  # one batch axis: move Q next to P
            xs = x.permute(0, 2, 1, 3).reshape(P * Q, L, 1, D)
            dts = None if dt is None else dt.permute(0, 2, 1).reshape(P * Q, L, 1)
            return self.forward(xs, dt_scale, dts, consts).view(P, Q, L, D).permute(0, 2, 1, 3)
        if P == 1 and Q > 1 and dt is None and consts is None and conv_method(L, Q) == "fft":
            # the FFT along a contiguous axis: sequences (Q, L, 1) (a copy of the D-wide tokens
            # each way) rather than (1, L, Q), whose transforms stride over the Q columns
            out = self.forward(x.permute(2, 1, 0, 3), dt_scale, None, None)  # (Q, L, 1, D)
            return out.permute(2, 1, 0, 3).contiguous()
        if consts is not None or torch.is_grad_enabled() or P * L * Q <= CHUNK_TOKENS:
            return self._run(x, dt_scale, dt, consts=consts)
        along = 0 if Q == 1 else 2
        size = max(1, CHUNK_TOKENS // L)
        op = None if dt is not None else self._operator(
            L, "cols" if Q == 1 else "rows", dt_scale, conv_method(L, min(size, x.shape[along])))
        out = torch.empty_like(x)
        for i in range(0, x.shape[along], size):
            part = slice(i, i + size)
            idx = (part,) if along == 0 else (slice(None), slice(None), part)
            out[idx] = self._run(x[idx], dt_scale, None if dt is None else dt[idx], op=op)
        return out

    def _run(self, x: torch.Tensor, dt_scale: float, dt: torch.Tensor | None, op=None,
             consts: dict | None = None) -> torch.Tensor:
        """`forward` on one chunk of tokens (P, L, Q, D). `op`: a precomputed `_operator`.
        `consts` (`stream_constants`): `op` and `mix` (precomputed `_operator`,
        `_mix_weights`), `proj` and `out` (the packed input and output projections), `taps`
        (spatial blocks); no cache lookups, as the streaming step may be compiled."""
        mix = proj = out = taps = None
        if consts is not None:
            op, mix, proj, out, taps = consts.get("op"), consts["mix"], consts["proj"], consts["out"], consts.get("taps")
        P, L, Q, D = x.shape
        H = self.width
        flat = x.reshape(-1, D)  # (N, D) tokens in (P, L, Q) order
        z = self.norm(flat)
        if taps is not None and Q == 1 and consts["joint_kernel"]:
            # streaming, spatial: convolution, mix and gate token-major in one kernel call (eager or compiled)
            y = torch.ops.hummuss_cpu.joint_conv_mix_gate(proj(z, gelu=True), *taps, *consts["mix_rows"])
            return (out(y) + flat).view(P, L, Q, D)
        if not torch.compiler.is_compiling():
            taps = None  # eagerly the prepared operator is faster than `apply_taps`
        if dt is None and op is None:
            op = self._operator(L, "cols" if Q == 1 else "rows", dt_scale, conv_method(L, P if Q == 1 else Q))
        y = None
        if proj is not None:  # token-major (N, 2H) from the packed [W_id; W_in]
            both = proj(z, gelu=True).t().contiguous()  # channel-major, as the convolution wants
            x_id, u = both[:H].reshape(H, P, L, Q), both[H:].reshape(H, P, L, Q)
        elif torch.is_grad_enabled():  # separately: fused, a cpu-preset training step measured slower
            x_id = self._project(z, self.proj_id).view(H, P, L, Q)
            u = self._project(z, self.proj_in).view(H, P, L, Q)
        else:  # one matmul for both paths
            w, b = self._input_weights()
            pre = channel_major(z, w, b)  # (2H, N), before GELU
            if dt is None and self.aggregate.kind in GROUPED_AGGREGATIONS:
                y = self._grouped(pre, (P, L, Q), op)  # (H, N): GELUs, convolutions, mix, aggregation
            else:
                both = F.gelu(pre)
                x_id, u = both[:H].view(H, P, L, Q), both[H:].view(H, P, L, Q)
        if y is None and dt is None and self.aggregate.kind == "gate" and conv_mix_gate_applies(op, u, x_id):
            w, b = self._mix_weights() if mix is None else mix  # training: convolution, mix and gate by channel group
            y = conv_mix_gate(op, u, w, b, x_id).reshape(H, -1)
        if y is None:
            if dt is not None:
                y = self._scan(u, dt * dt_scale)
            else:  # compiled streaming: the joints' convolution from its taps, not the operator
                y = apply_conv(op, u) if taps is None else apply_taps(taps, u)
            if self.aggregate.kind == "gate" and torch.is_grad_enabled() and y.dtype == x_id.dtype:
                w, b = self._mix_weights() if mix is None else mix  # training: mix and gate in one step
                y = mix_gate(y, w, b, x_id).reshape(H, -1)
            else:
                paths = self._mix(y, mix)  # (H, P, directions, L, Q)
                xs = [paths[:, :, i] for i in range(paths.shape[2])] + [x_id]
                y = self.aggregate(*xs, dim=0).reshape(H, -1)  # (H, N)
        if out is not None:  # token-major for the packed projection (compiled: written so by the fused loop)
            return (out(y.t().contiguous()) + flat).view(P, L, Q, D)
        res = token_major(y, self.proj_out.weight, self.proj_out.bias)  # (N, D)
        return res.add_(flat).view(P, L, Q, D)

    def _grouped(self, pre: torch.Tensor, shape: tuple[int, int, int], op) -> torch.Tensor:
        """Evaluation with an elementwise aggregation: the input projections before GELU,
        pre (2H, N) with N = P L Q, and the block's convolution `op` -> the aggregated paths (H, N).

        The same numbers as `_run`'s general route (GELU, both directions' convolutions,
        `_mix`, `aggregate`), computed one channel group at a time (`ConvOperator.
        channel_group`, a few MiB), so that each group's convolution outputs, R times as
        wide as u, stay in cache between the operations instead of going to memory and
        back once per operation. On a GPU all channels are one group.
        """
        H, (P, L, Q) = self.width, shape
        w, b = self._mix_weights()
        out = pre.new_empty(H, P * L * Q)
        if Q == 1 and self.aggregate.kind == "gate" and fft_mix_gate_into(op, pre.view(2 * H, P, L), w, b,
                                                                          out.view(H, P, L)):
            return out  # the FFT convolution, GELUs, mix and gate of V::size() channels at a time, in one call
        group = op.channel_group(P, Q) if pre.device.type == "cpu" else H
        for h in range(0, H, group):
            s = slice(h, min(h + group, H))
            u = F.gelu(pre[H + s.start:H + s.stop]).view(-1, P, L, Q)
            y = apply_conv(op.channels(s), u)  # (g, P, R, L, Q)
            if self.aggregate.kind == "gate" and mix_gate_into(y, w[s], b[s], pre[s].view(-1, P, L, Q),
                                                               out[s].view(-1, P, L, Q)):
                continue  # GELUs, mix and gate in one pass of the compiled kernel
            paths = self._mix(y, (w[s], b[s]))  # (g, P, directions, L, Q)
            xs = [paths[:, :, i] for i in range(paths.shape[2])] + [F.gelu(pre[s]).view(-1, P, L, Q)]
            self.aggregate(*xs, dim=0, out=out[s].view(-1, P, L, Q))  # written in place
        return out

    # -- streaming (forward-only blocks) ------------------------------------------------
    def initial_state(self, batch_size: int, device=None) -> torch.Tensor:
        """Zero state (B, H, M) complex, (B, H, M + 1) for foh (`hummuss.ssm.planar_state`
        makes it planar)."""
        self._check_streamable()
        return self.ssm_f.initial_state(batch_size, device)

    def stream_constants(self, joints: int, rows: int | None = None) -> dict:
        """What a streaming step needs besides the parameters, computed now without autograd.

        Every block: `proj` and `out`, its input projections [W_id; W_in] and output
        projection packed for `rows` tokens per step (default `joints`; `packed_linear`),
        and the mix weights. Spatial blocks: the convolution's `conv_taps`, `joint_kernel`,
        whether the CPU kernel `joint_conv_mix_gate` runs convolution, mix and gate from the
        taps in one call (eager and compiled), and without it `op`, the convolution operator
        over `joints` (an eager step multiplies by it, a compiled one convolves from the taps
        in Inductor's loops). The taps are 111 KB a block for paper-causal, the operator 1.8 MB;
        temporal (forward-only) blocks: the read-out weights, `kernel`, whether a planar
        state advances in place in the CPU kernel (`hummuss.ssm.state_kernel`), and
        `stagger`, whether it can take the staggered update (`hummuss.ssm.stagger`).
        """
        with torch.no_grad():
            w, b = self._input_weights()
            rows = joints if rows is None else rows
            packed = dict(proj=pack_linear(w, b, rows),
                          out=pack_linear(self.proj_out.weight, self.proj_out.bias, rows),
                          mix=tuple(t.movedim(0, -1).contiguous().movedim(-1, 0) for t in self._mix_weights()))
            # (the mix weights laid out channel-fastest, as the step reads them: vectorised loads)
            one_call = block_kernels.applies(self, packed)  # the whole step in one kernel call
            if not self.temporal:
                # the CPU kernel `joint_conv_mix_gate` (a fake beside it: one call when compiled)
                joint_kernel = self.aggregate.kind == "gate" and cpu_kernels.runs_on(w.device, w.dtype)
                op = None if joint_kernel else self._operator(joints, "cols", 1.0, "toeplitz")  # the kernel needs none
                mw, mb = packed["mix"]  # (H, n, k), (H, n) channels fastest: (R, H) and (n, H) are views
                return dict(op=op, taps=conv_taps(*self._kernels(joints, 1.0)), joint_kernel=joint_kernel,
                            joint_block=joint_kernel and one_call, mix_rows=(mw.flatten(1).t(), mb.t()), **packed)
            self._check_streamable()
            kernel = self.ssm_f.discretization == "zoh" and state_kernel.usable(w.device, w.dtype)
            planes = self.ssm_f.readout_planes()
            staggered = kernel and stagger.supported(planes[0].shape[1])
            mix_rows = tuple(t[:, 0].t().contiguous() for t in packed["mix"])  # (k, H), (H,)
            return dict(R=self.ssm_f.readout_weight(), planes=planes, kernel=kernel, stagger=staggered,
                        block=staggered and one_call, mix_rows=mix_rows, **packed)

    def step(self, x_t: torch.Tensor, state: torch.Tensor | stagger.StaggeredState, dt: float | torch.Tensor = 1.0,
             discretised=None, consts: dict | None = None) -> tuple[torch.Tensor, torch.Tensor | stagger.StaggeredState]:
        """One frame x_t (B, D) with its state -> (out_t (B, D), new state).

        dt: this frame's step in units of the learned step (a float or (B,) tensor);
        `discretised` = (dA, dB) or, foh, (dA, dB, dB_prev) from `ssm_f.discretise_step`,
        (H, M) or (B, H, M) each, skips the exponentials. Without `consts` the step is
        functional (differentiable) on a complex state (B, H, M) ((B, H, M + 1) for foh). With `consts` from `stream_constants` (computed once per stream: it
        packs the weights) it is the streaming step, without autograd: a complex state is
        updated in place and returned; a planar real one (2, H, B, M) = (Re, Im),
        channel-major, with `discretised` in the same form (`planar_state`), is updated in
        place by the CPU kernel where `consts["kernel"]` (`state_kernel`, the read-out's GELU and
        mix in the same call), else replaced by a
        new one (`advance_state_planar`, one pass over the state under torch.compile); a
        `stagger.StaggeredState`, with `consts` and `discretised` = `stagger.coefficients` (both
        required), takes the staggered update in place (a T-th of its channels advanced, every
        channel read out).
        """
        if consts is not None and consts["block"] and isinstance(state, stagger.StaggeredState) \
                and discretised is not None and x_t.dim() == 2 and x_t.stride(-1) == 1:  # in one call
            return block_kernels.stagger_step(self, x_t, state, discretised, consts), state  # (below: op by op)
        z = self.norm(x_t)
        if consts is None:
            if isinstance(state, stagger.StaggeredState):
                raise ValueError("a staggered state steps with `consts` (`stream_constants`) and `discretised`")
            self._check_streamable()
            x_id = F.gelu(self.proj_id(z))
            u = F.gelu(self.proj_in(z))
            y, state = self.ssm_f.step(u, state, dt, discretised)
            return x_t + self.proj_out(self.aggregate(self.mix_f(y), x_id)), state
        ssm = self.ssm_f
        staggered = isinstance(state, stagger.StaggeredState)
        if staggered and discretised is None:
            raise ValueError("a staggered state steps with its step size's `stagger.coefficients` as `discretised` "
                             "(they hold for one step size: HumMUSSStream keeps them)")
        if discretised is None:
            discretised = ssm.discretise_step(dt, x_t.device)
            if not state.is_complex():
                discretised = tuple(planar_state(t) for t in discretised)
        x_id, u = consts["proj"](z, gelu=True).chunk(2, dim=-1)  # (B, H) each: one matmul
        w, b = consts["mix"]  # (H, 1, k), (H, 1), the channels fastest
        if staggered:  # a T-th of the channels advanced in the CPU kernel, every one read out and mixed
            x_f = stagger.advance_mix(state, *discretised, u, ssm.D, *consts["mix_rows"])
            return consts["out"](self.aggregate(x_f, x_id)) + x_t, state
        dA, dB, *prev = discretised  # foh: prev = [dB_prev]
        if not state.is_complex() and consts["kernel"]:  # planar, in place in the CPU kernel, with the mix
            x_f = state_kernel.advance_state_mix_kernel(state, dA, dB, u, *consts["planes"], ssm.D,
                                                        w[:, 0].t(), b[:, 0])  # (B, H); (k, H), (H,) contiguous
        else:
            if state.is_complex():
                y = advance_state_(state, dA, dB, u, consts["R"], ssm.D, *prev)  # (B, H, k)
            else:
                state, y = advance_state_planar(state, dA, dB, u, *consts["planes"], ssm.D, *prev)
            g = F.gelu(y)  # (B, H, k)
            x_f = torch.addcmul(b[:, 0], g[..., 0], w[:, 0, 0])  # (B, H)
            for c in range(1, g.shape[-1]):
                x_f = x_f.addcmul_(g[..., c], w[:, 0, c])
        return consts["out"](self.aggregate(x_f, x_id)) + x_t, state

    def _check_streamable(self):
        if self.bidirectional:
            raise ValueError("a bidirectional GDSSM block sees future frames and cannot stream; "
                             "build it with bidirectional=False (a causal model)")

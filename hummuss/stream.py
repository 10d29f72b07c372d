"""Frame-by-frame (streaming) inference for causal HumMUSS models.

Each new frame is embedded, every spatial block runs over its 17 joints (`GDSSM.forward`)
and every temporal block advances its DSSM state by one step (`GDSSM.step`), both with the
block's `stream_constants`. Time and memory per frame are constant: the state is all the
model keeps of the past. Stepping through a sequence gives the same outputs as `model(x)`
on the whole sequence. (hummuss.model imports this module for `HumMUSS.stream`; this one
imports no model, it reads the modules of the one it is given.)

    s = model.stream(batch_size=1)
    for x_t in frames:            # x_t (B, 17, 3)
        y_t = s.step(x_t)         # (B, 17, 3)
        y_t = s.step(x_t, dt=2.0) # this frame came two training steps after the last

Speed: the spatial convolutions, read-out and mix weights, the projections (packed once,
`packed_linear`: for the suite's few-rows CPU kernel, else oneDNN; a copy, 45 MB for
paper-causal; the blocks' and also the joint embedding, the learned fusions of the two
streams and the head, `_top_constants`) and the discretisation
of each step size are computed once (at `reset`) and reused. At batch 1 the step is bound
by memory traffic: the paper-causal state is 10 blocks x 17 joints x 768 channels x 64
complex modes (67 MB), and the projections' weights (45 MB) are read once a frame. On the
CPU (float32, zero-order hold, 1 or 2 read-outs) the states are planar real tensors
(2, H, B J, M) = (Re, Im), channel-major, and take the staggered update
(`hummuss.ssm.stagger`, a compiled kernel, eager or inside the compiled step): each frame
advances a quarter of a block's channels by four frames in place and reads every channel
out from what its last advance left, so a frame reads and rewrites a quarter of the state
(paper-causal on a 2-core AMD EPYC, eager: 6.4-6.8 against 8.3-8.5 ms a frame for the
per-frame update, alternated in one process). Its coefficients hold for one step size: a
frame with another `dt` than the first frame's (or per-stream steps) brings every state to
the last frame and the stream goes on with the per-frame update until `reset`, one pass in
place over each state in a compiled kernel (`hummuss.ssm.state_kernel`). Elsewhere the
states are complex and updated in place eagerly, and planar under `torch.compile`
(`advance_state_planar`, which returns a new state). A spatial block's
convolution over the joints, its mix and its gate run token-major in one kernel call from
the convolution's taps (`joint_conv_mix_gate`, 111 KB a block where its Toeplitz operator is
1.8 MB), between the two packed projections, with no transposes. Where the blocks allow it
(the gate aggregation, LayerNorms, the suite's kernels: `hummuss.block_kernels`), each block's
whole step (norm, projections, core, residual) is one kernel call (eagerly 12% less time a
frame for paper-causal on a 2-core Xeon; compiled, level), and the eager frame then runs
from a plan of the kernels' arguments built at its first frame (`_planned_frame`), not through
the modules (a further 7% on a 2-core Zen 4): a layer in one call (`stream_layer`, its two
streams at once, one a thread, where ATen's pool has two) and its learned fusion in another
(`learned_fusion`, `_fuse`). Paper-causal on a 2-core Zen 3 EPYC, two streams alternated in one
process, 12 rounds of 30 frames: 0.76-0.91 of the time a frame of the plan calling the blocks'
kernels one by one with the fusion's module (medians of four processes), and the compiled step
took 1.22 times as long (the same, one process).

`compile`: None (the default) takes that planned eager frame where it applies (`planned`:
every block in one kernel call, the staggered update). Elsewhere it streams eagerly for the
first AUTO_COMPILE_AFTER frames, then switches to the compiled step where a compiler exists
(`compiler_available`: a C++ compiler for Inductor on the CPU, Triton on CUDA), so short
streams never pay for a compilation and long ones get the fast step; where none exists it
warns once per process and stays eager; a stream whose step size changes leaves the planned
frame and counts its AUTO_COMPILE_AFTER frames from there, and `reset` takes the planned frame
again. True compiles from the first frame (on the CPU with the kernels, slower than the
default), False never (there: the default's planned frame). The compiled step has a
C++ wrapper (Inductor's `cpp_wrapper`: the calls between its kernels leave Python; 0.3-0.9
ms a frame less for paper-causal on a 2-core CPU) and skips the size and stride checks of every
call (`COMPILE_OPTIONS`). Compilation costs (paper-causal on a
2-core AVX2 CPU: 31 s, then 4 s from the on-disk cache) and, if it fails, the stream falls
back to eager execution with a warning.
"""

from __future__ import annotations

import math
import os
import shutil
import warnings

import torch
import torch.nn as nn

from hummuss import cpu_kernels
from hummuss.allocator import keep_freed_memory
from hummuss.block_kernels import joint_args, stagger_args
from hummuss.packed_linear import pack_linear
from hummuss.ssm import complex_state, planar_state, stagger

AUTO_COMPILE_AFTER = 64  # compile=None: frames streamed eagerly before compiling
# Inductor's C++ wrapper, without its checks of every input's and kernel output's sizes and
# strides on each call (paper-causal's step has 270 inputs; 4.08 -> 3.93 ms a frame on a 2-core
# Xeon, alternated in one process). tests/test_stream.py holds the compiled step to the model.
COMPILE_OPTIONS = {"cpp_wrapper": True, "size_asserts": False, "alignment_asserts": False, "scalar_asserts": False}
_warned_no_compiler = False


def compiler_available(device: torch.device | str) -> bool:
    """Whether torch.compile can generate code for `device`: Triton for CUDA, a C++ compiler
    (Inductor's `cpp.cxx`, or $CXX) for the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        return has_triton()
    if device.type != "cpu":
        return False
    from torch._inductor import config

    try:
        cxx = [c for c in config.cpp.cxx if isinstance(c, str)]
    except AttributeError:  # the option is hidden in some states of torch's config module
        cxx = ["g++", "c++", "clang++"]
    names = [os.environ.get("CXX"), *cxx]
    return any(name and shutil.which(name) for name in names)


class HumMUSSStream:
    """Holds the temporal DSSM states of a causal HumMUSS (`model`) for `batch_size` streams."""

    def __init__(self, model: nn.Module, batch_size: int = 1, compile: bool | None = None):
        if not model.config.causal:
            raise ValueError("streaming needs a causal model (HumMUSSConfig(causal=True)); "
                             "a bidirectional model looks at future frames")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.batch_size = model, batch_size
        # the compiled step returns new states (MBs a block) every frame: keep freed blocks in
        # malloc's heap, or each frame faults fresh pages in (paper-causal: 4.7-6.3 faults of
        # 2 MiB a frame with huge pages, 15.5-15.9 -> 14.7-14.8 ms a frame, 2 runs each)
        keep_freed_memory()
        # compile=None: the planned eager frame where it applies, else compile after
        # AUTO_COMPILE_AFTER eager frames where a compiler exists (`reset` makes that choice again)
        self._auto_requested = compile is None
        self.auto = compile is None
        self.compile = bool(compile)
        self.reset()

    def reset(self):
        """Forget the past: zero every state (and re-read the model's parameters). A default
        stream (compile=None) that compiled after its step size changed goes back to the
        planned eager frame where that applies."""
        if self._auto_requested:
            self.auto, self.compile = True, False
        self._cache: dict[float, list] = {}
        model = self.model
        device = next(model.parameters()).device
        n = self.batch_size * model.config.num_joints
        J = model.config.num_joints
        rows = self.batch_size * J  # tokens per step: what the packed projections are tuned for
        self._consts = [[block.stream_constants(J, rows) for block in self._blocks(layer)]
                        for layer in model.layers]
        self._top = _top_constants(model, rows)
        # every temporal block's state advances in place in the CPU kernel (eager or compiled)
        self._kernel = all(c[1]["kernel"] and c[2]["kernel"] for c in self._consts)
        # ... and takes the staggered update there, while the frames' step stays that of the first
        self.staggered = all(c[1]["stagger"] and c[2]["stagger"] for c in self._consts)
        self._stagger_dt: float | None = None
        self.states = [
            [layer.temporal_st.initial_state(n, device), layer.temporal_ts.initial_state(n, device)]
            for layer in model.layers
        ]
        if self.planar:  # planar (Re, Im) real states for the kernel or the compiled update
            self.states = [[planar_state(s) for s in pair] for pair in self.states]
        if self.staggered:
            self.states = [[stagger.initial_state(s, c["planes"][0].shape[1])
                            for s, c in zip(pair, cst[1:3])]
                           for pair, cst in zip(self.states, self._consts)]
        self.frames_seen = 0
        self._eager_from = 0  # compile=None: the frame its eager count before compiling starts at
        # where every block takes its step in one kernel call: the eager frame calls them from a
        # plan of their arguments (`_planned_frame`), built at the first frame of the stream's step
        self._one_call = all(c[0]["joint_block"] and c[1]["block"] and c[2]["block"] and c[3]["joint_block"]
                             for c in self._consts)
        self._plan = None

    def state_tensors(self) -> list[torch.Tensor]:
        """Every tensor the stream keeps of the past (for a staggered state: the state, the last
        inputs, the free responses and the clock)."""
        return [t for pair in self.states for s in pair
                for t in (s if isinstance(s, stagger.StaggeredState) else (s,))]

    @property
    def planar(self) -> bool:
        """Whether the states are planar real (2, H, B J, M) rather than complex (B J, H, M)."""
        return self.compile or self._kernel

    @property
    def planned(self) -> bool:
        """Whether the eager step runs from a plan of the kernels' arguments (`_planned_frame`):
        every block in one kernel call, with the staggered update."""
        return self._one_call and self.staggered

    @property
    def path(self) -> str:
        """Which step the next frame takes: "compiled", "planned eager" (`_planned_frame`) or
        "eager" (`_frame`, through the modules); the benchmarks record it."""
        return "compiled" if self.compile else "planned eager" if self.planned else "eager"

    @staticmethod
    def _blocks(layer: nn.Module):
        return layer.spatial_st, layer.temporal_st, layer.temporal_ts, layer.spatial_ts

    def _discretised(self, dt):
        """(dA, dB) of every temporal block for step dt, or staggered its `stagger.coefficients`;
        cached per float value."""
        def disc(step):
            out = [[b.ssm_f.discretise_step(step) for b in (layer.temporal_st, layer.temporal_ts)]
                   for layer in self.model.layers]
            if self.planar:
                out = [[tuple(planar_state(t) for t in pair) for pair in per] for per in out]
            if self.staggered:
                out = [[stagger.coefficients(*pair[:2], *c["planes"]) for pair, c in zip(per, cst[1:3])]
                       for per, cst in zip(out, self._consts)]
            return out

        with torch.no_grad():
            if isinstance(dt, torch.Tensor) and dt.dim() > 0:  # per-stream steps: (B,) -> (B J,)
                return disc(dt.repeat_interleave(self.model.config.num_joints))
            dt = float(dt)
            if dt not in self._cache:
                self._cache[dt] = disc(dt)
            return self._cache[dt]

    def step(self, x_t: torch.Tensor, dt: float | torch.Tensor = 1.0) -> torch.Tensor:
        """x_t (B, 17, 3) -> pose (B, 17, 3). dt: this frame's step in training steps."""
        cfg = self.model.config
        expected = (self.batch_size, cfg.num_joints, cfg.dim_in)
        if tuple(x_t.shape) != expected:
            raise ValueError(f"frame must have shape {expected}, got {tuple(x_t.shape)}")
        # one reduction: a NaN or an infinity makes the sum so; a finite sum that overflowed is checked again
        if not math.isfinite(float(x_t.sum())) and not torch.isfinite(x_t).all():
            raise ValueError("frame contains NaN or infinite values")
        if isinstance(dt, torch.Tensor) and dt.dim() > 0:
            if dt.shape != (self.batch_size,) or not (dt > 0).all():
                raise ValueError(f"dt must be a positive float or a ({self.batch_size},) tensor of positive steps")
        elif not float(dt) > 0:
            raise ValueError(f"dt must be > 0, got {dt}")
        if isinstance(dt, torch.Tensor) and dt.dim() > 0 and bool((dt == dt[0]).all()):
            dt = float(dt[0])  # per-stream steps that are all one step: one cached discretisation
        if self.staggered:  # the staggered update holds for one step size: the first frame's
            per_stream = isinstance(dt, torch.Tensor) and dt.dim() > 0
            if self._stagger_dt is None and not per_stream:
                self._stagger_dt = float(dt)
            if per_stream or float(dt) != self._stagger_dt:
                self._unstagger()
        if self.auto and self.frames_seen - self._eager_from >= AUTO_COMPILE_AFTER and not self.planned:
            self._switch_to_compiled()
        if self.compile:
            y = self._step_compiled(x_t, dt)
        elif self.planned:
            with torch.inference_mode():
                if self._plan is None:
                    self._plan = _block_plan(self.model, self.states, self._discretised(dt), self._consts)
                y = _planned_frame(self.model, x_t, self._plan, self._top)
        else:
            with torch.inference_mode():
                y, self.states = _frame(self.model, x_t, self.states, self._discretised(dt), self._consts, self._top)
        self.frames_seen += 1
        return y

    def _unstagger(self):
        """A frame with another step than the stream's so far: every state brought to the last
        frame (`stagger.synchronise`), and the per-frame update from now on (until `reset`)."""
        self.staggered, self._cache, self._plan = False, {}, None
        # a default stream leaves the planned frame: AUTO_COMPILE_AFTER eager frames from here before
        # it compiles, so that a change of step never stalls a stream on a compilation at once
        self._eager_from = self.frames_seen
        if self._stagger_dt is None:  # no frame yet: the states are zero
            self.states = [[s.s for s in pair] for pair in self.states]
            return
        with torch.no_grad():
            steps = self._discretised(self._stagger_dt)  # planar (dA, dB) of every block, now
            self.states = [[stagger.synchronise(s, *ab[:2]) for s, ab in zip(pair, per)]
                           for pair, per in zip(self.states, steps)]

    def _switch_to_compiled(self):
        """compile=None, once enough frames have streamed: compiled from now on where a
        compiler exists (the states go planar), else eager with one warning per process."""
        global _warned_no_compiler
        self.auto = False
        if compiler_available(next(self.model.parameters()).device):
            if not self.planar:
                self.states = [[planar_state(s) for s in pair] for pair in self.states]
            self.compile, self._cache, self._plan = True, {}, None
        elif not _warned_no_compiler:
            _warned_no_compiler = True
            warnings.warn("no compiler for torch.compile (a C++ compiler on the CPU, Triton on CUDA); "
                          "streaming eagerly, which is slower", RuntimeWarning, stacklevel=4)

    def _step_compiled(self, x_t, dt):
        global _compiled_frame
        try:
            if _compiled_frame is None:  # one per process: streams of one model share its code
                from torch._inductor import config  # (an option this torch lacks is left out)
                options = {k: v for k, v in COMPILE_OPTIONS.items() if hasattr(config, k)}
                _compiled_frame = torch.compile(_frame, dynamic=False, options=options)
            with torch.no_grad():
                y, self.states = _compiled_frame(self.model, x_t, self.states, self._discretised(dt), self._consts, self._top)
            return y
        except Exception as err:  # no compiler, unsupported backend: run eagerly from now on
            warnings.warn(f"torch.compile of the streaming step failed ({type(err).__name__}: {err}); "
                          "running it eagerly", RuntimeWarning, stacklevel=3)
            self.compile, self.auto, self._cache, self._auto_requested = False, False, {}, False
            if not self.planar:
                self.states = [[complex_state(s) for s in pair] for pair in self.states]
            with torch.inference_mode():
                y, self.states = _frame(self.model, x_t, self.states, self._discretised(dt), self._consts, self._top)
            return y


_compiled_frame = None


def _top_constants(model: nn.Module, rows: int) -> dict:
    """The linear layers outside the blocks, packed for `rows` tokens (`packed_linear`): the
    joint embedding, each layer's learned fusion of the two streams (None for the other
    fusions), the read-out's Linear before the head (its activation stays the model's) and the
    head. (Through torch.addmm these 8 small products took about 0.15 ms of paper-causal's frame.)
    And where the CPU kernels run, each learned fusion's weight and bias for `learned_fusion`
    (its seven operations in one call; `_fuse`), else None."""
    first = model.pre_logits[0]
    kernel = cpu_kernels.runs_on(first.weight.device, first.weight.dtype)
    with torch.no_grad():
        return dict(embed=pack_linear(model.joints_embed.weight, model.joints_embed.bias, rows),
                    fuse=[pack_linear(layer.fuse.weights.weight, layer.fuse.weights.bias, rows)
                          if layer.fuse.kind == "learned" else None for layer in model.layers],
                    fusion=[(layer.fuse.weights.weight.detach().contiguous(), layer.fuse.weights.bias.detach().contiguous())
                            if kernel and layer.fuse.kind == "learned" and layer.fuse.n_inputs == 2 else None
                            for layer in model.layers],
                    pre_logits=pack_linear(first.weight, first.bias, rows),
                    head=pack_linear(model.head.weight, model.head.bias, rows))


def _frame(model: nn.Module, x_t, states, disc, consts, top):
    """One frame through the network: x_t (B, J, 3) -> ((B, J, 3), new states).

    states: per layer [st, ts], complex (B J, H, M) (advanced in place), planar real
    (2, H, B J, M) (replaced, or in place in the CPU kernel) or `stagger.StaggeredState` (in
    place, with disc its `stagger.coefficients`); disc: per layer the (dA, dB) of both temporal blocks, in the
    same form; consts: per layer the `stream_constants` of (spatial_st, temporal_st,
    temporal_ts, spatial_ts).
    """
    B, J, _ = x_t.shape
    D = model.config.dim
    h = model.embed(x_t, linear=top["embed"])  # (B, J, D)
    new_states = []
    for layer, st, dsc, cst, fw, fk in zip(model.layers, states, disc, consts, top["fuse"], top["fusion"]):
        c_sst, c_tst, c_tts, c_sts = cst
        # stream 1: spatial over the joints, then one temporal step per joint
        x_st = layer.spatial_st(h.reshape(B, J, 1, D), consts=c_sst)
        x_st, s_st = layer.temporal_st.step(x_st.view(B * J, D), st[0], discretised=dsc[0], consts=c_tst)
        # stream 2: one temporal step per joint, then spatial over the joints
        y, s_ts = layer.temporal_ts.step(h.reshape(B * J, D), st[1], discretised=dsc[1], consts=c_tts)
        x_ts = layer.spatial_ts(y.view(B, J, 1, D), consts=c_sts)
        h = _fuse(layer.fuse, x_st.view(B * J, D), x_ts.view(B * J, D), fw, fk).view(B, J, D)
        new_states.append([s_st, s_ts])
    return _head(model, h, top), new_states


def _block_plan(model: nn.Module, states, disc, consts) -> list:
    """Per layer the arguments of `stream_layer` (hummuss/csrc/stream_layer.cpp): the tensors of
    its four blocks' one-call kernels (`hummuss.block_kernels`: `joint_block` for the spatial
    blocks, `stagger_block_` for the temporal ones, with their staggered states and the stream's
    coefficients) without their norms' eps, third in each, and the four eps; and its fusion."""
    plan = []
    for layer, st, dsc, (c_sst, c_tst, c_tts, c_sts) in zip(model.layers, states, disc, consts):
        blocks = (joint_args(layer.spatial_st, c_sst), stagger_args(layer.temporal_st, st[0], dsc[0], c_tst),
                  stagger_args(layer.temporal_ts, st[1], dsc[1], c_tts), joint_args(layer.spatial_ts, c_sts))
        plan.append(([args[:2] + args[3:] for args in blocks], [args[2] for args in blocks], layer.fuse))
    return plan


def _planned_frame(model: nn.Module, x_t, plan, top):
    """`_frame` where every block runs in one kernel call: the same kernels with the same
    arguments (so the same outputs, bit for bit; tests/test_stream.py), from a plan built once,
    a layer's four in one call (`stream_layer`: its two streams at once, one a thread, where
    ATen's pool has two), without the modules' calls and checks between them."""
    B, J, _ = x_t.shape
    D = model.config.dim
    h = model.embed(x_t, linear=top["embed"]).reshape(B * J, D)
    for (blocks, eps, fuse), fw, fk in zip(plan, top["fuse"], top["fusion"]):
        x_st, x_ts = torch.ops.hummuss_cpu.stream_layer(h, *blocks, eps)  # spatial then temporal; temporal then spatial
        h = _fuse(fuse, x_st, x_ts, fw, fk)
    return _head(model, h.view(B, J, D), top)


def _head(model: nn.Module, h, top):
    """The frame's features h (B, J, D) -> pose (B, J, 3): the norm, the read-out (its Linear
    packed, then its activation) and the head."""
    return top["head"](model.pre_logits[1](top["pre_logits"](model.norm(h))))


def _fuse(fuse: nn.Module, a, b, linear, kernel):
    """A layer's fusion (`fuse`, its Aggregate) of its two streams' outputs a, b (N, D) -> (N, D):
    where `kernel` holds the learned fusion's (weight, bias), one call of `learned_fusion`
    outside torch.compile (paper-causal's five fusions on a 2-core Zen 3 EPYC: 0.22 -> 0.03 ms a
    frame, medians of 15 rounds); else the module, with its `linear` packed (`_top_constants`)."""
    if kernel is not None and not torch.compiler.is_compiling():
        return torch.ops.hummuss_cpu.learned_fusion(a, b, *kernel)
    return fuse(a, b, linear=linear)

"""Frame-by-frame (streaming) inference for causal HumMUSS models.

Each new frame is embedded, every spatial block runs over its 17 joints, and every
temporal block advances its DSSM state by one step. Time and memory per frame are
constant: the state is all the model keeps of the past. Stepping through a sequence
gives the same outputs as `model(x)` on the whole sequence.

    s = model.stream(batch_size=1)
    for x_t in frames:            # x_t (B, 17, 3)
        y_t = s.step(x_t)         # (B, 17, 3)
        y_t = s.step(x_t, dt=2.0) # this frame came two training steps after the last

Speed: the states are updated in place; the spatial convolutions, read-out and mix weights
and the discretisation of each step size are computed once (at `reset`) and reused. At
batch 1 the step is bound by memory traffic: the paper-causal state is 10 blocks x 17 joints
x 768 channels x 64 complex modes (67 MB), read and written every frame, and the 16M
weights (64 MB) are read once. `compile=True` runs the frame through `torch.compile`
(the state update and read-out become one pass over the state); it needs a C++ compiler
(CPU) or Triton (GPU), costs a one-off compilation on the first frame (about 10-60 s on a
2-core CPU, cached on disk afterwards) and falls back to eager execution with a warning
if compilation fails.
"""

from __future__ import annotations

import warnings

import torch

from hummuss.model import HumMUSS, Layer


class HumMUSSStream:
    """Holds the temporal DSSM states of a causal HumMUSS for `batch_size` streams."""

    def __init__(self, model: HumMUSS, batch_size: int = 1, compile: bool = False):
        if not model.config.causal:
            raise ValueError("streaming needs a causal model (HumMUSSConfig(causal=True)); "
                             "a bidirectional model looks at future frames")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.batch_size = model, batch_size
        self.compile = compile
        self._compiled = None
        self.reset()

    def reset(self):
        """Forget the past: zero every state (and re-read the model's parameters)."""
        self._cache: dict[float, list] = {}
        model = self.model
        device = next(model.parameters()).device
        n = self.batch_size * model.config.num_joints
        self.states = [
            [layer.temporal_st.initial_state(n, device), layer.temporal_ts.initial_state(n, device)]
            for layer in model.layers
        ]
        J = model.config.num_joints
        self._consts = [[block.stream_constants(J) for block in self._blocks(layer)] for layer in model.layers]
        self.frames_seen = 0

    @staticmethod
    def _blocks(layer: Layer):
        return layer.spatial_st, layer.temporal_st, layer.temporal_ts, layer.spatial_ts

    def _discretised(self, dt):
        """(dA, dB) of every temporal block for step dt; cached per float value."""
        def disc(step):
            out = [[b.ssm_f.discretise_step(step) for b in (layer.temporal_st, layer.temporal_ts)]
                   for layer in self.model.layers]
            if self.compile:  # the compiled update works on (re, im) views
                out = [[tuple(torch.view_as_real(t) for t in pair) for pair in per] for per in out]
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
        if not torch.isfinite(x_t).all():
            raise ValueError("frame contains NaN or infinite values")
        if isinstance(dt, torch.Tensor) and dt.dim() > 0:
            if dt.shape != (self.batch_size,) or not (dt > 0).all():
                raise ValueError(f"dt must be a positive float or a ({self.batch_size},) tensor of positive steps")
        elif not float(dt) > 0:
            raise ValueError(f"dt must be > 0, got {dt}")
        if self.compile:
            y = self._step_compiled(x_t, dt)
        else:
            with torch.inference_mode():
                y = self._frame(x_t, self.states, self._discretised(dt), self._consts)
        self.frames_seen += 1
        return y

    def _step_compiled(self, x_t, dt):
        states = [[torch.view_as_real(s) for s in pair] for pair in self.states]
        if self._compiled is None:
            self._compiled = torch.compile(self._frame, dynamic=False)
        try:
            with torch.no_grad():
                return self._compiled(x_t, states, self._discretised(dt), self._consts)
        except Exception as err:  # no compiler, unsupported backend: run eagerly from now on
            warnings.warn(f"torch.compile of the streaming step failed ({type(err).__name__}: {err}); "
                          "running it eagerly", RuntimeWarning, stacklevel=3)
            self.compile, self._cache = False, {}
            with torch.inference_mode():
                return self._frame(x_t, self.states, self._discretised(dt), self._consts)

    def _frame(self, x_t, states, disc, consts):
        """One frame through the network: x_t (B, J, 3) -> (B, J, 3), states advanced in place."""
        model = self.model
        B, J, D = self.batch_size, model.config.num_joints, model.config.dim
        h = model.joints_embed(x_t) + model.pos_embed[0]  # (B, J, D)
        for layer, st, dsc, cst in zip(model.layers, states, disc, consts):
            h = self._layer_step(layer, h, st, dsc, cst, B, J, D)
        return model.head(model.pre_logits(model.norm(h)))

    @staticmethod
    def _layer_step(layer: Layer, h, states, disc, consts, B, J, D):
        """h (B, J, D) -> (B, J, D); the temporal states (B J, H, M) advance in place."""
        c_sst, c_tst, c_tts, c_sts = consts
        # stream 1: spatial over the joints, then one temporal step per joint
        x_st = layer.spatial_st._run(h.reshape(B, J, 1, D), 1.0, None, **c_sst)
        x_st = layer.temporal_st.step_(x_st.view(B * J, D), states[0], disc[0], c_tst)
        # stream 2: one temporal step per joint, then spatial over the joints
        y = layer.temporal_ts.step_(h.reshape(B * J, D), states[1], disc[1], c_tts)
        x_ts = layer.spatial_ts._run(y.view(B, J, 1, D), 1.0, None, **c_sts)
        return layer.fuse(x_st.view(B, J, D), x_ts.view(B, J, D))

"""Frame-by-frame (streaming) inference for causal HumMUSS models.

Each new frame is embedded, every spatial block runs over its 17 joints, and every
temporal block advances its DSSM state by one step. Time and memory per frame are
constant: the state is all the model keeps of the past. Stepping through a sequence
gives the same outputs as `model(x)` on the whole sequence.

    s = model.stream(batch_size=1)
    for x_t in frames:            # x_t (B, 17, 3)
        y_t = s.step(x_t)         # (B, 17, 3)
        y_t = s.step(x_t, dt=2.0) # this frame came two training steps after the last
"""

from __future__ import annotations

import torch

from hummuss.model import HumMUSS, Layer


class HumMUSSStream:
    """Holds the temporal DSSM states of a causal HumMUSS for `batch_size` streams."""

    def __init__(self, model: HumMUSS, batch_size: int = 1):
        if not model.config.causal:
            raise ValueError("streaming needs a causal model (HumMUSSConfig(causal=True)); "
                             "a bidirectional model looks at future frames")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.batch_size = model, batch_size
        self.reset()

    def reset(self):
        """Forget the past: zero every state (and re-read the model's steps)."""
        self._cache: dict[float, list] = {}
        device = next(self.model.parameters()).device
        n = self.batch_size * self.model.config.num_joints
        self.states = [
            [layer.temporal_st.initial_state(n, device), layer.temporal_ts.initial_state(n, device)]
            for layer in self.model.layers
        ]
        self.frames_seen = 0

    def _discretised(self, dt):
        """(dA, dB) of every temporal block for step dt; cached per float value."""
        if isinstance(dt, torch.Tensor) and dt.dim() > 0:  # per-stream steps: (B,) -> (B J,)
            dt = dt.repeat_interleave(self.model.config.num_joints)
            return [[b.ssm_f.discretise_step(dt) for b in (layer.temporal_st, layer.temporal_ts)]
                    for layer in self.model.layers]
        dt = float(dt)
        if dt not in self._cache:
            self._cache[dt] = [[b.ssm_f.discretise_step(dt) for b in (layer.temporal_st, layer.temporal_ts)]
                               for layer in self.model.layers]
        return self._cache[dt]

    @torch.inference_mode()
    def step(self, x_t: torch.Tensor, dt: float | torch.Tensor = 1.0) -> torch.Tensor:
        """x_t (B, 17, 3) -> pose (B, 17, 3). dt: this frame's step in training steps."""
        model, cfg = self.model, self.model.config
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
        B, J, D = self.batch_size, cfg.num_joints, cfg.dim
        h = model.joints_embed(x_t) + model.pos_embed[0]  # (B, J, D)
        for layer, states, disc in zip(model.layers, self.states, self._discretised(dt)):
            h = self._layer_step(layer, h, states, disc, B, J, D)
        self.frames_seen += 1
        return model.head(model.pre_logits(model.norm(h)))

    @staticmethod
    def _layer_step(layer: Layer, h, states, disc, B, J, D):
        """h (B, J, D) -> (B, J, D); the temporal states (B J, H, M) advance in place."""
        # stream 1: spatial over the joints, then one temporal step per joint
        x_st = layer.spatial_st.run(h.view(B, J, 1, D))
        x_st = layer.temporal_st.step_(x_st.view(B * J, D), states[0], disc[0])
        # stream 2: one temporal step per joint, then spatial over the joints
        y = layer.temporal_ts.step_(h.reshape(B * J, D), states[1], disc[1])
        x_ts = layer.spatial_ts.run(y.view(B, J, 1, D))
        return layer.fuse(x_st.view(B, J, D), x_ts.view(B, J, D))

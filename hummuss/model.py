"""HumMUSS: the dual-stream spatio-temporal network of gated diagonal SSM blocks.

    x (B, T, 17, 3)  2D joints (x, y) and their confidence
    -> (`center_input`: each frame's root (x, y) subtracted from every joint's (x, y))
    -> Linear(3 -> D) + learned per-joint embedding (1, 17, D); no temporal position
       embedding (the model is continuous in time)
    -> depth x layer: two streams on the same input,
           spatial-then-temporal   x_st = T_st(S_st(x))
           temporal-then-spatial   x_ts = S_ts(T_ts(x))
       fused per token (`learned`: softmax weights from Linear(2D -> 2), DSTformer style;
       or `mean`, `gate`)
    -> LayerNorm -> Linear(D -> D_rep) + tanh (the motion representation)
    -> Linear(D_rep -> 3)

Spatial GDSSM blocks run over the 17 joints of one frame (always bidirectional); temporal
blocks run over the frames of each joint, forward-only when `causal=True`.

Parameter counts of the presets (`hummuss-suite info --model hummuss --preset P`),
with the block layout of hummuss/gdssm.py (per-block arithmetic there):
    part                      paper-bidirectional (m = 2.5)   paper-causal (m = 3)
    embedding                              5,376                     5,376
    spatial blocks (10)                6,627,840                 7,951,360
    temporal blocks (10)               8,291,840                 7,934,720
    stream fusion (5)                      5,130                     5,130
    final LayerNorm                          512                       512
    representation head                  131,584                   131,584
    output head                            1,539                     1,539
    total                             15,063,821                16,030,221
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from hummuss.config import PresetConfig
from hummuss.data.skeleton import root_relative_2d
from hummuss.fusion import Aggregate, check_aggregation
from hummuss.gdssm import GDSSM
from hummuss.ssm import DISCRETIZATIONS, INIT_SCHEMES
from hummuss.stream import HumMUSSStream


@dataclass
class HumMUSSConfig(PresetConfig):
    dim_in: int = 3
    dim_out: int = 3
    dim: int = 256  # D_m
    dim_rep: int = 512  # D_rep
    depth: int = 5
    num_joints: int = 17
    state_size: int = 128  # N real state dims = N/2 complex modes
    expand: float = 2.5  # m
    spatial_channels: int = 1  # k of spatial blocks
    temporal_channels: int = 2  # k of temporal blocks
    causal: bool = False
    gdssm_aggregation: str = "gate"  # x_f, x_b, x_id inside a block (Table 2)
    stream_fusion: str = "learned"  # the two streams of a layer (Table 3)
    init: str = "lin"
    # temporal DSSMs: "zoh" (zero-order hold, the paper's) or "foh" (first-order hold, issue 20);
    # spatial blocks keep zoh (the joint axis has no time to interpolate over)
    discretization: str = "zoh"
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    shared_modes: bool = True
    norm_eps: float = 1e-6
    # subtract each frame's root (x, y) from every joint's (x, y) before the embedding. Off
    # in the paper's presets (absolute image coordinates, as MotionBERT); on at `cpu`. Seed 0,
    # one thread, batch 8, lr 3e-3, no clipping, centring done by a wrapper around the model:
    # synthetic test MPJPE after 600 / 1,200 steps 75.8 / 66.3 mm absolute, 66.5 / 56.4 centred
    center_input: bool = False

    PRESETS = {
        "paper-bidirectional": dict(expand=2.5, causal=False),
        "paper-causal": dict(expand=3.0, causal=True),
        "cpu": dict(dim=64, dim_rep=128, depth=2, state_size=32, expand=2.0, center_input=True),
        "smoke": dict(dim=16, dim_rep=32, depth=1, state_size=8, expand=2.0),
    }

    def __post_init__(self):
        for name in ("dim_in", "dim_out", "dim", "dim_rep", "depth", "num_joints",
                     "spatial_channels", "temporal_channels"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"HumMUSSConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.state_size < 2 or self.state_size % 2:
            raise ValueError(f"HumMUSSConfig.state_size must be even and >= 2, got {self.state_size}")
        if self.expand <= 0:
            raise ValueError(f"HumMUSSConfig.expand must be > 0, got {self.expand}")
        check_aggregation(self.gdssm_aggregation, "gdssm_aggregation")
        check_aggregation(self.stream_fusion, "stream_fusion")
        if self.init not in INIT_SCHEMES:
            raise ValueError(f"unknown init {self.init!r}; known: {', '.join(INIT_SCHEMES)}")
        if self.discretization not in DISCRETIZATIONS:
            raise ValueError(f"unknown discretization {self.discretization!r}; known: {', '.join(DISCRETIZATIONS)}")
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got {self.dt_min}, {self.dt_max}")


class Layer(nn.Module):
    """One dual-stream layer: (B, T, J, D) -> (B, T, J, D)."""

    def __init__(self, cfg: HumMUSSConfig):
        super().__init__()
        common = dict(expand=cfg.expand, state_size=cfg.state_size, aggregation=cfg.gdssm_aggregation,
                      init=cfg.init, dt_min=cfg.dt_min, dt_max=cfg.dt_max,
                      shared_modes=cfg.shared_modes, norm_eps=cfg.norm_eps)

        def spatial():
            return GDSSM(cfg.dim, ssm_channels=cfg.spatial_channels, bidirectional=True, **common)

        def temporal():
            return GDSSM(cfg.dim, ssm_channels=cfg.temporal_channels, bidirectional=not cfg.causal,
                         temporal=True, discretization=cfg.discretization, **common)

        self.spatial_st, self.temporal_st = spatial(), temporal()
        self.temporal_ts, self.spatial_ts = temporal(), spatial()
        self.fuse = Aggregate(cfg.stream_fusion, 2, cfg.dim)

    @staticmethod
    def run_spatial(block: GDSSM, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, J, D): the block over the joints of each frame."""
        B, T, J, D = x.shape
        return block(x.reshape(B * T, J, 1, D)).view(B, T, J, D)

    @staticmethod
    def run_temporal(block: GDSSM, x: torch.Tensor, dt_scale: float, dt: torch.Tensor | None) -> torch.Tensor:
        """x (B, T, J, D), dt (B, T): the block over the frames of each joint."""
        B, T, J, D = x.shape
        dts = None if dt is None else dt.unsqueeze(-1).expand(B, T, J)
        return block(x, dt_scale, dts)

    def forward(self, x, dt_scale=1.0, dt=None):
        """x (B, T, J, D), dt (B, T) -> (B, T, J, D)."""
        h = x.transpose(0, 1).contiguous()
        return self.forward_frames(h, dt_scale, None if dt is None else dt.t()).transpose(0, 1)

    def forward_frames(self, h: torch.Tensor, dt_scale: float = 1.0, dt: torch.Tensor | None = None):
        """Frame-major h (T, B, J, D) contiguous, dt (T, B) -> (T, B, J, D).

        Frame-major tokens make both block kinds free views: spatial blocks see (T B, J, 1, D)
        (sequences along the joints), temporal blocks (1, T, B J, D) (along the frames).
        """
        T, B, J, D = h.shape
        dts = None if dt is None else dt.unsqueeze(-1).expand(T, B, J).reshape(1, T, B * J)

        def spatial(block, x):
            return block(x.view(T * B, J, 1, D)).view(T, B, J, D)

        def temporal(block, x):
            return block(x.view(1, T, B * J, D), dt_scale, dts).view(T, B, J, D)

        x_st = temporal(self.temporal_st, spatial(self.spatial_st, h))
        x_ts = spatial(self.spatial_ts, temporal(self.temporal_ts, h))
        return self.fuse(x_st, x_ts)


class HumMUSS(nn.Module):
    """HumMUSS network: (B, T, 17, 3) -> (B, T, 17, 3). See the module docstring."""

    continuous_time = True

    def __init__(self, config: HumMUSSConfig):
        super().__init__()
        self.config = cfg = config
        self.joints_embed = nn.Linear(cfg.dim_in, cfg.dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_joints, cfg.dim))
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.pre_logits = nn.Sequential(nn.Linear(cfg.dim, cfg.dim_rep), nn.Tanh())
        self.head = nn.Linear(cfg.dim_rep, cfg.dim_out)
        self._init_weights()

    def _init_weights(self):
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear) and not name.endswith("fuse.weights") \
                    and not name.endswith("aggregate.weights"):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    # -- input checks -----------------------------------------------------------------
    def check_input(self, x: torch.Tensor, dt_scale: float = 1.0, dt: torch.Tensor | None = None):
        cfg = self.config
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[2:] != (cfg.num_joints, cfg.dim_in):
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"input must have shape (batch, frames, {cfg.num_joints}, {cfg.dim_in}), got {shape}")
        if x.shape[1] < 1:
            raise ValueError("input has no frames")
        if not torch.isfinite(x).all():
            raise ValueError("input contains NaN or infinite values")
        if not dt_scale > 0:
            raise ValueError(f"dt_scale must be > 0, got {dt_scale}")
        if dt is not None:
            if dt.shape != x.shape[:2]:
                raise ValueError(f"dt must have shape (batch, frames) = {tuple(x.shape[:2])}, got {tuple(dt.shape)}")
            if not (torch.isfinite(dt).all() and (dt > 0).all()):
                raise ValueError("dt must be finite and > 0 for every frame")

    # -- forward ----------------------------------------------------------------------
    def embed(self, x: torch.Tensor, linear=None) -> torch.Tensor:
        """Tokens (..., J, 3) -> (..., J, D): the joint embedding plus the per-joint one.
        `linear`: a layer to use instead of `joints_embed`, such as its
        `hummuss.packed_linear` copy in a streaming step."""
        if self.config.center_input:
            x = root_relative_2d(x)
        return (self.joints_embed if linear is None else linear)(x) + self.pos_embed[0]
    def _trunk(self, x, dt_scale=1.0, dt=None) -> torch.Tensor:
        """(B, T, J, 3) -> normalised features, frame-major (T, B, J, D)."""
        self.check_input(x, dt_scale, dt)
        h = self.embed(x.transpose(0, 1).contiguous())  # (T, B, J, D)
        dts = None if dt is None else dt.t()
        for layer in self.layers:
            h = layer.forward_frames(h, dt_scale, dts)
        return self.norm(h)

    def features(self, x, dt_scale=1.0, dt=None) -> torch.Tensor:
        """(B, T, J, 3) -> normalised features (B, T, J, D)."""
        return self._trunk(x, dt_scale, dt).transpose(0, 1).contiguous()

    def representation(self, x, dt_scale=1.0, dt=None) -> torch.Tensor:
        """The motion representation (B, T, J, D_rep)."""
        return self.pre_logits(self._trunk(x, dt_scale, dt)).transpose(0, 1).contiguous()

    def forward(self, x, dt_scale=1.0, dt=None) -> torch.Tensor:
        """x (B, T, J, 3) -> 3D pose (B, T, J, 3). dt (B, T): per-frame step in units
        of the training step; dt_scale multiplies every step."""
        return self.head(self.pre_logits(self._trunk(x, dt_scale, dt))).transpose(0, 1).contiguous()

    def stream(self, batch_size: int = 1, compile: bool | None = None) -> HumMUSSStream:
        """A frame-by-frame stepper (causal models only); see hummuss.stream.

        compile: None (default) streams eagerly at first and then through torch.compile where
        a compiler exists; True compiles from the first frame, False never. Compiled is faster
        after a one-off compilation and falls back to eager execution if compilation fails."""
        return HumMUSSStream(self, batch_size, compile=compile)

    # -- accounting -------------------------------------------------------------------
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def parameter_breakdown(self) -> dict[str, int]:
        """Parameter count per part: embedding, spatial and temporal blocks, fusion, head."""
        def count(modules):
            return sum(p.numel() for m in modules for p in m.parameters())

        layers = self.layers
        return {
            "embedding": count([self.joints_embed]) + self.pos_embed.numel(),
            "spatial blocks": count([b for l in layers for b in (l.spatial_st, l.spatial_ts)]),
            "temporal blocks": count([b for l in layers for b in (l.temporal_st, l.temporal_ts)]),
            "stream fusion": count([l.fuse for l in layers]),
            "final norm": count([self.norm]),
            "representation head": count([self.pre_logits]),
            "output head": count([self.head]),
        }

    def macs_per_frame(self, frames: int = 1) -> int:
        """Multiply-accumulates to produce one frame's output when streaming.

        Linear layers count in*out per token; a temporal DSSM step counts 6 per mode
        and channel for the state update (complex * complex + complex * real; 8 with
        first-order hold, whose update adds dB_prev u_{t-1}) plus
        2 per mode, channel and read-out; a spatial DSSM over the J joints counts its
        direct causal convolution, J (J + 1) / 2 per channel, read-out and direction.
        The count does not depend on `frames` (the recurrence has constant cost).
        """
        cfg = self.config
        J, D, H = cfg.num_joints, cfg.dim, int(round(cfg.expand * cfg.dim))
        M = cfg.state_size // 2
        foh = cfg.discretization == "foh"  # + dB_prev u_{t-1}: one more complex * real per mode
        block_linear = 2 * D * H + H * D  # proj_id, proj_in, proj_out per token

        def agg(n):
            return n * H * n if cfg.gdssm_aggregation == "learned" else 0

        spatial = J * (block_linear + agg(3)) + 2 * cfg.spatial_channels * H * J * (J + 1) // 2
        t_dirs = 1 if cfg.causal else 2
        temporal = J * (block_linear + agg(t_dirs + 1)
                        + t_dirs * H * ((6 + 2 * foh) * M + 2 * M * cfg.temporal_channels))
        fuse = J * 2 * D * 2 if cfg.stream_fusion == "learned" else 0
        per_layer = 2 * (spatial + temporal) + fuse
        head = J * (cfg.dim_in * D + D * cfg.dim_rep + cfg.dim_rep * cfg.dim_out)
        return cfg.depth * per_layer + head

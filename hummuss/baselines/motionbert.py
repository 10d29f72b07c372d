"""MotionBERT's DSTformer, faithful to Walter0807/MotionBERT `lib/model/DSTformer.py`.

    x (B, F, J, 3) = (x, y, confidence)
    -> joints_embed Linear(3 -> d) + pos_embed (1, J, d) + temp_embed[:, :F] (1, maxlen, 1, d)
    -> depth x [ x_st = Block_st(x), x_ts = Block_ts(x) (same input),
                 a = softmax(ts_attn(concat[x_st, x_ts])) per token, x = a0 x_st + a1 x_ts ]
    -> norm -> pre_logits (fc: Linear(d -> dim_rep), tanh)   the motion representation
    -> head Linear(dim_rep -> 3)

State-dict keys equal the original's, so the repository's `.bin` checkpoints load
(`load_motionbert_checkpoint`). Presets: "full" (MotionBERT, 42,466,317 parameters),
"lite" (MotionBERT-Lite, 16,001,549), and small "cpu" and "smoke" models.
The model is non-causal over its clip and has no notion of time step; online use re-runs
the last `window` frames for each new frame (`MotionBERT.stream`).
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from hummuss.baselines.attention import LN_EPS, Block
from hummuss.config import PresetConfig
from hummuss.windows import sliding_window_forward

__all__ = ["MotionBERT", "MotionBERTConfig", "MotionBERTStream", "config_from_state_dict",
           "load_motionbert_checkpoint", "sliding_window_forward"]

@dataclass
class MotionBERTConfig(PresetConfig):
    """DSTformer hyper-parameters; defaults are the original class defaults (= lite)."""

    dim_in: int = 3  # (x, y, confidence)
    dim_out: int = 3
    dim_feat: int = 256
    dim_rep: int = 512
    depth: int = 5
    num_heads: int = 8
    mlp_ratio: float = 4.0
    num_joints: int = 17
    maxlen: int = 243
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    att_fuse: bool = True
    # "original": DSTformer's init (below). "small-data": the temporal embedding starts at 0,
    # joints_embed at PyTorch's default scale and every residual branch's output projection
    # (attention proj, MLP fc2) at 0, so each block starts as the identity. At the `cpu`
    # scale the original init leaves the model stuck at the mean pose: a random per-frame
    # temp_embed as large as the input signal makes the output jitter, the velocity loss
    # (x20) dominates, and the first steps make the output input-independent.
    init: str = "original"

    PRESETS = {
        "full": dict(dim_feat=512, mlp_ratio=2.0),  # configs/pretrain/MB_pretrain.yaml
        "lite": dict(dim_feat=256, mlp_ratio=4.0),  # configs/pretrain/MB_lite.yaml
        "cpu": dict(dim_feat=64, depth=2, num_heads=4, mlp_ratio=2.0, init="small-data"),
        # full vs lite, scaled down
        "cpu-full": dict(dim_feat=128, depth=2, num_heads=4, mlp_ratio=2.0, init="small-data"),
        "smoke": dict(dim_feat=32, depth=1, num_heads=2, mlp_ratio=2.0),
    }

    def __post_init__(self):
        for name in ("dim_in", "dim_out", "dim_feat", "dim_rep", "depth", "num_heads",
                     "num_joints", "maxlen"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"MotionBERTConfig.{name} must be a positive int, got {value!r}")
        if self.dim_feat % self.num_heads:
            raise ValueError(f"MotionBERTConfig.dim_feat={self.dim_feat} must be divisible by "
                             f"num_heads={self.num_heads}")
        if not int(self.dim_feat * self.mlp_ratio) >= 1:
            raise ValueError(f"MotionBERTConfig.mlp_ratio={self.mlp_ratio} gives an empty MLP")
        if self.init not in ("original", "small-data"):
            raise ValueError(f"MotionBERTConfig.init must be original or small-data, got {self.init!r}")
        for name in ("drop_rate", "attn_drop_rate", "drop_path_rate"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"MotionBERTConfig.{name} must be in [0, 1), got {value!r}")


class MotionBERT(nn.Module):
    """DSTformer: (B, T, J, 3) -> (B, T, J, 3) for T <= maxlen; `representation` gives (B, T, J, dim_rep)."""

    continuous_time = False  # no time step: dt_scale / dt are refused

    def __init__(self, config: MotionBERTConfig | None = None):
        super().__init__()
        cfg = config if config is not None else MotionBERTConfig()
        self.config = cfg
        d = cfg.dim_feat
        # registration order as in the original (temp_embed, pos_embed come first in state_dict)
        self.joints_embed = nn.Linear(cfg.dim_in, d)
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        # stochastic depth rising linearly over the layers (torch.linspace(0, rate, depth));
        # plain floats so the model can be built on the meta device to count parameters
        dpr = [cfg.drop_path_rate * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        common = dict(dim=d, num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio, qkv_bias=cfg.qkv_bias,
                      drop=cfg.drop_rate, attn_drop=cfg.attn_drop_rate)
        self.blocks_st = nn.ModuleList(Block(order="st", drop_path=p, **common) for p in dpr)
        self.blocks_ts = nn.ModuleList(Block(order="ts", drop_path=p, **common) for p in dpr)
        self.norm = nn.LayerNorm(d, eps=LN_EPS)
        self.pre_logits = nn.Sequential(OrderedDict(fc=nn.Linear(d, cfg.dim_rep), act=nn.Tanh()))
        self.head = nn.Linear(cfg.dim_rep, cfg.dim_out)
        self.temp_embed = nn.Parameter(torch.zeros(1, cfg.maxlen, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_joints, d))
        if cfg.att_fuse:
            self.ts_attn = nn.ModuleList(nn.Linear(2 * d, 2) for _ in range(cfg.depth))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The original init: trunc_normal(0.02) embeddings and Linear weights, zero biases,
        LayerNorm (1, 0); the fusion Linear weight 0 and bias 0.5 (so fusion starts at 0.5/0.5)."""
        nn.init.trunc_normal_(self.temp_embed, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.config.att_fuse:
            for lin in self.ts_attn:
                nn.init.zeros_(lin.weight)
                nn.init.constant_(lin.bias, 0.5)
        if self.config.init == "small-data":
            nn.init.zeros_(self.temp_embed)
            self.joints_embed.reset_parameters()
            for block in (*self.blocks_st, *self.blocks_ts):
                for lin in (block.attn_s.proj, block.attn_t.proj, block.mlp_s.fc2, block.mlp_t.fc2):
                    nn.init.zeros_(lin.weight)

    # ---------------------------------------------------------------- forward

    def _check_input(self, x: torch.Tensor, dt_scale, dt) -> torch.Tensor:
        if dt_scale is not None and float(dt_scale) != 1.0:
            raise ValueError(f"MotionBERT has no notion of time step: dt_scale must be None or 1.0, "
                             f"got {dt_scale!r}; feed the resampled sequence as it is")
        if dt is not None and not bool(torch.all(torch.as_tensor(dt) == 1)):
            raise ValueError("MotionBERT has no notion of time step: dt must be None or all 1.0; "
                             "feed the resampled sequence as it is")
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected x as a torch.Tensor (B, T, J, C), got {type(x).__name__}")
        cfg = self.config
        if x.ndim != 4:
            raise ValueError(f"expected x of shape (B, T, {cfg.num_joints}, {cfg.dim_in}), "
                             f"got {x.ndim}-D shape {tuple(x.shape)}")
        B, T, J, C = x.shape
        if J != cfg.num_joints:
            raise ValueError(f"expected {cfg.num_joints} joints at dim 2, got {J} (shape {tuple(x.shape)})")
        if C != cfg.dim_in:
            raise ValueError(f"expected {cfg.dim_in} channels (x, y, confidence) at dim 3, got {C} "
                             f"(shape {tuple(x.shape)})")
        if B < 1 or T < 1:
            raise ValueError(f"expected a non-empty batch and at least one frame, got shape {tuple(x.shape)}")
        if T > cfg.maxlen:
            raise ValueError(f"input has {T} frames but MotionBERT's maxlen is {cfg.maxlen} (its temporal "
                             f"embedding covers {cfg.maxlen} frames); evaluate longer sequences in sliding "
                             f"windows: hummuss.windows.sliding_window_forward(model, x, window={cfg.maxlen})")
        if not x.is_floating_point():
            raise ValueError(f"expected a floating-point input, got dtype {x.dtype}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("input contains NaN or inf values; MotionBERT needs finite (x, y, confidence)")
        return x.to(self.joints_embed.weight.dtype)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        B, F, J, C = x.shape  # x (B, F, J, 3)
        x = self.joints_embed(x.reshape(B * F, J, C)) + self.pos_embed  # (B*F, J, d)
        x = x.reshape(B, F, J, -1) + self.temp_embed[:, :F]  # (B, F, J, d)
        x = self.pos_drop(x.reshape(B * F, J, -1))  # (B*F, J, d)
        for idx, (blk_st, blk_ts) in enumerate(zip(self.blocks_st, self.blocks_ts, strict=True)):
            x_st, x_ts = blk_st(x, F), blk_ts(x, F)  # both (B*F, J, d), from the same input
            if self.config.att_fuse:
                alpha = self.ts_attn[idx](torch.cat([x_st, x_ts], dim=-1)).softmax(dim=-1)  # (B*F, J, 2)
                x = x_st * alpha[..., 0:1] + x_ts * alpha[..., 1:2]
            else:
                x = (x_st + x_ts) * 0.5
        x = self.norm(x).reshape(B, F, J, -1)  # (B, F, J, d)
        return self.pre_logits(x)  # (B, F, J, dim_rep)

    def representation(self, x: torch.Tensor, *, dt_scale=None, dt=None) -> torch.Tensor:
        """The motion representation (B, T, J, dim_rep) of x (B, T, J, 3)."""
        return self._features(self._check_input(x, dt_scale, dt))

    def forward(self, x: torch.Tensor, *, dt_scale=None, dt=None) -> torch.Tensor:
        """3D poses (B, T, J, 3) for x (B, T, J, 3), T <= maxlen. dt_scale / dt: only None or 1."""
        return self.head(self.representation(x, dt_scale=dt_scale, dt=dt))

    # ---------------------------------------------------------------- size and compute

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def macs_per_frame(self, frames: int | None = None) -> int:
        """Multiply-accumulates per output frame when run on a clip of `frames` (default maxlen) frames.

        Counts Linear layers and the attention matmuls (q k^T and attn v); not LayerNorm,
        softmax, GELU or additions. Per token and block: qkv 3d^2 and proj d^2 for each of the
        two attentions, 2 r d^2 for each of the two MLPs, spatial attention 2 J d, temporal 2 F d.
        """
        cfg = self.config
        frames = cfg.maxlen if frames is None else frames
        if not 1 <= frames <= cfg.maxlen:
            raise ValueError(f"frames must be in [1, maxlen={cfg.maxlen}], got {frames}")
        d, J = cfg.dim_feat, cfg.num_joints
        hidden = int(d * cfg.mlp_ratio)
        linear = 2 * (3 * d * d + d * d) + 2 * (2 * d * hidden)  # one block, one token
        attn = 2 * J * d + 2 * frames * d
        per_token = (cfg.dim_in * d  # joints_embed
                     + 2 * cfg.depth * (linear + attn)  # blocks_st and blocks_ts
                     + (cfg.depth * 2 * d * 2 if cfg.att_fuse else 0)  # ts_attn
                     + d * cfg.dim_rep + cfg.dim_rep * cfg.dim_out)  # pre_logits, head
        return J * per_token

    # ---------------------------------------------------------------- streaming

    def stream(self, window: int | None = None, batch_size: int | None = None) -> MotionBERTStream:
        """Online use: each `step` re-runs the last `window` frames (default maxlen)."""
        return MotionBERTStream(self, self.config.maxlen if window is None else window, batch_size)

    # ---------------------------------------------------------------- checkpoints

    def load_motionbert_checkpoint(self, path: str | os.PathLike) -> MotionBERT:
        """Load an original-repository `.bin` (or one from `save_motionbert_checkpoint`) in place."""
        load_motionbert_checkpoint(path, self)
        return self

    def save_motionbert_checkpoint(self, path: str | os.PathLike) -> None:
        """Write `{"model_pos": {"module." + key: tensor}}`, the layout of the original train.py."""
        state = OrderedDict(("module." + k, v.detach().clone()) for k, v in self.state_dict().items())
        torch.save({"model_pos": state}, path)


class MotionBERTStream:
    """Frame-by-frame wrapper: keeps the last `window` frames and returns the newest frame's pose.

    Before `window` frames have arrived it runs on the frames seen so far. Each step costs a
    full forward over up to `window` frames: this is how a transformer runs online.
    """

    def __init__(self, model: MotionBERT, window: int, batch_size: int | None = None):
        if not 1 <= window <= model.config.maxlen:
            raise ValueError(f"window must be in [1, maxlen={model.config.maxlen}], got {window}")
        self.model = model
        self.window = window
        self.batch_size = batch_size
        self.reset()

    def reset(self) -> None:
        self._frames: torch.Tensor | None = None  # (B, <= window, J, C)
        self.frames_seen = 0

    def prefill(self, x: torch.Tensor) -> None:
        """Start from past frames x (B, t, J, 3) without predicting them (keeps the last `window`)."""
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise ValueError(f"prefill expects frames of shape (B, t, J, C), got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        if self.batch_size is not None and x.shape[0] != self.batch_size:
            raise ValueError(f"stream has batch size {self.batch_size}, got frames of batch {x.shape[0]}")
        self.reset()
        self.model._check_input(x[:, -self.window:], None, None)
        self._frames = x[:, -self.window:].clone()
        self.frames_seen = x.shape[1]

    def step(self, x_t: torch.Tensor, dt=None) -> torch.Tensor:
        """x_t (B, J, 3) -> pose (B, J, 3) of that frame."""
        cfg = self.model.config
        if not isinstance(x_t, torch.Tensor) or x_t.ndim != 3:
            shape = tuple(x_t.shape) if isinstance(x_t, torch.Tensor) else type(x_t).__name__
            raise ValueError(f"step expects one frame of shape (B, {cfg.num_joints}, {cfg.dim_in}), got {shape}")
        expected_b = self.batch_size if self._frames is None else self._frames.shape[0]
        if expected_b is not None and x_t.shape[0] != expected_b:
            raise ValueError(f"stream has batch size {expected_b}, got a frame of batch {x_t.shape[0]}; "
                             f"call reset() to start a new stream")
        frame = x_t[:, None]  # (B, 1, J, C)
        buf = frame if self._frames is None else torch.cat([self._frames, frame], dim=1)[:, -self.window:]
        with torch.no_grad():
            y = self.model(buf, dt=dt)  # validates shape and values; (B, n, J, 3)
        self._frames = buf
        self.frames_seen += 1
        return y[:, -1]


# -------------------------------------------------------------------- checkpoint loading

_NUMPY_SCALAR_TYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                       "uint64", "float16", "float32", "float64", "complex64", "complex128")


def _numpy_safe_globals() -> list:
    """numpy scalars and dtypes, which the original train.py pickles (`min_loss` is a numpy
    float64); under either module name (numpy 1 `numpy.core`, numpy 2 `numpy._core`)."""
    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
    dtype_classes = [type(np.dtype(t)) for t in _NUMPY_SCALAR_TYPES]  # e.g. numpy.dtypes.Float64DType
    return [scalar, np.dtype, *dtype_classes, (scalar, "numpy.core.multiarray.scalar"),
            (scalar, "numpy._core.multiarray.scalar")]


def _reason(err: Exception) -> str:
    """The informative line of a torch.load error (the weights-only ones bury it)."""
    text = str(err)
    for marker in ("WeightsUnpickler error:", "Unsupported global:"):
        if marker in text:
            tail = text.split(marker, 1)[1].strip().splitlines()
            return f"{marker} {tail[0] if tail else ''}".strip()
    return text.splitlines()[0] if text else ""


def _read_checkpoint(path: str | os.PathLike) -> dict:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"MotionBERT checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated / not a torch file / disallowed pickled objects
        raise ValueError(f"could not read MotionBERT checkpoint {path}: {type(err).__name__}: "
                         f"{_reason(err)} (expected a torch.save file "
                         f"with a 'model_pos' state dict, loadable with weights_only=True)") from err
    if not isinstance(obj, dict):
        raise ValueError(f"MotionBERT checkpoint {path} holds a {type(obj).__name__}; expected a dict "
                         f"with a 'model_pos' state dict")
    if "model_pos" in obj:
        state = obj["model_pos"]
    elif obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = obj  # a bare state dict
    else:
        raise ValueError(f"MotionBERT checkpoint {path} has no 'model_pos' entry; top-level keys: "
                         f"{', '.join(map(str, list(obj)[:10]))}")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"'model_pos' in {path} is not a state dict of tensors")
    return OrderedDict((k[len("module."):] if k.startswith("module.") else k, v) for k, v in state.items())


def _listing(names: list[str], limit: int = 20) -> str:
    head = ", ".join(names[:limit])
    return head + (f", ... and {len(names) - limit} more" if len(names) > limit else "")


def config_from_state_dict(state: dict, num_heads: int = 8) -> MotionBERTConfig:
    """Infer a config from a (prefix-stripped) state dict; the head count is not stored, give it."""
    try:
        d, dim_in = state["joints_embed.weight"].shape
        depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks_st\.(\d+)\.", k)))
        hidden = state["blocks_st.0.mlp_s.fc1.weight"].shape[0]
        return MotionBERTConfig(
            dim_in=dim_in, dim_out=state["head.weight"].shape[0], dim_feat=d,
            dim_rep=state["pre_logits.fc.weight"].shape[0], depth=depth, num_heads=num_heads,
            mlp_ratio=hidden / d, num_joints=state["pos_embed"].shape[1],
            maxlen=state["temp_embed"].shape[1], qkv_bias="blocks_st.0.attn_s.qkv.bias" in state,
            att_fuse="ts_attn.0.weight" in state)
    except (KeyError, ValueError) as err:
        raise ValueError(f"state dict is not a DSTformer's: cannot infer its config ({err})") from err


def load_motionbert_checkpoint(path: str | os.PathLike, model: MotionBERT | None = None,
                               num_heads: int = 8) -> MotionBERT:
    """Load the original repository's `.bin` (`{"model_pos": {"module." + key: tensor}}`).

    Into `model` if given, else into a new MotionBERT whose config is read off the tensor
    shapes (with `num_heads`, which shapes do not tell; 8 in every released config).
    Missing keys, unexpected keys and wrong shapes raise ValueError listing them.
    Returns the model.
    """
    state = _read_checkpoint(path)
    if model is None:
        model = MotionBERT(config_from_state_dict(state, num_heads))
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(v.shape)})"
             for k, v in own.items() if k in state and state[k].shape != v.shape]
    problems = []
    if missing:
        problems.append(f"missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listing(unexpected)}")
    if wrong:
        problems.append(f"wrong shapes: {_listing(wrong)}")
    if problems:
        raise ValueError(f"MotionBERT checkpoint {os.fspath(path)} does not fit the model "
                         f"(dim_feat={model.config.dim_feat}, depth={model.config.depth}): "
                         + "; ".join(problems))
    model.load_state_dict(state, strict=True)
    return model

"""Evaluate a sequence longer than a model's context in (overlapping) windows."""

from __future__ import annotations

from collections.abc import Callable

import torch


def window_starts(frames: int, window: int, stride: int | None = None) -> list[int]:
    """Start indices of windows of `window` frames covering `frames` frames.

    Windows start every `stride` frames (default: `window`, no overlap); the last window is
    aligned to the end so every frame is covered. A sequence no longer than `window` is one
    window starting at 0.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1 frame, got {window}")
    stride = window if stride is None else stride
    if not 1 <= stride <= window:
        raise ValueError(f"stride must be in [1, window={window}] so windows leave no gaps, got {stride}")
    if frames < 1:
        raise ValueError(f"need at least 1 frame, got {frames}")
    if frames <= window:
        return [0]
    starts = list(range(0, frames - window + 1, stride))
    if starts[-1] != frames - window:
        starts.append(frames - window)
    return starts


def sliding_window_forward(model: Callable[..., torch.Tensor], x: torch.Tensor, window: int,
                           stride: int | None = None, **kwargs) -> torch.Tensor:
    """Run `model` on windows of `window` frames of x (B, T, J, C) -> (B, T, J, C_out).

    Works with any model mapping (B, t, J, C) -> (B, t, J, C_out) for t <= window; `kwargs`
    (e.g. `dt_scale=2.0`) go unchanged to every call. Frames covered by several windows get
    the mean of their predictions. With T <= window this is just `model(x, **kwargs)`.
    """
    if x.ndim < 2:
        raise ValueError(f"expected x of shape (B, T, ...), got shape {tuple(x.shape)}")
    T = x.shape[1]
    starts = window_starts(T, window, stride)
    if len(starts) == 1:
        return model(x, **kwargs)
    out = None
    count = torch.zeros(T, dtype=x.dtype, device=x.device)  # (T,) windows covering each frame
    for s in starts:
        y = model(x[:, s:s + window], **kwargs)  # (B, window, J, C_out)
        if out is None:
            out = y.new_zeros((y.shape[0], T) + tuple(y.shape[2:]))
        out[:, s:s + window] += y
        count[s:s + window] += 1
    return out / count.view(1, T, *([1] * (out.ndim - 2)))

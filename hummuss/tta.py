"""Flip test-time augmentation (MotionBERT's `flip_data` TTA), usable with any pose model."""

from __future__ import annotations

from collections.abc import Callable

import torch

from hummuss.data.skeleton import flip_pose


def flip_tta(model_fn: Callable[..., torch.Tensor], x: torch.Tensor, **kwargs) -> torch.Tensor:
    """(f(x) + flip(f(flip(x)))) / 2 for x (..., 17, C) -> (..., 17, C_out).

    `flip` negates the x coordinate and swaps left and right joints (`flip_pose`), as in
    MotionBERT's evaluation; `kwargs` (e.g. `dt_scale`) go unchanged to both calls.
    """
    y = model_fn(x, **kwargs)
    y_flip = flip_pose(model_fn(flip_pose(x), **kwargs))
    return (y + y_flip) / 2

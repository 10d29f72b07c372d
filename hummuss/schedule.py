"""Learning-rate schedules of the trainer, as a factor of the configured rate per optimiser step."""

from __future__ import annotations

import math

SCHEDULES = ("exponential", "cosine")


def lr_factor(config, step: int, steps_per_epoch: int) -> float:  # config: a TrainConfig
    """The learning rate of optimiser step `step` (0-based) as a fraction of `config.lr`.

    Linear warm-up over `warmup_steps`, then either x`lr_decay` per finished epoch
    (exponential) or a half cosine from 1 to `min_lr_ratio` over the remaining steps of
    `epochs x steps_per_epoch` (cosine).
    """
    warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    if config.schedule == "exponential":
        return warm * config.lr_decay ** (step // max(1, steps_per_epoch))
    total = max(1, config.epochs * steps_per_epoch - config.warmup_steps)
    done = min(1.0, max(0, step - config.warmup_steps) / total)
    return warm * (config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * done)))

"""Samplers and pruners by name, seeded so that a one-worker sweep is reproducible."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import optuna

SAMPLERS = ("tpe", "gp", "random", "grid")
PRUNERS = ("median", "hyperband", "none")


def derive_seed(seed: int, *salt: Any) -> int:
    """A 31-bit seed from `seed` and `salt` (stable across processes and machines)."""
    digest = hashlib.sha256(json.dumps([seed, *salt], default=str).encode()).hexdigest()
    return int(digest[:8], 16) & 0x7FFFFFFF


def make_sampler(kind: str, seed: int) -> optuna.samplers.BaseSampler:
    """`tpe`, `gp`, `random` or `grid` (every combination once, in a seeded order:
    `BruteForceSampler`, which also skips the combinations already tried, e.g. the paper's)."""
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if kind == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "grid":
        return optuna.samplers.BruteForceSampler(seed=seed)
    raise ValueError(f"unknown sampler {kind!r}; known: {', '.join(SAMPLERS)}")


def make_pruner(kind: str, epochs: int) -> optuna.pruners.BasePruner:
    """`median` (after 5 trials, from epoch 1), `hyperband` (1 to `epochs` epochs) or `none`."""
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, epochs), reduction_factor=3)
    if kind == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {kind!r}; known: {', '.join(PRUNERS)}")

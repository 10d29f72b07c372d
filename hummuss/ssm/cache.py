"""Values derived from a DSSM's parameters, kept while the parameters do not change.

`ParamCache` holds evaluation-time kernels, convolution operators and read-out weights
(no autograd) until a parameter changes. `cexp` is the complex exponential through real
exp, cos and sin, which torch vectorises; its complex exp on CPU is about 5x slower. Every
kernel and discretisation of hummuss.ssm goes through it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

CACHE_MAX_BYTES = 16 * 2**20  # evaluation caches keep no value larger than this

# Optimiser steps taken in this process, counted by a hook on every torch.optim optimiser: a
# fused optimiser (AdamW(fused=True), which the trainer uses) writes the parameters in place
# without bumping their version counters, so versions alone would keep serving values from
# before the step.
_optimizer_steps = 0


def _count_optimizer_step(optimizer, args, kwargs) -> None:
    global _optimizer_steps
    _optimizer_steps += 1


register_optimizer_step_post_hook(_count_optimizer_step)


def cexp(z: torch.Tensor) -> torch.Tensor:
    """exp of a complex tensor through real exp, cos and sin (vectorised on CPU)."""
    return torch.polar(torch.exp(z.real), z.imag)


class ParamCache:
    """Values derived from parameters, reused while no parameter changes (no autograd).

    With autograd enabled (training) `get` always recomputes, so gradients flow. Without
    it (evaluation, streaming) a value is kept under `key` until one of `params` changes:
    an in-place update or load_state_dict bumps the tensor's version, `.to()` moves it, and
    any torch.optim optimiser's step (fused ones bump no version) counts as a change.
    Writes through `.data` bump nothing: call `clear` after them.
    Values larger than CACHE_MAX_BYTES (pass their size as `nbytes`) are not kept: long
    sequences' kernels and spectra are cheap to recompute next to their convolution.
    """

    def __init__(self, maxsize: int = 16):
        self.maxsize, self._store = maxsize, {}

    def get(self, key, params: Sequence[torch.Tensor], compute: Callable[[], object], nbytes: int = 0):
        if torch.is_grad_enabled() or nbytes > CACHE_MAX_BYTES:
            return compute()
        version = (_optimizer_steps, tuple((p._version, p.data_ptr()) for p in params))
        hit = self._store.get(key)
        if hit is None or hit[0] != version:
            if len(self._store) >= self.maxsize:
                self._store.clear()
            hit = self._store[key] = (version, compute())
        return hit[1]

    def clear(self):
        self._store.clear()

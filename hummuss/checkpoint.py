"""Training checkpoints: atomic writes, guarded loads, and the random-number state.

A checkpoint is a dict saved with `torch.save` and read back with `weights_only=True`:
`format` (CHECKPOINT_FORMAT), the model and optimiser state, the schedule, the random
number states (`rng_state`), epoch and step. `save_atomic` writes through a temporary
file and a rename, so a crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

CHECKPOINT_FORMAT = "hummuss-train-v1"

# -- random-number state ------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)

def rng_state(np_rng: np.random.Generator, gen: torch.Generator) -> dict:
    return {"torch": torch.get_rng_state(), "generator": gen.get_state(),
            "numpy": np_rng.bit_generator.state, "python": random.getstate()}

def set_rng_state(state: dict, np_rng: np.random.Generator, gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    gen.set_state(state["generator"])
    np_rng.bit_generator.state = state["numpy"]
    random.setstate(_as_tuple(state["python"]))

def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, list | tuple) else x

# -- files ----------------------------------------------------------------------------
def save_atomic(payload: dict, path: Path) -> None:
    """torch.save to `path` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

def load_checkpoint(path: str | Path) -> dict:
    """Load a trainer checkpoint (weights_only), with clear errors for foreign files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, not a torch file, or holds arbitrary objects
        raise ValueError(f"checkpoint {path} cannot be read ({type(err).__name__}: {err}); "
                         f"it is truncated or not a hummuss-suite checkpoint") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint {path} is not a hummuss-suite training checkpoint "
                         f"(expected format {CHECKPOINT_FORMAT!r}); for MotionBERT's own .bin files "
                         f"use MotionBERT.load_motionbert_checkpoint")
    return payload


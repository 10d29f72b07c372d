"""Training checkpoints: atomic, checksummed writes, verified loads, and the random-number state.

A checkpoint is a dict saved with `torch.save` and read back with `weights_only=True`:
`format` (CHECKPOINT_FORMAT), the model and optimiser state, the schedule, the random
number states (`rng_state`), epoch and step, and `checksum`: sha256 over every value of
the dict (tensors by dtype, shape and bytes; see `payload_digest`). `save_atomic` adds the
checksum and writes through a temporary file and a rename, so a crash mid-write leaves
the previous checkpoint intact; with `keep_previous=True` the file it replaces is kept as
`<name>.prev.pt` (`previous_path`). `load_checkpoint` recomputes the checksum, so a byte
changed on disk (in the weights or anywhere else) is an error, not a silent resume.
`load_resumable` returns the newest good one of a checkpoint and its previous copy, moving
a corrupt or truncated file aside (`<name>.corrupt`) with a warning.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

CHECKPOINT_FORMAT = "hummuss-train-v2"  # v2: with a checksum
LEGACY_FORMATS = ("hummuss-train-v1",)  # read without a checksum (written before there was one)

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

# -- checksum -------------------------------------------------------------------------
def _feed(h, value) -> None:
    """Feed `value` to the hash `h` unambiguously (type tags and lengths before contents)."""
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    elif isinstance(value, np.ndarray):
        a = np.ascontiguousarray(value)
        h.update(f"A{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a.reshape(-1).view(np.uint8)))
    elif isinstance(value, dict):
        h.update(f"D{len(value)}".encode())
        for key in sorted(value, key=lambda k: (type(k).__name__, repr(k))):
            _feed(h, key)
            _feed(h, value[key])
    elif isinstance(value, list | tuple):  # one tag: a tuple may come back as a list
        h.update(f"L{len(value)}".encode())
        for item in value:
            _feed(h, item)
    else:  # str, bytes, int, float, bool, None, torch.Size, ...
        text = repr(value).encode()
        h.update(f"S{type(value).__name__}:{len(text)}:".encode())
        h.update(text)


def payload_digest(payload: dict) -> str:
    """'sha256:<hex>' over every entry of `payload` but `checksum`."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in payload.items() if k != "checksum"})
    return f"sha256:{h.hexdigest()}"


# -- files ----------------------------------------------------------------------------
def previous_path(path: Path) -> Path:
    """Where `save_atomic(..., keep_previous=True)` keeps the replaced file: last.pt -> last.prev.pt."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_atomic(payload: dict, path: Path, keep_previous: bool = False) -> None:
    """torch.save `payload` with its checksum to `path` through a temporary file and a rename;
    with `keep_previous`, the file it replaces becomes `previous_path(path)`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {**payload, "checksum": payload_digest(payload)}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with signals_deferred():  # Ctrl-C mid-write: torch.save would turn it into a RuntimeError
        try:
            with open(tmp, "wb") as f:
                torch.save(payload, f)
                f.flush()
                os.fsync(f.fileno())
            if keep_previous and path.exists():
                os.replace(path, previous_path(path))  # a crash before the next line leaves only .prev
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def signals_deferred(signums=(signal.SIGINT, signal.SIGTERM)):
    """Hold SIGINT and SIGTERM until the block ends, then deliver the first one received to
    the handler that was in place (so Ctrl-C raises KeyboardInterrupt after a checkpoint
    write, never inside torch.save). Only the main thread can install handlers; elsewhere
    the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {s: signal.signal(s, lambda signum, _frame: received.append(signum)) for s in signums}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        if received:
            signal.raise_signal(received[0])


def load_checkpoint(path: str | Path) -> dict:
    """Load a trainer checkpoint (weights_only) and verify its checksum; ValueError naming
    the file when it is foreign, truncated or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, not a torch file, or holds arbitrary objects
        reason = str(err).splitlines()[0] if str(err) else ""
        raise ValueError(f"checkpoint {path} cannot be read ({type(err).__name__}: {reason}); "
                         f"it is truncated or not a hummuss-suite checkpoint") from None
    if not isinstance(payload, dict) or payload.get("format") not in (CHECKPOINT_FORMAT, *LEGACY_FORMATS):
        raise ValueError(f"checkpoint {path} is not a hummuss-suite training checkpoint "
                         f"(expected format {CHECKPOINT_FORMAT!r}); for MotionBERT's own .bin files "
                         f"use MotionBERT.load_motionbert_checkpoint")
    if payload["format"] == CHECKPOINT_FORMAT and payload.get("checksum") != payload_digest(payload):
        raise ValueError(f"checkpoint {path} is corrupt: its contents do not match the checksum written "
                         f"with it (the file changed after it was written)")
    return payload


def load_resumable(path: str | Path, warn: Callable[[str], None] = print,
                   quarantine: bool = True) -> tuple[dict | None, Path | None]:
    """(payload, file) of the newest good checkpoint of `path` and `previous_path(path)`, or
    (None, None) when neither exists or neither is good (then training starts afresh). A bad
    file is reported through `warn` and, with `quarantine`, renamed to `<name>.corrupt`, so
    it is never rotated into the previous slot."""
    path = Path(path)
    tried = []
    for candidate in (path, previous_path(path)):
        if not candidate.exists():
            continue
        try:
            return load_checkpoint(candidate), candidate
        except ValueError as err:
            tried.append(candidate)
            kept = ""
            if quarantine:
                with contextlib.suppress(OSError):
                    os.replace(candidate, candidate.with_name(candidate.name + ".corrupt"))
                    kept = f" (kept as {candidate.name}.corrupt)"
            then = f"; trying the previous one, {previous_path(path).name}" if candidate == path else ""
            warn(f"warning: {err}{kept}{then}")
    if tried:
        warn(f"warning: no usable checkpoint among {', '.join(p.name for p in tried)} in {path.parent}; "
             f"training starts afresh")
    return None, None

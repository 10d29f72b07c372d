"""A numpy cache for converted data files, written atomically, read without pickle.

Pickle (and numpy object arrays) can run code, so readers unpickle a file only if
it lies under the exact path the user named (`safe_unpickle`, `load_object_npz`),
convert it to plain arrays once, and store them here. Later reads load the cache
with `allow_pickle=False` and never unpickle.

Location: `$HUMMUSS_CACHE_DIR`, default `~/.cache/hummuss`. Entries are keyed by
the source's absolute path, size and modification time (for a folder: those of
every file in it), so an edited file gets a new entry.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

ENV_VAR = "HUMMUSS_CACHE_DIR"


def cache_dir() -> Path:
    """The cache folder (not created here)."""
    return Path(os.environ.get(ENV_VAR) or Path.home() / ".cache" / "hummuss").expanduser()


def fingerprint(path, files: Iterable[Path] | None = None) -> str:
    """Hex digest of the absolute path, size and mtime of `path` (or of each of `files`)."""
    path = Path(path).absolute()
    h = hashlib.sha256(str(path).encode())
    for f in ([path] if files is None else sorted(Path(f).absolute() for f in files)):
        st = f.stat()
        h.update(f"\0{f}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


def cache_path(path, kind: str, files: Iterable[Path] | None = None) -> Path:
    """Where the cache entry of `path` for reader `kind` lives."""
    return cache_dir() / f"{kind}-{fingerprint(path, files)}.npz"


def save_arrays(target, arrays: dict[str, np.ndarray]) -> None:
    """Write `arrays` to `target` (.npz) atomically: a temporary file in the same folder,
    then os.replace, so a failure never leaves a partial file at `target`.
    Object arrays are refused (they would need pickle to read back)."""
    target = Path(target)
    for key, value in arrays.items():
        if np.asarray(value).dtype == object:
            raise ValueError(f"cache entry {key!r} is an object array; expected numeric, bool or str data")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()})
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_arrays(path) -> dict[str, np.ndarray]:
    """Every array of a cache file (never unpickles)."""
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def cached_arrays(path, kind: str, build: Callable[[], dict[str, np.ndarray]],
                  files: Iterable[Path] | None = None) -> dict[str, np.ndarray]:
    """The cached conversion of `path`, building (and caching) it on first use."""
    target = cache_path(path, kind, files)
    if target.exists():
        try:
            return load_arrays(target)
        except (OSError, ValueError, zipfile.BadZipFile):
            pass  # unreadable entry: rebuild it
    arrays = build()
    save_arrays(target, arrays)
    return arrays


def _check_within(file, root) -> Path:
    """`file` resolved, if it is `root` itself or inside it; else ValueError."""
    file_r, root_r = Path(file).resolve(), Path(root).resolve()
    if file_r != root_r and root_r not in file_r.parents:
        raise ValueError(f"refusing to unpickle {file}: it is not under the path you named ({root})")
    return file_r


def safe_unpickle(file, root):
    """Unpickle `file` only if it lies under `root` (the path the user named)."""
    file_r = _check_within(file, root)
    with open(file_r, "rb") as fh:
        try:
            return pickle.load(fh)
        except Exception as err:
            raise ValueError(f"{file}: cannot read pickle: {err}") from err


def load_object_npz(file, root, key: str = "data"):
    """`np.load(file, allow_pickle=True)[key]` (`.item()` for 0-d object arrays), only
    for files under `root`."""
    file_r = _check_within(file, root)
    try:
        with np.load(file_r, allow_pickle=True) as data:
            if key not in data.files:
                raise ValueError(f"{file}: missing key {key!r}; found {', '.join(data.files) or 'nothing'}")
            value = data[key]
    except (OSError, zipfile.BadZipFile, pickle.UnpicklingError, EOFError) as err:
        raise ValueError(f"{file}: cannot read npz: {err}") from err
    return value.item() if value.dtype == object and value.ndim == 0 else value

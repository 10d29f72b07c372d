"""A numpy cache for converted data files, written atomically, read without pickle.

Readers unpickle a file (or an npz object array) only if it lies under the exact path
the user named, and only with the restricted unpickler of `hummuss.data.safe_pickle`
(numpy data and plain values; a file that references anything else is refused and no
code runs): `safe_unpickle`, `load_object_npz`. They convert it to plain arrays once and
store them here; later reads load the cache with `allow_pickle=False`.

Location: `$HUMMUSS_CACHE_DIR`, default `~/.cache/hummuss`. Entries are keyed by
the source's absolute path, size and modification time (for a folder: those of
every file in it), so an edited file gets a new entry.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from hummuss.data.safe_pickle import load_npz_value, read_pickle

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
    """Unpickle `file` (only numpy data and plain values) if it lies under `root`."""
    _check_within(file, root)
    return read_pickle(file)


def load_object_npz(file, root, key: str = "data"):
    """Array `key` of the npz `file` (`.item()` for a 0-d object array), only for files
    under `root`; object arrays go through the restricted unpickler, never allow_pickle=True."""
    _check_within(file, root)
    return load_npz_value(file, key)

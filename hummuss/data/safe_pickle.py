"""Reading pickles and npz object arrays without running code.

A pickle names the callables that rebuild its objects, and `pickle.load` calls whatever
it names, so opening a crafted file runs its author's code. The data formats we read
(the LCN/MotionBERT pickles, MotionBERT's clip pickles, the P-STMO npz files) hold only
dicts, lists, tuples, strings, bytes, numbers, None and numpy arrays, dtypes and scalars.
`RestrictedUnpickler` admits exactly the callables numpy's own pickles name for those
(listed in `ALLOWED`) and refuses every other reference with `ForbiddenObjectError`,
naming the file and the object. There is no switch to turn this off. `numpy.ndarray`
itself is not handed out (only `_reconstruct` may use its name): called with a buffer
and an object dtype it would turn the file's bytes into object pointers. numpy itself
refuses object dtypes in `_frombuffer`, `scalar` and an array's pickled state, but it
trusts a dtype's pickled flags, so `numpy.dtype` is admitted only as numpy's pickles call
it (a type string) and every dtype of the result is checked against a fresh one of the
same layout (`_check_built`) before anything reads the data.

Protocol 2 pickles (as Python 2 and `protocol=2` write them) store bytes through
`_codecs.encode(text, "latin1")`; it is admitted only with that encoding.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

try:  # numpy 2
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # numpy 1
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]


def _latin1_encode(text, encoding="utf-8", errors="strict"):
    """`_codecs.encode` as protocol 2 pickles use it for bytes: latin-1 only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise ForbiddenObjectError(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


class _NdarrayName:
    """What `numpy.ndarray` in a pickle resolves to: a name `_reconstruct` accepts, not the
    class. Called (or used by NEWOBJ) the class would build an object array over the raw
    bytes of the file (`ndarray(shape, "O", buffer)`): pointers the file chose."""

    def __call__(self, *args, **kwargs):
        raise ForbiddenObjectError("numpy.ndarray called directly (an array over raw bytes)")


_NDARRAY = _NdarrayName()


def _reconstruct(subtype, shape, dtype):
    """numpy's `_reconstruct`, for plain ndarrays only (their state is set by BUILD, which
    numpy checks: an object array's state must be a list of objects)."""
    if subtype is not _NDARRAY:
        raise ForbiddenObjectError(f"_reconstruct of {type(subtype).__name__}")
    return _multiarray._reconstruct(np.ndarray, shape, dtype)


def _dtype(spec, align=False, copy=False):
    """`numpy.dtype` as numpy's pickles call it: a type string and two flags, nothing else
    (other forms would read containers, e.g. a dict of names, and with them arrays)."""
    if not isinstance(spec, str) or not isinstance(align, bool) or not isinstance(copy, bool):
        raise ForbiddenObjectError(f"numpy.dtype called with {type(spec).__name__} (only a type string)")
    return np.dtype(spec, align, copy)


# numpy dtype flags that say an item holds Python objects (NPY_ITEM_REFCOUNT .. NPY_USE_SETITEM)
_OBJECT_FLAGS = 0x7F


def _rebuilt(d: np.dtype) -> np.dtype:
    """`d` built afresh from its layout, so numpy computes its flags itself."""
    if d.subdtype is not None:
        base, shape = d.subdtype
        return np.dtype((_rebuilt(base), shape))
    if d.names is not None:
        return np.dtype({"names": list(d.names), "formats": [_rebuilt(d.fields[n][0]) for n in d.names],
                         "offsets": [d.fields[n][1] for n in d.names], "itemsize": d.itemsize},
                        align=d.isalignedstruct)
    return np.dtype(d.str)


def _check_dtype(d: np.dtype) -> None:
    """A dtype's pickled state sets its flags; numpy trusts them. Flags that deny holding
    objects on a layout that holds them would let an array's raw bytes become pointers."""
    try:
        fresh = _rebuilt(d)
    except Exception:
        raise UnsafeStateError(f"it holds a malformed numpy dtype {d!r}") from None
    if (d.flags & _OBJECT_FLAGS) != (fresh.flags & _OBJECT_FLAGS) or d.itemsize != fresh.itemsize:
        raise UnsafeStateError(f"it holds a numpy dtype {d!r} whose pickled flags or size disagree with its "
                               f"layout (object pointers read from the file's bytes)")


def _check_built(root) -> None:
    """Check every dtype in the unpickled `root` (see `_check_dtype`) before anything reads it."""
    stack, seen = [root], set()
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, list | tuple | set | frozenset):
            stack.extend(obj)
        elif isinstance(obj, np.dtype):
            _check_dtype(obj)
        elif isinstance(obj, np.ndarray | np.generic):
            _check_dtype(obj.dtype)
            if isinstance(obj, np.ndarray) and obj.dtype.hasobject:  # its items are real objects now
                stack.extend(obj.ravel().tolist())  # structured: tuples of fields


# (module, name) as pickles spell them -> the object; numpy 1 wrote numpy.core.*, numpy 2 numpy._core.*
ALLOWED: dict[tuple[str, str], object] = {
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _dtype,
    ("_codecs", "encode"): _latin1_encode,
}
for _module in ("numpy.core", "numpy._core"):
    ALLOWED[(f"{_module}.multiarray", "_reconstruct")] = _reconstruct
    ALLOWED[(f"{_module}.multiarray", "scalar")] = _multiarray.scalar
    ALLOWED[(f"{_module}.numeric", "_frombuffer")] = _numeric._frombuffer


class ForbiddenObjectError(ValueError):
    """A pickle references something other than numpy data and plain values."""


class UnsafeStateError(ForbiddenObjectError):
    """A pickle builds numpy data in a state numpy would read as object pointers."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds only plain values and numpy arrays, dtypes and scalars."""

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise ForbiddenObjectError(f"{module}.{name}") from None

    def persistent_load(self, pid):
        raise ForbiddenObjectError(f"persistent id {str(pid)[:60]!r}")


def _refusal(file, what: str) -> ValueError:
    return ValueError(f"{file}: refusing to load it: it references {what}, which is not numpy data or a "
                      f"plain value (dict, list, str, number); data files may not hold code or other objects")


def restricted_load(fh, file):
    """Unpickle the stream `fh` (from `file`, for messages) with `RestrictedUnpickler`.

    ValueError naming `file`: the forbidden object, or why the bytes are not a pickle."""
    try:
        value = RestrictedUnpickler(fh, encoding="latin1").load()
        _check_built(value)
        return value
    except UnsafeStateError as err:
        raise ValueError(f"{file}: refusing to load it: {err}") from None
    except ForbiddenObjectError as err:
        raise _refusal(file, str(err)) from None
    except MemoryError:
        raise ValueError(f"{file}: cannot read pickle: it claims more memory than there is; "
                         f"the file is corrupt") from None
    except Exception as err:  # truncated, random bytes, a flipped byte: any error of the parser
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"{file}: cannot read pickle ({type(err).__name__}: {reason}); "
                         f"the file is truncated, corrupt or not a pickle") from None


def read_pickle(file):
    """The object pickled in `file`, built without running code (see the module docstring)."""
    with open(file, "rb") as fh:
        return restricted_load(fh, file)


def read_npz_member(file, key: str) -> np.ndarray:
    """Array `key` of the npz `file`; an object array is unpickled by `RestrictedUnpickler`,
    any other with allow_pickle=False. ValueError naming the file for anything unreadable."""
    try:
        with zipfile.ZipFile(file) as archive:
            names = [n[:-4] for n in archive.namelist() if n.endswith(".npy")]
            if key not in names:
                raise ValueError(f"{file}: missing key {key!r}; found {', '.join(names) or 'nothing'}")
            raw = archive.read(f"{key}.npy")  # the zip checks each member's CRC-32
    except (OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError) as err:
        raise ValueError(f"{file}: cannot read npz ({type(err).__name__}: {err}); "
                         f"the file is truncated, corrupt or not an npz archive") from None
    except Exception as err:  # zlib.error of a corrupt compressed member, ...
        raise ValueError(f"{file}: cannot read npz ({type(err).__name__}: {err}); "
                         f"the file is truncated or corrupt") from None
    fh = io.BytesIO(raw)
    try:
        version = npy_format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = npy_format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except Exception as err:
        raise ValueError(f"{file}: member {key}.npy is not a readable .npy array ({err})") from None
    if not dtype.hasobject:
        fh.seek(0)
        try:
            return npy_format.read_array(fh, allow_pickle=False)
        except Exception as err:
            raise ValueError(f"{file}: member {key}.npy cannot be read ({err})") from None
    value = restricted_load(fh, f"{file} (member {key}.npy)")
    if not isinstance(value, np.ndarray) or value.shape != tuple(shape):
        raise ValueError(f"{file}: member {key}.npy holds {type(value).__name__} "
                         f"{getattr(value, 'shape', '')}; its header promised an array of shape {shape}")
    return value


def load_npz_value(file, key: str = "data"):
    """`read_npz_member(file, key)`, with a 0-d object array unwrapped (`.item()`)."""
    value = read_npz_member(Path(file), key)
    return value.item() if value.dtype == object and value.ndim == 0 else value

"""Data sources behind one call: `open_source("synthetic")`, `open_source("h36m:PATH.pkl")`, ...

Spec grammar: `NAME` or `NAME:ARG`. For path sources (h36m, motionbert-clips,
mpi3dhp, bvh) ARG is a file or folder; for `synthetic` ARG is an optional comma
list of key=value options (`synthetic:scale=smoke,seed=3`).
"""

from __future__ import annotations

import os
from importlib import import_module

from hummuss.data.clips import Clips, Sequence
from hummuss.data.source import MotionSource

# source name -> "module:Class"; imported only when opened
SOURCES: dict[str, str] = {
    "synthetic": "hummuss.data.synthetic:SyntheticSource",
    "h36m": "hummuss.data.h36m:H36MSource",
    "motionbert-clips": "hummuss.data.h36m:MotionBERTClipsSource",
    "mpi3dhp": "hummuss.data.mpi3dhp:MPI3DHPSource",
    "bvh": "hummuss.data.bvh:BVHSource",
}
# sources whose ARG is a path that must exist
PATH_SOURCES: frozenset[str] = frozenset({"h36m", "motionbert-clips", "mpi3dhp", "bvh"})

__all__ = ["SOURCES", "Clips", "MotionSource", "Sequence", "open_source", "parse_options", "source_class"]


def source_class(name: str) -> type[MotionSource]:
    """The class registered as `name`; ValueError listing the known names."""
    if name not in SOURCES:
        raise ValueError(f"unknown data source {name!r}; known: {', '.join(sorted(SOURCES))}")
    module, cls = SOURCES[name].split(":")
    return getattr(import_module(module), cls)


def parse_options(arg: str | None) -> dict[str, str]:
    """'a=1,b=x' -> {'a': '1', 'b': 'x'}; '' or None -> {}."""
    out: dict[str, str] = {}
    for item in (arg or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"bad option {item!r}; expected key=value (e.g. scale=smoke)")
        out[key.strip()] = value.strip()
    return out


def open_source(spec: str) -> MotionSource:
    """Open a data source from its spec string (see the module docstring)."""
    name, sep, arg = spec.partition(":")
    name = name.strip()
    cls = source_class(name)
    if name in PATH_SOURCES:
        if not sep or not arg:
            raise ValueError(f"data source {name!r} needs a path: '{name}:PATH'")
        # a source may take options after the path: 'bvh:DIR?units=cm&fps=50'
        path = os.path.expanduser(arg.partition("?")[0])
        if not os.path.exists(path):
            raise FileNotFoundError(f"data source {name!r}: path not found: {path}")
        source = cls(os.path.expanduser(arg))
    elif hasattr(cls, "from_options"):
        source = cls.from_options(parse_options(arg))
    else:
        source = cls(arg) if sep else cls()
    source.spec = spec
    return source

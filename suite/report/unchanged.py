"""Figures not redrawn when nothing they show changed: a digest of a figure's inputs is
written into its PNG (text chunk `hummuss-suite inputs`); the next report draws the figure
again only when the digest it computes differs, or the PNG is gone or was not written by
the suite.

A figure's inputs are what it is drawn from (its studies' tables and selected runs, its
per-epoch histories, the benchmark file) plus the code that draws it: the source of the
`hummuss`, `suite` and `studies` packages and matplotlib's version, so any code change
redraws every figure. Not covered: a data set or checkpoint replaced on disk under the same
run; delete `<out>/figures/` to draw everything again.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pandas as pd

PNG_KEY = "hummuss-suite inputs"  # the PNG text chunk holding the digest
PACKAGES = ("hummuss", "suite", "studies")
_pending: contextvars.ContextVar[str | None] = contextvars.ContextVar("figure_digest", default=None)


@cache
def code_digest() -> str:
    """sha256 over the drawing code: every .py file of the packages (path and bytes) and
    matplotlib's version; computed once per process."""
    import importlib

    import matplotlib

    h = hashlib.sha256(matplotlib.__version__.encode())
    for name in PACKAGES:
        root = Path(importlib.import_module(name).__file__).parent
        for path in sorted(root.rglob("*.py")):
            h.update(str(path.relative_to(root.parent)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def digest(*parts) -> str:
    """sha256 of the figure's inputs (frames as CSV, the rest as sorted JSON) and the code."""
    h = hashlib.sha256(code_digest().encode())
    for part in parts:
        if isinstance(part, pd.DataFrame | pd.Series):
            text = part.to_csv()
        else:
            text = json.dumps(part, sort_keys=True, default=str)
        h.update(text.encode())
        h.update(b"\x00")
    return h.hexdigest()


def stored_digest(path: Path) -> str | None:
    """The digest written into the PNG at `path`, or None (absent, unreadable, none written)."""
    from PIL import Image

    try:
        with Image.open(path) as png:
            return png.text.get(PNG_KEY)
    except (OSError, ValueError, AttributeError):
        return None


def is_current(path: Path, inputs_digest: str) -> bool:
    return stored_digest(path) == inputs_digest


@contextlib.contextmanager
def writing(inputs_digest: str) -> Iterator[None]:
    """While drawing: the PNG that `suite.report.figures.save` writes carries `inputs_digest`."""
    token = _pending.set(inputs_digest)
    try:
        yield
    finally:
        _pending.reset(token)


def png_metadata() -> dict[str, str]:
    """The PNG text chunks for the figure being written (empty outside `writing`)."""
    value = _pending.get()
    return {PNG_KEY: value} if value else {}

"""What the commands share: the usage error, opening the tracker, and the checks that turn
a bad name or value on the command line into a usage error.

Imports nothing else from suite.cli, so every command module (and suite/cli/report.py)
can import it.
"""

from __future__ import annotations

import json
import sys
from typing import NoReturn

from suite.tracking import Tracker, TrackingError, TrackingSettings, load_settings


class UsageError(Exception):
    """A bad name or value on the command line: exit code 2."""


def _fail(err: Exception) -> NoReturn:
    print(f"hummuss-suite: error: {err}", file=sys.stderr)
    raise SystemExit(2) from None  # the store or its settings: a usage error, as a bad name is


def tracking_settings() -> TrackingSettings:
    """The settings of mlflow.yaml; on a missing or bad file, print the error and exit 1."""
    try:
        return load_settings()
    except TrackingError as err:
        _fail(err)


def open_tracker(settings: TrackingSettings | None = None, *, check: bool = True) -> Tracker:
    """The tracker of mlflow.yaml (or of `settings`); when the store cannot be used, print
    the error and exit 1. `check=False` skips the reachability check (child processes)."""
    settings = settings or tracking_settings()
    try:
        return Tracker(settings, check=check)
    except TrackingError as err:
        _fail(err)


def print_json(payload) -> None:
    print(json.dumps(payload, indent=2, default=str))


def get_study(name: str):
    """The registered study `name`, or a usage error naming the known ones."""
    from suite.registry import get_study as lookup

    try:
        return lookup(name)
    except ValueError as err:
        raise UsageError(str(err)) from err


def parse_sets(items: list[str] | None) -> dict[str, str]:
    """`--set KEY=VALUE ...` as a dict (a usage error for an item without `=`)."""
    from hummuss.config import parse_overrides

    try:
        return parse_overrides(items or [])
    except ValueError as err:
        raise UsageError(str(err)) from err


def check_data(specs, splits: tuple[str, ...] = ("train", "test")) -> None:
    """Read and check every data spec in `specs` (`hummuss.data.validate`) before anything is
    logged: a missing, unreadable or unusable file is a usage error naming it."""
    from hummuss.data.validate import DataError, validate_source

    for spec in dict.fromkeys(specs):
        try:
            validate_source(spec, splits)
        except (DataError, FileNotFoundError) as err:
            raise UsageError(str(err)) from None


def run_data_specs(specs) -> list[str]:
    """The data specs of run specs and of the runs they start from (stages), in order."""
    out: list[str] = []
    for spec in specs:
        while spec is not None:
            out.append(spec.data)
            spec = getattr(spec, "init_from", None)
    return list(dict.fromkeys(out))


def parse_seeds(text: str | None) -> tuple[int, ...] | None:
    """`--seeds 0,1,2` as a tuple; None when not given."""
    if not text:
        return None
    try:
        return tuple(int(s) for s in text.split(","))
    except ValueError:
        raise UsageError(f"bad --seeds {text!r}; expected comma-separated integers, e.g. 0,1,2") from None

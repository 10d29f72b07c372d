"""Typed model configurations with named presets.

A config is a dataclass; `Config.preset(name, **overrides)` starts from a named preset
and overrides fields, refusing unknown names and fields with the list of valid ones.
`parse_overrides` and `coerce` turn command-line `--set key=value` strings into typed
field values.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar


class PresetConfig:
    """Mixin for config dataclasses: named presets, overrides, round-trip to dict."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def presets(cls) -> list[str]:
        return list(cls.PRESETS)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def preset(cls, name: str, **overrides):
        if name not in cls.PRESETS:
            raise ValueError(f"unknown {cls.__name__} preset {name!r}; known: {', '.join(cls.PRESETS)}")
        return cls.from_dict({**cls.PRESETS[name], **overrides})

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s) {', '.join(unknown)}; "
                             f"known: {', '.join(cls.field_names())}")
        return cls(**values)

    def replace(self, **changes):
        return type(self).from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- `--set key=value` overrides -----------------------------------------------------------
def parse_overrides(items: list[str]) -> dict[str, str]:
    """['lr=1e-3', 'causal=true'] -> {'lr': '1e-3', 'causal': 'true'}."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"bad --set {item!r}; expected key=value (e.g. lr=1e-3)")
        out[key.strip()] = value.strip()
    return out


def coerce(config_cls, values: dict[str, str]) -> dict:
    """Convert string overrides to the types of `config_cls`'s fields, naming bad ones."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    out = {}
    for key, raw in values.items():
        if key not in fields:
            raise ValueError(f"unknown {config_cls.__name__} field {key!r}; known: {', '.join(fields)}")
        f = fields[key]
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
        out[key] = _parse_value(raw, default, f"{config_cls.__name__}.{key}")
    return out


def _parse_value(raw, default, name: str):
    if not isinstance(raw, str):
        return raw
    try:
        if isinstance(default, bool):
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return raw.lower() in ("true", "1", "yes")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, tuple):
            return tuple(type(default[0])(v) if default else v for v in raw.split("+"))
    except ValueError:
        raise ValueError(f"{name} expects a {type(default).__name__}, got {raw!r}") from None
    return raw

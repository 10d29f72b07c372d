"""Typed model configurations with named presets.

A config is a dataclass; `Config.preset(name, **overrides)` starts from a named preset
and overrides fields, refusing unknown names and fields with the list of valid ones.
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

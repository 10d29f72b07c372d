"""The models of the library by name: `build_model("hummuss", "paper-causal")`."""

from __future__ import annotations

from importlib import import_module

# model name -> (module, model class, config class)
MODELS: dict[str, tuple[str, str, str]] = {
    "hummuss": ("hummuss.model", "HumMUSS", "HumMUSSConfig"),
    "motionbert": ("hummuss.baselines.motionbert", "MotionBERT", "MotionBERTConfig"),
}


def _lookup(name: str):
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    module, model_cls, config_cls = MODELS[name]
    mod = import_module(module)
    return getattr(mod, model_cls), getattr(mod, config_cls)


def config_class(name: str):
    """The config dataclass of model `name`."""
    return _lookup(name)[1]


def build_config(name: str, preset: str, **overrides):
    """`<Config>.preset(preset)` with field overrides."""
    return config_class(name).preset(preset, **overrides)


def build_model(name: str, preset: str, **overrides):
    """A freshly initialised model of family `name` from a preset."""
    model_cls, _ = _lookup(name)
    return model_cls(build_config(name, preset, **overrides))

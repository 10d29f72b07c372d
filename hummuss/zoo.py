"""The models of the library by name: the one place a model family is looked up.

    build_model("hummuss", "paper-causal")            # a preset, with field overrides
    model_from_config("motionbert", {...})            # a config dict (a checkpoint's, a run's)
    family_of("HumMUSS")                              # a model class name -> its family
"""

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


def model_class(name: str):
    """The model class of family `name`."""
    return _lookup(name)[0]


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


def model_from_config(name: str, config: dict):
    """A freshly initialised model of family `name` from a full config dict."""
    model_cls, config_cls = _lookup(name)
    return model_cls(config_cls.from_dict(config))


def family_of(class_name: str | None) -> str:
    """The family whose model class is called `class_name` (as a checkpoint records it)."""
    for name, (_, cls, _) in MODELS.items():
        if cls == class_name:
            return name
    raise ValueError(f"unknown model class {class_name!r}; known: {', '.join(c for _, c, _ in MODELS.values())}")

"""A study's search space: checked before any trial runs, suggested per trial, applied to the
run spec a trial trains.

`Study.search_space` maps a config field to `Param(kind, low, high, step=, log=, choices=,
target=)`: `kind` float, int or categorical; `target` model (the model family's config)
or train (`TrainConfig`). The base configuration of the tuned variant must lie inside the
space: it is the sweep's first trial.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hummuss.train import TrainConfig
from hummuss.zoo import config_class
from suite.registry import Param, Study
from suite.runspec import RunSpec, expand_runs

KINDS = ("float", "int", "categorical")
TARGETS = ("model", "train")


def _where(study: Study, name: str) -> str:
    return f"search space of study {study.name!r}: parameter {name!r}"


def _on_step(value: float, low: float, step: float) -> bool:
    k = (value - low) / step
    return abs(k - round(k)) < 1e-6


def contains(p: Param, value: Any) -> bool:
    """Whether `value` is a point of the dimension `p`."""
    if p.kind == "categorical":
        return value in p.choices
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if p.kind == "int" and value != int(value):
        return False
    return p.low <= value <= p.high and (p.step is None or _on_step(value, p.low, p.step))


def _check_param(study: Study, name: str, p: Param, sampler: str) -> None:
    where = _where(study, name)
    if p.kind not in KINDS:
        raise ValueError(f"{where}: unknown kind {p.kind!r}; known: {', '.join(KINDS)}")
    if p.target not in TARGETS:
        raise ValueError(f"{where}: unknown target {p.target!r}; known: {', '.join(TARGETS)}")
    if p.kind == "categorical":
        if not p.choices:
            raise ValueError(f"{where}: empty choice list; give at least one choice")
        if len(set(map(repr, p.choices))) != len(p.choices):
            raise ValueError(f"{where}: duplicate choices in {p.choices!r}")
        return
    if p.low is None or p.high is None:
        raise ValueError(f"{where}: a {p.kind} range needs low and high")
    if p.low >= p.high:
        raise ValueError(f"{where}: empty range: low={p.low} >= high={p.high}")
    if p.log and p.low <= 0:
        raise ValueError(f"{where}: a log range must be > 0, got low={p.low}")
    if p.step is not None:
        if p.step <= 0:
            raise ValueError(f"{where}: step must be > 0, got {p.step}")
        if p.log:
            raise ValueError(f"{where}: a log range cannot have a step (Optuna samples it continuously)")
        if not _on_step(p.high, p.low, p.step):
            raise ValueError(f"{where}: high={p.high} is not low={p.low} plus a whole number of steps {p.step}")
    if p.kind == "int":
        for bound in (p.low, p.high, p.step or 1):
            if bound != int(bound):
                raise ValueError(f"{where}: an int range needs integer low, high and step, got {bound}")
    if sampler == "grid" and p.kind == "float" and p.step is None:
        fix = "declare its values categorical, e.g. choices=(1e-4, 3e-4, 1e-3)" if p.log else \
            "give this float range a step, or declare it categorical"
        raise ValueError(f"{where}: the grid sampler needs a finite set of values; {fix}")


def grid_values(space: Mapping[str, Param]) -> dict[str, list]:
    """Every parameter's values on a grid (ranges need a step on floats)."""
    out = {}
    for name, p in space.items():
        if p.kind == "categorical":
            out[name] = list(p.choices)
        elif p.kind == "int":
            out[name] = list(range(int(p.low), int(p.high) + 1, int(p.step or 1)))
        elif p.step is None:
            raise ValueError(f"parameter {name!r} has no finite set of values for the grid sampler (a float "
                             f"range without step)")
        else:
            n = round((p.high - p.low) / p.step)
            out[name] = [round(p.low + i * p.step, 12) for i in range(n + 1)]
    return out


def grid_exhausted(trials: list[FrozenTrial], size: int) -> bool:
    """Every point of a grid of `size` points has been tried (a failed point counts, as for
    BruteForceSampler) and no retry waits."""
    if any(t.state == TrialState.WAITING for t in trials):
        return False
    tried = {tuple(sorted(t.params.items())) for t in trials
             if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    return len(tried) >= size


def check_space(study: Study, variant: str, scale: str, seed: int = 0, sets: Mapping[str, str] | None = None,
                sampler: str = "tpe") -> tuple[RunSpec, dict[str, Any]]:
    """Validate `study.search_space` for `variant` at `scale`: the base run spec and its values.

    Raises a ValueError naming the parameter for an unknown kind or target, a name that
    is no field of the target config, an empty range or choice list, a log range
    touching 0, a value the config refuses, or a base value outside the space.
    """
    space = study.search_space
    if not space:
        raise ValueError(f"study {study.name!r} declares no search space; add search_space=readonly(name="
                         f"Param(...), ...) to its file in studies/")
    chosen = study.variant(variant)
    spec = expand_runs(study, scale, seeds=(seed,), sets=dict(sets or {}), variants=(variant,))[0]
    for name, p in space.items():
        _check_param(study, name, p, sampler)
        cls = config_class(chosen.model) if p.target == "model" else TrainConfig
        values = spec.model_config if p.target == "model" else spec.train_config
        where = _where(study, name)
        if name not in values:
            raise ValueError(f"{where}: unknown parameter, not a field of {cls.__name__} (target "
                             f"{p.target!r}, variant {variant!r}); known: {', '.join(sorted(values))}")
        base = values[name]
        if p.kind == "float" and isinstance(base, int) and not isinstance(base, bool):
            raise ValueError(f"{where}: {cls.__name__}.{name} is an integer; declare it Param('int', ...)")
        if p.kind != "categorical" and (isinstance(base, bool) or not isinstance(base, int | float)):
            raise ValueError(f"{where}: {cls.__name__}.{name} is a {type(base).__name__}; declare it categorical")
        for value in p.choices if p.kind == "categorical" else (p.low, p.high):
            value = int(value) if p.kind == "int" else value
            try:
                cls.from_dict({**values, name: value})
            except (ValueError, TypeError) as err:
                raise ValueError(f"{where}: {cls.__name__} refuses {name}={value!r}: {err}") from None
        if not contains(p, base):
            raise ValueError(f"{where}: the base configuration's value {base!r} (variant {variant!r} at "
                             f"scale {scale!r}) lies outside the search space; widen it, so that the "
                             f"paper's configuration can be the first trial")
    return spec, {name: spec.model_config[name] if p.target == "model" else spec.train_config[name]
                  for name, p in space.items()}


def suggest(trial: optuna.Trial, space: Mapping[str, Param]) -> dict[str, Any]:
    """The trial's value of every dimension."""
    out = {}
    for name, p in space.items():
        if p.kind == "categorical":
            out[name] = trial.suggest_categorical(name, list(p.choices))
        elif p.kind == "int":
            out[name] = trial.suggest_int(name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        else:
            out[name] = trial.suggest_float(name, p.low, p.high, step=p.step, log=p.log)
    return out


def apply_params(spec: RunSpec, params: Mapping[str, Any], space: Mapping[str, Param]) -> RunSpec:
    """`spec` with the trial's values in its model and train configs (validated by the configs)."""
    model = {**spec.model_config, **{k: v for k, v in params.items() if space[k].target == "model"}}
    train = {**spec.train_config, **{k: v for k, v in params.items() if space[k].target == "train"}}
    return dataclasses.replace(spec, model_config=config_class(spec.model).from_dict(model).to_dict(),
                               train_config=TrainConfig.from_dict(train).to_dict())


def format_params(params: Mapping[str, Any]) -> str:
    """`lr=0.0003, state_size=8`: a trial's values, for messages."""
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())

"""A study at a scale expands into `RunSpec`s, one per variant and seed, fully resolved
(`expand_runs`).

Two hashes identify a run:
- `train_hash`: everything that determines the trained weights (model family and
  config, training config with its seed, data spec, clip length and stride, and the
  checkpoint it starts from). Checkpoints live in `<checkpoint_dir>/<train_hash>/`, so a
  killed run resumes from them and identical trainings are never repeated.
- `config_hash`: the train hash plus the study, variant and evaluation config: the
  identity of an MLflow child run. A run whose config hash FINISHED is skipped.

A study's invocation also logs its floors (`expand_floors`): one `FloorSpec` per
reference floor of `hummuss.floors`, fitted in closed form and scored under the study's
`floor_eval_values`; its `config_hash` is the floor, the data spec, the evaluation config
and the `as_trained` length, and it is leased and skipped like a run's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from hummuss.config import coerce
from hummuss.evaluate import EvalConfig
from hummuss.floors import FLOORS
from hummuss.train import TrainConfig
from hummuss.zoo import config_class
from suite.registry import Study, get_study


def stable_hash(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, eq=False)
class RunSpec:
    study: str
    variant: str
    seed: int
    scale: str
    model: str
    model_config: dict
    train_config: dict
    data: str
    frames: int
    stride: int
    eval_config: dict
    init_from: RunSpec | None = None
    label: str = ""
    extra_tags: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.variant}/seed{self.seed}"

    @property
    def train_hash(self) -> str:
        return stable_hash({"model": self.model, "model_config": self.model_config,
                            "train_config": self.train_config, "data": self.data, "frames": self.frames,
                            "stride": self.stride, "init_from": self.init_from.train_hash if self.init_from else None})

    @property
    def config_hash(self) -> str:
        return stable_hash({"study": self.study, "variant": self.variant, "train": self.train_hash,
                            "eval": self.eval_config})

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "init_from"}
        out["init_from"] = self.init_from.to_dict() if self.init_from else None
        return out

    @classmethod
    def from_dict(cls, d: dict) -> RunSpec:
        d = dict(d)
        d["init_from"] = cls.from_dict(d["init_from"]) if d.get("init_from") else None
        return cls(**d)

    def params(self) -> dict[str, Any]:
        """The full config as flat MLflow params."""
        out = {"model.family": self.model, "data.spec": self.data, "data.frames": self.frames,
               "data.stride": self.stride, "run.study": self.study, "run.variant": self.variant,
               "run.seed": self.seed, "run.scale": self.scale,
               "run.init_from": self.init_from.train_hash if self.init_from else ""}
        out.update({f"model.{k}": v for k, v in self.model_config.items()})
        out.update({f"train.{k}": v for k, v in self.train_config.items()})
        out.update({f"eval.{k}": v for k, v in self.eval_config.items()})
        return out

    def tags(self) -> dict[str, str]:
        return {"study": self.study, "variant": self.variant, "seed": str(self.seed), "scale": self.scale,
                "config_hash": self.config_hash, "train_hash": self.train_hash, "model": self.model,
                "label": self.label or self.variant, "mlflow.note.content": self.note(), **self.extra_tags}

    def note(self) -> str:
        """The run's description in the MLflow UI."""
        return (f"{self.study} / {self.label or self.variant} ({self.model}), seed {self.seed}, scale "
                f"{self.scale}: trained on {self.frames}-frame clips of `{self.data}`, scored on the test split.")


FLOOR_NOTES = {"mean-pose": "Floor: the mean root-relative training pose for every frame (no learning).",
               "linear-lift": "Floor: a per-frame affine least-squares map from the 2D input to the 3D pose, "
                              "fitted in closed form on the training frames (no learning)."}


@dataclass(frozen=True, eq=False)
class FloorSpec:
    """A reference floor of a study (`hummuss.floors.fit_floor(floor, source)`), scored by
    `evaluate(..., EvalConfig(**eval_config))` plus `as_trained` = F_<frames>."""

    study: str
    floor: str
    scale: str
    data: str
    eval_config: dict
    frames: int  # the as_trained length (the study's first variant's training length)

    kind = "floor"

    @property
    def name(self) -> str:
        return f"floor/{self.floor}"

    @property
    def config_hash(self) -> str:
        return stable_hash({"floor": self.floor, "data": self.data, "eval": self.eval_config,
                            "as_trained": self.frames})

    def params(self) -> dict[str, Any]:
        return {"data.spec": self.data, "floor.name": self.floor, "floor.as_trained_frames": self.frames,
                **{f"eval.{k}": v for k, v in self.eval_config.items()}}

    def tags(self) -> dict[str, str]:
        return {"kind": "floor", "floor": self.floor, "study": self.study, "scale": self.scale,
                "config_hash": self.config_hash, "mlflow.note.content": FLOOR_NOTES.get(self.floor, "")}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def expand_floors(study: Study | str, scale: str, data: str | None = None,
                  sets: dict[str, str] | None = None) -> list[FloorSpec]:
    """The floor runs of `study` at `scale`, one per floor, under the study's floor
    evaluation (`Study.floor_eval_values`) with the `--set eval.*` overrides of its runs."""
    study = get_study(study) if isinstance(study, str) else study
    values = study.floor_eval_values(scale)
    per_model = split_sets(sets or {}, sorted({v.model for v in study.variants}))
    for overrides in per_model.values():
        values.update(coerce(EvalConfig, overrides["eval"]))
    eval_cfg = dataclasses.asdict(EvalConfig(**values))
    frames = study.frames_for(study.variants[0], scale)
    return [FloorSpec(study.name, name, scale, data or study.scale(scale).data, eval_cfg, frames) for name in FLOORS]


# -- --set KEY=VALUE ---------------------------------------------------------------------
def _settable(model: str) -> dict[str, list[str]]:
    return {"model": config_class(model).field_names(), "train": TrainConfig.field_names(),
            "eval": [f.name for f in dataclasses.fields(EvalConfig)]}


def split_sets(sets: dict[str, str], models: list[str]) -> dict[str, dict[str, dict[str, str]]]:
    """{'lr': '1e-3', 'model.state_size': '64'} -> per model family {'train': {...}, 'model': {...}}.

    A bare key is looked up in train, then model, then eval fields. Unknown keys raise a
    ValueError listing every valid name.
    """
    out: dict[str, dict[str, dict[str, str]]] = {m: {"model": {}, "train": {}, "eval": {}} for m in models}
    for key, value in sets.items():
        section, _, name = key.rpartition(".")
        hit = False
        for m in models:
            fields = _settable(m)
            sections = [section] if section else ["train", "model", "eval"]
            for sec in sections:
                if sec in fields and name in fields[sec]:
                    out[m][sec][name] = value
                    hit = True
                    break
        if not hit:
            valid = sorted({f"{sec}.{n}" for m in models for sec, names in _settable(m).items() for n in names})
            raise ValueError(f"unknown --set key {key!r}; valid: {', '.join(valid)}")
    return out


def sets_for(sets: dict[str, str], models: list[str]) -> dict[str, str]:
    """The `--set` items that apply to runs of the `models` families: a stage run gets every
    override of the runs that start from it that its family has (a model override too, so
    that its checkpoint fits them), the others are left out."""
    out = {}
    for key, value in sets.items():
        try:
            split_sets({key: value}, models)
        except ValueError:
            continue
        out[key] = value
    return out


# -- expansion ---------------------------------------------------------------------------
def expand_runs(study: Study | str, scale: str, seeds: tuple[int, ...] | None = None, data: str | None = None,
                sets: dict[str, str] | None = None, variants: tuple[str, ...] | None = None) -> list[RunSpec]:
    """Every (variant, seed) run of `study` at `scale`, fully resolved."""
    study = get_study(study) if isinstance(study, str) else study
    sc = study.scale(scale)
    chosen = [study.variant(v) for v in variants] if variants else list(study.variants)
    per_model = split_sets(sets or {}, sorted({v.model for v in chosen}))
    specs = []
    for v in chosen:
        overrides = per_model[v.model]
        cls = config_class(v.model)
        model_cfg = cls.preset(sc.preset_for(v), **{**v.config, **coerce(cls, overrides["model"])}).to_dict()
        frames = study.frames_for(v, scale)
        stride = max(1, round(frames * sc.stride / sc.frames))
        eval_values = study.eval_values(v, scale)
        eval_values.update(coerce(EvalConfig, overrides["eval"]))
        eval_cfg = dataclasses.asdict(EvalConfig(**eval_values))
        for seed in (seeds if seeds else sc.seeds):
            train_values = {**sc.train_for(v.model), **v.train, "seed": seed, **coerce(TrainConfig, overrides["train"])}
            train_cfg = TrainConfig.preset(sc.train_preset, **train_values).to_dict()
            parent = None
            if v.init_from and scale in v.init_from_scales:
                other, other_variant = v.init_from.split("/")
                stage = get_study(other)
                stage_sets = sets_for(sets or {}, [stage.variant(other_variant).model])
                parent = expand_runs(stage, scale, (seed,), data, stage_sets, (other_variant,))[0]
            specs.append(RunSpec(study.name, v.name, seed, scale, v.model, model_cfg, train_cfg,
                                 data or sc.data, frames, stride, eval_cfg, parent, v.label))
    return specs

"""Studies and their registry: the table of contents of the suite.

A `Study` is a frozen declaration: the question, the paper's numbers, the variants
(named overrides of a base configuration), the evaluation conditions, the scales it
runs at, the table the report renders, and the study's own behaviour in the report:
the function that judges its claim from that table and the figures it draws. Adding a
study is adding one file to `studies/` that defines `STUDY = Study(...)`; `registry()`
finds, validates and lists them.

Scales: `smoke` (seconds, for tests), `quick` (a first look in minutes: the `cpu` models on a
small budget, not converged), `cpu` (a laptop, small models on
generated data) and `paper` (the paper's sizes and MotionBERT's training settings on
MPI-INF-3DHP, for GPUs).
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from hummuss.evaluate import FACTORS, EvalConfig, condition_names
from hummuss.train import TrainConfig
from hummuss.zoo import MODELS, config_class, model_class


def readonly(mapping: Mapping | None = None, **kw) -> Mapping:
    """A read-only mapping (for dataclass defaults and declarations)."""
    return MappingProxyType({**(mapping or {}), **kw})


@dataclass(frozen=True)
class Scale:
    """How big a study runs: data, model presets, training budget, seeds."""

    name: str
    data: str  # data spec
    presets: Mapping[str, str]  # preset key (a model family, "hummuss-causal", ...) -> config preset
    train_preset: str  # TrainConfig preset
    frames: int  # training clip length F
    stride: int  # training clip stride
    seeds: tuple[int, ...] = (0,)
    train: Mapping[str, Any] = field(default_factory=readonly)  # TrainConfig overrides
    eval: Mapping[str, Any] = field(default_factory=readonly)  # EvalConfig overrides
    recipes: Mapping[str, Mapping[str, Any]] = field(default_factory=readonly)  # model family -> TrainConfig overrides
    converged: bool = True  # False: a budget for a first look; its tables say "not converged"

    def train_for(self, model: str) -> dict[str, Any]:
        """TrainConfig overrides of model family `model` at this scale: `train`, then its recipe."""
        return {**self.train, **self.recipes.get(model, {})}

    def preset_for(self, variant: Variant) -> str:
        """The config preset of `variant` at this scale (causal HumMUSS has its own)."""
        key = variant.preset_key or (
            f"{variant.model}-causal" if variant.config.get("causal") else variant.model)
        if key not in self.presets:
            raise ValueError(f"scale {self.name!r} has no preset for {key!r}; known: {', '.join(self.presets)}")
        return self.presets[key]


_PRESETS = dict(
    smoke=readonly({"hummuss": "smoke", "hummuss-causal": "smoke", "motionbert": "smoke", "motionbert-full": "smoke"}),
    cpu=readonly({"hummuss": "cpu", "hummuss-causal": "cpu", "motionbert": "cpu", "motionbert-full": "cpu-full"}),
    quick=readonly({"hummuss": "cpu", "hummuss-causal": "cpu", "motionbert": "cpu", "motionbert-full": "cpu-full"}),
    paper=readonly({"hummuss": "paper-bidirectional", "hummuss-causal": "paper-causal", "motionbert": "lite",
                    "motionbert-full": "full"}),
)
SCALES: Mapping[str, Scale] = readonly(
    smoke=Scale("smoke", "synthetic:scale=smoke", _PRESETS["smoke"], "smoke", frames=27, stride=9,
                eval=readonly(max_sequences=2, batch_size=16)),
    # the cpu scale's models and data on a 15-minute budget (one seed, few steps): not converged
    quick=Scale("quick", "synthetic", _PRESETS["quick"], "quick", frames=27, stride=9, converged=False,
                eval=readonly(max_sequences=6)),
    # three seeds, every test sequence, a recipe per family (one-thread measurements, not yet
    # a sweep: hummuss lr 3e-3 with its input centred on the root, motionbert lr 1e-3, both
    # batch 8). 4,800 steps: the smallest budget measured at which HumMUSS is at most 0.6 x
    # the linear lift (seed 0: 44.5 mm against 74.9) and MotionBERT-Lite below it (57.2 mm).
    # Not converged: doubling from 2,400 still lowered test MPJPE by 10% (HumMUSS, 49.7 ->
    # 44.5) and 32% (MotionBERT-Lite, 84.1 -> 57.2). 51 trainings at this budget are at least
    # 8.5 hours of training alone on 2 cores (see the README).
    cpu=Scale("cpu", "synthetic", _PRESETS["cpu"], "cpu", frames=27, stride=9, seeds=(0, 1, 2),
              converged=False, recipes=readonly(motionbert=readonly(lr=1e-3)),
              eval=readonly(max_sequences=0)),
    paper=Scale("paper", "mpi3dhp:data/mpi3dhp", _PRESETS["paper"], "motionbert", frames=243, stride=81,
                seeds=(0, 1, 2)),
)


@dataclass(frozen=True)
class Variant:
    """One arm of a study: a model family and overrides of the scale's configuration."""

    name: str
    model: str = "hummuss"
    config: Mapping[str, Any] = field(default_factory=readonly)  # model config overrides
    train: Mapping[str, Any] = field(default_factory=readonly)  # TrainConfig overrides
    eval: Mapping[str, Any] = field(default_factory=readonly)  # EvalConfig overrides
    preset_key: str | None = None  # which of the scale's presets (default: the model family)
    frames: int | None = None  # training clip length instead of the scale's
    init_from: str | None = None  # "<study>/<variant>": start from that run's best checkpoint
    init_from_scales: tuple[str, ...] = ("paper",)  # scales at which init_from applies
    label: str = ""  # how tables name it


@dataclass(frozen=True)
class PaperRef:
    """Where the paper reports a study, and its numbers: (row, column) -> value."""

    table: str
    caption: str
    numbers: Mapping[tuple[str, str], float] = field(default_factory=readonly)
    unit: str = "mm"
    note: str = ""


@dataclass(frozen=True)
class Table:
    """The report layout: rows and columns are (key, label) pairs.

    A cell (row, column) reads metric `metric` of condition `condition(row, column)`
    from the runs of variant `variant(row, column)`; both default to: rows are
    variants, columns are conditions. `blank` cells are answered by no variant (a
    bidirectional model does not stream): they are not validated and render as missing.
    """

    rows: tuple[tuple[str, str], ...]
    columns: tuple[tuple[str, str], ...]
    metric: str = "mpjpe"
    cells: Mapping[tuple[str, str], tuple[str, str]] = field(default_factory=readonly)  # -> (variant, condition)
    blank: frozenset[tuple[str, str]] = frozenset()  # (row, column) cells no variant answers

    def cell(self, row: str, column: str) -> tuple[str, str]:
        return self.cells.get((row, column), (row, column))


@dataclass(frozen=True)
class Param:
    """One dimension of a sweep's search space (see suite/sweep/space.py).

    The key of a `Study.search_space` entry names a field of the target config (the
    base variant's model config, or `TrainConfig`); the sweep validates every entry
    before the first trial runs.
        Param("float", 1e-4, 3e-3, log=True, target="train")   # lr on a log scale
        Param("float", 1.5, 4.0, step=0.5)                     # expand m: 1.5, 2.0, ..., 4.0
        Param("int", 1, 4)                                     # temporal_channels k
        Param("categorical", choices=("gate", "mean", "learned"))
    """

    kind: str  # float | int | categorical
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple = ()
    target: str = "model"  # model | train
    step: float | None = None  # spacing of a float or int range (a grid sampler needs it on floats)


@dataclass(frozen=True)
class Figure:
    """A figure of a study's report: `draw(ctx)` writes the PNG `ctx.path` (`<out>/figures/<file>`)
    and returns it, or raises `suite.report.figures.FigureSkipped` saying why it cannot.

    ctx (`suite.report.FigureContext`) holds the tables of the figure's studies that are in
    the report (`ctx.frames`, the declaring study's first, then those of `studies`), their
    run selections, a subtitle per study (scale and data) and the tracker. The report does
    not call `draw` when none of these studies is in the report or none has a finished run.
    """

    name: str  # how the report names it (unique over all studies)
    file: str  # PNG file name under <out>/figures/
    title: str  # heading in results/README.md
    draw: Callable[[Any], Any]
    studies: tuple[str, ...] = ()  # other studies whose tables it draws too (when in the report)


@dataclass(frozen=True)
class Study:
    name: str
    question: str
    paper: PaperRef
    variants: tuple[Variant, ...]
    table: Table
    eval: Mapping[str, Any] = field(default_factory=readonly)  # EvalConfig fields for every variant
    scales: Mapping[str, Scale] = field(default_factory=lambda: SCALES)
    frames: int | None = None  # training clip length for every variant, instead of the scale's
    search_space: Mapping[str, Param] = field(default_factory=readonly)
    stage: bool = False  # a pipeline stage others start from (pre-training)
    # (its table frame, the study) -> suite.report.ClaimCheck: the paper's claim judged from our numbers
    claims: Callable[[Any, Study], Any] | None = None
    figures: tuple[Figure, ...] = ()  # drawn by the report, in this order

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise ValueError(f"unknown variant {name!r} of study {self.name!r}; "
                         f"known: {', '.join(v.name for v in self.variants)}")

    def scale(self, name: str) -> Scale:
        if name not in self.scales:
            raise ValueError(f"unknown scale {name!r}; known: {', '.join(self.scales)}")
        return self.scales[name]

    def frames_for(self, variant: Variant, scale: str) -> int:
        """The training clip length F of `variant` at `scale`."""
        return variant.frames or self.frames or self.scale(scale).frames

    def eval_values(self, variant: Variant, scale: str) -> dict[str, Any]:
        """EvalConfig fields of `variant` at `scale`: the training length, then scale, study, variant."""
        frames = self.frames_for(variant, scale)
        sc = self.scale(scale)
        return {"lengths": (frames,), "rate_length": frames, **sc.eval, **self.eval, **variant.eval}

    def floor_eval_values(self, scale: str) -> dict[str, Any]:
        """EvalConfig fields under which the floors answer every condition of every variant."""
        merged = self.eval_values(self.variants[0], scale)
        for v in self.variants[1:]:
            values = self.eval_values(v, scale)
            for key in ("lengths", "model_windows", "rates", "drops", "schedules"):
                merged[key] = tuple(dict.fromkeys((*merged.get(key, ()), *values.get(key, ()))))
        merged["stream"] = False
        return merged

    def conditions(self, variant: Variant, scale: str) -> tuple[str, ...]:
        """The condition names `evaluate` produces for `variant` at `scale`."""
        cfg = config_class(variant.model).preset(self.scale(scale).preset_for(variant), **variant.config)
        return condition_names(EvalConfig(**self.eval_values(variant, scale)),
                               continuous=bool(getattr(model_class(variant.model), "continuous_time", False)),
                               causal=bool(getattr(cfg, "causal", False)),
                               trained_frames=self.frames_for(variant, scale))


# -- validation -----------------------------------------------------------------------
def _check_keys(what: str, keys, allowed) -> None:
    unknown = sorted(set(keys) - set(allowed))
    if unknown:
        raise ValueError(f"{what}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}")


def validate(study: Study) -> Study:
    """Check names and keys so a typo fails at import, not after an hour of training."""
    where = f"study {study.name!r}"
    names = [v.name for v in study.variants]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{where}: duplicate variant name(s) {', '.join(duplicates)}")
    eval_fields = [f.name for f in dataclasses.fields(EvalConfig)]
    train_fields = TrainConfig.field_names()
    _check_keys(f"{where} eval", study.eval, eval_fields)
    for name in study.eval.get("rates", ()):
        if name not in FACTORS:
            raise ValueError(f"{where}: unknown frame-rate condition {name!r}; known: {', '.join(FACTORS)}")
    for v in study.variants:
        vw = f"{where} variant {v.name!r}"
        if v.model not in MODELS:
            raise ValueError(f"{vw}: unknown model {v.model!r}; known: {', '.join(sorted(MODELS))}")
        cls = config_class(v.model)
        _check_keys(f"{vw} config", v.config, cls.field_names())
        _check_keys(f"{vw} train", v.train, train_fields)
        _check_keys(f"{vw} eval", v.eval, eval_fields)
        for scale in study.scales.values():
            preset = scale.preset_for(v)
            if preset not in cls.presets():
                raise ValueError(f"{vw}: scale {scale.name!r} names unknown {v.model} preset {preset!r}; "
                                 f"known: {', '.join(cls.presets())}")
        if v.init_from is not None and v.init_from.count("/") != 1:
            raise ValueError(f"{vw}: init_from must be '<study>/<variant>', got {v.init_from!r}")
    for scale in study.scales.values():
        _check_keys(f"{where} scale {scale.name!r} train", scale.train, train_fields)
        for family, recipe in scale.recipes.items():
            if family not in MODELS:
                raise ValueError(f"{where} scale {scale.name!r}: recipe for unknown model {family!r}; "
                                 f"known: {', '.join(sorted(MODELS))}")
            _check_keys(f"{where} scale {scale.name!r} recipe {family!r}", recipe, train_fields)
        _check_keys(f"{where} scale {scale.name!r} eval", scale.eval, eval_fields)
    row_keys = {r for r, _ in study.table.rows}
    col_keys = {c for c, _ in study.table.columns}
    for row, col in study.paper.numbers:
        if row not in row_keys or col not in col_keys:
            raise ValueError(f"{where}: paper number for ({row!r}, {col!r}) is not a cell of its table")
    for row, col in study.table.blank:
        if row not in row_keys or col not in col_keys:
            raise ValueError(f"{where}: blank cell ({row!r}, {col!r}) is not a cell of its table")
    for row, _ in study.table.rows:
        for col, _ in study.table.columns:
            if (row, col) in study.table.blank:
                continue
            variant, condition = study.table.cell(row, col)
            if variant not in names:
                raise ValueError(f"{where}: table cell ({row!r}, {col!r}) reads unknown variant {variant!r}")
            for scale in study.scales:
                known = study.conditions(study.variant(variant), scale)
                if condition not in known:
                    raise ValueError(f"{where}: table cell ({row!r}, {col!r}) reads condition {condition!r}, "
                                     f"which evaluation never produces for variant {variant!r} at scale "
                                     f"{scale!r}; known: {', '.join(known)}")
    _check_behaviour(study)
    return study


def _check_behaviour(study: Study) -> None:
    """The claim judge and the figure declarations (the studies a figure reads are checked
    by `validate_all`, which sees every study)."""
    where = f"study {study.name!r}"
    if study.claims is not None and not callable(study.claims):
        raise ValueError(f"{where}: claims must be a function (table frame, study) -> ClaimCheck, "
                         f"got {type(study.claims).__name__}")
    seen: set[str] = set()
    for fig in study.figures:
        if not isinstance(fig, Figure):
            raise ValueError(f"{where}: figures must be Figure(...) declarations, got {type(fig).__name__}")
        fw = f"{where} figure {fig.name!r}"
        if not fig.name:
            raise ValueError(f"{where}: a figure has no name")
        if fig.name in seen:
            raise ValueError(f"{where}: two figures are named {fig.name!r}")
        seen.add(fig.name)
        if not fig.file.endswith(".png") or "/" in fig.file:
            raise ValueError(f"{fw}: file must be a PNG file name without a folder, got {fig.file!r}")
        if not callable(fig.draw):
            raise ValueError(f"{fw}: draw must be a function (FigureContext) -> path")
        if study.name in fig.studies:
            raise ValueError(f"{fw}: studies names the study that declares it ({study.name!r})")


def validate_all(found: Mapping[str, Study]) -> None:
    """What one study cannot check alone: the stages its variants start from exist, and its
    figures' names and files are unique over all studies and the studies they read exist."""
    for study in found.values():
        for v in study.variants:
            if v.init_from:
                other, variant = v.init_from.split("/")
                if other not in found:
                    raise ValueError(f"study {study.name!r} variant {v.name!r}: init_from study {other!r} "
                                     f"is not registered; known: {', '.join(sorted(found))}")
                found[other].variant(variant)
    names: dict[str, str] = {}
    files: dict[str, str] = {}
    for study in found.values():
        for fig in study.figures:
            fw = f"study {study.name!r} figure {fig.name!r}"
            for other in fig.studies:
                if other not in found:
                    raise ValueError(f"{fw} needs study {other!r}, which is not registered; "
                                     f"known: {', '.join(sorted(found))}")
            if fig.name in names:
                raise ValueError(f"{fw}: study {names[fig.name]!r} declares a figure of that name too")
            if fig.file in files:
                raise ValueError(f"{fw}: study {files[fig.file]!r} writes {fig.file!r} too")
            names[fig.name], files[fig.file] = study.name, study.name


# -- the registry ---------------------------------------------------------------------
@lru_cache(maxsize=1)
def registry() -> Mapping[str, Study]:
    """Every `STUDY` defined in a module of the `studies` package, validated, by name."""
    import studies

    found: dict[str, Study] = {}
    for info in sorted(pkgutil.iter_modules(studies.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"studies.{info.name}")
        study = getattr(module, "STUDY", None)
        if study is None:
            continue
        if study.name in found:
            raise ValueError(f"two studies are named {study.name!r} (studies/{info.name}.py and another)")
        found[study.name] = validate(study)
    validate_all(found)
    return MappingProxyType(found)


def get_study(name: str) -> Study:
    studies = registry()
    if name not in studies:
        raise ValueError(f"unknown study {name!r}; known: {', '.join(studies)}")
    return studies[name]


def paper_studies() -> list[Study]:
    """The studies `reproduce` runs (all but pipeline stages)."""
    return [s for s in registry().values() if not s.stage]

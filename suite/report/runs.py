"""Reading the store: MLflow runs -> pandas, the runs one study's table reads, histories.

A study's table reads its child runs (one per variant and seed) and, apart from them, its
floor runs (tag `kind=floor`, tag `floor` = mean-pose or linear-lift, one per scale and data
spec, logged by the runner beside the study's children): for the selected scale and data
spec, the latest FINISHED run of each floor. Every call to MLflow goes through
`suite.tracking.Tracker`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from hummuss.floors import FLOORS as FLOOR_NAMES
from suite.registry import SCALES, Study
from suite.tracking import TRAIN_LOSS, VAL_MPJPE, Tracker, TrackingSettings

FINISHED = "FINISHED"
NOT_CHILD_KINDS = ("parent", "sweep", "trial", "floor")  # tag `kind` of runs that are not a study's child runs
FLOOR_KIND = "floor"  # tag `kind` of a floor run; its tag `floor` names the floor
FLOORS = tuple((name, f"{name.replace('-', ' ')} (floor)") for name in FLOOR_NAMES)  # (floor, row label)
CURVE_KEYS = (VAL_MPJPE, TRAIN_LOSS)  # the per-epoch metrics of the training curves


class UnknownScale(ValueError):
    """--scale names neither a declared scale nor one found on the studies' runs."""


def as_tracker(tracker_or_settings: Tracker | TrackingSettings) -> Tracker:
    if isinstance(tracker_or_settings, Tracker):
        return tracker_or_settings
    if isinstance(tracker_or_settings, TrackingSettings):
        return Tracker(tracker_or_settings)
    raise ValueError(f"expected a Tracker or TrackingSettings, got {type(tracker_or_settings).__name__}")


def load_runs(tracker: Tracker, studies: list[str]) -> pd.DataFrame:
    """Every active run of the studies' experiments, one row each, in `mlflow.search_runs`'
    pandas form (`study` column added; start_time and end_time in epoch milliseconds, 0 for
    a run that has not ended)."""
    ids = {tracker.experiment_id(study, create=False): study for study in studies}
    ids.pop(None, None)
    frame = tracker.runs_frame(list(ids)) if ids else pd.DataFrame()
    if len(frame):
        frame["study"] = frame["experiment_id"].map(ids)
    for col in ("start_time", "end_time"):
        if col in frame:
            frame[col] = ((frame[col] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)).fillna(0).astype("int64")
    for col in ("run_id", "study", "status", "start_time", "end_time", "tags.variant", "tags.seed",
                "tags.scale", "tags.kind", "tags.floor"):
        if col not in frame:
            frame[col] = pd.Series(dtype=object)
    return plain_strings(frame)


def plain_strings(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with its text columns as Python objects instead of pandas' arrow-backed `str`:
    the report filters these frames hundreds of times, and a boolean mask over an arrow column
    costs several times one over an object column (0.4 s of the 500-run report)."""
    text = {col: object for col, dtype in frame.dtypes.items() if isinstance(dtype, pd.StringDtype)}
    return (frame.astype(text) if text else frame).copy()  # copy: one block per dtype, not one per column


def check_scale(scale: str | None, runs: pd.DataFrame) -> None:
    """A scale is known if declared (smoke, cpu, paper) or found on a run (e.g. `external`)."""
    if scale is None or scale in SCALES:
        return
    found = sorted(set(runs["tags.scale"].dropna()) - set(SCALES))
    if scale not in found:
        raise UnknownScale(f"unknown scale {scale!r}; known: {', '.join([*SCALES, *found])}")


@dataclass
class Selection:
    """The runs one study's table reads: finished child runs at one scale."""

    study: Study
    scale: str | None  # None: no finished run at all
    how: str  # why this scale, in words
    counts: dict[str, int]  # finished child runs per scale
    runs: pd.DataFrame  # finished, at `scale`, the latest per (variant, seed)
    unfinished: pd.DataFrame  # child runs at `scale` that did not finish
    superseded: int  # older finished runs of a (variant, seed) that a later one replaced
    floors: pd.DataFrame = field(default_factory=pd.DataFrame)  # the latest finished run per floor (tag floor)
    floor_unfinished: pd.DataFrame = field(default_factory=pd.DataFrame)  # floor runs at `scale` not finished

    @property
    def data_specs(self) -> list[str]:
        return sorted(self.runs["params.data.spec"].dropna().unique()) if "params.data.spec" in self.runs else []

    def subtitle(self) -> str:
        """'scale cpu, data synthetic': what a figure of these runs shows."""
        data = f", data {', '.join(self.data_specs)}" if self.data_specs else ""
        return f"scale {self.scale}{data}"


def _scale_rank(name: str) -> int:
    order = list(SCALES)  # smoke, cpu, paper: on a tie the bigger scale wins
    return order.index(name) if name in order else -1


def select_runs(runs: pd.DataFrame, study: Study, scale: str | None = None) -> Selection:
    """Pick the scale (given, or the one with the most finished runs) and the runs at it.

    Child runs only: parents and Optuna sweeps and trials (tag `kind`) are left out."""
    mine = runs[(runs["study"] == study.name) & runs["tags.variant"].notna() & ~runs["tags.kind"].isin(NOT_CHILD_KINDS)]
    finished = mine[mine["status"] == FINISHED]
    counts = {str(k): int(v) for k, v in finished["tags.scale"].value_counts().items()}
    if scale is not None:
        how = "chosen with --scale"
    elif counts:
        scale = max(counts, key=lambda s: (counts[s], _scale_rank(s)))
        how = "the scale with the most finished runs"
    else:
        how = "no finished runs"
    at = finished[finished["tags.scale"] == scale].sort_values("end_time", ascending=False)
    latest = at.drop_duplicates(["tags.variant", "tags.seed"], keep="first")
    latest = latest.assign(seed=pd.to_numeric(latest["tags.seed"], errors="coerce")).sort_values("seed")
    unfinished = mine[(mine["status"] != FINISHED) & (mine["tags.scale"] == scale)]
    sel = Selection(study, scale, how, counts, latest, unfinished, len(at) - len(latest))
    sel.floors, sel.floor_unfinished = select_floors(runs, study.name, scale, sel.data_specs)
    return sel


def select_floors(runs: pd.DataFrame, study: str, scale: str | None,
                  data_specs: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The latest FINISHED floor run of each floor of `study` at `scale` whose data spec is one
    of `data_specs` (any, when the model runs name none), and the unfinished ones."""
    if "tags.floor" not in runs:
        return runs.iloc[:0], runs.iloc[:0]
    floors = runs[(runs["study"] == study) & (runs["tags.kind"] == FLOOR_KIND) & runs["tags.floor"].notna()
                  & (runs["tags.scale"] == scale)]
    if data_specs and "params.data.spec" in floors:
        spec = floors["params.data.spec"]
        floors = floors[spec.isna() | spec.isin(data_specs)]
    done = floors[floors["status"] == FINISHED].sort_values("end_time", ascending=False)
    return done.drop_duplicates(["tags.floor"], keep="first"), floors[floors["status"] != FINISHED]


def load_histories(tracker: Tracker, sel: Selection, keys=CURVE_KEYS) -> pd.DataFrame:
    """Per-epoch metrics of the selected runs: columns variant, seed, key, step, value."""
    who = {r: (v, s) for r, v, s in zip(sel.runs["run_id"], sel.runs["tags.variant"], sel.runs["seed"])}
    rows = []
    for key in keys:
        rows += [(*who[run_id], key, step, value) for run_id, step, value in tracker.metric_histories(list(who), key)]
    return plain_strings(pd.DataFrame(rows, columns=["variant", "seed", "key", "step", "value"]))

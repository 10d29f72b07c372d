"""Drawing the report's figures: every study's own (`Study.figures`), then the report's:
training curves per study and the latency figure from the benchmark results.

A study's figure is drawn by its declaration's `draw(FigureContext)`; the report skips it,
saying why, when none of the studies it reads is in this report or none has a finished
run, and records any `FigureSkipped` its draw function raises.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from suite.registry import Figure, Study, registry
from suite.report import unchanged
from suite.report.agg import text_cache
from suite.report.runs import Selection, load_histories
from suite.report.speed import LATENCY_FIGURE, plot_latency
from suite.report.tables import FLOORS, model_rows
from suite.tracking import Tracker, metric_name

TRAINING_FIGURE = ("fig6_training_{study}.png", "Training curves: {study}")  # file, README title


@dataclass
class FigureContext:
    """What a study's figure draws from (see `suite.registry.Figure`)."""

    study: Study  # the study that declares the figure
    frames: dict[str, pd.DataFrame]  # the tables of the figure's studies in this report, declaring study first
    selections: dict[str, Selection]  # their runs
    path: Path  # where to write the PNG
    tracker: Tracker

    @property
    def frame(self) -> pd.DataFrame:
        """The declaring study's table (one row per cell)."""
        return self.frames[self.study.name]

    @property
    def selection(self) -> Selection:
        return self.selections[self.study.name]

    def subtitle(self, name: str | None = None) -> str:
        """'scale cpu, data synthetic' for a study of the figure (default: the declaring one)."""
        return self.selections[name or self.study.name].subtitle()


@dataclass
class Drawn:
    figures: dict[str, Path] = field(default_factory=dict)  # figure name -> png
    skipped: dict[str, str] = field(default_factory=dict)  # figure name -> why it was not drawn
    titles: dict[str, str] = field(default_factory=dict)  # figure name -> README title


def study_figure(fig: Figure, study: Study, frames: dict[str, pd.DataFrame], selections: dict[str, Selection],
                 path: Path, tracker: Tracker) -> Path:
    """Draw one figure a study declares, or raise FigureSkipped saying why not."""
    from suite.report.figures import FigureSkipped

    names = [n for n in (study.name, *fig.studies) if n in frames]
    if not names:
        raise FigureSkipped(f"study {study.name} is not in this report")
    if all(model_rows(frames[n])["n"].sum() == 0 for n in names):
        raise FigureSkipped(f"no finished runs of {', '.join(names)}")
    ctx = FigureContext(study, {n: frames[n] for n in names}, {n: selections[n] for n in names}, path, tracker)
    return Path(fig.draw(ctx))


def curve_floors(frame: pd.DataFrame, sel: Selection) -> dict[str, float]:
    """floor -> its MPJPE beside the validation curves: the floor run's `as_trained` value (the
    training length, as validation scores), else its value in the table's first column."""
    from suite.report.figures import table_floors

    key = f"metrics.{metric_name(sel.study.table.metric, 'as_trained')}"
    first = sel.study.table.columns[0][0]
    in_table, out = table_floors(frame), {}
    for name, _ in FLOORS:
        run = sel.floors[sel.floors["tags.floor"] == name] if len(sel.floors) else sel.floors
        if len(run) and key in run and pd.notna(run.iloc[0][key]):
            out[name] = float(run.iloc[0][key])
        elif first in in_table.get(name, {}):
            out[name] = in_table[name][first]
    return out


def draw_figures(tracker: Tracker, frames: dict[str, pd.DataFrame], selections: dict[str, Selection],
                 fig_dir: Path, bench: dict | None, bench_why: str, say: Callable[[str], Any]) -> Drawn:
    """Every registered study's figures (skipped for studies not in this report), the training
    curves of each reported study, and the latency figure (`bench_why`: why `bench` is None).
    A figure whose PNG carries the digest of its current inputs is kept as it is
    (suite/report/unchanged.py)."""
    from suite.report.figures import CurvesFigure, FigureSkipped, plot_training_curves

    fig_dir.mkdir(parents=True, exist_ok=True)
    canvas: list[CurvesFigure] = []  # the training curves' figure, built when the first is drawn
    jobs: list[Job] = []
    for study in registry().values():
        for fig in study.figures:
            def declared(path, fig=fig, study=study):
                return study_figure(fig, study, frames, selections, path, tracker)
            jobs.append(Job(fig.name, fig.title, fig.file, declared,
                            lambda fig=fig, study=study: study_inputs(fig, study, frames, selections)))
    for name in frames:
        sel, frame = selections[name], frames[name]
        labels = {v.name: v.label or v.name for v in sel.study.variants}
        history = {}  # read once: it is both an input to the digest and what is drawn

        def curve_inputs(sel=sel, frame=frame, labels=labels, history=history):
            if not len(sel.runs):
                return None
            history["frame"], history["floors"] = load_histories(tracker, sel), curve_floors(frame, sel)
            return ("training", sel.study.name, sel.subtitle(), labels, history["floors"], history["frame"])

        def curves(path, sel=sel, labels=labels, history=history):
            if not len(sel.runs):
                raise FigureSkipped(f"no finished runs of {sel.study.name}")
            canvas[:] = canvas or [CurvesFigure()]
            return plot_training_curves(history["frame"], labels, sel.study.name, sel.subtitle(), path,
                                        floors=history["floors"], canvas=canvas[0])
        file, title = (text.format(study=name) for text in TRAINING_FIGURE)
        jobs.append(Job(f"training:{name}", title, file, curves, curve_inputs))

    def latency(path):
        if bench is None:
            raise FigureSkipped(bench_why)
        return plot_latency(bench, path)
    jobs.append(Job("latency", LATENCY_FIGURE[1], LATENCY_FIGURE[0], latency,
                    lambda: ("latency", bench) if bench is not None else None))

    drawn = Drawn()
    with text_cache():  # the labels figures share, shaped and rendered once (suite/report/agg.py)
        for job in jobs:
            draw_job(job, fig_dir, drawn, say)
    return drawn


def draw_job(job: Job, fig_dir: Path, drawn: Drawn, say: Callable[[str], Any]) -> None:
    """Draw one figure into `drawn` (or keep its PNG when its inputs did not change)."""
    from suite.report.figures import FigureSkipped

    drawn.titles[job.key] = job.title
    path = fig_dir / job.file
    try:
        inputs = job.inputs()
        key = unchanged.digest(*inputs) if inputs is not None else None
        if key is not None and unchanged.is_current(path, key):
            drawn.figures[job.key] = path
            say(f"figure {job.key}: {path} (unchanged)")
            return
        with unchanged.writing(key):
            drawn.figures[job.key] = job.draw(path)
        say(f"figure {job.key}: {drawn.figures[job.key]}")
    except FigureSkipped as why:
        drawn.skipped[job.key] = str(why)
        say(f"figure {job.key}: skipped ({why})")


@dataclass
class Job:
    key: str  # figure name
    title: str  # README title
    file: str
    draw: Callable[[Path], Path]  # draws to the path; raises FigureSkipped
    inputs: Callable[[], tuple | None]  # what the figure shows, for its digest; None: always draw


def study_inputs(fig: Figure, study: Study, frames: dict[str, pd.DataFrame],
                 selections: dict[str, Selection]) -> tuple | None:
    """A declared figure's inputs: its studies' tables and their selected runs and floor runs
    (ids, end times, training hashes); None when it has no study in this report."""
    names = [n for n in (study.name, *fig.studies) if n in frames]
    if not names:
        return None
    cols = ["run_id", "end_time", "tags.train_hash"]
    runs = [sel[[c for c in cols if c in sel]] for n in names for sel in (selections[n].runs, selections[n].floors)]
    return (fig.name, study.name, names, [selections[n].subtitle() for n in names],
            *(frames[n] for n in names), *runs)

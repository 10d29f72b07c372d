"""Rendering the report: `render_report` reads the studies' runs and writes, under `out`,
every table (`tables/<study>.{md,tex,csv}`), the figures (`figures/`) and `README.md`,
which says per paper claim whether it held, did not hold or is undecided at this scale and
the interval that decided it, the floors of each table, how many seeds each cell had, and
what is missing.

Each study is read at ONE scale: `scale=` (`--scale`), else the scale with the most
finished runs of that study (stated in the caption). A study's claim is judged by its own
`Study.claims`, its figures drawn by its own `Study.figures`: nothing here knows a study.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from suite.registry import get_study, paper_studies
from suite.report.drawing import draw_figures
from suite.report.judging import ClaimCheck
from suite.report.runs import Selection, as_tracker, check_scale, load_runs, select_runs
from suite.report.speed import (
    BENCHMARKS_FILE,
    benchmarks_table,
    load_benchmarks,
    machine_text,
    targets,
    targets_markdown,
)
from suite.report.stats import LEVEL, MIN_SEEDS
from suite.report.tables import (
    FLOORS,
    MISSING,
    floor_row,
    floor_rows,
    incomplete_cells,
    missing_cells,
    model_rows,
    not_converged,
    study_table,
    to_latex,
    to_markdown,
)
from suite.tracking import Tracker, TrackingSettings, redact


@dataclass
class ReportResult:
    out_dir: Path
    readme: Path
    tables: dict[str, dict[str, Path]]  # study -> {"md", "tex", "csv"} -> path
    figures: dict[str, Path]  # figure name -> png
    skipped: dict[str, str]  # figure name -> why it was not drawn
    frames: dict[str, pd.DataFrame]  # study -> its table, one row per cell
    selections: dict[str, Selection]
    missing: pd.DataFrame  # study, row, column, variant, metric, why
    incomplete: pd.DataFrame
    claims: list[ClaimCheck] = field(default_factory=list)
    speed: pd.DataFrame | None = None  # the speed targets from benchmarks.json (suite.report.speed.targets)
    speed_source: Path | None = None
    speed_machine: str = ""  # where it was measured (suite.report.speed.machine_text)
    titles: dict[str, str] = field(default_factory=dict)  # figure name -> its title in README.md

    @property
    def scales(self) -> dict[str, str | None]:
        return {name: sel.scale for name, sel in self.selections.items()}


def study_names(studies: list[str] | None) -> list[str]:
    """The studies to report: those named (each once; ValueError names the known ones), else
    every paper study."""
    if not studies:
        return [s.name for s in paper_studies()]
    return [get_study(name).name for name in dict.fromkeys(studies)]
def render_report(tracker_or_settings: Tracker | TrackingSettings, studies: list[str] | None = None,
                  out_dir: str | Path = "results", *, scale: str | None = None, figures: bool = True,
                  benchmarks: str | Path | None = None, say: Callable[[str], Any] = lambda msg: None,
                  ) -> ReportResult:
    """Read the studies' runs and write tables, figures and README.md under `out_dir`.

    studies: names (default: every paper study); scale: read every study at this scale
    (default: per study, the scale with the most finished runs); benchmarks: the
    pytest-benchmark JSON for the latency figure (default `<out_dir>/benchmarks.json`).
    """
    with libraries_out_of_gc():
        return _render(tracker_or_settings, studies, Path(out_dir), scale, figures, benchmarks, say)


YOUNG_OBJECTS = 10_000  # the collector's first threshold during a report (Python's default: 700)


@contextlib.contextmanager
def libraries_out_of_gc() -> Iterator[None]:
    """The objects that exist before the report (mostly the imported libraries: MLflow,
    SQLAlchemy, pandas, matplotlib, half a million objects) left out of the garbage
    collector's passes while it runs, and the report's own objects collected in larger
    batches: it allocates enough (runs, artists) for hundreds of collections, and the full
    ones each walked every object (0.6 to 1 s of the 500-run report), the young ones its own
    (0.3 s more). Its garbage is collected as usual, only less often. Left alone when the
    process has frozen objects itself."""
    if gc.get_freeze_count():
        yield
        return
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(threshold[0], YOUNG_OBJECTS), *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


def _render(tracker_or_settings: Tracker | TrackingSettings, studies: list[str] | None, out: Path,
            scale: str | None, figures: bool, benchmarks: str | Path | None, say: Callable[[str], Any]
            ) -> ReportResult:
    names = study_names(studies)
    tracker = as_tracker(tracker_or_settings)
    runs = load_runs(tracker, names)
    say(f"read {len(runs)} run(s) from {redact(tracker.settings.tracking_uri)}")
    check_scale(scale, runs)
    (out / "tables").mkdir(parents=True, exist_ok=True)

    result = ReportResult(out, out / "README.md", {}, {}, {}, {}, {}, pd.DataFrame(), pd.DataFrame())
    missing, incomplete = [], []
    for name in names:
        study = get_study(name)
        sel = select_runs(runs, study, scale)
        frame = study_table(sel)
        result.selections[name], result.frames[name] = sel, frame
        paths = {ext: out / "tables" / f"{name}.{ext}" for ext in ("md", "tex", "csv")}
        paths["md"].write_text(to_markdown(frame, sel))
        paths["tex"].write_text(to_latex(frame, sel))
        frame.to_csv(paths["csv"], index=False)
        result.tables[name] = paths
        missing.append(missing_cells(frame, sel))
        incomplete.append(incomplete_cells(frame, sel))
        if study.claims is not None:
            result.claims.append(study.claims(model_rows(frame), study))  # each row carries its floors
        say(f"{name}: scale {sel.scale or '-'}, {len(sel.runs)} run(s), "
            f"{int((model_rows(frame)['n'] == 0).sum())} of {len(model_rows(frame))} cell(s) missing, "
            f"{len(sel.floors)} floor run(s) -> {paths['md']}")
    result.missing = pd.concat(missing, ignore_index=True)
    result.incomplete = pd.concat(incomplete, ignore_index=True)
    bench = Path(benchmarks) if benchmarks else out / BENCHMARKS_FILE
    payload, why = load_benchmarks(bench)
    if figures:
        drawn = draw_figures(tracker, result.frames, result.selections, out / "figures", payload, why, say)
        result.figures, result.skipped, result.titles = drawn.figures, drawn.skipped, drawn.titles
    if payload is not None:
        table = benchmarks_table(payload)
        result.speed, result.speed_source = (targets(table) if len(table) else None), bench
        result.speed_machine = machine_text(payload)
    result.readme.write_text(readme(result, tracker))
    say(f"wrote {result.readme}")
    return result


def readme(result: ReportResult, tracker: Tracker) -> str:
    """results/README.md: the claims, every table and figure, and what is missing."""
    commits = sorted({str(c)[:7] for sel in result.selections.values()
                      for c in sel.runs.get("tags.git_commit", pd.Series(dtype=object)).dropna()})
    lines = [
        "# Results: the HumMUSS supplement's tables and claims beside ours", "",
        f"Rendered by `hummuss-suite report` from the MLflow store `{_shown_store(tracker.settings)}` "
        f"(experiments `{tracker.settings.experiment_prefix}/<study>`). Every number of ours was read from a "
        f"FINISHED run (mean ± sample std over seeds with its {LEVEL:.0%} interval, Student t with n−1 "
        f"degrees of freedom, n = seeds; cells with n < {MIN_SEEDS} are flagged); the paper's come from the "
        f"study declarations in `studies/`. A cell without a finished run shows {MISSING}."
        + (f" Runs from commit(s) {', '.join(commits)}." if commits else ""), "",
        "## The paper's claims at this scale", "",
        "Each claim is held, did not hold, or is undecided at this scale, from the 95% interval of a difference "
        "between cells (paired by seed where both cells have the same seeds, else Welch's, \"unpaired\") "
        "against the study's tolerance; a claim resting on a model that is no better than the linear-lift "
        "floor is undecided.", ""]
    warnings = sorted({w for sel in result.selections.values() if (w := not_converged(sel.scale))})
    lines += [f"**{w}**" for w in warnings] + ([""] if warnings else [])
    lines += [c.line() for c in result.claims] or ["No claims in this report."]
    lines += ["", "## Tables", "", "| study | paper | scale | runs | seeds per cell | table |",
              "|---|---|---|---:|---|---|"]
    for name, paths in result.tables.items():
        sel = result.selections[name]
        links = " · ".join(f"[{ext}](tables/{p.name})" for ext, p in paths.items())
        scale = f"{sel.scale} ({sel.how})" if sel.scale else MISSING
        lines.append(f"| {name} | {sel.study.paper.table} | {scale} | {len(sel.runs)} | "
                     f"{seeds_text(result.frames[name])} | {links} |")
    lines += floors_section(result)
    lines += ["", "## Figures", ""]
    for key, path in result.figures.items():
        lines += [f"### {result.titles[key]}", "", f"![{result.titles[key]}](figures/{path.name})", ""]
    if result.skipped:
        lines += ["Not drawn:", ""]
        lines += [f"- {result.titles[key]}: {why}" for key, why in result.skipped.items()]
        lines.append("")
    if result.speed is not None:
        lines += ["## Speed", "", f"From `{result.speed_source.name}` (`hummuss-suite bench`, one run on one "
                  f"machine: {result.speed_machine}; every figure is in `benchmarks.md`):", ""]
        lines += targets_markdown(result.speed) + [""]
    lines += ["## Missing runs", ""]
    if len(result.missing):
        lines += ["| study | row | column | variant | metric | why |", "|---|---|---|---|---|---|"]
        lines += [f"| {m.study} | {m.row} | {m.column} | {m.variant} | `{m.metric}` | {m.why} |"
                  for m in result.missing.itertuples()]
    else:
        lines.append("None: every cell has at least one finished run.")
    if len(result.incomplete):
        lines += ["", "Cells with fewer seeds than their scale declares:", ""]
        lines += [f"- {c.study}: {c.row} × {c.column}: n={c.n} of {c.expected}"
                  for c in result.incomplete.itertuples()]
    return "\n".join(lines) + "\n"


def seeds_text(frame: pd.DataFrame) -> str:
    """'3 in every cell', '1–3 (2 cell(s) with n < 3)', '3 (1 cell(s) without a run)' or '—'."""
    n = model_rows(frame)["n"]
    done = n[n > 0]
    if not len(done):
        return MISSING
    low, high = int(done.min()), int(done.max())
    notes = [f"{k} cell(s) with n < {MIN_SEEDS}" for k in [int((done < MIN_SEEDS).sum())] if k]
    notes += [f"{k} cell(s) without a run" for k in [len(n) - len(done)] if k]
    text = str(low) if low == high else f"{low}–{high}"
    return text + (f" ({'; '.join(notes)})" if notes else (" in every cell" if low == high else ""))


def floors_section(result: ReportResult) -> list[str]:
    """README lines: per table, the value of each floor (per column where they differ)."""
    labels = [label for _, label in FLOORS]
    lines = ["", "## Floors", "", "What no learning gets, scored by the same evaluation as the models (one "
             "fit per floor, scale and data, so no interval). A model above the linear lift has learned nothing "
             "worth comparing.", "", "| study | scale | " + " | ".join(labels) + " |",
             "|---|---|" + "---:|" * len(labels)]
    for name, frame in result.frames.items():
        cells = []
        for floor, _ in FLOORS:
            part = floor_rows(frame)
            part = part[(part["row"] == floor_row(floor)) & (part["n"] > 0)]
            if not len(part):
                cells.append(f"{MISSING} (no run)")
            elif part["mean"].max() - part["mean"].min() < 0.05:
                cells.append(f"{part['mean'].iloc[0]:.1f} mm")
            else:
                cells.append(", ".join(f"{c.column_label} {c.mean:.1f}" for c in part.itertuples()) + " mm")
        lines.append(f"| {name} | {result.selections[name].scale or MISSING} | " + " | ".join(cells) + " |")
    return lines


def _shown_store(settings) -> str:
    """The store URI, with a sqlite path relative to its mlflow.yaml (no machine paths)."""
    uri = redact(settings.tracking_uri)
    if uri.startswith("sqlite:///") and settings.source:
        base = Path(settings.source).resolve().parent
        path = Path(uri[len("sqlite:///"):])
        try:
            return f"sqlite:///{path.relative_to(base)}"
        except ValueError:
            return uri
    return uri

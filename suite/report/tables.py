"""Tables: one row per cell of a study's `Table` (our mean, std, 95% interval, n, the paper's
number and the difference), then one row per floor and column; rendered as markdown, LaTeX
and CSV; the cells without a value and why.

A model cell is the mean +- sample std (ddof=1) over seeds of metric `test/<metric>/<condition>`
of the selected runs of the cell's variant, with its 95% Student-t interval (n-1 degrees of
freedom; none below two seeds); a cell without a finished run shows "—". A floor row
("mean pose (floor)", "linear lift (floor)") takes, per column, the floor run's value at the
condition that column's cells read (n=1, no interval). Column `kind` says which is which,
and every row carries the floors of its column (`floor_mean_pose`, `floor_linear_lift`), so
the model rows alone (`model_rows`, what a study's judge gets) still know their floors.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pandas as pd

from hummuss.protocols import DESCRIPTIONS, resolve_protocol, source_name_of
from suite.registry import SCALES, Study
from suite.report.runs import FLOORS, Selection, plain_strings
from suite.report.stats import LEVEL, MIN_SEEDS, mean_interval
from suite.tracking import metric_name

MISSING = "—"
MODEL, FLOOR, BLANK = "model", "floor", "blank"  # column `kind`; blank: a cell no variant answers


def floor_column(name: str) -> str:
    """The frame column holding floor `name`'s value in each row's table column: 'floor_linear_lift'."""
    return f"floor_{name.replace('-', '_')}"


TABLE_COLUMNS = ["study", "scale", "kind", "row", "row_label", "column", "column_label", "variant", "condition",
                 "metric", "n", "mean", "std", "ci_low", "ci_high", "paper", "diff",
                 *(floor_column(name) for name, _ in FLOORS), "values", "seeds", "run_ids"]


def floor_row(name: str) -> str:
    """The table-frame row key of a floor: 'floor:linear-lift'."""
    return f"{FLOOR}:{name}"


def model_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The study's own cells (without the floors)."""
    return frame[frame["kind"] == MODEL] if "kind" in frame else frame


def table_cell(frame: pd.DataFrame, row: str, column: str) -> pd.Series | None:
    """The first model cell (row, column) of a table frame, or None (as `model_rows` and a
    mask would find it, without building either: the claims look up cells by the hundred)."""
    found = (frame["row"].to_numpy() == row) & (frame["column"].to_numpy() == column)
    if "kind" in frame:
        found &= frame["kind"].to_numpy() == MODEL
    at = np.flatnonzero(found)
    return frame.iloc[at[0]] if len(at) else None


def floor_rows(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["kind"] == FLOOR] if "kind" in frame else frame.iloc[:0]


def column_conditions(study: Study, column: str) -> list[str]:
    """The conditions a column's cells read, in row order (a floor answers each the same)."""
    return list(dict.fromkeys(study.table.cell(row, column)[1] for row, _ in study.table.rows))


def study_table(sel: Selection) -> pd.DataFrame:
    """One row per cell: our mean, std (ddof=1), 95% interval, n, the paper's number and
    ours - paper; then the floors, one row per floor and column."""
    study, rows = sel.study, []
    floors = _floor_cells(sel)
    by_column = {name: {f["column"]: f["mean"] for f in floors if f["variant"] == f"floor/{name}"} for name, _ in FLOORS}
    by_variant = dict(tuple(sel.runs.groupby("tags.variant", sort=False))) if len(sel.runs) else {}
    for row, row_label in study.table.rows:
        for col, col_label in study.table.columns:
            variant, condition = study.table.cell(row, col)
            key = metric_name(study.table.metric, condition)
            runs = by_variant.get(variant, sel.runs.iloc[:0])  # in the selection's order, as a mask keeps it
            runs = runs[runs[f"metrics.{key}"].notna()] if f"metrics.{key}" in runs else runs.iloc[:0]
            values = runs[f"metrics.{key}"].astype(float).to_numpy() if len(runs) else np.array([])
            n = len(values)
            iv = mean_interval(values)
            paper = study.paper.numbers.get((row, col))
            kind = BLANK if (row, col) in study.table.blank else MODEL
            rows.append(dict(
                study=study.name, scale=sel.scale, kind=kind, row=row, row_label=row_label, column=col,
                column_label=col_label, variant=variant, condition=condition, metric=key, n=n, mean=iv.estimate,
                std=float(values.std(ddof=1)) if n > 1 else math.nan, ci_low=iv.low, ci_high=iv.high,
                paper=math.nan if paper is None else float(paper),
                diff=iv.estimate - paper if n and paper is not None else math.nan,
                **{floor_column(name): by_column[name][col] for name, _ in FLOORS},
                values=";".join(f"{v:.6g}" for v in values),
                seeds=";".join(runs["tags.seed"].astype(str)) if n else "",
                run_ids=";".join(runs["run_id"]) if n else ""))
    for f in floors:
        f.update({floor_column(name): by_column[name][f["column"]] for name, _ in FLOORS})
    return plain_strings(pd.DataFrame(rows + floors, columns=TABLE_COLUMNS))


def _floor_cells(sel: Selection) -> list[dict]:
    study, out = sel.study, []
    runs = {str(r["tags.floor"]): r for _, r in sel.floors.iterrows()} if len(sel.floors) else {}
    for name, label in FLOORS:
        run = runs.get(name)
        for col, col_label in study.table.columns:
            conditions = column_conditions(study, col)
            found = [c for c in conditions if run is not None
                     and pd.notna(run.get(f"metrics.{metric_name(study.table.metric, c)}"))]
            condition = found[0] if found else conditions[0]
            key = metric_name(study.table.metric, condition)
            value = float(run[f"metrics.{key}"]) if found else math.nan
            out.append(dict(
                study=study.name, scale=sel.scale, kind=FLOOR, row=floor_row(name), row_label=label, column=col,
                column_label=col_label, variant=f"floor/{name}", condition=condition, metric=key,
                n=int(bool(found)), mean=value, std=math.nan, ci_low=math.nan, ci_high=math.nan, paper=math.nan,
                diff=math.nan, values=f"{value:.6g}" if found else "", seeds="",
                run_ids=str(run["run_id"]) if found else ""))
    return out


def floor_values(frame: pd.DataFrame, name: str = "linear-lift") -> dict[str, float]:
    """column -> the floor's value, for the columns where its run logged one (from any rows of
    the frame: the model rows carry their column's floors)."""
    key = floor_column(name)
    if key not in frame:
        return {}
    part = frame[frame[key].notna()]
    return dict(zip(part["column"], part[key].astype(float)))


def _num(x: float, sign: bool = False) -> str:
    return MISSING if x is None or not np.isfinite(x) else (f"{x:+.1f}" if sign else f"{x:.1f}")


def ours_text(cell: pd.Series, pm: str = "±") -> str:
    """'25.3 ± 0.4 [24.3, 26.3] (n=3)', '25.3 ± 0.4 [21.7, 28.9] (n=2 < 3 seeds)',
    '25.3 (n=1 < 3 seeds)', a floor's '71.2', or '—'."""
    if cell["n"] == 0:
        return MISSING
    if cell.get("kind", MODEL) == FLOOR:
        return f"{cell['mean']:.1f}"
    spread = f" {pm} {cell['std']:.1f}" if cell["n"] > 1 else ""
    interval = f" [{cell['ci_low']:.1f}, {cell['ci_high']:.1f}]" if np.isfinite(cell.get("ci_low", math.nan)) else ""
    few = f" < {MIN_SEEDS} seeds" if cell["n"] < MIN_SEEDS else ""
    return f"{cell['mean']:.1f}{spread}{interval} (n={cell['n']}{few})"


def _paper_columns(study: Study) -> set[str]:
    return {col for _, col in study.paper.numbers}


def grid(frame: pd.DataFrame, study: Study, pm: str = "±", delta: str = "Δ") -> pd.DataFrame:
    """The table as displayed: one row per table row; per column ours, then paper and Δ
    where the paper has a number in that column. Cells are strings."""
    with_paper = _paper_columns(study)
    headers = [""]
    for col, label in study.table.columns:
        headers += [label] + (["paper", delta] if col in with_paper else [])
    lines = []
    cells = {(c["row"], c["column"]): c for c in frame.to_dict("records")}  # one pass, not a mask per cell
    for row, row_label in [*study.table.rows, *((floor_row(name), label) for name, label in FLOORS)]:
        if (row, study.table.columns[0][0]) not in cells:
            continue  # a frame without floor rows
        line = [row_label]
        for col, _ in study.table.columns:
            cell = cells[(row, col)]
            line.append(ours_text(cell, pm))
            if col in with_paper:
                has_paper = np.isfinite(cell["paper"])
                line += [f"{cell['paper']:g}" if has_paper else "",
                         _num(cell["diff"], sign=True) if has_paper and cell["n"] else ""]
        lines.append(line)
    return pd.DataFrame(lines, columns=pd.Index(headers))


def not_converged(scale: str | None) -> str:
    """A warning for a scale whose budget has not passed the convergence check, else ''."""
    if scale is None or scale not in SCALES or SCALES[scale].converged:
        return ""
    return (f"Not converged: scale `{scale}` trains on a budget that has not passed the convergence "
            f"check (doubling it must change test MPJPE by less than 5%); read its numbers as a first look.")


UNRECORDED_PROTOCOL = ("no protocol recorded (runs from before the protocol setting: the predicted root "
                       "subtracted from every joint, every frame scored)")


def protocol_note(runs: pd.DataFrame) -> str:
    """Which evaluation protocol produced the numbers of `runs`, from their params `eval.protocol`
    (`auto` resolved by the source of `data.spec`), in words; '' without runs."""
    if runs is None or not len(runs) or "params.data.spec" not in runs:
        return ""
    given = runs["params.eval.protocol"] if "params.eval.protocol" in runs else pd.Series(None, index=runs.index)
    names = set()
    for spec, protocol in zip(runs["params.data.spec"], given, strict=True):
        if not isinstance(spec, str):
            continue
        if not isinstance(protocol, str):
            names.add(UNRECORDED_PROTOCOL)
        else:
            name = resolve_protocol(protocol, source_name_of(spec))
            names.add(f"`{name}`: {DESCRIPTIONS[name]}")
    return f" Protocol: {'; '.join(sorted(names))}." if names else ""


def caption(sel: Selection) -> str:
    """What the table shows and where its numbers come from, in one paragraph."""
    study = sel.study
    metric = f"`test/{study.table.metric}/<condition>`"
    if sel.scale is None:
        ours = "Ours: no finished runs in the store yet, so every cell of ours is missing"
    else:
        others = ", ".join(f"{s} ({n} runs)" for s, n in sorted(sel.counts.items()) if s != sel.scale)
        ours = (f"Ours: scale `{sel.scale}` ({sel.how}; {sel.counts.get(sel.scale, 0)} finished runs"
                + (f"; also in the store: {others}" if others else "") + ")"
                + (f", data `{'`, `'.join(sel.data_specs)}`" if sel.data_specs else "")
                + f", {metric} in {study.paper.unit}, mean ± sample std over seeds [{LEVEL:.0%} interval, "
                f"Student t with n−1 df; none for n < 2], n = seeds (n < {MIN_SEEDS} is flagged)")
        if sel.superseded:
            ours += f"; {sel.superseded} older duplicate run(s) ignored"
    paper = (f" Paper: {study.paper.table}; Δ = ours − paper." if study.paper.numbers
             else f" Paper: {study.paper.table}, no numbers to compare.")
    note = f" Note: {study.paper.note}" if study.paper.note else ""
    floors = (" Floors: the mean training pose and a per-frame linear least-squares lift from 2D, scored by "
              "the same evaluation (one fit each, no interval); a model above the linear lift has learned "
              "nothing worth comparing.")
    warning = not_converged(sel.scale)
    protocol = protocol_note(sel.runs) if sel.scale is not None else ""
    return (f"{warning + ' ' if warning else ''}{study.paper.caption}. {ours}.{protocol} {MISSING} = no finished run."
            f"{floors}{paper}{note}")


def to_markdown(frame: pd.DataFrame, sel: Selection) -> str:
    shown = grid(frame, sel.study)
    head = "| " + " | ".join(shown.columns) + " |"
    rule = "|" + "|".join(["---"] + [":---:"] * (len(shown.columns) - 1)) + "|"
    body = ["| " + " | ".join(map(str, line)) + " |" for line in shown.itertuples(index=False)]
    title = f"# {sel.study.name}: {sel.study.paper.table}\n\n{sel.study.question}\n"
    return "\n".join([title, caption(sel), "", head, rule, *body, ""])


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                "—": "---", "−": "-", "Δ": r"$\Delta$", "±": r"$\pm$", "`": "", "<": r"\textless{}",
                ">": r"\textgreater{}"}


def tex_escape(text: str) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in str(text))


def to_latex(frame: pd.DataFrame, sel: Selection) -> str:
    shown = grid(frame, sel.study).map(tex_escape)
    shown.columns = [tex_escape(c) for c in shown.columns]
    return shown.style.hide(axis="index").to_latex(
        caption=tex_escape(caption(sel)), label=f"tab:{sel.study.name}", hrules=True,
        column_format="l" + "c" * (len(shown.columns) - 1), position="t")


def missing_cells(frame: pd.DataFrame, sel: Selection) -> pd.DataFrame:
    """The cells without a value, and why (no run, unfinished runs, or a missing metric)."""
    out = []
    at = f"at scale {sel.scale}" if sel.scale else "at any scale"
    for cell in frame[(frame["n"] == 0) & (frame["kind"] != BLANK)].itertuples():
        done = sel.runs[sel.runs["tags.variant"] == cell.variant]
        if cell.kind == FLOOR:
            why = _floor_missing(sel, cell.row.split(":", 1)[1], at)
        elif len(done):
            why = f"{len(done)} finished run(s) {at} lack this metric"
        else:
            states = Counter(sel.unfinished.loc[sel.unfinished["tags.variant"] == cell.variant, "status"])
            why = f"no finished run of variant {cell.variant!r} {at}"
            if states:
                why += " (" + ", ".join(f"{n} {s}" for s, n in sorted(states.items())) + ")"
        out.append(dict(study=cell.study, row=cell.row_label, column=cell.column_label, variant=cell.variant,
                        metric=cell.metric, why=why))
    return pd.DataFrame(out, columns=["study", "row", "column", "variant", "metric", "why"])


def _floor_missing(sel: Selection, name: str, at: str) -> str:
    run = sel.floors[sel.floors["tags.floor"] == name] if len(sel.floors) else sel.floors
    if len(run):
        return f"floor run {run.iloc[0]['run_id']} {at} lacks this metric"
    data = f" with data {', '.join(sel.data_specs)}" if sel.data_specs else ""
    why = f"no finished {name} floor run {at}{data}"
    if len(sel.floor_unfinished):
        states = Counter(sel.floor_unfinished.loc[sel.floor_unfinished["tags.floor"] == name, "status"])
        if states:
            why += " (" + ", ".join(f"{n} {s}" for s, n in sorted(states.items())) + ")"
    return why


def incomplete_cells(frame: pd.DataFrame, sel: Selection) -> pd.DataFrame:
    """Cells with fewer seeds than the scale declares (but at least one)."""
    if sel.scale is None or sel.scale not in sel.study.scales:
        return pd.DataFrame(columns=["study", "row", "column", "n", "expected"])
    expected = len(sel.study.scale(sel.scale).seeds)
    frame = model_rows(frame)
    part = frame[(frame["n"] > 0) & (frame["n"] < expected)]
    return pd.DataFrame({"study": part["study"], "row": part["row_label"], "column": part["column_label"],
                         "n": part["n"], "expected": expected})


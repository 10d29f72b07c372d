"""Tables: one row per cell of a study's `Table` (our mean, std, n, the paper's number and
the difference), rendered as markdown, LaTeX and CSV; the cells without a value and why.

A cell is the mean +- sample std (ddof=1) over seeds of metric `test/<metric>/<condition>`
of the selected runs of the cell's variant; a cell without a finished run shows "—".
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pandas as pd

from suite.registry import Study
from suite.report.runs import Selection
from suite.tracking import metric_name

MISSING = "—"
TABLE_COLUMNS = ["study", "scale", "row", "row_label", "column", "column_label", "variant", "condition",
                 "metric", "n", "mean", "std", "paper", "diff", "values", "seeds", "run_ids"]


def study_table(sel: Selection) -> pd.DataFrame:
    """One row per cell: our mean, std (ddof=1), n, the paper's number and ours - paper."""
    study, rows = sel.study, []
    for row, row_label in study.table.rows:
        for col, col_label in study.table.columns:
            variant, condition = study.table.cell(row, col)
            key = metric_name(study.table.metric, condition)
            runs = sel.runs[sel.runs["tags.variant"] == variant]
            runs = runs[runs[f"metrics.{key}"].notna()] if f"metrics.{key}" in runs else runs.iloc[:0]
            values = runs[f"metrics.{key}"].astype(float).to_numpy() if len(runs) else np.array([])
            n = len(values)
            mean = float(values.mean()) if n else math.nan
            std = float(values.std(ddof=1)) if n > 1 else math.nan
            paper = study.paper.numbers.get((row, col))
            rows.append(dict(
                study=study.name, scale=sel.scale, row=row, row_label=row_label, column=col,
                column_label=col_label, variant=variant, condition=condition, metric=key, n=n, mean=mean,
                std=std, paper=math.nan if paper is None else float(paper),
                diff=mean - paper if n and paper is not None else math.nan,
                values=";".join(f"{v:.6g}" for v in values),
                seeds=";".join(runs["tags.seed"].astype(str)) if n else "",
                run_ids=";".join(runs["run_id"]) if n else ""))
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def _num(x: float, sign: bool = False) -> str:
    return MISSING if x is None or not np.isfinite(x) else (f"{x:+.1f}" if sign else f"{x:.1f}")


def ours_text(cell: pd.Series, pm: str = "±") -> str:
    """'25.3 ± 0.4 (n=3)', '25.3 (n=1)' or '—'."""
    if cell["n"] == 0:
        return MISSING
    spread = f" {pm} {cell['std']:.1f}" if cell["n"] > 1 else ""
    return f"{cell['mean']:.1f}{spread} (n={cell['n']})"


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
    for row, row_label in study.table.rows:
        line = [row_label]
        for col, _ in study.table.columns:
            cell = frame[(frame["row"] == row) & (frame["column"] == col)].iloc[0]
            line.append(ours_text(cell, pm))
            if col in with_paper:
                has_paper = np.isfinite(cell["paper"])
                line += [f"{cell['paper']:g}" if has_paper else "",
                         _num(cell["diff"], sign=True) if has_paper and cell["n"] else ""]
        lines.append(line)
    return pd.DataFrame(lines, columns=pd.Index(headers))


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
                + f", {metric} in {study.paper.unit}, mean ± sample std over seeds, n = seeds")
        if sel.superseded:
            ours += f"; {sel.superseded} older duplicate run(s) ignored"
    paper = (f" Paper: {study.paper.table}; Δ = ours − paper." if study.paper.numbers
             else f" Paper: {study.paper.table}, no numbers to compare.")
    note = f" Note: {study.paper.note}" if study.paper.note else ""
    return f"{study.paper.caption}. {ours}. {MISSING} = no finished run.{paper}{note}"


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
    for cell in frame[frame["n"] == 0].itertuples():
        done = sel.runs[sel.runs["tags.variant"] == cell.variant]
        if len(done):
            why = f"{len(done)} finished run(s) {at} lack this metric"
        else:
            states = Counter(sel.unfinished.loc[sel.unfinished["tags.variant"] == cell.variant, "status"])
            why = f"no finished run of variant {cell.variant!r} {at}"
            if states:
                why += " (" + ", ".join(f"{n} {s}" for s, n in sorted(states.items())) + ")"
        out.append(dict(study=cell.study, row=cell.row_label, column=cell.column_label, variant=cell.variant,
                        metric=cell.metric, why=why))
    return pd.DataFrame(out, columns=["study", "row", "column", "variant", "metric", "why"])


def incomplete_cells(frame: pd.DataFrame, sel: Selection) -> pd.DataFrame:
    """Cells with fewer seeds than the scale declares (but at least one)."""
    if sel.scale is None or sel.scale not in sel.study.scales:
        return pd.DataFrame(columns=["study", "row", "column", "n", "expected"])
    expected = len(sel.study.scale(sel.scale).seeds)
    part = frame[(frame["n"] > 0) & (frame["n"] < expected)]
    return pd.DataFrame({"study": part["study"], "row": part["row_label"], "column": part["column_label"],
                         "n": part["n"], "expected": expected})


"""Judging a paper's claim from a study's table: the verdict and the numbers that decided it.

A study declares its judge (`Study.claims`: (table frame, study) -> ClaimCheck) in its own
file; the helpers here are what judges share: a cell's value, changes in percent, rows
ranked by value, and two judges several studies use (`claim_ablation`, `claim_summary`).
A verdict is one of: held, partly held, did not hold, not judged, no paper claim.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from suite.registry import Study
from suite.report.tables import ours_text


@dataclass
class ClaimCheck:
    study: str
    verdict: str  # held | partly held | did not hold | not judged | no paper claim
    text: str

    def line(self) -> str:
        return f"- **{self.study.replace('-', ' ')}** ({self.verdict}): {self.text}"


def cell(frame: pd.DataFrame, row: str, col: str) -> pd.Series | None:
    """The table cell (row, col), or None when it has no finished run."""
    hit = frame[(frame["row"] == row) & (frame["column"] == col)]
    return hit.iloc[0] if len(hit) and hit.iloc[0]["n"] > 0 else None


def pct(a: float, b: float) -> float:
    """Change from a to b in percent."""
    return (b / a - 1.0) * 100.0


def signed(p: float) -> str:
    """+3.1%, -0.4%; never '-0.0%'."""
    return f"{0.0 if abs(p) < 0.05 else p:+.1f}%"


def grew(p: float) -> str:
    """'grew by 3.1%', 'fell by 0.4%' or 'did not change (0.0%)'."""
    return f"grew by {p:.1f}%" if p >= 0.05 else (f"fell by {-p:.1f}%" if p <= -0.05 else "did not change (0.0%)")


def ranked(study: Study, values: Callable[[str], float | None]) -> list[tuple[float, str]]:
    """(value, row) for the table's rows that have a value, best (lowest) first."""
    pairs = [(values(r), r) for r, _ in study.table.rows]
    return sorted((v, r) for v, r in pairs if v is not None and np.isfinite(v))


def claim_ablation(frame: pd.DataFrame, study: Study) -> ClaimCheck:
    """An ablation table (rows: the options, columns: model types, lower is better):
    '<paper's best> was best in k of m model types (paper: k' of m')'."""
    labels, col_labels = dict(study.table.rows), dict(study.table.columns)
    paper_best, paper_worst, ours_best, ours_worst, details = {}, {}, {}, {}, []
    n_rows = len(study.table.rows)
    for col, _ in study.table.columns:
        paper = ranked(study, lambda r, c=col: study.paper.numbers.get((r, c)))
        if len(paper) == n_rows:
            paper_best[col], paper_worst[col] = paper[0][1], paper[-1][1]

        def ours_of(r, c=col):
            hit = cell(frame, r, c)
            return None if hit is None else hit["mean"]

        ours = ranked(study, ours_of)
        if len(ours) == n_rows:
            ours_best[col], ours_worst[col] = ours[0][1], ours[-1][1]
            details.append(f"{col_labels[col]}: " + ", ".join(f"{labels[r]} {v:.1f}" for v, r in ours) + " mm")
    if not paper_best:
        return ClaimCheck(study.name, "not judged", "the study declares no complete paper column")
    best = Counter(paper_best.values()).most_common(1)[0][0]
    worst = Counter(paper_worst.values()).most_common(1)[0][0]
    judged = [c for c in paper_best if c in ours_best]
    if not judged:
        return ClaimCheck(study.name, "not judged", "no model type has finished runs of every variant")
    k = sum(ours_best[c] == best for c in judged)
    w = sum(ours_worst[c] == worst for c in judged)
    pk, pw = sum(v == best for v in paper_best.values()), sum(v == worst for v in paper_worst.values())
    text = (f"{labels[best]} was best in {k} of {len(judged)} model types (paper: {pk} of {len(paper_best)}); "
            f"{labels[worst]} was worst in {w} of {len(judged)} (paper: {pw} of {len(paper_worst)}); "
            + "; ".join(details))
    verdict = "held" if k == len(judged) else ("partly held" if k else "did not hold")
    return ClaimCheck(study.name, verdict, text)


def claim_summary(frame: pd.DataFrame, study: Study) -> ClaimCheck:
    """Studies without a claim of the paper: our numbers in one sentence."""
    done = frame[frame["n"] > 0]
    if not len(done):
        return ClaimCheck(study.name, "no paper claim", "no finished runs")
    parts = [f"{c.row_label} {ours_text(c)} mm" for _, c in done.iterrows()]
    return ClaimCheck(study.name, "no paper claim", ", ".join(parts) + f"; {study.paper.table} gives no number to compare")

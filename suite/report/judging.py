"""Judging a paper's claim from a study's table: the verdict and the intervals that decided it.

A study declares its judge (`Study.claims`: (table frame, study) -> ClaimCheck) in its own
file; what judges share is here: a cell and its values per seed, the difference of two
cells with its 95% interval (`difference`: paired by seed when both cells have the same
seeds, else Welch, "unpaired"; suite/report/stats.py), a claim's parts and the verdict they
give together (`conclude`), and two judges several studies use (`claim_ablation`,
`claim_summary`).

A verdict is one of: held, did not hold, undecided at this scale (the intervals cannot tell,
or a model the claim rests on is no better than the linear-lift floor: a model that did not
learn decides nothing), not judged (cells without runs), no paper claim.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from suite.registry import Study
from suite.report.stats import UNDECIDED, Interval, above, combine
from suite.report.stats import difference as seed_difference
from suite.report.tables import FLOORS, floor_values, model_rows, ours_text, table_cell

NOT_JUDGED, NO_CLAIM = "not judged", "no paper claim"
LINEAR_LIFT = FLOORS[1][0]  # "linear-lift": the floor a model that learned must beat


@dataclass
class ClaimCheck:
    study: str
    verdict: str  # held | did not hold | undecided at this scale | not judged | no paper claim
    text: str  # every comparison, the floors, and what stands beside it
    decided_by: str = ""  # the interval(s) and tolerance that gave the verdict
    claim: str = ""  # the claim in words

    def line(self) -> str:
        head = f"- **{self.study.replace('-', ' ')}** ({self.verdict})"
        head += f": {self.claim}." if self.claim else ":"
        if self.decided_by:
            head += f" Decided by {self.decided_by}."
        return f"{head} {self.text}"


def cell(frame: pd.DataFrame, row: str, col: str) -> pd.Series | None:
    """The model cell (row, col), or None when it has no finished run."""
    found = table_cell(frame, row, col)
    return found if found is not None and found["n"] > 0 else None


def seed_values(c: pd.Series) -> dict[int, float]:
    """seed -> value of a table cell."""
    if not isinstance(c["values"], str) or not c["values"]:
        return {}
    values = [float(v) for v in c["values"].split(";")]
    seeds = [int(float(s)) for s in str(c["seeds"]).split(";")] if c["seeds"] else list(range(len(values)))
    return dict(zip(seeds, values))


def difference(a: pd.Series, b: pd.Series) -> Interval:
    """a - b of two cells: paired by seed when they have the same seeds, else Welch (unpaired)."""
    return seed_difference(seed_values(a), seed_values(b))


def pct(a: float, b: float) -> float:
    """Change from a to b in percent."""
    return (b / a - 1.0) * 100.0


def signed(p: float) -> str:
    """+3.1%, -0.4%; never '-0.0%'."""
    return f"{0.0 if abs(p) < 0.05 else p:+.1f}%"


@dataclass
class Part:
    """One comparison a claim rests on: its interval (None: a cell is missing), the rule it
    must meet and the verdict it gives."""

    what: str  # "HumMUSS F=243 − F=27"
    iv: Interval | None
    rule: str  # "held when < +3.0 mm"
    verdict: str

    def text(self) -> str:
        if self.iv is None:
            return f"{self.what}: not judged ({self.rule})"
        return f"{self.what} = {self.iv.text()}, {self.rule}: {self.verdict}"


def part(what: str, a: pd.Series | None, b: pd.Series | None, rule: str, decide, missing: str = "") -> Part:
    """The part `what` from cells a - b, judged by decide(interval) -> verdict."""
    if a is None or b is None:
        return Part(what, None, missing or "a cell has no finished run", UNDECIDED)
    iv = difference(a, b)
    return Part(what, iv, rule, decide(iv))


def no_better_than_floor(frame: pd.DataFrame, cells: Iterable[tuple[str, str]]) -> list[str]:
    """'model X is no better than the linear lift (...)' for each (row, column) cell whose
    interval's lower bound (its mean when n = 1) is above the linear-lift floor there."""
    floor, out, seen = floor_values(frame, LINEAR_LIFT), [], set()
    for row, col in cells:
        c = cell(frame, row, col)
        if c is None or col not in floor or (c["variant"], c["condition"]) in seen:
            continue
        seen.add((c["variant"], c["condition"]))
        low = c["ci_low"] if np.isfinite(c["ci_low"]) else c["mean"]
        if low > floor[col]:
            out.append(f"model {c['row_label']} is no better than the linear lift ({c['column_label']}: "
                       f"{'lower bound' if np.isfinite(c['ci_low']) else 'mean'} {low:.1f} > {floor[col]:.1f} mm)")
    return out


def floor_text(frame: pd.DataFrame, columns: Iterable[str] | None = None) -> str:
    """'floors: mean pose 152.0, linear lift 71.2 mm' over `columns` (a range when they differ)."""
    parts = []
    for name, label in FLOORS:
        values = floor_values(frame, name)
        picked = [values[c] for c in (columns if columns is not None else values) if c in values]
        if picked:
            lo, hi = min(picked), max(picked)
            parts.append(f"{label.split(' (')[0]} {lo:.1f}" + (f"–{hi:.1f}" if hi - lo >= 0.05 else ""))
    return "floors: " + ", ".join(parts) + " mm" if parts else "no floor runs: not checked against the floors"


def conclude(study: Study, parts: list[Part], frame: pd.DataFrame, learned: Iterable[tuple[str, str]],
             claim: str, beside: str = "", shifted: Iterable[tuple[str, str]] = ()) -> ClaimCheck:
    """The verdict of a claim made of `parts` (did not hold if any part did not, held if all
    held, else undecided), unless a model the claim rests on is no better than the linear lift
    in one of its `learned` cells (those at its training condition, where a model that learned
    must beat the floor): then undecided, saying so. `shifted` cells (the same models at a test
    condition the claim is about: longer windows, another frame rate) above the floor are
    stated, not disqualifying: failing there is what such a claim measures."""
    judged = [p for p in parts if p.iv is not None]
    if not judged:
        return ClaimCheck(study.name, NOT_JUDGED, "; ".join(p.text() for p in parts) + ".", claim=claim)
    learned = list(learned)
    unlearned = no_better_than_floor(frame, learned)
    verdict = UNDECIDED if unlearned else combine(p.verdict for p in parts)
    if unlearned:
        decided, decisive = "; ".join(unlearned), []
    else:
        decisive = [p for p in parts if p.verdict == verdict]  # a missing comparison is undecided
        decided = "; ".join(p.text() if p.iv is None else f"{p.what} = {p.iv.text()}, {p.rule}" for p in decisive)
    others = [p.text() for p in parts if p not in decisive]
    sentences = [f"Other comparisons: {'; '.join(others)}"] if others else []
    floors = floor_text(frame, [c for _, c in learned])
    sentences.append(floors[0].upper() + floors[1:])
    if beside:
        sentences.append(f"Beside it: {beside}")
    above_floor = [] if unlearned else \
        [r.replace("no better than", "above") for r in no_better_than_floor(frame, shifted)]
    if above_floor:
        sentences.append("At the test conditions: " + "; ".join(above_floor))
    text = ". ".join(sentences)
    return ClaimCheck(study.name, verdict, text + ".", decided, claim)


def ranked(study: Study, values) -> list[tuple[float, str]]:
    """(value, row) for the table's rows that have a value, best (lowest) first."""
    pairs = [(values(r), r) for r, _ in study.table.rows]
    return sorted((v, r) for v, r in pairs if v is not None and np.isfinite(v))


def claim_ablation(frame: pd.DataFrame, study: Study) -> ClaimCheck:
    """An ablation table (rows: the options, columns: model types, lower is better): the
    paper's choice (its best row in most columns) is best. Per column and other option, the
    difference other − choice with its 95% interval: held when every one is above 0, did not
    hold when one is below 0, else undecided."""
    labels, col_labels = dict(study.table.rows), dict(study.table.columns)
    paper_best = {}
    for col, _ in study.table.columns:
        paper = ranked(study, lambda r, c=col: study.paper.numbers.get((r, c)))
        if len(paper) == len(study.table.rows):
            paper_best[col] = paper[0][1]
    if not paper_best:
        return ClaimCheck(study.name, NOT_JUDGED, "the study declares no complete paper column")
    best = Counter(paper_best.values()).most_common(1)[0][0]
    parts = []
    for col in paper_best:
        for other, other_label in study.table.rows:
            if other != best:
                parts.append(part(f"{col_labels[col]}: {other_label} − {labels[best]}", cell(frame, other, col),
                                  cell(frame, best, col), "held when > 0", lambda iv: above(iv, 0.0)))
    learned = [(r, c) for c in paper_best for r, _ in study.table.rows]
    means = []
    for col in paper_best:
        ours = ranked(study, lambda r, c=col: None if cell(frame, r, c) is None else cell(frame, r, c)["mean"])
        if ours:
            means.append(f"{col_labels[col]}: " + ", ".join(f"{labels[r]} {v:.1f}" for v, r in ours) + " mm")
    return conclude(study, parts, frame, learned, f"{labels[best]} (the paper's choice) is best", "; ".join(means))


def claim_summary(frame: pd.DataFrame, study: Study) -> ClaimCheck:
    """Studies without a claim of the paper: our numbers in one sentence, and the floors."""
    done = model_rows(frame)
    done = done[done["n"] > 0]
    if not len(done):
        return ClaimCheck(study.name, NO_CLAIM, "no finished runs")
    parts = [f"{c.row_label} {ours_text(c)} mm" for _, c in done.iterrows()]
    return ClaimCheck(study.name, NO_CLAIM, ", ".join(parts) + f" ({floor_text(frame)}); {study.paper.table} "
                      "gives no number to compare")

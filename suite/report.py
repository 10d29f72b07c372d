"""The report: MLflow runs -> pandas -> the paper's tables and figures beside ours.

    hummuss-suite report [STUDY ...] [--out results/] [--scale cpu]

For each study, a table in its `Table` layout (rows x columns from the registry); a
cell is the mean +- sample std (ddof=1) over seeds of metric `test/<metric>/<condition>`
of the FINISHED child runs of the cell's variant, with n, the paper's number beside it
and the difference (ours - paper). Written to `<out>/tables/<study>.{md,tex,csv}`;
figures to `<out>/figures/` (see suite/figures.py); `<out>/README.md` lists them all and
says, per paper claim, whether it held at this scale and by how much.

Rules the code keeps:
- every number comes from a run read here (or from the study's `PaperRef` for the
  paper's); a cell without a finished run shows "—" and is listed as missing;
- runs of one study are read at ONE scale: `scale=` (`--scale`), else the scale with
  the most finished runs of that study (stated in the caption), so smoke and cpu
  results never mix; of several finished runs of one variant and seed at that scale
  the latest is used (the others are counted as superseded).
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from suite.registry import SCALES, Study, get_study, paper_studies
from suite.tracking import Tracker, TrackingSettings, metric_name, redact

MISSING = "—"
FINISHED = "FINISHED"
CONTEXT_TOLERANCE_PCT = 10.0  # context length "held": error at the longest window at most this much higher
INIT_SPREAD_PCT = 5.0  # init schemes "all similar": means within this much of the best
FRAME_RATE_MARGIN_PCT = 1.0  # dt rescaling "helped" at a factor: error at least this much lower
BENCHMARKS_FILE = "benchmarks.json"  # `make bench` writes <out>/benchmarks.json
NOT_CHILD_KINDS = ("parent", "sweep", "trial")  # tag `kind` of runs that are not a study's child runs

# figure key -> (file name, title in the README)
FIGURES: dict[str, tuple[str, str]] = {
    "context-length": ("fig1_context_length.png", "MPJPE against test window length (Table 1)"),
    "frame-rate": ("fig2_frame_rate.png", "MPJPE against frame-rate factor, with and without dt rescaling"),
    "skeletons": ("fig3_skeletons_x8.png", "One test sequence subsampled x8: ground truth and prediction"),
    "aggregation": ("fig4_aggregation.png", "Aggregation ablations (Tables 2 and 3)"),
    "init-schemes": ("fig5_init_schemes.png", "DSSM initialisation schemes"),
    "training": ("fig6_training_{study}.png", "Training curves: {study}"),
    "latency": ("fig7_latency.png", "Latency against context length (benchmarks)"),
}


# -- reading the store -------------------------------------------------------------------------
def _tracker(tracker_or_settings: Tracker | TrackingSettings) -> Tracker:
    if isinstance(tracker_or_settings, Tracker):
        return tracker_or_settings
    if isinstance(tracker_or_settings, TrackingSettings):
        return Tracker(tracker_or_settings)
    raise ValueError(f"expected a Tracker or TrackingSettings, got {type(tracker_or_settings).__name__}")


def _flatten(run, study: str) -> dict[str, Any]:
    """One MLflow run -> one row in `mlflow.search_runs`' column naming."""
    row: dict[str, Any] = {"run_id": run.info.run_id, "study": study, "status": run.info.status,
                           "start_time": run.info.start_time, "end_time": run.info.end_time or 0,
                           "artifact_uri": run.info.artifact_uri}
    row.update({f"metrics.{k}": v for k, v in run.data.metrics.items()})
    row.update({f"params.{k}": v for k, v in run.data.params.items()})
    row.update({f"tags.{k}": v for k, v in run.data.tags.items()})
    return row


def load_runs(tracker: Tracker, studies: list[str]) -> pd.DataFrame:
    """Every active run of the studies' experiments, one row each (`study` column added)."""
    rows: list[dict[str, Any]] = []
    for study in studies:
        exp_id = tracker.experiment_id(study, create=False)
        token = None
        while exp_id is not None:
            page = tracker.client.search_runs([exp_id], "", max_results=5000, page_token=token)
            rows += [_flatten(run, study) for run in page]
            token = page.token
            if not token:
                break
    frame = pd.DataFrame(rows)
    for col in ("run_id", "study", "status", "start_time", "end_time", "tags.variant", "tags.seed",
                "tags.scale", "tags.kind"):
        if col not in frame:
            frame[col] = pd.Series(dtype=object)
    return frame


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

    @property
    def data_specs(self) -> list[str]:
        return sorted(self.runs["params.data.spec"].dropna().unique()) if "params.data.spec" in self.runs else []


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
    return Selection(study, scale, how, counts, latest, unfinished, len(at) - len(latest))


# -- tables ------------------------------------------------------------------------------------
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


# -- the paper's claims, judged from the numbers ---------------------------------------------------
@dataclass
class ClaimCheck:
    study: str
    verdict: str  # held | partly held | did not hold | not judged | no paper claim
    text: str

    def line(self) -> str:
        return f"- **{self.study.replace('-', ' ')}** ({self.verdict}): {self.text}"


def _cell(frame: pd.DataFrame, row: str, col: str) -> pd.Series | None:
    hit = frame[(frame["row"] == row) & (frame["column"] == col)]
    return hit.iloc[0] if len(hit) and hit.iloc[0]["n"] > 0 else None


def _pct(a: float, b: float) -> float:
    """Change from a to b in percent."""
    return (b / a - 1.0) * 100.0


def _signed(p: float) -> str:
    """+3.1%, -0.4%; never '-0.0%'."""
    return f"{0.0 if abs(p) < 0.05 else p:+.1f}%"


def _grew(p: float) -> str:
    return f"grew by {p:.1f}%" if p >= 0.05 else (f"fell by {-p:.1f}%" if p <= -0.05 else "did not change (0.0%)")


def claim_context_length(frame: pd.DataFrame, study: Study) -> ClaimCheck:
    cols = [c for c, _ in study.table.columns]
    labels = dict(study.table.columns)
    first, last = cols[0], cols[-1]
    rows = [r for r, _ in study.table.rows if (r, first) in study.paper.numbers and (r, last) in study.paper.numbers]
    if not rows:
        return ClaimCheck(study.name, "not judged", "the study declares no paper numbers at both ends")
    row = rows[0]
    row_label = dict(study.table.rows)[row]
    a, b = _cell(frame, row, first), _cell(frame, row, last)
    if a is None or b is None:
        return ClaimCheck(study.name, "not judged",
                          f"{row_label} lacks finished runs at {labels[first]} or {labels[last]}")
    ours = _pct(a["mean"], b["mean"])
    paper = _pct(study.paper.numbers[(row, first)], study.paper.numbers[(row, last)])
    text = f"{row_label}'s MPJPE {_grew(ours)} from {labels[first]} to {labels[last]} (paper: {_signed(paper)})"
    middle = []
    for col in cols[1:-1]:
        c = _cell(frame, row, col)
        if c is not None and (row, col) in study.paper.numbers:
            paper_mid = _pct(study.paper.numbers[(row, first)], study.paper.numbers[(row, col)])
            middle.append(f"{labels[col]}: {_signed(_pct(a['mean'], c['mean']))} (paper: {_signed(paper_mid)})")
    if middle:
        text += "; " + "; ".join(middle)
    others = []
    for other, other_label in study.table.rows:
        x, y = _cell(frame, other, first), _cell(frame, other, last)
        if other != row and x is not None and y is not None:
            others.append(f"{other_label} {_signed(_pct(x['mean'], y['mean']))}")
    if others:
        text += f"; beside it, from {labels[first]} to {labels[last]}: " + ", ".join(others)
    verdict = "held" if ours <= CONTEXT_TOLERANCE_PCT else "did not hold"
    return ClaimCheck(study.name, verdict, text + f" (held = at most {CONTEXT_TOLERANCE_PCT:g}% worse)")


def _ranked(study: Study, values: Callable[[str], float | None]) -> list[tuple[float, str]]:
    """(value, row) for the table's rows that have a value, best (lowest) first."""
    pairs = [(values(r), r) for r, _ in study.table.rows]
    return sorted((v, r) for v, r in pairs if v is not None and np.isfinite(v))


def claim_ablation(frame: pd.DataFrame, study: Study) -> ClaimCheck:
    """'<paper's best> was best in k of m model types (paper: k' of m')'."""
    labels, col_labels = dict(study.table.rows), dict(study.table.columns)
    paper_best, paper_worst, ours_best, ours_worst, details = {}, {}, {}, {}, []
    n_rows = len(study.table.rows)
    for col, _ in study.table.columns:
        paper = _ranked(study, lambda r, c=col: study.paper.numbers.get((r, c)))
        if len(paper) == n_rows:
            paper_best[col], paper_worst[col] = paper[0][1], paper[-1][1]

        def ours_of(r, c=col):
            cell = _cell(frame, r, c)
            return None if cell is None else cell["mean"]

        ours = _ranked(study, ours_of)
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


def claim_frame_rate(frame: pd.DataFrame, study: Study) -> ClaimCheck:
    labels = dict(study.table.columns)
    helped, parts = [], []
    for col in ("x2", "x4", "x8"):
        dt, fixed = _cell(frame, "hummuss-dt", col), _cell(frame, "hummuss-fixed", col)
        if dt is None or fixed is None:
            continue
        change = _pct(fixed["mean"], dt["mean"])
        helped.append(change <= -FRAME_RATE_MARGIN_PCT)
        parts.append(f"{dt['mean']:.1f} vs {fixed['mean']:.1f} mm at {col} ({_signed(change)})")
    if not parts:
        return ClaimCheck(study.name, "not judged", "no finished HumMUSS runs with the sub-sampled conditions")
    text = ("with vs without dt rescaling, HumMUSS's MPJPE was " + ", ".join(parts)
            + f"; rescaling helped (at least {FRAME_RATE_MARGIN_PCT:g}% lower) at {sum(helped)} of "
            f"{len(helped)} factors")
    dt8, mb8 = _cell(frame, "hummuss-dt", "x8"), _cell(frame, "motionbert-lite", "x8")
    beat = None
    if dt8 is not None and mb8 is not None:
        beat = dt8["mean"] < mb8["mean"]
        gap = _pct(mb8["mean"], dt8["mean"])
        text += (f"; at x8 HumMUSS with rescaling was {abs(gap):.1f}% {'below' if gap < 0 else 'above'} "
                 f"MotionBERT-Lite ({dt8['mean']:.1f} vs {mb8['mean']:.1f} mm)")
    extra = []
    for col in ("up2", "drop_0.1", "drop_0.3"):
        dt, fixed = _cell(frame, "hummuss-dt", col), _cell(frame, "hummuss-fixed", col)
        if dt is not None and fixed is not None:
            extra.append(f"{labels.get(col, col)} {dt['mean']:.1f} vs {fixed['mean']:.1f} mm")
    if extra:
        text += "; with vs without the step: " + ", ".join(extra)
    text += " (paper: qualitative, Figure 1 at x8)"
    if all(helped) and beat is not False:
        verdict = "held"
    elif any(helped) or beat:
        verdict = "partly held"
    else:
        verdict = "did not hold"
    return ClaimCheck(study.name, verdict, text)


def claim_init_schemes(frame: pd.DataFrame, study: Study) -> ClaimCheck:
    done = frame[frame["n"] > 0].sort_values("mean")
    if len(done) < 2:
        return ClaimCheck(study.name, "not judged", "fewer than two schemes have finished runs")
    best, worst = done.iloc[0], done.iloc[-1]
    spread = _pct(best["mean"], worst["mean"])
    stds = done["std"].dropna()
    text = (f"the {len(done)} schemes' MPJPE spans {best['mean']:.1f} ({best['row_label']}) to "
            f"{worst['mean']:.1f} mm ({worst['row_label']}), {spread:.1f}% above the best"
            + (f"; largest seed std {stds.max():.1f} mm" if len(stds) else "")
            + f" (paper: all similar, no numbers; held = within {INIT_SPREAD_PCT:g}%)")
    if len(done) < len(frame):
        text += f"; {len(frame) - len(done)} scheme(s) missing"
    return ClaimCheck(study.name, "held" if spread <= INIT_SPREAD_PCT else "did not hold", text)


def claim_summary(frame: pd.DataFrame, study: Study) -> ClaimCheck:
    """Studies without a claim of the paper: our numbers in one sentence."""
    done = frame[frame["n"] > 0]
    if not len(done):
        return ClaimCheck(study.name, "no paper claim", "no finished runs")
    parts = [f"{c.row_label} {ours_text(c)} mm" for _, c in done.iterrows()]
    return ClaimCheck(study.name, "no paper claim", ", ".join(parts) + f"; {study.paper.table} gives no number to compare")


CLAIMS: dict[str, Callable[[pd.DataFrame, Study], ClaimCheck]] = {
    "context-length": claim_context_length,
    "gdssm-aggregation": claim_ablation,
    "stream-aggregation": claim_ablation,
    "frame-rate": claim_frame_rate,
    "init-schemes": claim_init_schemes,
    "motionbert-baseline": claim_summary,
}


# -- histories for the training curves ----------------------------------------------------------
CURVE_KEYS = ("val/mpjpe", "train/loss")


def _bulk_history(tracker: Tracker, run_ids: list[str], key: str) -> list[tuple[str, int, float]] | None:
    """(run_id, step, value) of `key` for many runs in one query per 500 runs, where the
    store can (MLflow's SQL stores have `get_metric_history_bulk`); None elsewhere."""
    store = getattr(getattr(tracker.client, "_tracking_client", None), "store", None)
    bulk = getattr(store, "get_metric_history_bulk", None)
    if bulk is None:
        return None
    try:
        out = []
        for i in range(0, len(run_ids), 500):
            out += [(m.run_id, m.step, m.value) for m in bulk(run_ids[i:i + 500], key, 10**7)]
        return out
    except Exception:  # a store version without it: one call per run instead
        return None


def load_histories(tracker: Tracker, sel: Selection, keys=CURVE_KEYS) -> pd.DataFrame:
    """Per-epoch metrics of the selected runs: columns variant, seed, key, step, value."""
    who = {r: (v, s) for r, v, s in zip(sel.runs["run_id"], sel.runs["tags.variant"], sel.runs["seed"])}
    rows = []
    for key in keys:
        points = _bulk_history(tracker, list(who), key)
        if points is None:
            points = [(run_id, m.step, m.value) for run_id in who
                      for m in tracker.client.get_metric_history(run_id, key)]
        rows += [(*who[run_id], key, step, value) for run_id, step, value in points]
    return pd.DataFrame(rows, columns=["variant", "seed", "key", "step", "value"])


# -- the skeleton panel's models ------------------------------------------------------------------
def _run_spec(tracker: Tracker, run: pd.Series, checkpoint: dict):
    """The run's RunSpec: its config.json artifact, else its params and the checkpoint."""
    from suite.runspec import RunSpec

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = tracker.client.download_artifacts(run["run_id"], "config.json", tmp)
            return RunSpec.from_dict(json.loads(Path(path).read_text()))
        except Exception:  # no artifact: rebuild what the model and data need
            pass
    return RunSpec(study=run["study"], variant=run["tags.variant"], seed=int(run["tags.seed"]),
                   scale=run["tags.scale"], model=run["tags.model"], model_config=checkpoint["model_config"],
                   train_config=checkpoint["train_config"], data=run["params.data.spec"],
                   frames=int(run["params.data.frames"]), stride=int(run["params.data.stride"]),
                   eval_config={"rate_length": int(run.get("params.eval.rate_length", run["params.data.frames"]))})


def skeleton_models(tracker: Tracker, sel: Selection) -> tuple[list, str]:
    """(label, model, spec) for the frame-rate study's HumMUSS and MotionBERT runs (lowest
    seed each) from `<checkpoint_dir>/<train_hash>/best.pt`; raises FigureSkipped naming
    what is missing."""
    from suite.figures import FigureSkipped

    if sel.scale is None:
        raise FigureSkipped("no finished runs of the frame-rate study")
    picks, absent = [], []
    for model in ("hummuss", "motionbert"):
        runs = sel.runs[sel.runs.get("tags.model", pd.Series(index=sel.runs.index, dtype=object)) == model]
        if not len(runs):
            absent.append(f"no finished {model} run at scale {sel.scale}")
            continue
        run = runs.iloc[0]
        best = Path(tracker.settings.checkpoint_dir) / str(run["tags.train_hash"]) / "best.pt"
        if not best.is_file():
            absent.append(f"checkpoint {best} of {run['tags.variant']}/seed{run['tags.seed']} is missing")
            continue
        picks.append((run, best))
    if absent:
        raise FigureSkipped("; ".join(absent))
    from hummuss.checkpoint import load_checkpoint
    from suite.worker import build_model

    out = []
    for run, best in picks:
        try:
            payload = load_checkpoint(best)
            spec = _run_spec(tracker, run, payload)
            model = build_model(spec)
            model.load_state_dict(payload["model"])
        except (ValueError, KeyError, RuntimeError, OSError) as err:  # foreign, truncated or stale
            raise FigureSkipped(f"cannot load checkpoint {best}: {type(err).__name__}: {err}") from None
        out.append((str(run.get("tags.label") or run["tags.variant"]), model.eval(), spec))
    return out, sel.scale


# -- the whole report ---------------------------------------------------------------------------
@dataclass
class ReportResult:
    out_dir: Path
    readme: Path
    tables: dict[str, dict[str, Path]]  # study -> {"md", "tex", "csv"} -> path
    figures: dict[str, Path]  # figure key -> png
    skipped: dict[str, str]  # figure key -> why it was not drawn
    frames: dict[str, pd.DataFrame]  # study -> its table, one row per cell
    selections: dict[str, Selection]
    missing: pd.DataFrame  # study, row, column, variant, metric, why
    incomplete: pd.DataFrame
    claims: list[ClaimCheck] = field(default_factory=list)
    speed: pd.DataFrame | None = None  # the speed targets from benchmarks.json (suite.bench.targets)
    speed_source: Path | None = None

    @property
    def scales(self) -> dict[str, str | None]:
        return {name: sel.scale for name, sel in self.selections.items()}


class UnknownScale(ValueError):
    """--scale names neither a declared scale nor one found on the studies' runs."""


def check_scale(scale: str | None, runs: pd.DataFrame) -> None:
    """A scale is known if declared (smoke, cpu, paper) or found on a run (e.g. `external`)."""
    if scale is None or scale in SCALES:
        return
    found = sorted(set(runs["tags.scale"].dropna()) - set(SCALES))
    if scale not in found:
        raise UnknownScale(f"unknown scale {scale!r}; known: {', '.join([*SCALES, *found])}")


def _study_names(studies: list[str] | None) -> list[str]:
    if not studies:
        return [s.name for s in paper_studies()]
    return [get_study(name).name for name in dict.fromkeys(studies)]  # ValueError names the known ones


def render_report(tracker_or_settings: Tracker | TrackingSettings, studies: list[str] | None = None,
                  out_dir: str | Path = "results", *, scale: str | None = None, figures: bool = True,
                  benchmarks: str | Path | None = None, say: Callable[[str], Any] = lambda msg: None,
                  ) -> ReportResult:
    """Read the studies' runs and write tables, figures and README.md under `out_dir`.

    studies: names (default: every paper study); scale: read every study at this scale
    (default: per study, the scale with the most finished runs); benchmarks: the
    pytest-benchmark JSON for the latency figure (default `<out_dir>/benchmarks.json`).
    """
    names = _study_names(studies)
    tracker = _tracker(tracker_or_settings)
    runs = load_runs(tracker, names)
    say(f"read {len(runs)} run(s) from {redact(tracker.settings.tracking_uri)}")
    check_scale(scale, runs)
    out = Path(out_dir)
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
        if name in CLAIMS:
            result.claims.append(CLAIMS[name](frame, study))
        say(f"{name}: scale {sel.scale or '-'}, {len(sel.runs)} run(s), "
            f"{int((frame['n'] == 0).sum())} of {len(frame)} cell(s) missing -> {paths['md']}")
    result.missing = pd.concat(missing, ignore_index=True)
    result.incomplete = pd.concat(incomplete, ignore_index=True)
    bench = Path(benchmarks) if benchmarks else out / BENCHMARKS_FILE
    payload, why = _load_benchmarks(bench)
    if figures:
        _draw_figures(tracker, result, payload, why, say)
    if payload is not None:
        from suite.bench import benchmarks_table, targets

        table = benchmarks_table(payload)
        result.speed, result.speed_source = (targets(table) if len(table) else None), bench
    result.readme.write_text(readme(result, tracker))
    say(f"wrote {result.readme}")
    return result


def _load_benchmarks(bench: Path) -> tuple[dict | None, str]:
    """pytest-benchmark JSON from `bench`, or (None, why it could not be read)."""
    if not bench.is_file():
        return None, f"{bench} not found (run `make bench`)"
    try:
        return json.loads(bench.read_text()), ""
    except ValueError as err:
        return None, f"{bench} is not pytest-benchmark JSON ({err})"


def _draw_figures(tracker: Tracker, result: ReportResult, bench: dict | None, bench_why: str, say) -> None:
    from suite import figures as F

    fig_dir = result.out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    frames, sels = result.frames, result.selections

    def captioned(name: str) -> str:
        sel = sels[name]
        data = f", data {', '.join(sel.data_specs)}" if sel.data_specs else ""
        return f"scale {sel.scale}{data}"

    def need(*names: str) -> None:
        absent = [n for n in names if n not in frames]
        if absent:
            raise F.FigureSkipped(f"study {', '.join(absent)} is not in this report")
        if all(frames[n]["n"].sum() == 0 for n in names):
            raise F.FigureSkipped(f"no finished runs of {', '.join(names)}")

    def context():
        need("context-length")
        return F.plot_context_length(frames["context-length"], get_study("context-length"),
                                     captioned("context-length"), path("context-length"))

    def frame_rate():
        need("frame-rate")
        return F.plot_frame_rate(frames["frame-rate"], captioned("frame-rate"), path("frame-rate"))

    def skeletons():
        need("frame-rate")
        models, scale = skeleton_models(tracker, sels["frame-rate"])
        try:
            return F.plot_skeletons(models, f"scale {scale}", path("skeletons"))
        except (FileNotFoundError, ValueError) as err:  # e.g. the run's data set is not on this machine
            raise F.FigureSkipped(f"cannot predict the test sequence: {err}") from None

    def aggregation():
        names = [n for n in ("gdssm-aggregation", "stream-aggregation") if n in frames]
        need(*(names or ["gdssm-aggregation"]))
        return F.plot_aggregation({n: (frames[n], get_study(n), captioned(n)) for n in names},
                                  path("aggregation"))

    def init():
        need("init-schemes")
        return F.plot_init_schemes(frames["init-schemes"], captioned("init-schemes"), path("init-schemes"))

    def latency():
        if bench is None:
            raise F.FigureSkipped(bench_why)
        return F.plot_latency(bench, path("latency"))

    def path(key: str, study: str = "") -> Path:
        return fig_dir / FIGURES[key][0].format(study=study)

    jobs: list[tuple[str, Callable[[], Path]]] = [
        ("context-length", context), ("frame-rate", frame_rate), ("skeletons", skeletons),
        ("aggregation", aggregation), ("init-schemes", init)]
    for name in frames:
        def curves(name=name):
            sel = sels[name]
            if not len(sel.runs):
                raise F.FigureSkipped(f"no finished runs of {name}")
            labels = {v.name: v.label or v.name for v in sel.study.variants}
            return F.plot_training_curves(load_histories(tracker, sel), labels, name, captioned(name),
                                          path("training", name))
        jobs.append((f"training:{name}", curves))
    jobs.append(("latency", latency))
    for key, draw in jobs:
        try:
            result.figures[key] = draw()
            say(f"figure {key}: {result.figures[key]}")
        except F.FigureSkipped as why:
            result.skipped[key] = str(why)
            say(f"figure {key}: skipped ({why})")


def _figure_title(key: str) -> str:
    base, _, study = key.partition(":")
    return FIGURES[base][1].format(study=study)


def readme(result: ReportResult, tracker: Tracker) -> str:
    """results/README.md: the claims, every table and figure, and what is missing."""
    commits = sorted({str(c)[:7] for sel in result.selections.values()
                      for c in sel.runs.get("tags.git_commit", pd.Series(dtype=object)).dropna()})
    lines = [
        "# Results: the HumMUSS supplement's tables and claims beside ours", "",
        f"Rendered by `hummuss-suite report` from the MLflow store `{_shown_store(tracker.settings)}` "
        f"(experiments `{tracker.settings.experiment_prefix}/<study>`). Every number of ours was read from a "
        "FINISHED run (mean ± sample std over seeds, n = seeds); the paper's come from the study declarations "
        f"in `studies/`. A cell without a finished run shows {MISSING}."
        + (f" Runs from commit(s) {', '.join(commits)}." if commits else ""), "",
        "## The paper's claims at this scale", ""]
    lines += [c.line() for c in result.claims] or ["No claims in this report."]
    lines += ["", "## Tables", "", "| study | paper | scale | runs | table |", "|---|---|---|---:|---|"]
    for name, paths in result.tables.items():
        sel = result.selections[name]
        links = " · ".join(f"[{ext}](tables/{p.name})" for ext, p in paths.items())
        scale = f"{sel.scale} ({sel.how})" if sel.scale else MISSING
        lines.append(f"| {name} | {sel.study.paper.table} | {scale} | {len(sel.runs)} | {links} |")
    lines += ["", "## Figures", ""]
    for key, path in result.figures.items():
        lines += [f"### {_figure_title(key)}", "", f"![{_figure_title(key)}](figures/{path.name})", ""]
    if result.skipped:
        lines += ["Not drawn:", ""]
        lines += [f"- {_figure_title(key)}: {why}" for key, why in result.skipped.items()]
        lines.append("")
    if result.speed is not None:
        from suite.bench import targets_markdown

        lines += ["## Speed", "", f"From `{result.speed_source.name}` (`hummuss-suite bench`, one run on one "
                  "machine; every figure is in `benchmarks.md`):", ""]
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


# -- command line -------------------------------------------------------------------------------
def add_report_parser(subparsers) -> Any:
    """`hummuss-suite report [STUDY ...] [--out results/] [--scale S] [--benchmarks FILE]`."""
    p = subparsers.add_parser("report", help="the paper's tables and figures beside ours, from MLflow",
                              description="Read the studies' runs from MLflow and write tables "
                                          "(md, tex, csv), figures and README.md.")
    p.add_argument("studies", nargs="*", metavar="STUDY", help="studies to report (default: every paper study)")
    p.add_argument("--out", default="results", help="output folder (default: results)")
    p.add_argument("--scale", help="read runs of this scale only (default: per study, the scale with the "
                                   "most finished runs)")
    p.add_argument("--benchmarks", help="pytest-benchmark JSON for the latency figure "
                                        "(default: <out>/benchmarks.json)")
    p.add_argument("--no-figures", action="store_true", help="tables and README only")
    p.set_defaults(func=cmd_report)
    return p


def cmd_report(args) -> int:
    from suite.cli import UsageError
    from suite.tracking import TrackingError, load_settings

    try:
        _study_names(args.studies)
    except ValueError as err:
        raise UsageError(str(err)) from err
    try:
        tracker = Tracker(load_settings())
    except TrackingError as err:
        print(f"hummuss-suite: error: {err}", file=sys.stderr)
        return 1
    try:
        result = render_report(tracker, args.studies, args.out, scale=args.scale, figures=not args.no_figures,
                               benchmarks=args.benchmarks, say=print)
    except UnknownScale as err:
        raise UsageError(str(err)) from err
    print(f"{len(result.tables)} table(s), {len(result.figures)} figure(s), "
          f"{len(result.missing)} missing cell(s); see {result.readme}")
    return 0


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

"""The report: MLflow runs -> pandas -> the paper's tables and figures beside ours.

    hummuss-suite report [STUDY ...] [--out results/] [--scale cpu]   (suite/cli/report.py)

For each study, a table in its `Table` layout (rows x columns from the registry); a cell
is the mean +- sample std (ddof=1) over seeds of metric `test/<metric>/<condition>` of the
FINISHED child runs of the cell's variant, with its 95% Student-t interval and n, the
paper's number beside it and the difference (ours - paper); after the model rows, the two
floors (mean pose, linear lift: the study's `kind=floor` runs). Written to
`<out>/tables/<study>.{md,tex,csv}`; figures (each MPJPE figure with the floors as lines) to
`<out>/figures/`; `<out>/README.md` lists them all and says, per paper claim, whether it
held, did not hold or is undecided at this scale, with the interval that decided it.

Rules the code keeps:
- every number comes from a run read here (or from the study's `PaperRef` for the
  paper's); a cell without a finished run shows "—" and is listed as missing;
- runs of one study are read at ONE scale: `scale=` (`--scale`), else the scale with
  the most finished runs of that study (stated in the caption), so smoke and cpu
  results never mix; of several finished runs of one variant and seed at that scale
  the latest is used (the others are counted as superseded);
- floor runs are not variants: they are read apart, the latest FINISHED run of each floor
  at the selected scale and data spec;
- a study's claim is judged, and its figures drawn, by the functions its own file in
  studies/ declares (`Study.claims`, `Study.figures`), from intervals (suite/report/stats.py);
  the report knows no study by name.

The package, by concern:
    runs.py         reading the store (through suite.tracking): runs, the selection per study (and its
                    floor runs), histories
    tables.py       a study's table: cells and floor rows, markdown, LaTeX, CSV, missing and incomplete cells
    stats.py        t intervals, paired and unpaired differences, the verdict from an interval
    judging.py      ClaimCheck and the helpers and shared judges the studies' claims use
    figures.py      plotting helpers (matplotlib) and the training curves
    speed.py        pytest-benchmark JSON -> table, speed targets and the latency figure
    checkpoints.py  models rebuilt from the selected runs' checkpoints, for a figure
    drawing.py      drawing every figure: the studies' own, training curves, latency
    unchanged.py    the digest of a figure's inputs, kept in its PNG: a figure is redrawn only when it changed
    render.py       render_report and README.md
"""

from suite.report.drawing import FigureContext
from suite.report.judging import ClaimCheck
from suite.report.render import ReportResult, render_report, study_names
from suite.report.runs import Selection, UnknownScale, load_histories, load_runs, select_runs
from suite.report.tables import MISSING, study_table

__all__ = ["MISSING", "ClaimCheck", "FigureContext", "ReportResult", "Selection", "UnknownScale", "load_histories",
           "load_runs", "render_report", "select_runs", "study_names", "study_table"]

"""The main job: every paper study at one scale, then the report.

    hummuss-suite reproduce --scale cpu      # `make reproduce`: generated data, 2 CPU cores, < 30 min

Identical trainings shared by several studies (the paper's configuration appears in
most of them) are trained once: their checkpoints are keyed by the training config, and
each study's run evaluates them.
"""

from __future__ import annotations

import time

from suite.registry import paper_studies
from suite.runner import Runner, summary
from suite.tracking import Tracker


def reproduce(tracker: Tracker, scale: str = "cpu", seeds=None, jobs: int = 1, out_dir: str = "results",
              report: bool = True, say=print) -> int:
    started = time.time()
    runner = Runner(tracker, jobs=jobs, say=say)
    outcomes = []
    studies = paper_studies()
    say(f"reproduce: {len(studies)} studies at scale {scale}: {', '.join(s.name for s in studies)}")
    for study in studies:
        outcomes += runner.run_study(study.name, scale, seeds, parent_tags={"invocation": "reproduce"})
    say(summary(outcomes))
    say(f"reproduce: runs done in {time.time() - started:.0f} s")
    if report:
        from suite.report import render_report

        render_report(tracker, [s.name for s in studies], out_dir=out_dir, scale=scale)
        say(f"reproduce: report written to {out_dir}/ ({time.time() - started:.0f} s in total)")
    return 1 if any(o.status in ("FAILED", "KILLED") for o in outcomes) else 0

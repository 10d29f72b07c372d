"""The main job: every paper study at one scale, then the report.

    hummuss-suite reproduce --scale cpu      # `make reproduce`: generated data, 2 CPU cores, < 30 min

Identical trainings shared by several studies (the paper's configuration appears in
most of them) are trained once: their checkpoints are keyed by the training config, and
each study's run evaluates them (tag `trained_by`). Every study also gets its floor runs.
All studies are planned first, so the progress line counts the whole job; the end says
how many trainings filled how many runs.
"""

from __future__ import annotations

import time

from suite.outcomes import plural
from suite.registry import paper_studies
from suite.runner import Runner, summary, tally
from suite.tracking import Tracker


def reproduce(tracker: Tracker, scale: str = "cpu", seeds=None, jobs: int = 1, out_dir: str = "results",
              report: bool = True, say=print) -> int:
    started = time.time()
    runner = Runner(tracker, jobs=jobs, say=say)
    outcomes = []
    studies = paper_studies()
    with runner.progress:
        planned = [runner.plan(study.name, scale, seeds) for study in studies]
        runs = [s for specs, _ in planned for s in specs]
        floors = sum(len(f) for _, f in planned)
        runner.say(f"reproduce: {len(studies)} studies at scale {scale}: {', '.join(s.name for s in studies)}; "
                   f"{plural(len(runs), 'run')} of {plural(len({s.train_hash for s in runs}), 'training config')}, "
                   f"{plural(floors, 'floor run')}")
        for study in studies:
            outcomes += runner.run_study(study.name, scale, seeds, parent_tags={"invocation": "reproduce"})
    say(summary(outcomes))
    say(f"reproduce: {tally(outcomes)}; runs done in {time.time() - started:.0f} s")
    if report:
        from suite.report import render_report

        render_report(tracker, [s.name for s in studies], out_dir=out_dir, scale=scale)
        say(f"reproduce: report written to {out_dir}/ ({time.time() - started:.0f} s in total)")
    return 1 if any(o.status in ("FAILED", "KILLED") for o in outcomes) else 0

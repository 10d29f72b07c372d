"""How each run of an invocation ended, and the words the runner prints about them.

    print(summary(outcomes))   # one line per run and floor, then what failed and its log
    print(tally(outcomes))     # "3 trainings for 9 runs (6 runs evaluated a shared checkpoint), 4 floor runs"
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Outcome:
    spec: Any  # RunSpec or FloorSpec
    status: str  # FINISHED | SKIPPED | FAILED | KILLED
    reason: str  # what happened, in words
    run_id: str | None = None
    log: str = ""
    seconds: float = 0.0
    trained: bool = False  # this execution trained (at least an epoch of) its checkpoint
    trained_by: str = ""  # the MLflow run that trained its checkpoint (tag `trained_by`)

    @property
    def floor(self) -> bool:
        return is_floor(self.spec)


def is_floor(spec) -> bool:
    return getattr(spec, "kind", "") == "floor"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def summary(outcomes: list[Outcome]) -> str:
    """One line per run and floor, then what failed and where its log is."""
    width = max([40, *(len(o.spec.study) + len(o.spec.name) + 1 for o in outcomes)])
    lines = [f"{'run':<{width}} {'status':<9} {'time':>7}  note"]
    for o in outcomes:
        lines.append(f"{o.spec.study + '/' + o.spec.name:<{width}} {o.status:<9} {o.seconds:>6.0f}s  {o.reason}")
    failed = [o for o in outcomes if o.status in ("FAILED", "KILLED")]
    if failed:
        lines.append("")
        lines.append(f"{len(failed)} run(s) did not finish:")
        lines += [f"  {o.spec.study}/{o.spec.name}: {o.reason}" + (f"; log: {o.log}" if o.log else "")
                  for o in failed]
    return "\n".join(lines)


def tally(outcomes: list[Outcome]) -> str:
    """How many trainings filled how many runs (table cells), and the floor runs:
    '16 trainings for 48 runs (32 runs evaluated a shared checkpoint), 12 floor runs'."""
    ran = [o for o in outcomes if not o.floor and o.status == "FINISHED"]
    trainings = sum(o.trained for o in ran)
    shared = sum(not o.trained and o.trained_by != o.run_id for o in ran)
    own = len(ran) - trainings - shared
    notes = [f"{plural(shared, 'run')} evaluated a shared checkpoint"] if shared else []
    if own:
        notes.append(f"{plural(own, 'run')} evaluated the checkpoint it trained before")
    floors = sum(o.floor and o.status == "FINISHED" for o in outcomes)
    line = f"{plural(trainings, 'training')} for {plural(len(ran), 'run')}" \
           + (f" ({', '.join(notes)})" if notes else "") + f", {plural(floors, 'floor run')}"
    skipped = [o for o in outcomes if o.status == "SKIPPED"]
    if skipped:
        runs, fl = sum(not o.floor for o in skipped), sum(o.floor for o in skipped)
        line += f"; skipped {plural(runs, 'run')} and {plural(fl, 'floor run')}"
    failed = sum(o.status in ("FAILED", "KILLED") for o in outcomes)
    if failed:
        line += f"; {failed} did not finish"
    return line

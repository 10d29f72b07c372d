"""What a person watching `run` or `reproduce` sees while it works: one overall line, and
each running run's epoch and latest validation MPJPE.

    progress = Progress(print, checkpoint_dir, jobs=2)
    progress.plan(specs + floors)        # what the invocation will do (reproduce: every study, first)
    with progress:                       # a background thread refreshes the display
        progress.started(spec, run_id)   # a run or floor started
        progress.finished(outcome)       # ... ended, or was skipped

On a terminal (`mode="auto"`, the runner printing to a terminal): a tqdm bar over the
invocation's runs and floors, with one status line per running run below it, redrawn
every second; the runner's own lines are written above them. Elsewhere (a pipe, a log
file): plain lines at each run's start and end (an end and the next start within a
second make one line; floors, seconds each, make none), and at most every `every_s`
(30 s) in between while runs are running:

    progress: trainings 3/16, runs 10/48, floors 4/12; 12:30 elapsed, ETA 25 min; running: <study>/hummuss/seed0 (epoch 3/10, val 45.2 mm)

A running run's epoch and validation MPJPE come from the small status file its worker
rewrites every epoch (suite/worker/status.py), never from the tracking store. Trainings
count training configurations (`train_hash`): one whose checkpoint folder holds no
`trained_by.json` yet is still to train. The ETA is the mean time of the trainings (and
of the evaluation-only runs, and floors) finished so far times what remains, over the
runs at once; before the first training ends it is unknown ("ETA ?").
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from suite.outcomes import Outcome, is_floor
from suite.worker import TRAINED_BY, read_status, status_path

MODES = ("auto", "bar", "plain", "off")


def clock(seconds: float) -> str:
    """12:05, or 1:02:03."""
    s = int(max(0, seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def duration(seconds: float) -> str:
    """40 s, 25 min, 1 h 05 min."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{round(s / 60)} min"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


class Progress:
    def __init__(self, say=print, checkpoint_dir: str | Path | None = None, jobs: int = 1, mode: str = "auto",
                 every_s: float = 30.0):
        if mode not in MODES:
            raise ValueError(f"unknown progress mode {mode!r}; known: {', '.join(MODES)}")
        if mode == "auto":
            mode = "bar" if say is print and sys.stdout.isatty() else "plain"
        self.say, self.mode, self.every_s, self.jobs = say, mode, every_s, max(1, jobs)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.planned: dict[tuple, object] = {}  # (study, config_hash) -> RunSpec | FloorSpec
        self.done: dict[tuple, Outcome] = {}
        self.running: dict[tuple, tuple] = {}  # key -> (spec, run_id, started)
        self.started_at: float | None = None
        self._trained: set[str] = set()  # train hashes whose trained_by.json exists
        self._untrained: set[str] = set()  # ... that had none when first looked at
        self._lock = threading.RLock()
        self._depth, self._stop, self._thread = 0, threading.Event(), None
        self._last_line, self._pending = 0.0, 0.0  # when the last line was said; an end not said yet
        self._bar, self._bars = None, {}

    # -- what the runner tells it -----------------------------------------------------------
    def plan(self, specs) -> None:
        with self._lock:
            for s in specs:
                self.planned.setdefault((s.study, s.config_hash), s)
                if not is_floor(s):
                    self._check(s.train_hash)
            if self._bar is not None:
                self._bar.total = len(self.planned)

    def started(self, spec, run_id: str) -> None:
        with self._lock:
            key = (spec.study, spec.config_hash)
            self.planned.setdefault(key, spec)
            self.running[key] = (spec, run_id, time.time())
            if self.mode == "bar" and self._bar is not None:
                from tqdm import tqdm

                self._bars[key] = tqdm(bar_format="  {desc}", leave=False, file=sys.stdout, dynamic_ncols=True)
            if not is_floor(spec):
                self._show(force=True)

    def finished(self, outcome: Outcome) -> None:
        with self._lock:
            key = (outcome.spec.study, outcome.spec.config_hash)
            self.planned.setdefault(key, outcome.spec)
            self.done[key] = outcome
            self.running.pop(key, None)
            if not is_floor(outcome.spec):
                self._check(outcome.spec.train_hash)
            bar = self._bars.pop(key, None)
            if bar is not None:
                bar.close()
            if outcome.status != "SKIPPED":
                self._pending = self._pending or time.time()  # said within a second unless a start says it

    def write(self, line: str) -> None:
        """A line of the runner's, above the bar when there is one."""
        with self._lock:
            if self._bar is not None:
                from tqdm import tqdm

                tqdm.write(line, file=sys.stdout)
            else:
                self.say(line)

    @property
    def echo(self):
        """Where an in-process run's log lines go (None: its default, stderr)."""
        if self.mode != "bar":
            return None
        return lambda line: self.write(line)

    # -- what it shows ----------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        runs = [k for k, s in self.planned.items() if not is_floor(s)]
        floors = [k for k, s in self.planned.items() if is_floor(s)]
        unresolved = {self.planned[k].train_hash for k in runs if k not in self.done}
        for h in unresolved:
            self._check(h)
        pending = unresolved - self._trained
        return dict(runs=len(runs), runs_done=sum(k in self.done for k in runs), floors=len(floors),
                    floors_done=sum(k in self.done for k in floors), trainings_done=len(self._untrained & self._trained),
                    trainings=len(self._untrained & self._trained) + len(pending), pending_trainings=len(pending))

    def _check(self, train_hash: str) -> None:
        """Note whether the training `train_hash` is done (its trained_by.json exists):
        trainings done are those seen not done first, then done."""
        if self.checkpoint_dir is None or train_hash in self._trained:
            return
        if (self.checkpoint_dir / train_hash / TRAINED_BY).exists():
            self._trained.add(train_hash)
        else:
            self._untrained.add(train_hash)

    def eta(self, c: dict[str, int]) -> float | None:
        """Seconds left, from the mean times of what finished so far; None when unknown."""
        finished = [o for o in self.done.values() if o.status == "FINISHED"]
        train = _mean([o.seconds for o in finished if o.trained])
        if train is None and c["pending_trainings"]:
            return None
        train = train or 0.0
        evaluate = _mean([o.seconds for o in finished if not o.trained and not o.floor])
        evaluate = evaluate if evaluate is not None else 0.1 * train
        floor = _mean([o.seconds for o in finished if o.floor])
        floor = floor if floor is not None else evaluate
        evals_left = max(0, c["runs"] - c["runs_done"] - c["pending_trainings"])
        work = c["pending_trainings"] * train + evals_left * evaluate + (c["floors"] - c["floors_done"]) * floor
        now = time.time()
        for spec, _run_id, started in self.running.values():
            guess = floor if is_floor(spec) else (train if spec.train_hash not in self._trained else evaluate)
            work -= min(now - started, guess)
        return max(0.0, work) / self.jobs

    def running_states(self) -> list[tuple[str, str]]:
        """(run, what it is doing) of every running run: 'epoch 3/10, val 45.2 mm'."""
        out = []
        for spec, run_id, _started in self.running.values():
            name = f"{spec.study}/{spec.name}"
            if is_floor(spec) or self.checkpoint_dir is None:
                out.append((name, "evaluating" if is_floor(spec) else "running"))
                continue
            st = read_status(status_path(self.checkpoint_dir, run_id))
            phase = st.get("phase", "starting")
            if phase == "waiting":
                out.append((name, "waiting for the run that trains its checkpoint"))
                continue
            words = []
            if st.get("epochs"):  # the last epoch done, as the trainer's log says it
                done = st.get("epoch", 0)
                words.append(f"epoch {done}/{st['epochs']}" if done else f"first epoch of {st['epochs']}")
            if st.get("val_mpjpe") is not None:
                words.append(f"val {st['val_mpjpe']:.1f} mm")
            if phase != "training" or not words:
                words.append(phase)
            out.append((name, ", ".join(words)))
        return out

    def line(self) -> str:
        with self._lock:
            c = self.counts()
            parts = [f"trainings {c['trainings_done']}/{c['trainings']}", f"runs {c['runs_done']}/{c['runs']}"]
            if c["floors"]:
                parts.append(f"floors {c['floors_done']}/{c['floors']}")
            eta = self.eta(c)
            text = f"progress: {', '.join(parts)}; {clock(time.time() - (self.started_at or time.time()))} " \
                   f"elapsed, ETA {'?' if eta is None else duration(eta)}"
            running = self.running_states()
            if running:
                text += "; running: " + ", ".join(f"{name} ({what})" for name, what in running)
            return text

    def _show(self, force: bool = False) -> None:
        if self.mode == "off" or self._depth == 0:
            return
        if self.mode == "plain":
            now = time.time()
            if force or (self._pending and now - self._pending >= 0.9) or \
                    (self.running and now - self._last_line >= self.every_s):
                self._last_line, self._pending = now, 0.0
                self.say(self.line())
            return
        if self._bar is None:
            return
        c = self.counts()
        eta = self.eta(c)
        self._bar.total = c["runs"] + c["floors"]
        self._bar.n = c["runs_done"] + c["floors_done"]
        floors = f" · floors {c['floors_done']}/{c['floors']}" if c["floors"] else ""
        self._bar.set_description_str(f"trainings {c['trainings_done']}/{c['trainings']} · runs "
                                      f"{c['runs_done']}/{c['runs']}{floors}", refresh=False)
        self._bar.set_postfix_str(f"{clock(time.time() - self.started_at)} elapsed, ETA "
                                  f"{'?' if eta is None else duration(eta)}", refresh=False)
        states = dict(self.running_states())
        for key, bar in self._bars.items():
            spec = self.running[key][0]
            name = f"{spec.study}/{spec.name}"
            bar.set_description_str(f"{name}: {states.get(name, '')}", refresh=False)
            bar.refresh()
        self._bar.refresh()

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            with self._lock:
                try:
                    self._show()
                except Exception:  # a display must never stop the runs
                    pass

    # -- lifetime ---------------------------------------------------------------------------
    def __enter__(self) -> Progress:
        with self._lock:
            self._depth += 1
            if self._depth > 1:
                return self
            self.started_at = self.started_at or time.time()
            self._last_line = time.time()
            if self.mode == "bar":
                from tqdm import tqdm

                self._bar = tqdm(total=len(self.planned), file=sys.stdout, dynamic_ncols=True,
                                 bar_format="{desc}{postfix} |{bar}|")
            self._stop.clear()
            self._thread = threading.Thread(target=self._tick, daemon=True, name="progress")
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth > 0:
                return
            if self.mode == "plain" and self._pending:
                self._pending = 0.0
                self.say(self.line())
            self._stop.set()
            for bar in self._bars.values():
                bar.close()
            self._bars.clear()
            if self._bar is not None:
                self._show()
                self._bar.close()
                self._bar = None
        if self._thread is not None:
            self._thread.join(timeout=5)

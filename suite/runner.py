"""Run a study: expand it into runs, skip what finished, launch the rest.

    runner = Runner(Tracker(load_settings()), jobs=2)
    outcomes = runner.run_study("context-length", "smoke")

Runs execute in this process (`jobs=1`), in `jobs` parallel child processes, or each
under `torchrun --nproc-per-node N` (`launcher="torchrun"`). Stages (`init_from`) run
before the runs that start from them. A failing run does not stop its siblings;
Ctrl-C stops cleanly: running runs are marked KILLED and their checkpoints kept.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from suite.claims import claim
from suite.runspec import RunSpec, expand
from suite.tracking import PROJECT_DIR, Tracker, git_commit
from suite.worker import execute, log_path

LAUNCHERS = ("local", "torchrun")


@dataclass
class Outcome:
    spec: RunSpec
    status: str  # FINISHED | SKIPPED | FAILED | KILLED
    reason: str  # what happened, in words
    run_id: str | None = None
    log: str = ""
    seconds: float = 0.0


class Runner:
    def __init__(self, tracker: Tracker, jobs: int = 1, launcher: str = "local", nproc_per_node: int = 1,
                 say=print):
        if launcher not in LAUNCHERS:
            raise ValueError(f"unknown launcher {launcher!r}; known: {', '.join(LAUNCHERS)}")
        if jobs < 1 or nproc_per_node < 1:
            raise ValueError("--jobs and --nproc-per-node must be >= 1")
        self.tracker, self.jobs, self.launcher, self.nproc = tracker, jobs, launcher, nproc_per_node
        self.say = say

    # -- the plan ------------------------------------------------------------------------
    def run_study(self, study: str, scale: str, seeds=None, data=None, sets=None, variants=None,
                  parent_tags: dict | None = None) -> list[Outcome]:
        specs = expand(study, scale, seeds, data, sets, variants)
        stages = {s.init_from.config_hash: s.init_from for s in specs if s.init_from is not None}
        outcomes = []
        if stages:
            self.say(f"running {len(stages)} stage run(s) first: "
                     + ", ".join(f"{s.study}/{s.name}" for s in stages.values()))
            outcomes += self.run_specs(list(stages.values()), parent_tags)
            failed = [o for o in outcomes if o.status in ("FAILED", "KILLED")]
            if failed:
                return outcomes + [Outcome(s, "SKIPPED", "its stage failed") for s in specs]
        return outcomes + self.run_specs(specs, parent_tags)

    def run_specs(self, specs: list[RunSpec], parent_tags: dict | None = None) -> list[Outcome]:
        """Claim and execute specs (all of one study or several), grouped per study."""
        outcomes: list[Outcome] = []
        for study in dict.fromkeys(s.study for s in specs):
            group = [s for s in specs if s.study == study]
            outcomes += self._run_group(study, group, parent_tags or {})
        return outcomes

    def _run_group(self, study: str, specs: list[RunSpec], parent_tags: dict) -> list[Outcome]:
        tracker = self.tracker
        exp_id = tracker.experiment_id(study)
        parent = tracker.create_run(exp_id, f"{study} {specs[0].scale} {time.strftime('%Y-%m-%d %H:%M:%S')}",
                                    {"kind": "parent", "study": study, "scale": specs[0].scale,
                                     "git_commit": git_commit(), **parent_tags})
        self.say(f"{study}: {len(specs)} run(s) at scale {specs[0].scale} "
                 f"(experiment {tracker.experiment_name(study)}, parent run {parent})")
        todo, outcomes = [], []
        for spec in specs:
            c = claim(tracker, exp_id, spec, parent)
            if c.run_id is None:
                words = {"finished": "already finished", "running-elsewhere": "running in another process",
                         "lost": "claimed by another process"}[c.action]
                self.say(f"  {spec.name}: skipped ({words})")
                outcomes.append(Outcome(spec, "SKIPPED", words))
            else:
                if c.action == "resume":
                    self.say(f"  {spec.name}: resuming run {c.run_id}")
                tracker.set_tags(c.run_id, {"git_commit": git_commit()})
                if c.action == "new":
                    tracker.log_params(c.run_id, spec.params())
                todo.append((spec, c.run_id))
        status = "FINISHED"
        try:
            outcomes += self._execute_all(todo)
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            failed = any(o.status in ("FAILED", "KILLED") for o in outcomes)
            tracker.set_status(parent, status if status == "KILLED" else ("FAILED" if failed else "FINISHED"))
        return outcomes

    # -- execution -----------------------------------------------------------------------
    def _execute_all(self, todo: list[tuple[RunSpec, str]]) -> list[Outcome]:
        if not todo:
            return []
        if self.jobs == 1 and self.launcher == "local":
            return [self._in_process(spec, run_id) for spec, run_id in todo]
        return self._in_children(todo)

    def _in_process(self, spec: RunSpec, run_id: str) -> Outcome:
        started = time.time()
        self.say(f"  {spec.name}: training (run {run_id})")
        try:
            execute(spec, run_id, self.tracker.settings)
        except KeyboardInterrupt:
            raise
        except Exception as err:
            return self._done(spec, run_id, "FAILED", f"{type(err).__name__}: {err}", started)
        return self._done(spec, run_id, "FINISHED", "trained and evaluated", started)

    def _done(self, spec, run_id, status, reason, started) -> Outcome:
        log = str(log_path(self.tracker.settings, spec))
        o = Outcome(spec, status, reason, run_id, log, time.time() - started)
        self.say(f"  {spec.name}: {status.lower()} in {o.seconds:.0f} s" + (f" ({reason}; log: {log})"
                                                                          if status != "FINISHED" else ""))
        return o

    def _command(self, spec_file: Path, run_id: str) -> list[str]:
        worker = ["-m", "suite.worker", "--spec", str(spec_file), "--run-id", run_id]
        if self.launcher == "torchrun":
            torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
            return [torchrun, "--standalone", "--nproc-per-node", str(self.nproc), *worker]
        return [sys.executable, *worker]

    def _child_env(self) -> dict[str, str]:
        settings = self.tracker.settings
        env = {**os.environ, "MLFLOW_TRACKING_URI": settings.tracking_uri,
               "HUMMUSS_MLFLOW_CONFIG": settings.source,
               "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_DIR), os.environ.get("PYTHONPATH")]))}
        if "HUMMUSS_THREADS" not in os.environ:
            env["HUMMUSS_THREADS"] = str(max(1, (os.cpu_count() or 1) // self.jobs))
        return env

    def _in_children(self, todo: list[tuple[RunSpec, str]]) -> list[Outcome]:
        spec_dir = Path(self.tracker.settings.checkpoint_dir) / "specs"
        spec_dir.mkdir(parents=True, exist_ok=True)
        pending, running, outcomes = list(todo), {}, []
        try:
            while pending or running:
                while pending and len(running) < self.jobs:
                    spec, run_id = pending.pop(0)
                    spec_file = spec_dir / f"{spec.config_hash}.json"
                    spec_file.write_text(json.dumps(spec.to_dict()))
                    log = log_path(self.tracker.settings, spec)
                    log.parent.mkdir(parents=True, exist_ok=True)
                    out = open(log.with_suffix(".out"), "a")
                    proc = subprocess.Popen(self._command(spec_file, run_id), env=self._child_env(),
                                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
                    running[proc.pid] = (proc, spec, run_id, time.time(), out)
                    self.say(f"  {spec.name}: started (pid {proc.pid}, run {run_id}, log {log})")
                for pid, (proc, spec, run_id, started, out) in list(running.items()):
                    code = proc.poll()
                    if code is None:
                        continue
                    out.close()
                    del running[pid]
                    if code == 0:
                        outcomes.append(self._done(spec, run_id, "FINISHED", "trained and evaluated", started))
                    else:
                        status = "KILLED" if code in (130, -signal.SIGINT, -signal.SIGTERM) else "FAILED"
                        if code < 0 and status == "FAILED":  # died without marking its run
                            self.tracker.set_status(run_id, "FAILED")
                        outcomes.append(self._done(spec, run_id, status, f"exit code {code}", started))
                time.sleep(0.2)
        except KeyboardInterrupt:
            self.say("interrupted: stopping the running runs (they are marked KILLED, checkpoints kept)")
            for proc, *_ in running.values():
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGINT)
            for proc, _spec, run_id, _started, out in running.values():
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                self.tracker.set_status(run_id, "KILLED")
                out.close()
            raise
        return outcomes


def summary(outcomes: list[Outcome]) -> str:
    """One line per run, then what failed and where its log is."""
    lines = [f"{'run':<40} {'status':<9} {'time':>7}  note"]
    for o in outcomes:
        lines.append(f"{o.spec.study + '/' + o.spec.name:<40} {o.status:<9} {o.seconds:>6.0f}s  {o.reason}")
    failed = [o for o in outcomes if o.status in ("FAILED", "KILLED")]
    if failed:
        lines.append("")
        lines.append(f"{len(failed)} run(s) did not finish:")
        lines += [f"  {o.spec.study}/{o.spec.name}: {o.reason}; log: {o.log}" for o in failed]
    return "\n".join(lines)

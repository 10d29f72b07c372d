"""Run a study: expand it into runs and floors, skip what finished, launch the rest.

    runner = Runner(Tracker(load_settings()), jobs=2)
    outcomes = runner.run_study(STUDY, "smoke")
    print(summary(outcomes))
    print(tally(outcomes))      # "2 trainings for 3 runs (1 run evaluated a shared checkpoint), 2 floor runs"

Where runs execute (see suite/launch/):
- `jobs=1`, launcher `local`: one after the other in this process (at the `paper` scale in
  a child process each, so that one the kernel kills for memory is seen and marked FAILED);
- `jobs=N`: in up to N child processes at once, each pinned to its own GPU(s) when the
  machine has GPUs (`gpus_per_run`, default 1; K > 1 runs torchrun with K processes);
- launcher `torchrun`: each run under `torchrun --nproc-per-node N`;
- launcher `slurm`: a submitit job array (`slurm=SlurmOptions(...)`).

Each run is claimed (suite/leases.py) just before it starts, so several processes, on
one machine or many sharing a tracking store, divide a study between them. A run some
other process holds is looked at again every `claim_ttl_s / 4`: when it finished it is
skipped, when its holder died (its process gone, seen at once on this machine; else no
heartbeat for `claim_ttl_s`) it is taken over and resumed from its checkpoint; the parent
run of an invocation that died is marked KILLED by the next one. With `wait=False` the runner stops looking once its own
runs are done. Stages (`init_from`) run before the runs that start from them. A failing
run does not stop its siblings; Ctrl-C (or SIGTERM) stops cleanly: running runs are marked KILLED
and their checkpoints kept.

Train once, evaluate many: runs that share a training configuration (`train_hash`) share
its checkpoint. This process never starts a run while another of its runs trains the same
checkpoint (it starts other runs meanwhile); across processes the checkpoint folder's lock
makes the second run wait and then only evaluate. Each run is tagged `trained_by`, and
its summary line says which run trained what it evaluated.

Floors: `run_study` also logs the study's floor runs (`suite.runspec.expand_floors`),
leased like runs, executed in this process (seconds each) while the runs train.

Progress (suite/progress.py): one overall line and each running run's epoch and
validation MPJPE, read from the status files the workers write.
"""

from __future__ import annotations

import contextlib
import signal
import time

from suite.launch import (
    LAUNCHERS,
    DevicePlan,
    SlurmOptions,
    discover_gpus,
    plan_devices,
    sigterm_as_interrupt,
)
from suite.launch.backends import Children, InProcess, SlurmArray
from suite.leases import HOLDER_TAG, LeaseKeeper, close_dead_parents, take_lease, this_holder
from suite.outcomes import Outcome, is_floor, summary, tally
from suite.progress import Progress
from suite.runspec import FloorSpec, RunSpec, expand_floors, expand_runs
from suite.tracking import Tracker, git_commit
from suite.worker import execute_floor, headline, log_path, read_status, status_path

__all__ = ["Outcome", "Runner", "summary", "tally"]

# runs at these scales execute in a child process even with --jobs 1: one killed for memory
# (SIGKILL) is then seen, and its run marked FAILED, by this process
ISOLATED_SCALES = ("paper",)


class Runner:
    def __init__(self, tracker: Tracker, jobs: int = 1, launcher: str = "local", nproc_per_node: int = 1,
                 say=print, *, gpus_per_run: int | None = None, wait: bool = True,
                 slurm: SlurmOptions | None = None, progress: str = "auto", progress_every_s: float = 30.0):
        if launcher not in LAUNCHERS:
            raise ValueError(f"unknown launcher {launcher!r}; known: {', '.join(LAUNCHERS)}")
        if jobs < 1 or nproc_per_node < 1:
            raise ValueError(f"--jobs and --nproc-per-node must be >= 1, got {jobs} and {nproc_per_node}")
        if gpus_per_run is not None and gpus_per_run < 0:
            raise ValueError(f"--gpus-per-run must be >= 0, got {gpus_per_run}")
        self.tracker, self.jobs, self.launcher, self.nproc = tracker, jobs, launcher, nproc_per_node
        self.progress = Progress(say, tracker.settings.checkpoint_dir if tracker is not None else None,
                                 jobs, progress, progress_every_s)
        self.gpus_per_run, self.wait, self.say = gpus_per_run, wait, self.progress.write
        self.slurm = slurm or (SlurmOptions(gpus_per_task=1 if gpus_per_run is None else gpus_per_run)
                               if launcher == "slurm" else None)
        self._plan: DevicePlan | None = None
        self.command: str | None = None  # the command line, for the parent run's description
        if launcher == "slurm":  # bad combinations fail here, before anything is logged
            self.slurm.check()
        else:
            self.device_plan()

    # -- the plan ------------------------------------------------------------------------
    def plan(self, study: str, scale: str, seeds=None, data=None, sets=None, variants=None):
        """The runs and floors of `study` (and the stage runs they start from), told to the
        progress display; `reproduce` plans every study before running the first."""
        specs = expand_runs(study, scale, seeds, data, sets, variants)
        floors = expand_floors(study, scale, data, sets)
        stages = [s.init_from for s in specs if s.init_from is not None]
        self.progress.plan([*stages, *specs, *floors])
        return specs, floors

    def run_study(self, study: str, scale: str, seeds=None, data=None, sets=None, variants=None,
                  parent_tags: dict | None = None) -> list[Outcome]:
        specs, floors = self.plan(study, scale, seeds, data, sets, variants)
        stages = {s.init_from.config_hash: s.init_from for s in specs if s.init_from is not None}
        outcomes = []
        with self.progress:
            if stages:
                self.say(f"running {len(stages)} stage run(s) first: "
                         + ", ".join(f"{s.study}/{s.name}" for s in stages.values()))
                outcomes += self.run_specs(list(stages.values()), parent_tags)
                failed = [o for o in outcomes if o.status in ("FAILED", "KILLED")]
                if failed:
                    return outcomes + [Outcome(s, "SKIPPED", "its stage failed") for s in [*specs, *floors]]
            return outcomes + self.run_specs(specs, parent_tags, floors)

    def run_specs(self, specs: list[RunSpec], parent_tags: dict | None = None,
                  floors: list[FloorSpec] = ()) -> list[Outcome]:
        """Claim and execute specs (all of one study or several) and floors, grouped per study."""
        outcomes: list[Outcome] = []
        with self.progress:
            self.progress.plan([*specs, *floors])
            for study in dict.fromkeys(s.study for s in [*specs, *floors]):
                outcomes += self._run_group(study, [s for s in specs if s.study == study],
                                            [f for f in floors if f.study == study], parent_tags or {})
        return outcomes

    def device_plan(self) -> DevicePlan:
        """GPUs found and how runs share them (discovered and said once, at construction)."""
        if self._plan is None:
            self._plan = plan_devices(discover_gpus(), self.jobs, self.gpus_per_run, self.launcher, self.nproc)
            self.say(self._plan.describe())
        return self._plan

    def _backend(self, scale: str):
        if self.launcher == "slurm":
            return SlurmArray(self)
        plan = self.device_plan()
        hide_gpus = bool(plan.gpus) and plan.per_run == 0  # only a child's environment can hide them
        if (self.jobs == 1 and self.launcher == "local" and not plan.torchrun and not hide_gpus
                and scale not in ISOLATED_SCALES):
            return InProcess(self)
        return Children(self, plan)

    # -- claiming and waiting ----------------------------------------------------------------
    def _run_group(self, study: str, specs: list[RunSpec], floors: list[FloorSpec],
                   parent_tags: dict) -> list[Outcome]:
        tracker = self.tracker
        exp_id = tracker.experiment_id(study)
        items: list = [*specs, *floors]  # indices below len(specs) are runs, the rest floors
        scale = items[0].scale
        finished = self._finished_before(exp_id, items)
        if len(finished) == len(items):  # a rerun with nothing to do creates no parent run
            self.say(f"{study}: nothing to do: all {len(specs)} run(s)"
                     f"{f' and {len(floors)} floor run(s)' if floors else ''} at scale {scale} finished before "
                     f"(experiment {tracker.experiment_name(study)})")
            return [self._skip(item, finished[i]) for i, item in enumerate(items)]
        for dead in close_dead_parents(tracker, exp_id):
            self.say(f"{study}: parent run {dead} of an invocation that died marked KILLED")
        command = self.command or f"hummuss-suite run {study} --scale {scale}"
        note = (f"`{command}`\n\nStudy {study} at scale {scale}: {len(specs)} run(s), {len(floors)} floor run(s); "
                f"{len(finished)} of them finished before.")
        parent = tracker.create_run(exp_id, f"{study} {scale} {time.strftime('%Y-%m-%d %H:%M:%S')}",
                                    {"kind": "parent", "study": study, "scale": scale, "git_commit": git_commit(),
                                     "mlflow.note.content": note, HOLDER_TAG: this_holder(),
                                     "heartbeat": f"{time.time():.3f}", **parent_tags})
        also = f" and {len(floors)} floor run(s)" if floors else ""
        self.say(f"{study}: {len(specs)} run(s){also} at scale {scale} "
                 f"(experiment {tracker.experiment_name(study)}, parent run {parent})")
        ttl = tracker.settings.claim_ttl_s
        recheck = min(30.0, max(1.0, ttl / 4))
        queue = list(range(len(items)))  # not claimed yet, in order
        waiting: dict[int, float] = {}  # held by another process: index -> when to look again
        results: dict[int, Outcome] = {}
        deferred: set[int] = set()  # said that it waits for a run of ours training its checkpoint
        sources: dict[str, object] = {}  # data spec -> opened source (floors)
        status = "FINISHED"
        backend = None

        def record(i: int, outcome: Outcome) -> None:
            results[i] = outcome
            self.progress.finished(outcome)

        def claim(i: int):
            looked_before = waiting.pop(i, None) is not None
            if i in queue:
                queue.remove(i)
            started = self._claim(exp_id, items[i], parent, looked_before, recheck)
            if isinstance(started, Outcome):
                record(i, started)
            elif started is None:  # someone else's: look again later
                waiting[i] = time.time() + recheck
            return started if isinstance(started, str) else None

        with LeaseKeeper(tracker) as keeper, sigterm_as_interrupt():  # SIGTERM stops the runs as Ctrl-C does
            keeper.add(parent)  # its heartbeat: a later invocation closes it when this one died
            try:
                backend = self._backend(scale)
                while queue or waiting or backend.busy():
                    now = time.time()
                    due = sorted(i for i, t in waiting.items() if t <= now)
                    candidates = [i for i in due + queue if i < len(specs)]
                    batch, training, later = [], backend.train_hashes(), []
                    for i in candidates:
                        if len(batch) >= backend.free_slots():
                            break
                        trainer = training.get(specs[i].train_hash)
                        if trainer is not None:  # one of ours trains its checkpoint: start it after that one
                            if i not in deferred:
                                deferred.add(i)
                                later.append(f"  {specs[i].name}: waits for {trainer.name}, which trains the "
                                             f"checkpoint it evaluates")
                            continue
                        run_id = claim(i)
                        if run_id is not None:
                            keeper.add(run_id)
                            batch.append((i, specs[i], run_id))
                            training[specs[i].train_hash] = specs[i]
                    if batch:
                        backend.start(batch)
                    for line in later:
                        self.say(line)
                    # a floor (seconds, in this process) while runs work, or when none is left to start
                    floor = next((i for i in due + queue if i >= len(specs)), None)
                    ran_floor = floor is not None and (backend.busy() or not candidates)
                    if ran_floor:
                        run_id = claim(floor)
                        if run_id is not None:
                            record(floor, self._floor(items[floor], run_id, keeper, sources))
                    for i, outcome in backend.poll():
                        keeper.discard(outcome.run_id)
                        record(i, outcome)
                    if not queue and waiting and not backend.busy() and not self.wait:
                        for i in waiting:
                            record(i, Outcome(items[i], "SKIPPED", "running in another process"))
                        break
                    if not batch and not ran_floor and (backend.busy() or waiting):
                        pause = backend.poll_s if backend.busy() else min(waiting.values()) - time.time()
                        time.sleep(min(max(pause, 0.05), recheck))
            except BaseException as err:  # Ctrl-C, or the store failing under us: stop what runs
                status = "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED"
                with contextlib.suppress(ValueError):  # a second SIGTERM must not cut the clean-up short
                    signal.signal(signal.SIGTERM, signal.SIG_IGN)
                if backend is not None:
                    backend.interrupt()
                raise
            finally:
                failed = any(o.status in ("FAILED", "KILLED") for o in results.values())
                keeper.discard(parent)
                tracker.set_status(parent, status if status != "FINISHED" else ("FAILED" if failed else "FINISHED"))
        return [results[i] for i in sorted(results)]

    def _finished_before(self, exp_id: str, items: list) -> dict[int, str]:
        """Index -> id of the FINISHED run of each item that has one."""
        done: dict[str, str] = {}
        runs = self.tracker.all_runs(exp_id, "attributes.status = 'FINISHED'")
        for run in sorted(runs, key=lambda r: r.info.start_time):
            if "config_hash" in run.data.tags:
                done.setdefault(run.data.tags["config_hash"], run.info.run_id)
        return {i: done[item.config_hash] for i, item in enumerate(items) if item.config_hash in done}

    def _skip(self, item, run_id: str) -> Outcome:
        outcome = Outcome(item, "SKIPPED", "already finished", run_id)
        self.progress.finished(outcome)
        return outcome

    def _floor(self, spec: FloorSpec, run_id: str, keeper: LeaseKeeper, sources: dict) -> Outcome:
        """Execute a claimed floor run in this process."""
        started = time.time()
        keeper.add(run_id)
        self.progress.started(spec, run_id)
        try:
            if spec.data not in sources:
                from hummuss.data import open_source

                sources[spec.data] = open_source(spec.data)
            metrics = execute_floor(spec, run_id, self.tracker, sources[spec.data])
        except KeyboardInterrupt:
            raise
        except Exception as err:
            if spec.data not in sources:  # the data did not open: the run was never started
                self.tracker.set_status(run_id, "FAILED")
            return self._done(spec, run_id, "FAILED", f"{type(err).__name__}: {err}", started)
        finally:
            keeper.discard(run_id)
        return self._done(spec, run_id, "FINISHED", f"floor: {headline(metrics)}", started)

    def _claim(self, exp_id: str, spec: RunSpec, parent: str, looked_before: bool, recheck: float):
        """Claim `spec`: its run id when ours to run, None when another process holds it,
        else the Outcome (SKIPPED) it ends with."""
        c = take_lease(self.tracker, exp_id, spec, parent)
        if c.action == "finished":
            reason = "finished by another process" if looked_before else "already finished"
            self.say(f"  {spec.name}: skipped ({reason})")
            return Outcome(spec, "SKIPPED", reason, c.holder)
        if c.action in ("running-elsewhere", "lost"):
            if not looked_before:
                ttl = self.tracker.settings.claim_ttl_s
                then = (f"looking again every {recheck:.0f} s; taken over when its process dies (at once on "
                        f"this machine) or its heartbeat stops for {ttl:.0f} s"
                        if self.wait else "skipped unless it frees up before this process is done")
                self.say(f"  {spec.name}: held by another process (run {c.holder}); {then}")
            return None
        if c.action == "resume":
            self.say(f"  {spec.name}: resuming run {c.run_id} (was {c.previous})")
        self.tracker.set_tags(c.run_id, {"git_commit": git_commit()})
        if c.action == "new":
            self.tracker.log_params(c.run_id, spec.params())
        return c.run_id

    # -- shared by the backends ---------------------------------------------------------------
    def _done(self, spec, run_id, status, reason, started, trained=False, trained_by="") -> Outcome:
        log = "" if is_floor(spec) else str(log_path(self.tracker.settings, spec))
        o = Outcome(spec, status, reason, run_id, log, time.time() - started, trained, trained_by)
        if status != "FINISHED":
            note = f" ({reason}; log: {log})" if log else f" ({reason})"
        else:
            note = "" if reason == "trained and evaluated" else f" ({reason})"
        self.say(f"  {spec.name}: {status.lower()} in {o.seconds:.0f} s{note}")
        return o

    def _finished(self, spec, run_id, started, status: dict | None = None) -> Outcome:
        """A run that ended well: whether it trained, or which run trained what it evaluated
        (its status file, else its tag `trained_by`)."""
        status = status or read_status(status_path(self.tracker.settings.checkpoint_dir, run_id))
        by = status.get("trained_by") or {}
        if not by:  # no status file here (e.g. a cluster job's checkpoint_dir not shared)
            tag = self.tracker.get_run(run_id).data.tags.get("trained_by", "")
            by = {"run_id": tag, "run": f"run {tag}"} if tag else {}
        trained = status.get("trained_epochs", 0) > 0 if status else by.get("run_id") == run_id
        if trained or not by:
            reason = "trained and evaluated"
        elif by["run_id"] == run_id:
            reason = "evaluated (trained by this run before)"
        else:
            reason = f"evaluated (trained by {by['run']}, run {by['run_id']})"
        return self._done(spec, run_id, "FINISHED", reason, started, trained, by.get("run_id", ""))

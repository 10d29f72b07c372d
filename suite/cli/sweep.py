"""`hummuss-suite sweep` (also `python -m suite.sweep`): tune a study's base configuration
with Optuna; the machinery is the suite.sweep package."""

from __future__ import annotations

import argparse
import sys

import suite.sweep as sweeps
from suite.cli.children import sweep_worker_main
from suite.cli.common import (
    UsageError,
    check_data,
    get_study,
    open_tracker,
    parse_sets,
    tracking_settings,
)
from suite.launch import interrupt_on_sigterm
from suite.sweep import PRUNERS, SAMPLERS, SweepConfig, run_sweep, validate

DESCRIPTION = sweeps.__doc__.split("\n\n")[0]


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="a registered study with a search space (hummuss-suite show STUDY)")
    p.add_argument("--trials", type=int, required=True,
                   help="finished (complete or pruned) trials to reach, counted over all workers and machines")
    p.add_argument("--storage", help="an SQLAlchemy URL (sqlite:///PATH.db, postgresql://USER@HOST/DB) or the "
                                     "path of a journal file (default: beside the MLflow store)")
    p.add_argument("--workers", type=int, default=1, help="processes on this machine (default: 1)")
    p.add_argument("--sampler", default="tpe", choices=SAMPLERS, help="default: tpe")
    p.add_argument("--pruner", default="median", choices=PRUNERS, help="default: median")
    p.add_argument("--timeout", type=float, help="start no trial after this many seconds (running ones finish)")
    p.add_argument("--name", help="the sweep's name (default: STUDY[-VARIANT]-SCALE)")
    p.add_argument("--scale", default="cpu", help="smoke, quick, cpu or paper (default: cpu)")
    p.add_argument("--seed", type=int, default=0, help="the sampler's and the training's seed (default: 0)")
    p.add_argument("--variant", help="the base variant to tune (default: the study's first)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="fixed overrides of every trial, as for `run` (e.g. max_val_clips=8)")
    p.add_argument("--stale-after", type=float, default=24 * 3600.0,
                   help="a trial running this many seconds is abandoned and retried (default: 86400)")


def add_sweep_parser(subparsers) -> argparse.ArgumentParser:
    """`hummuss-suite sweep ...` on the CLI's subparsers."""
    p = subparsers.add_parser("sweep", help="tune a study's base configuration with Optuna, every trial in MLflow",
                              description=DESCRIPTION)
    _add_arguments(p)
    p.set_defaults(func=cmd_sweep)
    return p


def cmd_sweep(args) -> int:
    """Exit 0 when the sweep has its trials, 1 when it stopped short, 2 on a usage error."""
    cfg = SweepConfig(args.study, args.trials, scale=args.scale, variant=args.variant, name=args.name,
                      sampler=args.sampler, pruner=args.pruner, seed=args.seed, workers=args.workers,
                      storage=args.storage, timeout_s=args.timeout, sets=parse_sets(args.set),
                      stale_after_s=args.stale_after, command=getattr(args, "command_line", None))
    settings = tracking_settings()
    try:  # every name and the search space, before anything is written
        validate(cfg, settings)
    except ValueError as err:
        raise UsageError(str(err)) from err
    check_data([get_study(args.study).scale(args.scale).data])  # read whole and checked before anything is logged
    tracker = open_tracker(settings)
    interrupt_on_sigterm()  # a scheduler's stop as Ctrl-C: the running trial is re-enqueued
    try:
        result = run_sweep(cfg, tracker)
    except ValueError as err:  # raised by prepare(), before any trial
        raise UsageError(str(err)) from err
    print(result.format())
    return 0 if result.ok else 1


def main(argv: list[str] | None = None) -> int:
    """`python -m suite.sweep STUDY --trials N ...` (as `hummuss-suite sweep`), or a worker."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":
        return sweep_worker_main(argv)
    parser = argparse.ArgumentParser(prog="python -m suite.sweep", description=DESCRIPTION)
    _add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return cmd_sweep(args)
    except UsageError as err:
        parser.exit(2, f"hummuss-suite sweep: error: {err}\n")
    except KeyboardInterrupt:
        print("hummuss-suite sweep: interrupted", file=sys.stderr)
        return 130

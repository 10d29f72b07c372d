"""`hummuss-suite run`, `evaluate` and `reproduce`: train, evaluate and log runs; and the
launch options of `run` (`--jobs`, `--launcher`, `--gpus-per-run`, `--slurm-*`)."""

from __future__ import annotations

import argparse

from suite.cli.common import (
    UsageError,
    check_data,
    get_study,
    open_tracker,
    parse_seeds,
    parse_sets,
    run_data_specs,
)
from suite.launch import CLUSTERS, LAUNCHERS, SlurmOptions


# -- run ----------------------------------------------------------------------------------------
def add_run_parser(sub) -> None:
    p = sub.add_parser("run", help="train and evaluate every run of a study, and its floors, logging to MLflow")
    p.add_argument("study")
    p.add_argument("--variant", nargs="*", help="only these variants")
    p.add_argument("--scale", default="cpu", help="smoke, quick, cpu or paper (default: cpu)")
    p.add_argument("--seeds", help="comma-separated seeds (default: the scale's)")
    p.add_argument("--data", help="data spec instead of the scale's (e.g. mpi3dhp:DIR)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override a config field: lr=1e-3, model.state_size=64, eval.flip=false")
    add_launch_options(p)
    p.set_defaults(func=cmd_run)


def cmd_run(args) -> int:
    from suite.runner import Runner, summary, tally
    from suite.runspec import expand_runs

    study = get_study(args.study)
    sets, seeds = parse_sets(args.set), parse_seeds(args.seeds)
    variants = tuple(args.variant) if args.variant else None
    try:  # every name is checked before anything is logged
        study.scale(args.scale)
        specs = expand_runs(study, args.scale, seeds, args.data, sets, variants)
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(str(err)) from err
    check_data(run_data_specs(specs) or [args.data or study.scale(args.scale).data])  # read whole, checked
    tracker = open_tracker()
    try:
        runner = Runner(tracker, **runner_kwargs(args))
    except ValueError as err:
        raise UsageError(str(err)) from err
    runner.command = getattr(args, "command_line", None)
    outcomes = runner.run_study(study.name, args.scale, seeds, args.data, sets, variants)
    print(summary(outcomes))
    print(tally(outcomes))
    return 1 if any(o.status in ("FAILED", "KILLED") for o in outcomes) else 0


def add_launch_options(p: argparse.ArgumentParser) -> None:
    """--jobs, --launcher, --nproc-per-node, --gpus-per-run, --no-wait and --slurm-*."""
    p.add_argument("--jobs", type=int, default=1,
                   help="runs at once (default: 1); with GPUs, at most one run per free GPU(s)")
    p.add_argument("--launcher", default="local", choices=list(LAUNCHERS),
                   help="local processes, torchrun inside each run, or a Slurm job array (submitit)")
    p.add_argument("--nproc-per-node", type=int, default=1, help="processes per run under torchrun")
    p.add_argument("--gpus-per-run", type=int, default=None,
                   help="GPUs each run gets (default: 1 when GPUs are found); K > 1 runs torchrun with K "
                        "processes; 0 trains on the CPU. With --launcher slurm: GPUs per array task")
    p.add_argument("--no-wait", dest="wait", action="store_false",
                   help="do not wait for runs that another process is running (default: wait, and take "
                        "them over if their heartbeat stops for claim_ttl_s)")
    g = p.add_argument_group("Slurm (--launcher slurm)")
    g.add_argument("--slurm-folder", default="slurm-logs/%j", help="job scripts and logs (default: slurm-logs/%%j)")
    g.add_argument("--slurm-partition", help="partition to submit to")
    g.add_argument("--slurm-time", default="24:00:00", help="time limit per run, e.g. 4:00:00 or 240 (minutes)")
    g.add_argument("--slurm-cpus-per-task", type=int, help="CPUs per array task")
    g.add_argument("--slurm-mem-gb", type=float, help="memory per array task in GB")
    g.add_argument("--slurm-cluster", default="slurm", choices=list(CLUSTERS),
                   help="slurm, or local to run the array on this machine with submitit's local executor")


def runner_kwargs(args: argparse.Namespace) -> dict:
    """Keyword arguments of `Runner(tracker, **runner_kwargs(args))`; ValueError when bad."""
    kwargs = dict(jobs=args.jobs, launcher=args.launcher, nproc_per_node=args.nproc_per_node,
                  gpus_per_run=args.gpus_per_run, wait=args.wait)
    if args.launcher == "slurm":
        kwargs["slurm"] = SlurmOptions(folder=args.slurm_folder, partition=args.slurm_partition,
                                       time=args.slurm_time, cpus_per_task=args.slurm_cpus_per_task,
                                       mem_gb=args.slurm_mem_gb, cluster=args.slurm_cluster,
                                       gpus_per_task=1 if args.gpus_per_run is None else args.gpus_per_run)
    return kwargs


# -- evaluate -------------------------------------------------------------------------------------
def add_evaluate_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a checkpoint (ours or MotionBERT's .bin) under the suite's "
                                        "protocol and log it as a run of motionbert-baseline")
    p.add_argument("--checkpoint", required=True,
                   help="checkpoint file, or a model logged to MLflow: runs:/<run_id>/model or models:/<name>/<version>")
    p.add_argument("--format", default="hummuss", choices=["hummuss", "motionbert"],
                   help="of a file: hummuss (this suite's trainer) or motionbert (the original repository's .bin)")
    p.add_argument("--data", required=True, help="data spec, e.g. h36m:PATH.pkl or synthetic")
    p.add_argument("--frames", default="243", help="comma-separated test window lengths (default: 243)")
    p.add_argument("--no-flip", action="store_true", help="no flip test-time augmentation")
    p.add_argument("--protocol", default="auto",
                   help="motionbert, p-stmo or all-frames: the frames scored (default auto: motionbert for "
                        "h36m and motionbert-clips, p-stmo for mpi3dhp, all-frames otherwise)")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    from pathlib import Path

    from hummuss.evaluate import EvalConfig
    from suite.external import STUDY, evaluate_checkpoint, is_model_uri, load_any, load_logged

    check_data([args.data], splits=("test",))  # read whole and checked before anything is logged
    tracker = open_tracker() if is_model_uri(args.checkpoint) else None
    try:  # fail on a bad file (or URI) before logging anything
        loaded = load_logged(args.checkpoint, tracker) if tracker else load_any(Path(args.checkpoint), args.format)
        lengths = tuple(int(f) for f in args.frames.split(","))
        config = EvalConfig(lengths=lengths, flip=not args.no_flip, protocol=args.protocol)
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(str(err)) from err
    tracker = tracker or open_tracker()
    run_id, table = evaluate_checkpoint(args.checkpoint, args.format, args.data, tracker, config, loaded=loaded)
    print(table.to_string(index=False))
    print(f"logged as run {run_id} of experiment {tracker.experiment_name(STUDY)}")
    return 0


# -- reproduce ------------------------------------------------------------------------------------
def add_reproduce_parser(sub) -> None:
    p = sub.add_parser("reproduce", help="run every paper study at a scale, then the report")
    p.add_argument("--scale", default="cpu", help="smoke, quick, cpu or paper (default: cpu)")
    p.add_argument("--seeds", help="comma-separated seeds (default: the scale's)")
    p.add_argument("--jobs", type=int, default=2, help="runs at once (default: 2)")
    p.add_argument("--out", default="results", help="report folder (default: results)")
    p.add_argument("--no-report", action="store_true", help="only run the studies")
    p.set_defaults(func=cmd_reproduce)


def cmd_reproduce(args) -> int:
    from suite.registry import SCALES
    from suite.reproduce import reproduce

    seeds = parse_seeds(args.seeds)
    if args.scale not in SCALES:
        raise UsageError(f"unknown scale {args.scale!r}; known: {', '.join(SCALES)}")
    return reproduce(open_tracker(), args.scale, seeds, args.jobs, args.out, report=not args.no_report)

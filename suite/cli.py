"""`hummuss-suite`: the command line of the suite (also `python -m suite`).

Each command is one function `cmd_<name>(args) -> int`; `build_parser` is the table of
contents. Usage errors exit with code 2 (argparse's convention), failures with 1.
"""

from __future__ import annotations

import argparse
import json
import sys


class UsageError(Exception):
    """A bad name or value on the command line: exit code 2."""


def _print_json(payload) -> None:
    print(json.dumps(payload, indent=2, default=str))


# -- info ---------------------------------------------------------------------------
def cmd_info(args) -> int:
    from hummuss.zoo import MODELS, build_model

    if args.model not in MODELS:
        raise UsageError(f"unknown model {args.model!r}; known: {', '.join(sorted(MODELS))}")
    try:
        model = build_model(args.model, args.preset)
    except ValueError as err:
        raise UsageError(str(err)) from err
    params = sum(p.numel() for p in model.parameters())
    breakdown = model.parameter_breakdown() if hasattr(model, "parameter_breakdown") else {}
    macs = model.macs_per_frame(args.frames)
    info = {
        "model": args.model,
        "preset": args.preset,
        "parameters": params,
        "parameters_by_part": breakdown,
        "frames": args.frames,
        "macs_per_frame": macs,
        "config": model.config.to_dict(),
    }
    if args.json:
        _print_json(info)
        return 0
    print(f"{args.model} / {args.preset}")
    print(f"  parameters       {params:,} ({params / 1e6:.2f}M)")
    for part, n in breakdown.items():
        print(f"    {part:<22}{n:>12,}")
    print(f"  MACs per frame   {macs:,} ({macs / 1e9:.3f} G) at {args.frames} frames of context")
    return 0


# -- data inspect ---------------------------------------------------------------------
def cmd_data_inspect(args) -> int:
    from hummuss.data.inspect import summarise

    try:
        table = summarise(args.spec)
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(str(err)) from err
    if args.json:
        _print_json(table.to_dict(orient="records"))
    else:
        print(table.to_string(index=False))
    return 0


# -- studies --------------------------------------------------------------------------
def _study(name: str):
    from suite.registry import get_study

    try:
        return get_study(name)
    except ValueError as err:
        raise UsageError(str(err)) from err


def cmd_list(args) -> int:
    from suite.registry import registry

    for study in registry().values():
        kind = " (stage)" if study.stage else ""
        print(f"{study.name:<22}{len(study.variants):>2} variants  {study.paper.table}{kind}")
        print(f"{'':<22}{study.question}")
    return 0


def cmd_show(args) -> int:
    study = _study(args.study)
    print(f"{study.name}: {study.question}")
    print(f"paper: {study.paper.table}: {study.paper.caption}")
    if study.paper.note:
        print(f"note: {study.paper.note}")
    print("\nvariants:")
    for v in study.variants:
        extra = ", ".join(f"{k}={v_}" for k, v_ in {**v.config, **v.train}.items())
        print(f"  {v.name:<24} {v.model:<11} {extra}{'  init_from=' + v.init_from if v.init_from else ''}")
    ev = dict(study.eval)
    print(f"\nevaluation: {', '.join(f'{k}={v}' for k, v in ev.items()) or 'at the training length'}")
    print("scales: " + ", ".join(f"{s.name} ({s.data}, F={study.frames or s.frames}, seeds {list(s.seeds)})"
                                 for s in study.scales.values()))
    rows, cols = study.table.rows, study.table.columns
    print(f"\npaper's numbers ({study.table.metric}, {study.paper.unit}):")
    print(f"  {'':<34}" + "".join(f"{label:>16}" for _, label in cols))
    for key, label in rows:
        cells = [study.paper.numbers.get((key, c)) for c, _ in cols]
        print(f"  {label:<34}" + "".join(f"{'—' if v is None else v:>16}" for v in cells))
    return 0


def _parse_sets(items: list[str]) -> dict[str, str]:
    from hummuss.config import parse_overrides

    try:
        return parse_overrides(items or [])
    except ValueError as err:
        raise UsageError(str(err)) from err


def _parse_seeds(text: str | None):
    if not text:
        return None
    try:
        return tuple(int(s) for s in text.split(","))
    except ValueError:
        raise UsageError(f"bad --seeds {text!r}; expected comma-separated integers, e.g. 0,1,2") from None


def _tracker():
    from suite.tracking import Tracker, TrackingError, load_settings

    try:
        return Tracker(load_settings())
    except TrackingError as err:
        print(f"hummuss-suite: error: {err}", file=sys.stderr)
        raise SystemExit(1) from None


def cmd_run(args) -> int:
    from suite.runner import Runner, summary
    from suite.runspec import expand

    study = _study(args.study)
    sets, seeds = _parse_sets(args.set), _parse_seeds(args.seeds)
    variants = tuple(args.variant) if args.variant else None
    try:  # every name is checked before anything is logged
        study.scale(args.scale)
        expand(study, args.scale, seeds, args.data, sets, variants)
        if args.data:
            from hummuss.data import open_source

            open_source(args.data)
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(str(err)) from err
    from suite.launch import runner_kwargs

    tracker = _tracker()
    try:
        runner = Runner(tracker, **runner_kwargs(args))
    except ValueError as err:
        raise UsageError(str(err)) from err
    outcomes = runner.run_study(study.name, args.scale, seeds, args.data, sets, variants)
    print(summary(outcomes))
    return 1 if any(o.status in ("FAILED", "KILLED") for o in outcomes) else 0


def cmd_evaluate(args) -> int:
    from hummuss.evaluate import EvalConfig
    from suite.external import evaluate_checkpoint, load_any

    try:
        from pathlib import Path

        load_any(Path(args.checkpoint), args.format)  # fail on a bad file before touching the store
        from hummuss.data import open_source

        open_source(args.data)
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(str(err)) from err
    tracker = _tracker()
    lengths = tuple(int(f) for f in args.frames.split(","))
    run_id, table = evaluate_checkpoint(args.checkpoint, args.format, args.data, tracker,
                                        EvalConfig(lengths=lengths, flip=not args.no_flip))
    print(table.to_string(index=False))
    print(f"logged as run {run_id} of experiment {tracker.experiment_name('motionbert-baseline')}")
    return 0


def cmd_reproduce(args) -> int:
    from suite.reproduce import reproduce

    seeds = _parse_seeds(args.seeds)
    from suite.registry import SCALES

    if args.scale not in SCALES:
        raise UsageError(f"unknown scale {args.scale!r}; known: {', '.join(SCALES)}")
    return reproduce(_tracker(), args.scale, seeds, args.jobs, args.out, report=not args.no_report)


def cmd_bench(args) -> int:
    from suite.bench import run_benchmarks, targets

    try:
        df = run_benchmarks(args.out, quick=args.quick, select=args.k)
    except FileNotFoundError as err:  # installed without the source tree's tests/benchmarks
        raise UsageError(str(err)) from None
    except RuntimeError as err:
        print(f"hummuss-suite bench: {err}", file=sys.stderr)
        return 1
    print(targets(df).to_string(index=False))
    print(f"wrote {args.out}/benchmarks.json, benchmarks.csv, benchmarks.md and figures/")
    return 0


def _add_run_options(p) -> None:
    p.add_argument("--scale", default="cpu", help="smoke, cpu or paper (default: cpu)")
    p.add_argument("--seeds", help="comma-separated seeds (default: the scale's)")
    p.add_argument("--data", help="data spec instead of the scale's (e.g. mpi3dhp:DIR)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override a config field: lr=1e-3, model.state_size=64, eval.flip=false")
    from suite.launch import add_launch_options

    add_launch_options(p)


# -- the parser -----------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hummuss-suite",
        description="Benchmark suite for human-motion state-space models (HumMUSS vs MotionBERT).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="the registered studies")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", help="a study's variants, conditions and the paper's numbers")
    p.add_argument("study")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("run", help="train and evaluate every run of a study, logging to MLflow")
    p.add_argument("study")
    p.add_argument("--variant", nargs="*", help="only these variants")
    _add_run_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("evaluate", help="evaluate a checkpoint (ours or MotionBERT's .bin) under the suite's "
                                        "protocol and log it as a run of motionbert-baseline")
    p.add_argument("--checkpoint", required=True, help="checkpoint file")
    p.add_argument("--format", default="hummuss", choices=["hummuss", "motionbert"],
                   help="hummuss (this suite's trainer) or motionbert (the original repository's .bin)")
    p.add_argument("--data", required=True, help="data spec, e.g. h36m:PATH.pkl or synthetic")
    p.add_argument("--frames", default="243", help="comma-separated test window lengths (default: 243)")
    p.add_argument("--no-flip", action="store_true", help="no flip test-time augmentation")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("reproduce", help="run every paper study at a scale, then the report")
    p.add_argument("--scale", default="cpu", help="smoke, cpu or paper (default: cpu)")
    p.add_argument("--seeds", help="comma-separated seeds (default: the scale's)")
    p.add_argument("--jobs", type=int, default=2, help="runs at once (default: 2)")
    p.add_argument("--out", default="results", help="report folder (default: results)")
    p.add_argument("--no-report", action="store_true", help="only run the studies")
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("bench", help="the speed benchmarks (HumMUSS vs MotionBERT-Lite) and the latency figure")
    p.add_argument("--out", default="results", help="output folder (default: results)")
    p.add_argument("--quick", action="store_true", help="fewer sizes and rounds (a few minutes)")
    p.add_argument("-k", metavar="EXPR", help="only benchmarks matching this pytest -k expression")
    p.set_defaults(func=cmd_bench)

    from suite.report import add_report_parser
    from suite.sweep import add_sweep_parser

    add_report_parser(sub)
    add_sweep_parser(sub)

    p = sub.add_parser("info", help="parameter count and multiply-accumulates per frame of a model")
    p.add_argument("--model", default="hummuss", help="hummuss or motionbert (default: hummuss)")
    p.add_argument("--preset", default="paper-bidirectional",
                   help="a preset of the model's config, e.g. paper-causal, lite (default: paper-bidirectional)")
    p.add_argument("--frames", type=int, default=243, help="context length for the MAC count (default: 243)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("data", help="inspect data sets")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    q = data_sub.add_parser("inspect", help="sequences, frames, clips, frame rates and value ranges per split")
    q.add_argument("spec", help="synthetic[:k=v,...], h36m:FILE.pkl, motionbert-clips:DIR, mpi3dhp:DIR or bvh:DIR")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=cmd_data_inspect)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as err:
        parser.exit(2, f"hummuss-suite: error: {err}\n")
    except KeyboardInterrupt:
        print("hummuss-suite: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

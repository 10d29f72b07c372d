"""`hummuss-suite info`, `bench`, `gpu-check` and `data inspect`: models, speed and data sets."""

from __future__ import annotations

import sys

from suite.cli.common import UsageError, print_json


# -- bench --------------------------------------------------------------------------------------
def add_bench_parser(sub) -> None:
    p = sub.add_parser("bench", help="the speed benchmarks (HumMUSS vs MotionBERT-Lite) and the latency figure")
    p.add_argument("--out", default="results", help="output folder (default: results)")
    p.add_argument("--quick", action="store_true", help="fewer sizes and rounds (a few minutes)")
    p.add_argument("-k", metavar="EXPR", help="only benchmarks matching this pytest -k expression")
    p.set_defaults(func=cmd_bench)


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


# -- gpu-check ----------------------------------------------------------------------------------
def add_gpu_check_parser(sub) -> None:
    from suite.cli.gpucheck import HELP, add_arguments, cmd_gpu_check

    p = sub.add_parser("gpu-check", help=HELP)
    add_arguments(p)
    p.set_defaults(func=cmd_gpu_check)


# -- info ---------------------------------------------------------------------------------------
def add_info_parser(sub) -> None:
    p = sub.add_parser("info", help="parameter count and multiply-accumulates per frame of a model")
    p.add_argument("--model", default="hummuss", help="hummuss or motionbert (default: hummuss)")
    p.add_argument("--preset", default="paper-bidirectional",
                   help="a preset of the model's config, e.g. paper-causal, lite (default: paper-bidirectional)")
    p.add_argument("--frames", type=int, default=243, help="context length for the MAC count (default: 243)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)


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
        print_json(info)
        return 0
    print(f"{args.model} / {args.preset}")
    print(f"  parameters       {params:,} ({params / 1e6:.2f}M)")
    for part, n in breakdown.items():
        print(f"    {part:<22}{n:>12,}")
    print(f"  MACs per frame   {macs:,} ({macs / 1e9:.3f} G) at {args.frames} frames of context")
    return 0


# -- data inspect -------------------------------------------------------------------------------
def add_data_parser(sub) -> None:
    p = sub.add_parser("data", help="inspect data sets")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    q = data_sub.add_parser("inspect", help="sequences, frames, clips, frame rates and value ranges per split")
    q.add_argument("spec", help="synthetic[:k=v,...], h36m:FILE.pkl, motionbert-clips:DIR, mpi3dhp:DIR or bvh:DIR")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=cmd_data_inspect)


def cmd_data_inspect(args) -> int:
    from hummuss.data.inspect import summarise

    try:
        table = summarise(args.spec)
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(str(err)) from err
    if args.json:
        print_json(table.to_dict(orient="records"))
    else:
        print(table.to_string(index=False))
    return 0

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


# -- the parser -----------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hummuss-suite",
        description="Benchmark suite for human-motion state-space models (HumMUSS vs MotionBERT).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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

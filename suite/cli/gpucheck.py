"""`hummuss-suite gpu-check` and `python -m suite.gpucheck`: the GPU check's options, and its
command line where the suite's own cannot load (a GPU machine's image with torch but without
MLflow or Optuna). Imports nothing beyond the standard library and suite.gpucheck."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = ("what only a GPU can tell (gpu tests, bf16 paper-scale epochs, training-step and streaming "
        "benchmarks); exits 0 without one")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from suite.gpucheck import BUDGET_S, Plan

    p.add_argument("--out", default="results/gpu-check", help="folder for gpu-check.json and .md")
    p.add_argument("--budget", type=float, default=BUDGET_S,
                   help=f"seconds; parts past it are skipped (default: {BUDGET_S:.0f})")
    p.add_argument("--steps", type=int, default=Plan.steps,
                   help=f"training steps in each epoch (default: {Plan.steps})")


def cmd_gpu_check(args) -> int:
    from suite.gpucheck import check

    return check(Path(args.out), args.budget, args.steps)


def main(argv: list[str] | None = None) -> int:
    """`python -m suite.gpucheck [--out DIR] [--budget S] [--steps N]`."""
    parser = argparse.ArgumentParser(prog="python -m suite.gpucheck", description=HELP)
    add_arguments(parser)
    return cmd_gpu_check(parser.parse_args(argv))

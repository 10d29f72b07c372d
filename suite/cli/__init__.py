"""`hummuss-suite`: the command line of the suite (also `python -m suite`).

Every parser of the suite lives in this package: one module per group of commands, each
command a function `cmd_<name>(args) -> int` beside the function that adds its parser;
`build_parser` is the table of contents. The child processes' command lines (a run, a
sweep worker) are in children.py. Usage errors (`UsageError`, common.py) exit with code
2 (argparse's convention), failures with 1.

The command modules are imported when the parser is built, not with this package: a module
of it that needs neither MLflow nor Optuna (gpucheck.py, for `python -m suite.gpucheck` on
a GPU machine's bare image) loads without them.
"""

from __future__ import annotations

import argparse
import shlex
import sys

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    from suite.cli.report import add_report_parser
    from suite.cli.runs import add_evaluate_parser, add_reproduce_parser, add_run_parser
    from suite.cli.studies import add_list_parser, add_show_parser
    from suite.cli.sweep import add_sweep_parser
    from suite.cli.tools import (
        add_bench_parser,
        add_data_parser,
        add_gpu_check_parser,
        add_info_parser,
    )

    parser = argparse.ArgumentParser(
        prog="hummuss-suite",
        description="Benchmark suite for human-motion state-space models (HumMUSS vs MotionBERT).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_list_parser(sub)
    add_show_parser(sub)
    add_run_parser(sub)
    add_evaluate_parser(sub)
    add_reproduce_parser(sub)
    add_bench_parser(sub)
    add_gpu_check_parser(sub)
    add_report_parser(sub)
    add_sweep_parser(sub)
    add_info_parser(sub)
    add_data_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from suite.cli.common import UsageError

    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = "hummuss-suite " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        return args.func(args)
    except UsageError as err:
        parser.exit(2, f"hummuss-suite: error: {err}\n")
    except KeyboardInterrupt:
        print("hummuss-suite: interrupted", file=sys.stderr)
        return 130

"""`hummuss-suite report`: the paper's tables and figures beside ours (suite/report/)."""

from __future__ import annotations

from typing import Any

from suite.cli.common import UsageError, open_tracker


def add_report_parser(subparsers) -> Any:
    """`hummuss-suite report [STUDY ...] [--out results/] [--scale S] [--benchmarks FILE]`."""
    p = subparsers.add_parser("report", help="the paper's tables and figures beside ours, from MLflow",
                              description="Read the studies' runs from MLflow and write tables "
                                          "(md, tex, csv), figures and README.md.")
    p.add_argument("studies", nargs="*", metavar="STUDY", help="studies to report (default: every paper study)")
    p.add_argument("--out", default="results", help="output folder (default: results)")
    p.add_argument("--scale", help="read runs of this scale only (default: per study, the scale with the "
                                   "most finished runs)")
    p.add_argument("--benchmarks", help="pytest-benchmark JSON for the latency figure "
                                        "(default: <out>/benchmarks.json)")
    p.add_argument("--no-figures", action="store_true", help="tables and README only")
    p.set_defaults(func=cmd_report)
    return p


def cmd_report(args) -> int:
    from suite.report import UnknownScale, render_report, study_names

    try:
        study_names(args.studies)
    except ValueError as err:
        raise UsageError(str(err)) from err
    tracker = open_tracker()
    try:
        result = render_report(tracker, args.studies, args.out, scale=args.scale, figures=not args.no_figures,
                               benchmarks=args.benchmarks, say=print)
    except UnknownScale as err:
        raise UsageError(str(err)) from err
    print(f"{len(result.tables)} table(s), {len(result.figures)} figure(s), "
          f"{len(result.missing)} missing cell(s); see {result.readme}")
    return 0

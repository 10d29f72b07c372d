"""The child processes' command lines: a run (`python -m suite.worker`, `python -m
suite.launch`, also under torchrun) and a sweep worker (`python -m suite.sweep --worker`).

Their parents (suite/runner.py, suite/sweep/workers.py) build these command lines; the
module entry points (suite/worker/__main__.py, suite/launch/__main__.py,
suite/sweep/__main__.py) call the functions here.
"""

from __future__ import annotations

import argparse
import contextlib
import os

from suite.cli.common import open_tracker, tracking_settings
from suite.launch import enter_child_process, record_devices


def run_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """`--spec FILE --run-id ID`: one claimed run."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--spec", required=True, help="run spec JSON file")
    p.add_argument("--run-id", required=True, help="the MLflow run to log into")
    return p


def worker_main(argv: list[str] | None = None) -> int:
    """`python -m suite.worker --spec FILE --run-id ID`: execute one claimed run."""
    from suite.worker import execute_file

    args = run_parser("python -m suite.worker", "Execute one claimed run.").parse_args(argv)
    enter_child_process()
    return execute_file(args.spec, args.run_id, tracking_settings())


def launch_main(argv: list[str] | None = None) -> int:
    """`python -m suite.launch --spec FILE --run-id ID`: tag what the run sees (rank 0), then
    execute it as `python -m suite.worker` does (every rank under torchrun)."""
    from suite.worker import execute_file

    args = run_parser("python -m suite.launch", "Tag the devices a claimed run sees, then execute it."
                      ).parse_args(argv)
    settings = tracking_settings()
    if os.environ.get("RANK", "0") == "0":
        with contextlib.suppress(Exception):  # the run itself reports store trouble
            record_devices(open_tracker(settings, check=False), args.run_id)
    enter_child_process()
    return execute_file(args.spec, args.run_id, settings)


def sweep_worker_main(argv: list[str] | None = None) -> int:
    """`python -m suite.sweep --worker I --deadline T --config JSON`: one worker process of a sweep."""
    from suite.sweep import SweepConfig, worker_process

    p = argparse.ArgumentParser(prog="python -m suite.sweep --worker")
    p.add_argument("--worker", type=int, required=True)
    p.add_argument("--deadline", type=float, default=0.0)
    p.add_argument("--config", required=True, help="the prepared SweepConfig as JSON")
    args = p.parse_args(argv)
    enter_child_process()
    return worker_process(SweepConfig.from_json(args.config), open_tracker(check=False), args.worker,
                          args.deadline or None)

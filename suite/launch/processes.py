"""Child processes of the suite (a run, a sweep worker, a Slurm job): the environment a
parent gives them, and what each does first.

    env = child_env(tracker.settings, processes=4, extra=pool.env(devices))
    subprocess.Popen([sys.executable, "-m", "suite.launch", ...], env=env)

    enter_child_process()   # in the child: SIGTERM is Ctrl-C, torch uses its share of threads
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading

from suite.tracking import PROJECT_DIR, TrackingSettings

THREADS_ENV = "HUMMUSS_THREADS"  # torch threads of a child process (set by its parent)


def pythonpath() -> str:
    """PYTHONPATH with the project first, so a child imports this checkout of the suite."""
    return os.pathsep.join(filter(None, [str(PROJECT_DIR), os.environ.get("PYTHONPATH")]))


def child_env(settings: TrackingSettings, processes: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child process: this process's, plus the tracking store it must
    use, the project on PYTHONPATH, `extra` (e.g. its CUDA_VISIBLE_DEVICES) and its share
    of the CPU cores when `processes` children run at once (HUMMUSS_THREADS, unless set)."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": settings.tracking_uri, "HUMMUSS_MLFLOW_CONFIG": settings.source,
           "PYTHONPATH": pythonpath(), **(extra or {})}
    env.setdefault(THREADS_ENV, str(max(1, (os.cpu_count() or 1) // max(1, processes))))
    return env


@contextlib.contextmanager
def project_on_pythonpath():
    """PYTHONPATH holds the project meanwhile (jobs submitted meanwhile inherit the environment)."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = pythonpath()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def interrupt_on_sigterm() -> None:
    """SIGTERM (a parent's or a scheduler's stop) raises KeyboardInterrupt, as Ctrl-C does,
    so runs and trials end KILLED and keep their checkpoints (main thread only)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


def enter_child_process() -> None:
    """What a child process does first: SIGTERM as Ctrl-C, and the torch threads its
    parent gave it (HUMMUSS_THREADS)."""
    interrupt_on_sigterm()
    threads = os.environ.get(THREADS_ENV)
    if threads:
        import torch

        torch.set_num_threads(int(threads))

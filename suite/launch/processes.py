"""Child processes of the suite (a run, a sweep worker, a Slurm job): the environment a
parent gives them, and what each does first.

    env = child_env(tracker.settings, processes=4, extra=pool.env(devices))
    subprocess.Popen([sys.executable, "-m", "suite.launch", ...], env=env)

    enter_child_process()   # in the child: SIGTERM is Ctrl-C, torch uses its share of threads

    with sigterm_as_interrupt():                     # the parent: SIGTERM stops it as Ctrl-C does
        ...
    stop_process_trees([proc.pid], grace_s=20)       # a child, torchrun and its ranks: all of them
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading

from hummuss.allocator import with_hugepages
from hummuss.mkl_vendor import with_intel_path
from suite.tracking import PROJECT_DIR, TrackingSettings

THREADS_ENV = "HUMMUSS_THREADS"  # torch threads of a child process (set by its parent)


def pythonpath() -> str:
    """PYTHONPATH with the project first, so a child imports this checkout of the suite."""
    return os.pathsep.join(filter(None, [str(PROJECT_DIR), os.environ.get("PYTHONPATH")]))


def thread_share(processes: int) -> str:
    """Torch threads for each of `processes` processes running at once on this machine's cores."""
    return str(max(1, (os.cpu_count() or 1) // max(1, processes)))


def child_env(settings: TrackingSettings, processes: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child process: this process's, plus the tracking store it must
    use, the project on PYTHONPATH, `extra` (e.g. its CUDA_VISIBLE_DEVICES) and its share
    of the CPU cores when `processes` children run at once (HUMMUSS_THREADS, unless set),
    glibc's malloc on huge pages (`hummuss.allocator.with_hugepages`, unless set otherwise) and,
    on a CPU that is not an Intel one, MKL's Intel code path (`hummuss.mkl_vendor`)."""
    env = {**with_intel_path(with_hugepages(os.environ)), "MLFLOW_TRACKING_URI": settings.tracking_uri, "HUMMUSS_MLFLOW_CONFIG": settings.source,
           "PYTHONPATH": pythonpath(), **(extra or {})}
    env.setdefault(THREADS_ENV, thread_share(processes))
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


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM raises KeyboardInterrupt in the block (main thread only; else nothing
    changes), so a stopped `run` command stops its runs as Ctrl-C does; the previous
    handler afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def process_tree(pid: int) -> list:
    """The process `pid` and every descendant (psutil.Process objects), found now: torchrun
    starts each rank in a session of its own, out of reach of a signal to torchrun's group."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def stop_process_trees(pids: list[int], grace_s: float = 20.0, sig: int = signal.SIGINT) -> None:
    """Stop each process of `pids` and all its descendants: `sig` to the process group of
    each (a run's process is a group leader; torchrun passes the signal on to its ranks),
    then, after `grace_s` seconds, SIGKILL to whatever of the trees is left (a rank blocked
    in a collective never sees a signal) and to their groups."""
    import psutil

    trees = [p for pid in pids for p in process_tree(pid)]
    leaders = []  # groups of the trees (each rank's, under torchrun): their children share them
    for proc in trees:
        with contextlib.suppress(OSError):
            if os.getpgid(proc.pid) == proc.pid:
                leaders.append(proc.pid)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.killpg(pid, sig)
    _gone, alive = psutil.wait_procs(trees, timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error, OSError):
            proc.kill()
    for pgid in leaders:
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=5)


def enter_child_process() -> None:
    """What a child process does first: SIGTERM as Ctrl-C, and the torch threads its
    parent gave it (HUMMUSS_THREADS)."""
    interrupt_on_sigterm()
    threads = os.environ.get(THREADS_ENV)
    if threads:
        import torch

        torch.set_num_threads(int(threads))

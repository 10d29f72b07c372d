"""Whether a process of this machine is still alive: by pid, not a zombie (killed and not yet
reaped by its parent), and where its start time is known, not a recycled pid. The sweep's
stale-trial recovery (suite.sweep.stale) and the runs' leases (suite.leases) ask it."""

from __future__ import annotations

import os
from pathlib import Path


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks) of a Linux process, None where /proc is absent."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[19])


def process_alive(pid: int, proc_start: int | None = None) -> bool:
    """Whether process `pid` of this host is alive (not a zombie, not a recycled pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    stat = proc_stat(pid)
    if stat is None:
        return not Path("/proc").is_dir()  # exists on Linux: the process just ended
    state, start = stat
    return state not in ("Z", "X") and (proc_start is None or start == proc_start)

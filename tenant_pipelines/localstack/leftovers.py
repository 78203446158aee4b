"""Finding every process of one platform, however deep below `tenantctl up` it was started.

Each child of `up` gets `TENANT_PLATFORM_OF=<data dir>` in its environment; whatever it starts
(code servers, fork servers, run workers) inherits it, while tenant workloads get an environment
of their own and never carry it. A SIGKILLed `up` leaves such processes orphaned in sessions of
their own; the next `up` for that data directory, holding its lock, stops them before it starts
anything, so no state ever has two daemons.
"""

import contextlib
import os
import signal
import time
from collections.abc import Collection

from tenant_pipelines.support import procs

MARK_ENV = "TENANT_PLATFORM_OF"
KILL_WAIT_S = 5.0


def marked(mark: str) -> list[int]:
    """PIDs of the processes marked as this platform's, this process excepted."""
    me = os.getpid()
    return [pid for pid in procs.pids() if pid != me and procs.environ_value(pid, MARK_ENV) == mark]


def kill_marked(mark: str, wait_s: float = KILL_WAIT_S, spare: Collection[int] = ()) -> list[int]:
    """SIGKILL every marked process but those in `spare` (a pidfd pins the one checked), and wait
    until they are gone: a crash, as a SIGKILLed `up` is, so the next start resumes their runs.
    Returns their PIDs."""
    killed = []
    for pid in set(marked(mark)) - set(spare):
        with contextlib.suppress(OSError):
            fd = os.pidfd_open(pid)
            try:
                if procs.environ_value(pid, MARK_ENV) == mark:
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
                    killed.append(pid)
            finally:
                os.close(fd)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and any(_running(pid) for pid in killed):
        time.sleep(0.05)
    return killed


def _running(pid: int) -> bool:
    """Alive and not a zombie (a zombie's environ reads empty)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return procs.argv(pid) is not None

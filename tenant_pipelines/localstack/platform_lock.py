"""One platform per data directory and per Dagster instance: a lock `tenantctl up` holds.

An fcntl lock on `up.lock` in the data directory and in DAGSTER_HOME, held for the life of the
process and released by the kernel however it ends (SIGKILL included), so a stale lock never
needs clearing by hand. The file names the holder's PID and ports for the refusal message.
"""

import fcntl
import json
import os
from pathlib import Path

from tenant_pipelines.domain.errors import TenantPipelinesError

LOCK_FILE = "up.lock"


class PlatformRunning(TenantPipelinesError):
    """Another `tenantctl up` already runs this platform."""


def _holder(path: Path) -> str:
    try:
        held = json.loads(path.read_text())
        ports = ", ".join(f"{k} {v}" for k, v in held["ports"].items())
        return f"pid {held['pid']}; ports {ports}"
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return "pid unknown: it is still starting"


def _take(directory: Path, what: str, owner: dict[str, object]) -> int:
    path = directory / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise PlatformRunning(
            f"tenantctl up is already running for {what} {directory} ({_holder(path)})"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(owner).encode(), 0)
    return fd


def is_held(directory: Path) -> bool:
    """Whether a running `up` holds the lock in `directory` (whatever its stack file says)."""
    try:
        fd = os.open(directory / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def hold(data_dir: Path, dagster_home: Path, ports: dict[str, int]) -> list[int]:
    """Take both locks or raise PlatformRunning naming the holder; the descriptors to keep open
    (closing them, or exiting, releases the locks)."""
    owner: dict[str, object] = {"pid": os.getpid(), "ports": ports}
    first = _take(data_dir, "the data directory", owner)
    dagster_home.mkdir(parents=True, exist_ok=True)
    try:
        return [first, _take(dagster_home, "the Dagster instance", owner)]
    except BaseException:
        os.close(first)
        raise

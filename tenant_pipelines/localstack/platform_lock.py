"""One platform per data directory, per Dagster instance and per PostgreSQL database: locks
`tenantctl up` holds.

An fcntl lock on `up.lock` in the data directory and in DAGSTER_HOME, held for the life of the
process and released by the kernel however it ends (SIGKILL included), so a stale lock never
needs clearing by hand. The file names the holder's PID and ports for the refusal message.

Two control planes on two hosts share no directory, but they may share a PostgreSQL database
(the registry's, Dagster's storage): each would restore, settle and launch the other's tenants
and runs. So `up` also holds a session-level advisory lock in each PostgreSQL database it uses,
on a session of its own whose `application_name` names it; the server releases the lock when
that session ends, and notices a vanished host within about 30 s (the session's TCP keepalives).
A worker host (`tenantctl worker`) holds such a lock too, one per host name (`hold_host_name`):
two workers under one name would share its queue and settle each other's runs.
"""

import fcntl
import json
import os
import socket
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tenant_pipelines.domain.errors import RegistryUnavailable, TenantPipelinesError
from tenant_pipelines.support.db_url import is_sqlite, libpq_url, store_name

LOCK_FILE = "up.lock"
# The advisory lock's key (two int4s: an application tag, and what is locked).
ADVISORY_KEY = (0x74656E61, 1)  # "tena", the control plane
WORKER_HOST_CLASS = 0x74656E62  # "tenb": a worker host, by its name's CRC-32
APPLICATION_NAME_MAX = 63  # PostgreSQL truncates longer names
KEEPALIVE = (
    "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3"
)


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


def control_plane_name(ports: dict[str, int]) -> str:
    """How this `up` names itself to other control planes: host, PID and API port."""
    api = f" api {ports['api']}" if "api" in ports else ""
    return f"tenantctl up on {socket.gethostname()} pid {os.getpid()}{api}"[:APPLICATION_NAME_MAX]


def hold_databases(urls: Iterable[str], ports: dict[str, int]) -> list[Any]:
    """Take the control plane's advisory lock in each PostgreSQL database of `urls` (SQLite ones
    are covered by the data directory's lock) or raise PlatformRunning naming the holder
    (RegistryUnavailable if a server does not answer); the sessions to keep open (closing them,
    or exiting, releases the locks)."""
    held: list[Any] = []
    try:
        for url in dict.fromkeys(u for u in urls if not is_sqlite(u)):
            held.append(
                _advisory_lock(
                    url,
                    ADVISORY_KEY,
                    control_plane_name(ports),
                    "another control plane already runs",
                )
            )
    except BaseException:
        for conn in held:
            conn.close()
        raise
    return held


def hold_host_name(url: str, host_name: str) -> Any:
    """Take worker host `host_name`'s advisory lock in the Dagster instance's database (at `url`)
    or raise PlatformRunning naming the worker that holds it; the session to keep open."""
    key = (WORKER_HOST_CLASS, zlib.crc32(host_name.encode()) & 0x7FFFFFFF)
    name = f"tenantctl worker {host_name} on {socket.gethostname()} pid {os.getpid()}"
    refusal = f"a worker for the host {host_name!r} already runs"
    return _advisory_lock(url, key, name[:APPLICATION_NAME_MAX], refusal)


def _advisory_lock(url: str, key: tuple[int, int], name: str, refusal: str) -> Any:
    import psycopg2

    try:
        conn = psycopg2.connect(libpq_url(url), application_name=name, connect_timeout=10)
    except psycopg2.OperationalError as error:
        cause = str(error).strip().splitlines()[0]
        raise RegistryUnavailable(store_name(url), cause) from None
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(KEEPALIVE)
            cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", key)
            (taken,) = cursor.fetchone()
            if not taken:
                raise PlatformRunning(
                    f"{refusal} on the PostgreSQL database {store_name(url)}"
                    f" ({_database_holder(cursor, key)})"
                )
    except BaseException:
        conn.close()
        raise
    return conn


def _database_holder(cursor: Any, key: tuple[int, int]) -> str:
    cursor.execute(
        "SELECT a.application_name, host(a.client_addr), a.backend_start"
        " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s"
        " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        key,
    )
    row = cursor.fetchone()
    if row is None or not row[0]:
        return "its session is not visible to this database user"
    name, address, since = row
    started = since.isoformat(timespec="seconds")
    return f"{name}, from {address or 'a local socket'}, since {started}"

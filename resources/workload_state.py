"""Where a tenant's local workload listens, and whether a PID is that workload: written and read by
the deployer; the gateway relays to the socket path (`socket_path`).

A workload listens on a Unix socket, never on a port: the deployer binds it at a path fixed by the
tenant key, in `<data_dir>/sock/`, a directory only the platform may enter, and hands it over. So
no other process (another tenant's workload included) can connect to a workload except through the
gateway, nor bind the path a dead workload left to take over its traffic: the path belongs to the
tenant key for good, and a gateway relaying to it reaches that tenant's workload or nothing. The
state file (pid, socket path, uid, tenant id, the socket's descriptor number and inode) is the
platform's too: a process counts as the tenant's workload only while it is started for that tenant
(its command line), runs as the tenant's uid, and still holds the very socket the deployer bound.
PIDs get recycled, so nothing trusts a PID without those checks.
"""

import hashlib
import itertools
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from tenant_pipelines.domain.tenant import check_tenant_key, is_tenant_key
from tenant_pipelines.support import procs
from tenant_pipelines.support.files import PRIVATE_DIR, write_atomically

SERVER_MODULE = "resources.workload_server"
# A Unix socket's path has at most 107 bytes (Linux's sun_path, less its NUL); a tenant key can
# have 63 characters, so sockets are named by a digest of the key, whatever the key's length.
MAX_SOCKET_PATH = 107
SOCKET_NAME_CHARS = 20


@dataclass(frozen=True)
class WorkloadState:
    """A running workload, as the deployer started it."""

    pid: int
    socket: str  # the Unix socket's path (socket_path)
    uid: int
    tenant_id: str
    listen_fd: int  # the socket's descriptor number in the workload
    socket_inode: int


def workloads_dir(data_dir: str | Path) -> Path:
    return Path(data_dir).resolve() / "workloads"


def state_path(data_dir: str | Path, tenant_key: str) -> Path:
    return workloads_dir(data_dir) / f"{check_tenant_key(tenant_key)}.json"


def sockets_dir(data_dir: str | Path) -> Path:
    """The workloads' sockets: a short path (Unix socket paths are short), the platform's only."""
    return Path(data_dir).resolve() / "sock"


def socket_path(data_dir: str | Path, tenant_key: str) -> Path:
    """Where the tenant's workload listens, and the gateway relays to: the same path for as long
    as the key exists. Raises ValueError if the data directory's path is too long for one."""
    digest = hashlib.sha256(check_tenant_key(tenant_key).encode()).hexdigest()
    path = sockets_dir(data_dir) / digest[:SOCKET_NAME_CHARS]
    if len(str(path).encode()) > MAX_SOCKET_PATH:
        raise ValueError(
            f"the data directory {Path(data_dir).resolve()} is too long a path for the Unix"
            f" sockets under it (at most {max_data_dir_chars()} bytes)"
        )
    return path


def max_data_dir_chars() -> int:
    """The longest data directory path under which workload sockets fit."""
    return MAX_SOCKET_PATH - len(f"/sock/{'0' * SOCKET_NAME_CHARS}")


def read_state(path: Path) -> WorkloadState | None:
    """The state in `path`; None if there is none or it is not complete (an older version's)."""
    try:
        state = json.loads(path.read_text())
        return WorkloadState(
            pid=int(state["pid"]),
            socket=str(state["socket"]),
            uid=int(state["uid"]),
            tenant_id=str(state["tenant_id"]),
            listen_fd=int(state["listen_fd"]),
            socket_inode=int(state["socket_inode"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def recorded_tenant_id(path: Path) -> str | None:
    """The tenant id a state file was written for, even an incomplete one; None if unrecorded."""
    try:
        tenant_id = json.loads(path.read_text()).get("tenant_id")
    except (OSError, ValueError, AttributeError):
        return None
    return str(tenant_id) if tenant_id is not None else None


def write_state(path: Path, state: WorkloadState) -> None:
    """Atomically, owner-only, in the platform's own directory."""
    path.parent.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    write_atomically(
        path, json.dumps({**asdict(state), "started_at": datetime.now(UTC).isoformat()})
    )


def workload_args(pid: int) -> dict[str, str] | None:
    """The options of a live workload_server process, or None for anything else (or a zombie)."""
    argv = procs.argv(pid)
    if argv is None or SERVER_MODULE not in argv:
        return None
    return {a.removeprefix("--"): b for a, b in itertools.pairwise(argv) if a.startswith("--")}


def owner(pid: int, data_dir: str | Path) -> str | None:
    """The tenant key if pid is a workload of this data directory, else None."""
    args = workload_args(pid)
    key = args.get("tenant-key", "") if args else ""
    if not args or not is_tenant_key(key):
        return None
    return key if args.get("state-file") == str(state_path(data_dir, key)) else None


def is_workload_of(pid: int, data_dir: str | Path, tenant_key: str) -> bool:
    return owner(pid, data_dir) == tenant_key


def is_live(state: WorkloadState, data_dir: str | Path, tenant_key: str) -> bool:
    """Whether the state's process is still the tenant's workload, as its uid, on its socket."""
    credentials = procs.credentials(state.pid)
    return (
        is_workload_of(state.pid, data_dir, tenant_key)
        and credentials is not None
        and credentials.uid == state.uid
        and procs.fd_inode(state.pid, state.listen_fd) == state.socket_inode
    )


def read_endpoint(data_dir: str | Path, tenant_key: str) -> str | None:
    """The socket of the tenant's live workload; None if there is none."""
    state = read_state(state_path(data_dir, tenant_key))
    if state is None or not is_live(state, data_dir, tenant_key):
        return None
    return state.socket

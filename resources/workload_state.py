"""Where a tenant's local workload listens, and whether a PID is that workload: read by the
deployer and, on every request, by the edge gateway. Kept apart from the deployer resource (and so
from Dagster) because the edge imports it: a restarted edge is serving again sooner.

Processes are recognised by their command line in /proc, which names the tenant and its state
file: PIDs get recycled, so nothing trusts a PID without that check.
"""

import itertools
import json
from pathlib import Path

from tenant_pipelines.domain.tenant import check_tenant_key, is_tenant_key
from tenant_pipelines.support import procs

SERVER_MODULE = "resources.workload_server"


def workloads_dir(data_dir: str | Path) -> Path:
    return Path(data_dir).resolve() / "workloads"


def state_path(data_dir: str | Path, tenant_key: str) -> Path:
    return workloads_dir(data_dir) / f"{check_tenant_key(tenant_key)}.json"


def read_state(path: Path) -> dict[str, int] | None:
    try:
        state = json.loads(path.read_text())
        return {"pid": int(state["pid"]), "port": int(state["port"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


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


def read_endpoint(data_dir: str | Path, tenant_key: str) -> int | None:
    """The port of the tenant's live workload, for the edge; None if there is none."""
    state = read_state(state_path(data_dir, tenant_key))
    if state is None or not is_workload_of(state["pid"], data_dir, tenant_key):
        return None
    return state["port"]

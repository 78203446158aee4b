"""Workload deployer: runs each tenant's workload and proves it ready.

Locally a workload is a `resources.workload_server` process in its own session, so it outlives the
short-lived run worker that starts it. Processes are found by their command line in /proc, which
names the tenant and this deployer's state file: PIDs get recycled, so nothing is signalled
without that check (Linux only; elsewhere nothing is ever signalled). A workload's address space
is capped at its plan's `workload_memory_mb`.
"""

import contextlib
import http.client
import importlib.util
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path

from resources.base import TenantBackend, resolved
from resources.identity import identity_db_path, pg_identity_schema
from resources.workload_state import (  # noqa: F401 - read_endpoint: where it always was
    SERVER_MODULE,
    is_workload_of,
    owner,
    read_endpoint,
    read_state,
    state_path,
    workloads_dir,
)
from tenant_pipelines.domain.errors import ConfigError, ReadinessTimeout
from tenant_pipelines.domain.handles import Handle, ResourceKind
from tenant_pipelines.domain.plans import get_plan
from tenant_pipelines.domain.tenant import TenantSpec
from tenant_pipelines.support import procs
from tenant_pipelines.support.db_url import libpq_url

POLL_INTERVAL_S = 0.05
HEALTH_TIMEOUT_S = 1.0
STOP_GRACE_S = 5.0
KILL_WAIT_S = 2.0
IDENTITY_DSN_ENV = "TENANT_WORKLOAD_IDENTITY_DSN"  # as resources.workload_server reads it
# All a workload inherits from the control plane's environment: not its database URLs or keys.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "PYTHONPATH")
# The directory holding the `resources` package, for children of a non-installed checkout.
_SOURCE_ROOT = str(Path(__file__).resolve().parent.parent)


def _home_of(package: str) -> str:
    """The directory a package is imported from, for a child started without site-packages."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"{package} is not installed")
    return str(Path(next(iter(spec.submodule_search_locations))).parent)


def _running(data_dir: str | Path) -> dict[int, str]:
    """PID -> tenant key of every workload process that belongs to this data directory."""
    owners = {pid: owner(pid, data_dir) for pid in procs.pids()}
    return {pid: key for pid, key in owners.items() if key}


def _healthy(port: int, tenant_key: str) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HEALTH_TIMEOUT_S)
    try:
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        body = json.loads(response.read() or b"{}")
        return response.status == 200 and body.get("tenant") == tenant_key
    except (OSError, http.client.HTTPException, ValueError):
        return False
    finally:
        conn.close()


def _stop(targets: dict[int, str], data_dir: str | Path) -> list[str]:
    """SIGTERM, then SIGKILL after the grace period, each PID still this tenant's workload.

    All are signalled before any is waited for, so stopping many costs one grace period. A pidfd
    pins the process we checked, so a recycled PID never receives the signal. Returns the keys
    of the workloads that are gone.
    """
    with contextlib.ExitStack() as stack:
        pidfds: dict[int, int] = {}
        for pid in targets:
            with contextlib.suppress(OSError, AttributeError):
                pidfds[pid] = os.pidfd_open(pid)
                stack.callback(os.close, pidfds[pid])
        ours = {pid: key for pid, key in targets.items() if is_workload_of(pid, data_dir, key)}
        alive = dict(ours)
        for sig, wait_s in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, KILL_WAIT_S)):
            for pid in alive:
                with contextlib.suppress(ProcessLookupError):
                    if pid in pidfds:
                        signal.pidfd_send_signal(pidfds[pid], sig)
                    else:
                        os.kill(pid, sig)
            alive = _wait_gone(alive, data_dir, wait_s)
            if not alive:
                break
    return sorted({key for pid, key in ours.items() if pid not in alive})


def _wait_gone(alive: dict[int, str], data_dir: str | Path, wait_s: float) -> dict[int, str]:
    """Wait until the processes exit or time runs out; those still running."""
    deadline = time.monotonic() + wait_s
    while alive and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL_S)
        for pid in list(alive):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap it if we are its parent
            if not is_workload_of(pid, data_dir, alive[pid]):
                del alive[pid]
    return alive


class WorkloadDeployer(TenantBackend, ABC):
    """Runs tenants' workloads; `ensure` returns only once the workload passes readiness."""

    @property
    def kind(self) -> str:
        return ResourceKind.WORKLOAD.value

    @abstractmethod
    def stop_all(self) -> list[str]:
        """Stop every running workload, touching nothing else; the tenant keys stopped."""


class LocalProcessDeployer(WorkloadDeployer):
    """One `workload_server` process per tenant; state in `<data_dir>/workloads/<key>.json`.

    Before it reports ready, a workload checks the tenant's identity store: the SQLite database
    under `data_dir`, or, with `identity_pg_url` (the PostgreSQL identity store's server; an
    `EnvVar`), the tenant's identity schema there, the DSN passed in the child's environment.
    """

    data_dir: str
    domain: str
    identity_pg_url: str | None = None
    deployment: str = ""  # of the PostgreSQL identity schema's name (TENANT_DEPLOYMENT)
    # None: each tenant's plan says how long its workload may take to pass readiness.
    readiness_timeout_s: float | None = None

    def ensure(self, tenant: TenantSpec) -> Handle:
        state = read_state(state_path(self.data_dir, tenant.key))
        if (
            state
            and is_workload_of(state["pid"], self.data_dir, tenant.key)
            and _healthy(state["port"], tenant.key)
        ):
            return self._handle(tenant.key, state)
        self.release(tenant.key)  # a stale state file, or a workload that stopped answering
        timeout_s = self.readiness_timeout_s or get_plan(tenant.plan).readiness_timeout_s
        process = self._start(tenant)
        return self._await_ready(process, tenant.key, timeout_s)

    def _handle(self, tenant_key: str, state: dict[str, int]) -> Handle:
        return Handle(
            kind=self.kind,
            tenant_key=tenant_key,
            name=str(state_path(self.data_dir, tenant_key)),
            details={"pid": state["pid"], "port": state["port"]},
        )

    def _start(self, tenant: TenantSpec) -> subprocess.Popen[bytes]:
        state_file = state_path(self.data_dir, tenant.key)
        state_file.parent.mkdir(parents=True, exist_ok=True)
        plan = get_plan(tenant.plan)
        options = {
            "--tenant-key": tenant.key,
            "--domain": self.domain,
            "--memory-mb": str(plan.workload_memory_mb),
            "--nice": str(plan.cpu_nice),
        }
        env = {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}
        env["MALLOC_ARENA_MAX"] = "2"  # per-thread arenas would reserve memory the cap counts
        paths = [_SOURCE_ROOT]
        if self.identity_pg_url:
            paths.append(_home_of("psycopg2"))
            options["--identity-schema"] = pg_identity_schema(tenant.key, self.deployment)
            env[IDENTITY_DSN_ENV] = libpq_url(resolved(self.identity_pg_url))
            # libpq settings the DSN may rely on (PGPASSWORD, PGSSLMODE, ...), as the admin's.
            env.update({k: v for k, v in os.environ.items() if k.startswith("PG")})
        else:
            db = identity_db_path(Path(self.data_dir).resolve(), tenant.key)
            options["--identity-db"] = str(db)
        options["--state-file"] = str(state_file)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (*paths, env.get("PYTHONPATH")) if p)
        # -S: no site-packages scan at start (the paths it needs are above); a few MB a tenant.
        command = [sys.executable, "-S", "-m", SERVER_MODULE, *itertools.chain(*options.items())]
        with open(state_file.with_suffix(".log"), "ab") as log:
            return subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=state_file.parent,
                env=env,
                start_new_session=True,
            )

    def _await_ready(self, process: subprocess.Popen[bytes], key: str, timeout_s: float) -> Handle:
        """Poll the state file and /healthz; on failure leave no process behind."""
        state_file = state_path(self.data_dir, key)
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                log = state_file.with_suffix(".log")
                reason = f"exited with status {process.returncode}; see {log}"
                raise ReadinessTimeout(key, timeout_s, reason)
            state = read_state(state_file)
            ready = bool(state and state["pid"] == process.pid and _healthy(state["port"], key))
            # Ready counts only if seen before the deadline: a check that ends after it cannot
            # tell when the workload became ready.
            if state is not None and ready and time.monotonic() < deadline:
                # Reap it when it exits, should this process outlive it.
                threading.Thread(target=process.wait, daemon=True).start()
                return self._handle(key, state)
            if time.monotonic() >= deadline:
                process.kill()
                process.wait()
                if (read_state(state_file) or {}).get("pid") == process.pid:
                    state_file.unlink(missing_ok=True)
                raise ReadinessTimeout(key, timeout_s)
            time.sleep(POLL_INTERVAL_S)

    def release(self, tenant_key: str, tenant_id: str | None = None) -> bool:
        mine = {pid: key for pid, key in _running(self.data_dir).items() if key == tenant_key}
        stopped = _stop(mine, self.data_dir)
        state_file = state_path(self.data_dir, tenant_key)
        existed = state_file.exists()
        state_file.unlink(missing_ok=True)
        return bool(stopped) or existed

    def list_existing(self) -> set[str]:
        return set(_running(self.data_dir).values())

    def stop_all(self) -> list[str]:
        return _stop(_running(self.data_dir), self.data_dir)

"""Workload deployer: runs each tenant's workload and proves it ready.

Locally a workload is a `resources.workload_server` process in its own session, so it outlives the
short-lived run worker that starts it. Processes are found by their command line in /proc, which
names the tenant and this deployer's state file: PIDs get recycled, so nothing is signalled
without that check (Linux only; elsewhere nothing is ever signalled). A workload's address space
is capped at its plan's `workload_memory_mb`.

The platform, not the workload, decides where it listens: the deployer binds the workload's Unix
socket (`workload_state.socket_path`) in a directory the workload cannot enter, hands it over, and
writes the state file there.
When the platform runs as root, each tenant's workload runs as a uid of its own
(`resources.workload_uids`), owns its identity store's directory and nothing else, and cannot
signal another tenant's workload or a platform process; otherwise it runs as the platform's user.
Each workload records its tenant id (argv and state file), and `ensure` never adopts or replaces
a workload started for another tenant under the same key.
"""

import contextlib
import http.client
import importlib.util
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from resources.identity import pg_identity_schema
from resources.identity_files import hand_over, identity_db_path
from resources.pg_login import connection_env, login_dsn
from resources.workload_env import IDENTITY_DSN_ENV, PG_APPLICATION_NAME
from resources.workload_state import (  # noqa: F401 - read_endpoint: where it always was
    SERVER_MODULE,
    WorkloadState,
    is_live,
    is_workload_of,
    owner,
    read_endpoint,
    read_state,
    recorded_tenant_id,
    socket_path,
    state_path,
    workload_args,
    workloads_dir,
    write_state,
)
from resources.workload_uids import recorded_uids, workload_uid
from tenant_pipelines.domain.errors import ConfigError, OwnedByAnotherTenant, ReadinessTimeout
from tenant_pipelines.domain.handles import Handle, ResourceKind
from tenant_pipelines.domain.plans import get_plan
from tenant_pipelines.domain.tenant import TenantSpec
from tenant_pipelines.support import procs
from tenant_pipelines.support.files import PRIVATE_DIR, open_private_log
from tenant_pipelines.support.privileges import isolates_workloads
from tenant_pipelines.support.unix_http import UnixHTTPConnection

POLL_INTERVAL_S = 0.05
HEALTH_TIMEOUT_S = 1.0
STOP_GRACE_S = 5.0
KILL_WAIT_S = 2.0
# All a workload inherits from the control plane's environment: not its database URLs or keys.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "PYTHONPATH")
# A workload with a uid of its own has no home: nothing (libpq's ~/.postgresql included) is
# looked up under the platform's.
ISOLATED_HOME = "/"
LISTEN_BACKLOG = 128
# The directory holding the `resources` package, for children of a non-installed checkout.
_SOURCE_ROOT = str(Path(__file__).resolve().parent.parent)


def _home_of(package: str) -> str:
    """The directory a package is imported from, for a child started without site-packages."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"{package} is not installed")
    return str(Path(next(iter(spec.submodule_search_locations))).parent)


def _running(data_dir: str | Path) -> dict[int, str]:
    """PID -> tenant key of every workload process of this data directory.

    Its command line names the tenant, but a process of a workload's uid may write any command
    line: it counts only if it runs as the platform's user (a workload not yet confined, or any
    on a platform that is not root) or as the uid recorded for that very tenant key.
    """
    uids = recorded_uids(data_dir)
    found = {}
    for pid in procs.pids():
        key = owner(pid, data_dir)
        credentials = procs.credentials(pid) if key else None
        uid = credentials.uid if credentials else None
        if key and (uid == os.geteuid() or (uid in uids and uids[uid][0] == key)):
            found[pid] = key
    return found


def _started_for(pid: int, data_dir: str | Path) -> str | None:
    """The tenant id a workload process was started for: the one its uid was handed out to, or,
    for a process of the platform's own user, the one its command line names."""
    credentials = procs.credentials(pid)
    uid = credentials.uid if credentials else None
    if uid is not None and uid != os.geteuid():
        return recorded_uids(data_dir).get(uid, ("", None))[1]
    return (workload_args(pid) or {}).get("tenant-id")


def _healthy(path: str, tenant_key: str) -> bool:
    conn = UnixHTTPConnection(path, HEALTH_TIMEOUT_S)
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


@dataclass(frozen=True, kw_only=True)
class LocalProcessDeployer:
    """One `workload_server` process per tenant; state in `<data_dir>/workloads/<key>.json`.
    `ensure` returns only once the workload passes readiness.

    Before it reports ready, a workload checks the tenant's identity store: the SQLite database
    under `data_dir`, or, with `identity_pg_url` (the PostgreSQL identity store's server; it
    holds credentials, so it stays out of the repr), the tenant's identity schema there, logged
    in as its identity role (the DSN in the child's environment).
    """

    data_dir: str
    domain: str  # what follows `<key>.` in the address the workload names (its issuer)
    identity_pg_url: str | None = field(default=None, repr=False)
    deployment: str = ""  # of the PostgreSQL identity schema's name (TENANT_DEPLOYMENT)
    # None: each tenant's plan says how long its workload may take to pass readiness.
    readiness_timeout_s: float | None = None

    @property
    def kind(self) -> str:
        return ResourceKind.WORKLOAD.value

    def ensure(self, tenant: TenantSpec) -> Handle:
        state = read_state(state_path(self.data_dir, tenant.key))
        if (
            state
            and state.tenant_id == tenant.tenant_id
            and is_live(state, self.data_dir, tenant.key)
            and state.uid == self._uid(tenant)
            and _healthy(state.socket, tenant.key)
        ):
            return self._handle(tenant.key, state)
        pids = self._pids_of(tenant.key)
        if self._held_by_another(tenant.key, tenant.tenant_id, pids):
            where = str(state_path(self.data_dir, tenant.key))
            raise OwnedByAnotherTenant("workload", where, tenant.key)  # nothing changed
        uid = self._uid(tenant)
        self._stop_key(tenant.key, pids)  # a stale state file, or a workload that stopped answering
        timeout_s = self.readiness_timeout_s or get_plan(tenant.plan).readiness_timeout_s
        listener = _listener(self._socket_path(tenant.key))
        try:
            process = self._start(tenant, uid, listener)
            state = WorkloadState(
                pid=process.pid,
                socket=listener.getsockname(),
                uid=uid,
                tenant_id=tenant.tenant_id,
                listen_fd=listener.fileno(),
                socket_inode=os.fstat(listener.fileno()).st_ino,
            )
        finally:
            listener.close()  # the workload holds its own copy
        return self._await_ready(process, tenant.key, state, timeout_s)

    def _socket_path(self, tenant_key: str) -> Path:
        try:
            return socket_path(self.data_dir, tenant_key)
        except ValueError as error:
            raise ConfigError(str(error)) from None

    def _uid(self, tenant: TenantSpec) -> int:
        """The tenant's own uid when the platform can give it one, else the platform's."""
        if isolates_workloads():
            return workload_uid(self.data_dir, tenant)
        return os.geteuid()

    def _held_by_another(self, tenant_key: str, tenant_id: str, pids: list[int]) -> bool:
        """Whether the workload under the key is another tenant's: its state file says so (the
        platform wrote it), or one of its live processes `pids` was started for another id."""
        if recorded_tenant_id(state_path(self.data_dir, tenant_key)) not in (None, tenant_id):
            return True
        started_for = {_started_for(pid, self.data_dir) for pid in pids}
        return bool(started_for - {None, tenant_id})

    def _pids_of(self, tenant_key: str) -> list[int]:
        return [pid for pid, key in _running(self.data_dir).items() if key == tenant_key]

    def _handle(self, tenant_key: str, state: WorkloadState) -> Handle:
        return Handle(
            kind=self.kind,
            tenant_key=tenant_key,
            name=str(state_path(self.data_dir, tenant_key)),
            details={"pid": state.pid, "socket": state.socket, "uid": state.uid},
        )

    def _start(
        self, tenant: TenantSpec, uid: int, listener: socket.socket
    ) -> subprocess.Popen[bytes]:
        state_file = state_path(self.data_dir, tenant.key)
        state_file.parent.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        plan = get_plan(tenant.plan)
        isolated = uid != os.geteuid()
        store_options, store_env = self._identity_store(tenant, uid, isolated)
        options = {
            "--tenant-key": tenant.key,
            "--tenant-id": tenant.tenant_id,
            "--domain": self.domain,
            "--memory-mb": str(plan.workload_memory_mb),
            "--nice": str(plan.cpu_nice),
            "--listen-fd": str(listener.fileno()),
            **({"--run-as": f"{uid}:{uid}"} if isolated else {}),
            **store_options,
            "--state-file": str(state_file),
        }
        env = {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}
        env["MALLOC_ARENA_MAX"] = "2"  # per-thread arenas would reserve memory the cap counts
        env.update(store_env)
        env["PGAPPNAME"] = PG_APPLICATION_NAME  # libpq's: names its connections on the server
        if isolated:
            env["HOME"] = ISOLATED_HOME
        paths = [_SOURCE_ROOT, *([_home_of("psycopg2")] if self.identity_pg_url else [])]
        env["PYTHONPATH"] = os.pathsep.join(p for p in (*paths, env.get("PYTHONPATH")) if p)
        # -S: no site-packages scan at start (the paths it needs are above); a few MB a tenant.
        command = [sys.executable, "-S", "-m", SERVER_MODULE, *itertools.chain(*options.items())]
        log = open_private_log(state_file.with_suffix(".log"))
        try:
            return subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd="/",
                env=env,
                start_new_session=True,
                pass_fds=(listener.fileno(),),
            )
        finally:
            os.close(log)

    def _identity_store(
        self, tenant: TenantSpec, uid: int, isolated: bool
    ) -> tuple[dict[str, str], dict[str, str]]:
        """How the workload reaches its identity store: its options and environment. A SQLite
        store's directory is handed to its uid; a PostgreSQL store is logged in to as the
        tenant's identity role, with no more than where and how to connect from ours."""
        if self.identity_pg_url:
            schema = pg_identity_schema(tenant.key, self.deployment)
            dsn = login_dsn(self.identity_pg_url, tenant, schema, self.data_dir)
            return {"--identity-schema": schema}, {IDENTITY_DSN_ENV: dsn, **connection_env()}
        data_dir = Path(self.data_dir).resolve()
        if isolated:
            return {"--identity-db": str(hand_over(data_dir, tenant.key, uid, uid))}, {}
        return {"--identity-db": str(identity_db_path(data_dir, tenant.key))}, {}

    def _await_ready(
        self, process: subprocess.Popen[bytes], key: str, state: WorkloadState, timeout_s: float
    ) -> Handle:
        """Poll /healthz on the socket it was given; once ready, write its state file (the
        edge's to read). On failure leave no process behind."""
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                log = state_path(self.data_dir, key).with_suffix(".log")
                reason = f"exited with status {process.returncode}; see {log}"
                raise ReadinessTimeout(key, timeout_s, reason)
            ready = _healthy(state.socket, key)
            # Ready counts only if seen before the deadline: a check that ends after it cannot
            # tell when the workload became ready.
            if ready and time.monotonic() < deadline:
                write_state(state_path(self.data_dir, key), state)
                # Reap it when it exits, should this process outlive it.
                threading.Thread(target=process.wait, daemon=True).start()
                return self._handle(key, state)
            if time.monotonic() >= deadline:
                process.kill()
                process.wait()
                raise ReadinessTimeout(key, timeout_s)
            time.sleep(POLL_INTERVAL_S)

    def release(self, tenant_key: str, tenant_id: str | None = None) -> bool:
        """Stop the tenant's workload and remove its state file; with `tenant_id`, a workload
        recorded for another tenant is left running (False)."""
        pids = self._pids_of(tenant_key)
        if tenant_id is not None and self._held_by_another(tenant_key, tenant_id, pids):
            return False
        return self._stop_key(tenant_key, pids)

    def _stop_key(self, tenant_key: str, pids: list[int]) -> bool:
        stopped = _stop(dict.fromkeys(pids, tenant_key), self.data_dir)
        state_file = state_path(self.data_dir, tenant_key)
        existed = state_file.exists()
        state_file.unlink(missing_ok=True)
        with contextlib.suppress(ValueError):  # no socket fits under too long a data directory
            socket_path(self.data_dir, tenant_key).unlink(missing_ok=True)
        return bool(stopped) or existed

    def list_existing(self) -> set[str]:
        return set(_running(self.data_dir).values())

    def stop_all(self) -> list[str]:
        """Stop every running workload, touching nothing else; the tenant keys stopped."""
        return _stop(_running(self.data_dir), self.data_dir)


def _listener(path: Path) -> socket.socket:
    """The workload's listening Unix socket at `path`, bound here (owner-only, in the platform's
    private directory) and handed to the workload. What a dead workload left there is removed
    first: the path is the tenant key's, and only the platform writes that directory."""
    path.parent.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(path))
        os.chmod(path, 0o600)
        listener.listen(LISTEN_BACKLOG)
    except OSError:
        listener.close()
        raise
    return listener

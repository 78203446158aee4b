"""`tenantctl up`: the local platform in the foreground.

Holds the platform's lock (one `up` per data directory and Dagster instance), stops what a
SIGKILLed predecessor left, then starts the edge gateway (Caddy: `localstack.gateway`), the
Dagster daemon and the API server
(the HTTP API, the console, and the Dagster UI behind the console's door) under a `Supervisor`
that restarts any of them that dies;
brings back the workload of every active tenant; and on Ctrl-C or SIGTERM stops all of them,
tenant workloads included. Only processes started here (or marked as this platform's) are stopped.
"""

import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from resources.gateway import local_ca_root, write_plan
from resources.workload_state import max_data_dir_chars
from tenant_pipelines.localstack import broker, gateway, isolation, leftovers, platform_lock
from tenant_pipelines.localstack.stack_file import stack_file
from tenant_pipelines.localstack.supervisor import ChildSpec, StackError, Supervisor
from tenant_pipelines.settings import Settings
from tenant_pipelines.support.procs import descendants, identity, live_pid

READY_TIMEOUT_S = 120
METRICS_PARENT = Path("/dev/shm")  # memory-backed on Linux: metric files stay off the data disk
METRICS_PREFIX = "tenant-metrics-"  # then `<pid>-<start ticks>-` of the `up` that made it
# Run workers: forked by PreforkRunLauncher's fork server, or spawned by a code server (Dagster's
# default launcher, if an operator's dagster.yaml chooses it).
RUN_WORKER_MARKS = ("multiprocessing.forkserver", "multiprocessing.spawn")


class WorkloadControl(Protocol):
    """Tenant workloads live and die with the stack."""

    def restore(self) -> list[str]:
        """Start the workload of every active tenant again; their keys."""

    def stop_all(self) -> list[str]:
        """Stop every tenant workload; their keys."""


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _kill_run_workers(roots: list[int]) -> None:
    """A stop of the platform is a crash for the runs in flight, not a cancellation.

    Run workers (and the fork server that makes them) are killed outright, so that
    no interrupt handler turns their runs into failures to compensate; the next `up` resumes
    them from the last finished phase.
    """
    for pid, cmdline in descendants(roots).items():
        if any(mark in cmdline for mark in RUN_WORKER_MARKS):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _api_argv(ports: "Ports", workspace: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tenant_pipelines.api",
        "--port",
        str(ports.api),
        "--workspace",
        str(workspace),
    ]


def write_workspace(directory: Path) -> Path:
    """The repo's workspace.yaml, for a platform started outside the repo: same location name,
    so runs launched by name (the CLI, the hook) find their job."""
    from tenant_pipelines.orchestration.graphql import LOCATION

    path = directory / "workspace.yaml"
    path.write_text(
        "load_from:\n  - python_module:\n      module_name: tenant_pipelines.definitions\n"
        f"      attribute: defs\n      location_name: {LOCATION}\n"
    )
    return path


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


@dataclass(frozen=True)
class Ports:
    edge: int  # the edge's plain HTTP (redirects to HTTPS)
    api: int
    https: int  # the edge's HTTPS: settings.https_port, which tenants' addresses name

    def check_free(self) -> None:
        flags = (("--edge-port", self.edge), ("--https-port", self.https), ("--api-port", self.api))
        for flag, port in flags:
            if port_in_use(port):
                raise StackError(f"port {port} is already in use; choose another with {flag}")


def check_data_dir(settings: Settings, init: bool) -> None:
    """A mistyped TENANT_DATA_DIR must not silently become a new, empty platform."""
    if len(str(settings.data_dir).encode()) > max_data_dir_chars():
        raise StackError(
            f"the data directory {settings.data_dir} is too long a path for the Unix sockets"
            f" under it: at most {max_data_dir_chars()} bytes (TENANT_DATA_DIR)"
        )
    if settings.data_dir.is_dir():
        return
    if not init:
        raise StackError(
            f"the data directory {settings.data_dir} does not exist (TENANT_DATA_DIR); check it,"
            " or run `tenantctl up --init` to create a new platform there"
        )
    settings.data_dir.mkdir(parents=True)


def _stop_leftovers(settings: Settings, say: Callable[[str], None]) -> None:
    """Stop what a SIGKILLed `up` left behind before any process of ours starts: never two
    daemons, never a run worker racing its own resume, and its ports free again."""
    killed = leftovers.kill_marked(str(settings.data_dir))
    if killed:
        say(f"stopped {len(killed)} process(es) left by a previous tenantctl up")


def _settle_previous(settings: Settings, say: Callable[[str], None]) -> None:
    """Mark the runs the last stop interrupted, so that run retries resume them."""
    from tenant_pipelines.orchestration.instance import open_instance
    from tenant_pipelines.orchestration.recovery import settle_interrupted_runs

    instance = open_instance(settings.dagster_home, settings)
    interrupted = settle_interrupted_runs(instance, settings.host_name)
    instance.dispose()
    if interrupted:
        say(f"{len(interrupted)} run(s) interrupted by the last stop will be resumed")


def named(env: dict[str, str], kind: str) -> dict[str, str]:
    """`env` with libpq's PGAPPNAME, so an operator reading `pg_stat_activity` sees which
    process holds each PostgreSQL connection (run workers name themselves: run_worker.py)."""
    return {**env, "PGAPPNAME": f"tenant-{kind}"}


@contextlib.contextmanager
def metrics_dir(data_dir: Path) -> Iterator[Path]:
    """A directory of this stack's own where every process writes its metric values
    (support.metrics), removed at the stop: counters start again from 0, as Prometheus expects
    of a restarted target. In memory (`/dev/shm`) where there is one, never the data disk:
    prometheus-client maps its files, and writing a value into a page a full disk cannot hold
    faults the process (SIGBUS), which took the API server down with the data disk."""
    parent = METRICS_PARENT if METRICS_PARENT.is_dir() else data_dir
    remove_dead_stacks_metrics(parent)
    owner = identity(os.getpid()).replace(":", "-")
    path = Path(tempfile.mkdtemp(prefix=f"{METRICS_PREFIX}{owner}-", dir=parent))  # 0700, ours
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def remove_dead_stacks_metrics(parent: Path) -> list[Path]:
    """Remove the metric directories (ours: this user's) whose `up` is gone: one killed outright
    (SIGKILL, the host's OOM killer) never reached its own removal, and each would keep its
    files in memory until the next reboot. A directory names its `up` by PID and start time."""
    removed = []
    for path in parent.glob(f"{METRICS_PREFIX}*"):
        pid, start, *_ = [*path.name.removeprefix(METRICS_PREFIX).split("-"), "", ""]
        try:
            mine = path.lstat().st_uid == os.getuid() and path.is_dir() and not path.is_symlink()
        except OSError:
            continue
        if mine and pid.isdigit() and start.isdigit() and live_pid(f"{pid}:{start}") is None:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def child_specs(
    settings: Settings, ports: Ports, workspace: Path, caddy: str, metrics: Path
) -> list[ChildSpec]:
    """The platform's processes, in start order; stopped in the reverse order (the API server,
    which launches runs, first)."""
    from tenant_pipelines.runtime.run_coordinator import LAUNCH_NOW_ENV
    from tenant_pipelines.support.metrics import MULTIPROC_DIR_ENV

    env = {
        **settings.child_env(),
        LAUNCH_NOW_ENV: "1",
        MULTIPROC_DIR_ENV: str(metrics),
    }
    target = ["-w", str(workspace)]
    local = "http://127.0.0.1"
    plan = gateway.plan_for(settings, ports.edge, ports.api)
    write_plan(settings.data_dir, plan)  # run workers load routes into the gateway by it
    return [
        gateway.child_spec(settings, plan, caddy, env),
        ChildSpec("daemon", [_bin("dagster-daemon"), "run", *target], named(env, "daemon")),
        ChildSpec(
            "api", _api_argv(ports, workspace), named(env, "api"), f"{local}:{ports.api}/healthz"
        ),
    ]


def _write_stack_file(settings: Settings, ports: Ports) -> None:
    stack_file(settings).write_text(
        json.dumps(
            {
                "pid": os.getpid(),
                "edge_port": ports.edge,
                "https_port": ports.https,
                "api_port": ports.api,
            }
        )
    )


def _bring_up(supervisor: Supervisor, workloads: WorkloadControl, ports: Ports) -> list[str]:
    """Start every child and wait until each is ready; the tenants whose workloads came back."""
    supervisor.start_all()
    deadline = time.monotonic() + READY_TIMEOUT_S
    supervisor.wait_ready("edge", deadline)
    restored = workloads.restore()
    supervisor.wait_ready("api", deadline)
    return restored


# Dagster is imported only once the lock is ours: a refused `up` answers in a fraction of a second.
def run_stack(
    settings: Settings,
    ports: Ports,
    workspace: Path | None,
    workloads: WorkloadControl,
    say: Callable[[str], None],
    init: bool = False,
) -> int:
    check_data_dir(settings, init)
    named_ports = {"edge": ports.edge, "https": ports.https, "api": ports.api}
    locks = platform_lock.hold(settings.data_dir, settings.dagster_home, named_ports)
    sessions: list[Any] = []
    try:
        databases = [settings.db_url, *filter(None, [settings.dagster_pg_url])]
        sessions = platform_lock.hold_databases(databases, named_ports)
        stack_file(settings).unlink(missing_ok=True)  # a SIGKILLed predecessor's
        _stop_leftovers(settings, say)
        isolation.prepare(settings, say)
        if settings.worker_hosts:  # runs reach their hosts through it
            broker.check_broker(settings)
        ports.check_free()
        caddy = gateway.caddy_binary(settings.caddy)
        say(f"gateway: Caddy {gateway.caddy_version(caddy)} ({caddy})")
        _settle_previous(settings, say)
        log_dir = settings.data_dir / "logs"
        log_dir.mkdir(exist_ok=True)
        workspace = workspace or write_workspace(settings.data_dir)
        with metrics_dir(settings.data_dir) as metrics:
            specs = child_specs(settings, ports, workspace, caddy, metrics)
            supervisor = Supervisor(specs, log_dir, str(settings.data_dir), say)
            return _supervise(settings, ports, supervisor, workloads, say)
    finally:
        for session in sessions:
            session.close()
        for fd in locks:
            os.close(fd)


def _supervise(
    settings: Settings,
    ports: Ports,
    supervisor: Supervisor,
    workloads: WorkloadControl,
    say: Callable[[str], None],
) -> int:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    from tenant_pipelines.localstack.route_follower import RouteFollower

    follower = RouteFollower(settings, say) if settings.worker_hosts else None
    try:
        restored = _bring_up(supervisor, workloads, ports)
        if follower is not None:  # the edge serves the worker hosts' tenants from the registry
            follower.start()
        _write_stack_file(settings, ports)
        say(
            f"tenant-pipelines is up: console http://127.0.0.1:{ports.api}/console, API "
            f"http://127.0.0.1:{ports.api}/v1, Dagster UI http://127.0.0.1:{ports.api}/dagster/"
            f" (a platform-admin's console login), tenants at https://<slug>-<org>."
            f"{settings.served_at} (HTTP on {ports.edge} redirects; local CA root"
            f" {local_ca_root(settings.data_dir)}) ({len(restored)} active tenant(s)"
            " restored). Ctrl-C stops it."
        )
        supervisor.run(stop.wait)
        return 0
    finally:
        if follower is not None:
            follower.stop()
        supervisor.stop(_kill_run_workers)
        workloads.stop_all()
        stack_file(settings).unlink(missing_ok=True)

"""`tenantctl up`: the local platform in the foreground.

Starts the edge gateway, the Dagster webserver, the Dagster daemon and the HTTP API (with the
console), each in its own process group; brings back the workload of every active tenant; and on
Ctrl-C or SIGTERM stops all of them, tenant workloads included. Only processes started here are
stopped, by their PIDs.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tenant_pipelines.domain.errors import TenantPipelinesError
from tenant_pipelines.localstack.stack_file import read_stack, stack_file
from tenant_pipelines.orchestration.graphql import LOCATION
from tenant_pipelines.runtime.run_coordinator import LAUNCH_NOW_ENV
from tenant_pipelines.settings import Settings
from tenant_pipelines.support.procs import descendants

READY_TIMEOUT_S = 120
STOP_GRACE_S = 15
POLL_S = 0.2
# Run workers: forked by PreforkRunLauncher's fork server, or spawned by a code server (Dagster's
# default launcher, if an operator's dagster.yaml chooses it).
RUN_WORKER_MARKS = ("multiprocessing.forkserver", "multiprocessing.spawn")


class StackError(TenantPipelinesError):
    """The stack could not start or one of its processes died."""


class WorkloadControl(Protocol):
    """Tenant workloads live and die with the stack."""

    def restore(self) -> list[str]:
        """Start the workload of every active tenant again; their keys."""

    def stop_all(self) -> list[str]:
        """Stop every tenant workload; their keys."""


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _default_signals() -> None:
    # A background shell hands its children SIGINT/SIGTERM ignored; ours must obey them.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _start(name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> Child:
    log = open(log_dir / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
    process = subprocess.Popen(
        argv,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_default_signals,
    )
    log.close()
    return Child(name, process)


def _kill_run_workers(children: list[Child]) -> None:
    """A stop of the platform is a crash for the runs in flight, not a cancellation.

    Run workers (and the fork server that makes them) are killed outright, so that
    no interrupt handler turns their runs into failures to compensate; the next `up` resumes
    them from the last finished phase.
    """
    for pid, cmdline in descendants([c.process.pid for c in children]).items():
        if any(mark in cmdline for mark in RUN_WORKER_MARKS):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _stop(children: list[Child]) -> None:
    """SIGTERM each child's process group, then SIGKILL what is left after the grace period."""
    _kill_run_workers(children)
    for child in children:
        if child.process.poll() is None:
            os.killpg(child.process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for child in children:
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(child.process.pid, signal.SIGKILL)
            child.process.wait()
        with contextlib.suppress(ProcessLookupError):  # descendants left in the group
            os.killpg(child.process.pid, signal.SIGKILL)


def _wait_http(url: str, child: Child, deadline: float) -> None:
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise StackError(f"{child.name} exited with status {child.process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(POLL_S)
    raise StackError(f"{child.name} was not ready at {url} within {READY_TIMEOUT_S} s")


def _warm_run_launcher(dagster_port: int) -> None:
    """Have the webserver load its run launcher now, which starts its fork server in the
    background: the first run launched through the webserver then starts as fast as the rest."""
    query = json.dumps({"query": "{ instance { runLauncher { name } runQueuingSupported } }"})
    request = urllib.request.Request(
        f"http://127.0.0.1:{dagster_port}/graphql",
        data=query.encode(),
        headers={"Content-Type": "application/json"},
    )
    with contextlib.suppress(OSError), urllib.request.urlopen(request, timeout=30):
        pass


def _api_argv(ports: "Ports", workspace: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tenant_pipelines.api",
        "--port",
        str(ports.api),
        "--dagster-port",
        str(ports.dagster),
        "--edge-port",
        str(ports.edge),
        "--workspace",
        str(workspace),
    ]


def write_workspace(directory: Path) -> Path:
    """The repo's workspace.yaml, for a platform started outside the repo: same location name,
    so runs launched by name (the CLI, the hook) find their job."""
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
    dagster: int
    edge: int
    api: int

    def check_free(self) -> None:
        for flag, port in (
            ("--dagster-port", self.dagster),
            ("--edge-port", self.edge),
            ("--api-port", self.api),
        ):
            if port_in_use(port):
                raise StackError(f"port {port} is already in use; choose another with {flag}")


def run_stack(
    settings: Settings,
    ports: Ports,
    workspace: Path | None,
    workloads: WorkloadControl,
    say: Callable[[str], None],
) -> int:
    ports.check_free()
    dagster_port, edge_port = ports.dagster, ports.edge
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    other = read_stack(settings)
    if other:
        raise StackError(
            f"tenantctl up is already running for {settings.data_dir} (pid {other['pid']})"
        )
    from tenant_pipelines.orchestration.instance import open_instance
    from tenant_pipelines.orchestration.recovery import settle_interrupted_runs

    instance = open_instance(settings.dagster_home, settings)
    interrupted = settle_interrupted_runs(instance)
    instance.dispose()
    if interrupted:
        say(f"{len(interrupted)} run(s) interrupted by the last stop will be resumed")
    log_dir = settings.data_dir / "logs"
    log_dir.mkdir(exist_ok=True)
    env = {**settings.child_env(), LAUNCH_NOW_ENV: "1"}
    workspace = workspace or write_workspace(settings.data_dir)
    target = ["-w", str(workspace)]

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())

    children: list[Child] = []
    try:
        children.append(
            _start(
                "edge",
                [
                    sys.executable,
                    "-m",
                    "tenant_pipelines.localstack.edge",
                    "--port",
                    str(edge_port),
                    "--data-dir",
                    str(settings.data_dir),
                ],
                env,
                log_dir,
            )
        )
        children.append(
            _start(
                "webserver",
                [_bin("dagster-webserver"), "-h", "127.0.0.1", "-p", str(dagster_port), *target],
                env,
                log_dir,
            )
        )
        children.append(_start("daemon", [_bin("dagster-daemon"), "run", *target], env, log_dir))
        children.append(_start("api", _api_argv(ports, workspace), env, log_dir))
        deadline = time.monotonic() + READY_TIMEOUT_S
        _wait_http(f"http://127.0.0.1:{edge_port}/_edge/healthz", children[0], deadline)
        restored = workloads.restore()
        _wait_http(f"http://127.0.0.1:{dagster_port}/server_info", children[1], deadline)
        _warm_run_launcher(dagster_port)
        _wait_http(f"http://127.0.0.1:{ports.api}/healthz", children[3], deadline)
        stack_file(settings).write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "dagster_port": dagster_port,
                    "edge_port": edge_port,
                    "api_port": ports.api,
                }
            )
        )
        say(
            f"tenant-pipelines is up: console http://127.0.0.1:{ports.api}/console, API "
            f"http://127.0.0.1:{ports.api}/v1, Dagster UI http://127.0.0.1:{dagster_port}, edge "
            f"http://127.0.0.1:{edge_port} ({len(restored)} active tenant(s) restored). "
            "Ctrl-C stops it."
        )
        while not stop.wait(POLL_S):
            for child in children:
                if child.process.poll() is not None:
                    raise StackError(
                        f"{child.name} exited with status {child.process.returncode}"
                        f"; see {log_dir / (child.name + '.log')}"
                    )
        return 0
    finally:
        # Daemon first, so that no new run starts while the rest goes down.
        _stop(list(reversed(children)))
        workloads.stop_all()
        stack_file(settings).unlink(missing_ok=True)

"""`tenantctl worker` processes for tests: one worker host each, on this machine.

Each has its own data directory and Dagster home, as a host of its own would; they share the
control host's PostgreSQL and broker. Started and stopped by PID, like `Stack`.
"""

import signal
import subprocess
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tenant_pipelines.support.procs import descendants, live_pid
from tests.stack_helpers import REPO, TENANTCTL, free_port, kill_tree
from tests.waiting import read_until_said, wait_until

START_TIMEOUT_S = 120


@dataclass
class WorkerHost:
    name: str
    env: dict[str, str]
    data_dir: Path
    process: subprocess.Popen[str] | None = None
    said: list[str] = field(default_factory=list)

    @classmethod
    def beside(cls, control_env: dict[str, str], name: str, root: Path) -> "WorkerHost":
        """A worker host named `name` with the control host's settings and a directory of its
        own under `root`."""
        env = {
            **control_env,
            "TENANT_HOST_NAME": name,
            "TENANT_DATA_DIR": str(root / name / "data"),
            "DAGSTER_HOME": str(root / name / "dagster"),
        }
        return cls(name, env, root / name / "data")

    def start(self) -> str:
        """`tenantctl worker --init` until it says it is up; that line."""
        self.process = subprocess.Popen(
            [TENANTCTL, "worker", "--init"],
            env=self.env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        line, self.said = read_until_said(
            self.process, "is up", START_TIMEOUT_S, f"worker host {self.name}"
        )
        return line

    def stop(self) -> int:
        """SIGTERM, as an operator would; the exit status."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        status = self.process.wait(timeout=60)
        self.process = None
        return status

    def runs_here(self, worker_identity: str) -> bool:
        """Whether the process `pid:start` (a run's recorded worker) is one of this host's."""
        pid = live_pid(worker_identity)
        return (
            self.process is not None and pid is not None and pid in descendants([self.process.pid])
        )

    def workload_files(self) -> set[str]:
        directory = self.data_dir / "workloads"
        return {p.stem for p in directory.glob("*.json")} if directory.is_dir() else set()

    def kill_leftovers(self) -> None:
        """Only for a failed test: stop what this host started, by PID."""
        kill_tree(self.process, self.data_dir)


def wait_said(host: WorkerHost, text: str, timeout_s: float = 60) -> str:
    return wait_until(
        lambda: next((line for line in list(host.said) if text in line), None),
        timeout_s,
        lambda: f"worker host {host.name} never said {text!r}: {''.join(host.said)}",
    )


def on_loopback(names: Iterable[str]) -> str:
    """TENANT_WORKER_HOSTS for worker hosts on this machine: each ingress on a free port."""
    return ",".join(f"{name}=127.0.0.1:{free_port()}" for name in names)


@contextmanager
def worker_hosts(control_env: dict[str, str], root: Path) -> Iterator[list[WorkerHost]]:
    """The worker hosts the control host's TENANT_WORKER_HOSTS names (none if unset), each with a
    directory of its own under `root`, started once the control host's `up` is; at the end each
    must stop cleanly (exit 0) on SIGTERM, before the control host stops."""
    entries = control_env.get("TENANT_WORKER_HOSTS", "").split(",")
    names = [entry.partition("=")[0] for entry in entries if entry]
    hosts = [WorkerHost.beside(control_env, name, root) for name in names]
    try:
        for host in hosts:
            host.start()
        yield hosts
        for host in hosts:
            assert host.stop() == 0, "".join(host.said)
    finally:
        for host in hosts:
            host.kill_leftovers()

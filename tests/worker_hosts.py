"""`tenantctl worker` processes for tests: one worker host each, on this machine.

Each has its own data directory and Dagster home, as a host of its own would; they share the
control host's PostgreSQL and broker. Started and stopped by PID, like `Stack`.
"""

import contextlib
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tenant_pipelines.support.procs import descendants, live_pid
from tests.stack_helpers import REPO, TENANTCTL, processes_mentioning
from tests.waiting import wait_until

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
        assert self.process.stdout is not None
        said = self.said = []
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            said.append(line)
            if "is up" in line:
                threading.Thread(target=self._collect, args=(self.process,), daemon=True).start()
                return line
            if not line and self.process.poll() is not None:
                raise AssertionError(
                    f"tenantctl worker exited {self.process.returncode}: {''.join(said).strip()}"
                )
        raise AssertionError(f"worker host {self.name} did not come up in time")

    def _collect(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.said.append(line)

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
        if self.process is not None and self.process.poll() is None:
            children = descendants([self.process.pid])
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            for pid in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for pid in processes_mentioning(str(self.data_dir)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def wait_said(host: WorkerHost, text: str, timeout_s: float = 60) -> str:
    return wait_until(
        lambda: next((line for line in list(host.said) if text in line), None),
        timeout_s,
        lambda: f"worker host {host.name} never said {text!r}: {''.join(host.said)}",
    )

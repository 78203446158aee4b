"""Start and stop a real `tenantctl up` for end-to-end tests, and drive the real CLI."""

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from dagster import DagsterInstance
from dagster_graphql import DagsterGraphQLClient
from gql.transport.requests import RequestsHTTPTransport

from tenant_pipelines.localstack import leftovers
from tenant_pipelines.orchestration.graphql import DagsterApi
from tenant_pipelines.support import procs
from tenant_pipelines.support.procs import descendants
from tests.edge_client import Answer, https_get
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[1]
TENANTCTL = str(Path(sys.executable).parent / "tenantctl")
UP_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def processes_mentioning(*texts: str) -> list[int]:
    """PIDs whose command line contains every one of `texts` (our temp dir names ours)."""
    return [
        pid
        for pid in procs.pids()
        if pid != os.getpid() and all(t in (procs.command_line(pid) or "") for t in texts)
    ]


def tcp_ports_of(pids: Iterable[int]) -> set[int]:
    """The TCP ports the processes `pids` listen on (from /proc, not from the code under test)."""
    inodes: dict[str, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                inodes[fields[9]] = int(fields[1].rsplit(":", 1)[1], 16)
    ports = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            try:
                target = fd.readlink().name
            except OSError:
                continue
            if (match := re.fullmatch(r"socket:\[(\d+)\]", target)) and match[1] in inodes:
                ports.add(inodes[match[1]])
    return ports


def gateway_pid(data_dir: Path) -> int:
    """The edge gateway (Caddy) of the platform in `data_dir`, found from /proc."""
    found = [
        pid
        for pid in leftovers.marked(str(data_dir.resolve()))
        if Path((procs.argv(pid) or ["?"])[0]).name == "caddy"
    ]
    assert len(found) == 1, found
    return found[0]


@dataclass
class Stack:
    env: dict[str, str]
    data_dir: Path
    edge_port: int  # the edge's plain HTTP
    api_port: int
    https_port: int  # the edge's HTTPS (TENANT_HTTPS_PORT in `env`)
    process: subprocess.Popen[str] | None = None
    fault_plan: Path | None = None
    said: list[str] = field(default_factory=list)
    _admin_token: str | None = None
    cwd: Path = REPO  # where its processes start (`python -m` puts it first on sys.path)

    def edge_get(
        self,
        host: str,
        path: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """`path` of tenant `host` as its users reach it: HTTPS through the edge."""
        return https_get(self.https_port, self.data_dir, host, path, method, body, headers)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [TENANTCTL, *args],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"tenantctl {' '.join(args)} -> {result.returncode}: {result.stderr}"
            )
        return result

    def cli_json(self, *args: str) -> object:
        return json.loads(self.cli(*args, "--json").stdout)

    def cli_json_lines(self, *args: str) -> list[dict]:
        return [json.loads(line) for line in self.cli(*args, "--json").stdout.splitlines()]

    def instance(self) -> DagsterInstance:
        return DagsterInstance.from_config(self.env["DAGSTER_HOME"])

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def api(
        self,
        method: str,
        path: str,
        token: str | None,
        body: object = None,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        """One call to the stack's HTTP API, as a client would make it."""
        sent = {**(headers or {}), **({"Authorization": f"Bearer {token}"} if token else {})}
        return requests.request(method, self.api_base + path, json=body, headers=sent, timeout=60)

    def token(self, role: str, org: str | None = None, subject: str | None = None) -> str:
        """A new API token, issued with the real CLI."""
        args = ["token", "create", "--subject", subject or f"{role}-{org or 'all'}", "--role", role]
        issued = self.cli_json(*args, *(["--org", org] if org else []))
        return str(issued["token"])  # type: ignore[index]

    @property
    def dagster_graphql_url(self) -> str:
        """The Dagster UI's GraphQL API, behind the API server's door."""
        return f"{self.api_base}/dagster/graphql"

    def admin_token(self) -> str:
        """A platform-admin token of this stack, made once: what scripts use at the door."""
        if self._admin_token is None:
            self._admin_token = self.token("platform-admin", subject="stack-admin")
        return self._admin_token

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """One GraphQL call through the door as a platform-admin script; the JSON answer."""
        answer = requests.post(
            self.dagster_graphql_url,
            json={"query": query, "variables": dict(variables or {})},
            headers={"Authorization": f"Bearer {self.admin_token()}"},
            timeout=60,
        )
        body: dict[str, Any] = answer.json()
        return body

    def graphql_client(self) -> DagsterGraphQLClient:
        """Dagster's own GraphQL client, at the door with a platform-admin token."""
        transport = RequestsHTTPTransport(
            url=self.dagster_graphql_url,
            headers={"Authorization": f"Bearer {self.admin_token()}"},
            timeout=60,
        )
        return DagsterGraphQLClient("127.0.0.1", transport=transport)

    def dagster_api(self) -> DagsterApi:
        """The platform's own GraphQL launcher, sent through the door as a platform-admin."""

        def send(query: str, variables: Mapping[str, Any]) -> Mapping[str, Any]:
            body = self.graphql(query, variables)
            messages = [e.get("message", str(e)) for e in body.get("errors") or []]
            return {"data": body.get("data"), "errors": messages}

        return DagsterApi(send)

    def wait_for_state(self, slug: str, states: set[str], timeout_s: float = 120) -> dict:
        last: dict = {}

        def reached() -> dict | None:
            nonlocal last
            result = self.cli("status", slug, "--json", check=False)
            if result.returncode != 0:
                return None
            last = json.loads(result.stdout)
            return last if last["state"] in states else None

        def said() -> str:
            return f"{slug} never reached {states}; last status {last}"

        return wait_until(reached, timeout_s, said, 0.5)

    def start(self, *extra: str) -> None:
        """`tenantctl up` with this stack's ports (and `extra` arguments), until it says it is up.
        Everything it says, now and later, is collected in `said` (see `wait_said`)."""
        self.process = subprocess.Popen(
            [
                TENANTCTL,
                "up",
                *extra,
                "--edge-port",
                str(self.edge_port),
                "--api-port",
                str(self.api_port),
            ],
            env=self.env,
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        deadline = time.monotonic() + UP_TIMEOUT_S
        assert self.process.stdout is not None
        said = self.said = []
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            said.append(line)
            if "is up" in line:
                threading.Thread(target=self._collect, args=(self.process,), daemon=True).start()
                return
            if not line and self.process.poll() is not None:
                raise AssertionError(
                    f"tenantctl up exited {self.process.returncode}: {''.join(said).strip()}"
                )
        raise AssertionError("tenantctl up did not come up in time")

    def _collect(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.said.append(line)

    def wait_said(self, text: str, timeout_s: float = 60) -> str:
        """The first line `up` said containing `text`, waiting for it if need be."""
        return wait_until(
            lambda: next((line for line in list(self.said) if text in line), None),
            timeout_s,
            lambda: f"tenantctl up never said {text!r}: {''.join(self.said)}",
        )

    def stop(self) -> int:
        """SIGTERM, as an operator would; returns the exit status."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        status = self.process.wait(timeout=60)
        self.process = None
        return status

    def kill_leftovers(self) -> None:
        """Only for a failed test: stop what this stack started, by PID."""
        kill_tree(self.process, self.data_dir)


def kill_tree(process: subprocess.Popen[str] | None, data_dir: Path) -> None:
    """SIGKILL `process` (a `tenantctl` command), what it started, and whatever still names its
    data directory: a failed test's leftovers."""
    if process is not None and process.poll() is None:
        # Its children run in sessions of their own: find them while they still have it as
        # their parent, then stop them all.
        children = descendants([process.pid])
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    for pid in processes_mentioning(str(data_dir)):
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextmanager
def local_stack(tmp_path: Path, make_data_dir: bool = True, **extra_env: str) -> Iterator[Stack]:
    """A stack's environment and free ports (`start` starts it); `make_data_dir=False` leaves
    the data directory for `tenantctl up --init` to create."""
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TENANT_", "DAGSTER_"))}
    env.update(
        TENANT_DATA_DIR=str(data_dir),
        DAGSTER_HOME=str(tmp_path / "dagster"),
        TENANT_SENSOR_INTERVAL_S="1",
        **extra_env,
    )
    https_port = free_port()
    env["TENANT_HTTPS_PORT"] = str(https_port)
    stack = Stack(
        env=env,
        data_dir=data_dir,
        edge_port=free_port(),
        api_port=free_port(),
        https_port=https_port,
    )
    if make_data_dir:
        data_dir.mkdir(parents=True, exist_ok=True)  # `up` creates none without --init
    try:
        yield stack
    finally:
        stack.kill_leftovers()


def write_fault_plan(path: Path, rules: list[dict[str, object]]) -> None:
    """Replace the fault plan in one step: the platform re-reads it at every call."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rules))
    tmp.replace(path)

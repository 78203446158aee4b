"""The edge gateway as a real process: routing by Host, 404/503/502, proxying, clean exits, and
a 503 with its reason (never an empty reply) whenever it cannot serve, disk full included."""

import contextlib
import http.client
import json
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from resources.deployer import LocalProcessDeployer
from resources.identity import LocalSQLiteIdentityStore
from resources.traffic import LocalEdgeRoutes, routes_db_path
from tenant_pipelines.domain.tenant import TenantSpec
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

DOMAIN = "localhost"
STARTUP_TIMEOUT_S = 20.0
ACME = TenantSpec(
    tenant_id="t-acme",
    request_id="r-acme",
    slug="acme",
    org="corp",
    plan="free",
    admin_email="admin@corp.example",
)


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        return json.loads(self.body)


def request(
    port: int,
    host: str,
    path: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        client.request(method, path, body=body, headers={"Host": host, **(headers or {})})
        response = client.getresponse()
        lowered = {name.lower(): value for name, value in response.getheaders()}
        return Response(response.status, lowered, response.read())
    finally:
        client.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_edge(port: int, data_dir: Path, log: Path, *options: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "tenant_pipelines.localstack.edge", "--port", str(port)]
    with open(log, "wb") as out:
        return subprocess.Popen(
            [*command, "--data-dir", str(data_dir), *options], stdout=out, stderr=out
        )


def wait_until_up(port: int, process: subprocess.Popen[bytes]) -> None:
    def healthy() -> bool:
        assert process.poll() is None, "the edge exited during startup"
        try:
            return request(port, "anything.example", "/_edge/healthz").status == 200
        except OSError:
            return False

    wait_until(healthy, STARTUP_TIMEOUT_S, f"the edge did not come up on port {port}", 0.05)


@dataclass(frozen=True)
class Edge:
    port: int
    process: subprocess.Popen[bytes]

    def get(
        self,
        host: str,
        path: str = "/",
        method: str = "GET",
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        return request(self.port, host, path, method, body, headers)


@pytest.fixture
def edge(data_dir: Path) -> Iterator[Edge]:
    port = free_port()
    process = start_edge(port, data_dir, data_dir / "edge.log")
    try:
        wait_until_up(port, process)
        yield Edge(port, process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        assert process.returncode == 0, "the edge did not stop cleanly on SIGTERM"


@pytest.fixture
def routes(data_dir: Path) -> LocalEdgeRoutes:
    return LocalEdgeRoutes(data_dir=str(data_dir), domain=DOMAIN)


@pytest.fixture
def serving(
    data_dir: Path, deployer: LocalProcessDeployer, routes: LocalEdgeRoutes
) -> LocalProcessDeployer:
    """ACME fully provisioned: identity store, ready workload, open route."""
    LocalSQLiteIdentityStore(data_dir=str(data_dir)).ensure(ACME)
    deployer.ensure(ACME)
    routes.open(ACME)
    return deployer


def test_health_answers_for_any_host(edge: Edge) -> None:
    response = edge.get("no-such-tenant.localhost", "/_edge/healthz")
    assert (response.status, response.json()) == (200, {"status": "ok"})


def test_an_unknown_host_is_404(edge: Edge) -> None:
    response = edge.get("ghost-corp.localhost:8080")
    assert response.status == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": "unknown host 'ghost-corp.localhost'"}


def test_a_closed_route_is_503(edge: Edge, routes: LocalEdgeRoutes) -> None:
    routes.ensure(ACME)
    response = edge.get("acme-corp.localhost")
    assert (response.status, response.json()) == (
        503,
        {"error": "tenant 'acme-corp' is not active"},
    )


def test_an_open_route_without_a_live_workload_is_503(edge: Edge, routes: LocalEdgeRoutes) -> None:
    routes.open(ACME)
    response = edge.get("acme-corp.localhost", "/.well-known/openid-configuration")
    assert (response.status, response.json()) == (
        503,
        {"error": "tenant 'acme-corp' has no live workload"},
    )


def test_an_unreadable_route_table_is_503_with_the_reason(
    edge: Edge, routes: LocalEdgeRoutes, data_dir: Path
) -> None:
    routes.open(ACME)
    routes_db_path(data_dir).write_bytes(b"this is not a database" * 100)
    response = edge.get("acme-corp.localhost", "/admin")
    assert response.status == 503
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "error": "the edge cannot serve 'acme-corp.localhost' now: file is not a database"
    }
    assert edge.get("x.localhost", "/_edge/healthz").status == 200  # still up


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A data directory on a filesystem of its own, to fill: an 8 MB tmpfs (root can mount one)."""
    mount = tmp_path / "full-disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(directory: Path) -> None:
    with open(directory / "filler", "wb") as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 65536)
            out.flush()
    assert shutil.disk_usage(directory).free < 65536


def test_a_full_disk_still_serves_healthy_tenants(full_disk: Path) -> None:
    """SQLite cannot create the route table's shared-memory file on a full disk; the edge reads
    the table as the main file holds it instead of dropping the connection."""
    LocalSQLiteIdentityStore(data_dir=str(full_disk)).ensure(ACME)
    deployer = LocalProcessDeployer(data_dir=str(full_disk), domain=DOMAIN)
    port = free_port()
    process = start_edge(port, full_disk, full_disk.parent / "edge.log")
    try:
        deployer.ensure(ACME)
        LocalEdgeRoutes(data_dir=str(full_disk), domain=DOMAIN).open(ACME)
        wait_until_up(port, process)
        fill(full_disk)
        for _ in range(3):
            response = request(port, "acme-corp.localhost", "/.well-known/openid-configuration")
            assert response.status == 200 and b"acme-corp" in response.body
        assert request(port, "ghost-corp.localhost", "/").status == 404
    finally:
        process.terminate()
        process.wait(timeout=10)
        deployer.stop_all()
    assert deployer.list_existing() == set()


def test_an_open_route_is_proxied_to_the_workload(
    edge: Edge, serving: LocalProcessDeployer
) -> None:
    host = f"acme-corp.localhost:{edge.port}"
    discovery = edge.get(host, "/.well-known/openid-configuration")
    assert (discovery.status, discovery.headers["content-type"]) == (200, "application/json")
    assert discovery.json()["issuer"] == "https://acme-corp.localhost"

    admin = edge.get(host, "/admin")  # the workload's answer without a session, relayed
    assert (admin.status, admin.json()["tenant"]) == (401, "acme-corp")

    posted = edge.get(
        host,
        "/token?grant=code&x=1",
        method="POST",
        body=b'{"a": 1}',
        headers={"Content-Type": "application/json", "X-Trace": "t-1"},
    )
    assert posted.status == 404  # the workload's own answer, relayed
    assert posted.json() == {
        "error": "not found",
        "method": "POST",
        "path": "/token?grant=code&x=1",
    }
    assert posted.headers["content-length"] == str(len(posted.body))


def test_the_edge_follows_changes_without_a_restart(
    edge: Edge, serving: LocalProcessDeployer
) -> None:
    assert edge.get("acme-corp.localhost", "/admin").status == 401  # the workload's own answer
    serving.release("acme-corp")
    assert edge.get("acme-corp.localhost", "/admin").status == 503
    LocalEdgeRoutes(data_dir=serving.data_dir, domain=DOMAIN).release("acme-corp")
    assert edge.get("acme-corp.localhost", "/admin").status == 404


def test_a_taken_port_exits_non_zero_with_one_clear_line(edge: Edge, data_dir: Path) -> None:
    log = data_dir / "second-edge.log"
    second = start_edge(edge.port, data_dir, log)
    try:
        assert second.wait(timeout=STARTUP_TIMEOUT_S) != 0
    finally:
        if second.poll() is None:
            second.kill()
            second.wait()
    assert log.read_text().strip() == f"edge: port {edge.port} is already in use"
    assert edge.get("x.localhost", "/_edge/healthz").status == 200


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_the_edge_stops_cleanly_on_a_signal(data_dir: Path, stop_signal: signal.Signals) -> None:
    port = free_port()
    process = start_edge(port, data_dir, data_dir / "edge.log")
    try:
        wait_until_up(port, process)
        process.send_signal(stop_signal)
        assert process.wait(timeout=5) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    with pytest.raises(OSError):
        request(port, "x.localhost", "/_edge/healthz")

"""A worker host's ingress (platform with several hosts): the real Caddy, configured as
`tenantctl worker` starts it, in front of workloads listening on their Unix sockets.

The ingress listens on the host's routable address, where every tenant's workload on every host
can reach it. It must serve the control host's edge alone (the secret header the edge adds),
never hand that secret to a workload, and relay only to its own host's tenants' open routes.
"""

import json
import os
import socketserver
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import requests

from resources.gateway import INGRESS_HEADER, publish, write_plan
from resources.workload_state import socket_path
from tenant_pipelines.localstack.gateway import caddy_binary, child_spec, ingress_plan_for
from tenant_pipelines.registry.store import TenantRegistry
from tenant_pipelines.settings import Settings
from tests.stack_helpers import free_port
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

ORG = "ingress"


class EchoHandler(BaseHTTPRequestHandler):
    """A workload that answers with the headers it was given."""

    def do_GET(self) -> None:
        body = json.dumps({name.lower(): value for name, value in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@dataclass
class Ingress:
    url: str
    secret: str
    registry: TenantRegistry
    data_dir: Path

    def get(self, key: str, headers: dict[str, str] | None = None) -> requests.Response:
        sent = {"Host": f"{key}.localhost", **(headers or {})}
        return requests.get(self.url, headers=sent, timeout=10)

    def route(self, key: str, worker_host: str, state: str = "open") -> None:
        """A route as a run on `worker_host` makes it, and the markers that host's run writes."""
        tenant_id = f"id-{key}"
        self.registry.routes.add_closed(f"{key}.localhost", key, tenant_id, worker_host)
        if state == "open":
            self.registry.routes.open(key, tenant_id)
        publish(self.data_dir, key, self.registry.routes)


@pytest.fixture
def ingress(tmp_path: Path, pg_database: str) -> Iterator[Ingress]:
    ports = free_port(), free_port()
    settings = Settings.from_env(
        {
            "TENANT_DATA_DIR": str(tmp_path / "data"),
            "TENANT_DB_URL": pg_database,
            "DAGSTER_PG_URL": pg_database,
            "TENANT_CELERY_BROKER": "redis://127.0.0.1:6379/15",
            "TENANT_WORKER_HOSTS": f"w-a=127.0.0.1:{ports[0]},w-b=127.0.0.1:{ports[1]}",
            "TENANT_HOST_NAME": "w-a",
        }
    )
    settings.data_dir.mkdir()
    plan = ingress_plan_for(settings)
    write_plan(settings.data_dir, plan)  # as `tenantctl worker` does
    servers = []
    for key in (f"mine-{ORG}", f"closed-{ORG}", f"elsewhere-{ORG}"):
        path = socket_path(settings.data_dir, key)
        path.parent.mkdir(mode=0o700, exist_ok=True)
        server = UnixHTTPServer(str(path), EchoHandler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    spec = child_spec(settings, plan, caddy_binary(), dict(os.environ))
    assert spec.prepare is not None
    spec.prepare()
    process = subprocess.Popen(
        spec.argv, env=spec.env, cwd=spec.cwd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    try:
        url = f"http://127.0.0.1:{plan.http_port}/"
        wait_until(lambda: _answers(url + "_edge/healthz"), 20, "the ingress did not come up", 0.1)
        registry = TenantRegistry.shared(settings.db_url)
        yield Ingress(url, settings.ingress_secret, registry, settings.data_dir)
    finally:
        process.terminate()
        process.wait(timeout=20)
        for server in servers:
            server.shutdown()
            server.server_close()


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_without_the_edges_secret_the_ingress_relays_nothing(ingress: Ingress) -> None:
    key = f"mine-{ORG}"
    ingress.route(key, "w-a")
    refused = {"error": "only the platform's edge may use this ingress"}
    for headers in ({}, {INGRESS_HEADER: "guess"}, {INGRESS_HEADER: ingress.secret[:-1]}):
        answer = ingress.get(key, headers)
        assert (answer.status_code, answer.json()) == (403, refused), headers
    # Caddy's own placeholder, sent as the value, is not the secret either.
    answer = ingress.get(key, {INGRESS_HEADER: "{env.TENANT_INGRESS_SECRET}"})
    assert answer.status_code == 403


def test_the_edges_request_reaches_the_workload_without_the_secret(ingress: Ingress) -> None:
    key = f"mine-{ORG}"
    ingress.route(key, "w-a")
    answer = ingress.get(key, {INGRESS_HEADER: ingress.secret})
    assert answer.status_code == 200, answer.text
    seen = answer.json()
    assert seen["host"] == f"{key}.localhost"
    assert INGRESS_HEADER.lower() not in seen
    assert ingress.secret not in answer.text


def test_only_this_hosts_open_routes_are_relayed(ingress: Ingress) -> None:
    """A tenant placed on another host is not served here even if a process of this host listens
    at its socket's path; a closed route is not relayed."""
    ingress.route(f"elsewhere-{ORG}", "w-b")
    ingress.route(f"closed-{ORG}", "w-a", state="closed")
    secret = {INGRESS_HEADER: ingress.secret}
    elsewhere = ingress.get(f"elsewhere-{ORG}", secret)
    assert (elsewhere.status_code, elsewhere.json()) == (404, {"error": "unknown host"})
    closed = ingress.get(f"closed-{ORG}", secret)
    assert (closed.status_code, closed.json()) == (
        503,
        {"error": f"tenant 'closed-{ORG}' is not active"},
    )

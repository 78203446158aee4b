"""`/gateway/ask` answers the edge only, and only yes for an active tenant's host. An API server
listening beyond the loopback (`--host 0.0.0.0`) refuses the question from any other address,
so nobody off the host can learn through it which names are tenants, nor drive certificate
issuance; on the loopback a name without an open route is a no."""

import subprocess
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests

from resources.traffic import LocalEdgeRoutes
from tenant_pipelines.domain.tenant import TenantSpec
from tests.api_helpers import ApiServer, api_server, platform_env

pytestmark = pytest.mark.integration

ACTIVE = TenantSpec(
    tenant_id="t-ask",
    request_id="r-ask",
    slug="ask",
    org="corp",
    plan="free",
    admin_email="admin@ask.example",
)
CLOSED = TenantSpec(
    tenant_id="t-wait",
    request_id="r-wait",
    slug="wait",
    org="corp",
    plan="free",
    admin_email="admin@wait.example",
)


def outward_address() -> str:
    """An address of this host that is not the loopback (the machine's own interface)."""
    shown = subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=True)
    found = [a for a in shown.stdout.split() if "." in a and not a.startswith("127.")]
    assert found, "this host has no IPv4 address beside the loopback"
    return found[0]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    tmp = tmp_path_factory.mktemp("ask")
    env = platform_env(tmp / "data", tmp / "dagster")
    (tmp / "data").mkdir()
    routes = LocalEdgeRoutes(data_dir=str(tmp / "data"), domain="localhost")
    routes.open(ACTIVE)
    routes.ensure(CLOSED)
    with api_server(env, tmp / "api.log", "--host", "0.0.0.0") as running:
        yield running


def ask(base: str, host: str, source: str | None = None) -> int:
    session = requests.Session()
    if source is not None:  # connect from that address of ours
        adapter = requests.adapters.HTTPAdapter()
        adapter.init_poolmanager(1, 1, source_address=(source, 0))
        session.mount("http://", adapter)
    answer = session.get(f"{base}/gateway/ask", params={"domain": host}, timeout=10)
    return answer.status_code


def test_the_edge_on_this_host_hears_yes_only_for_an_active_tenant(server: ApiServer) -> None:
    assert ask(server.base, ACTIVE.host("localhost")) == 200
    assert ask(server.base, ACTIVE.host("localhost").upper() + ".") == 200  # as a name
    assert ask(server.base, CLOSED.host("localhost")) == 404
    assert ask(server.base, "ghost-corp.localhost") == 404


def test_a_caller_off_the_loopback_is_refused(server: ApiServer) -> None:
    outward = outward_address()
    port = urlsplit(server.base).port
    assert ask(f"http://{outward}:{port}", ACTIVE.host("localhost"), source=outward) == 403
    assert ask(f"http://{outward}:{port}", "ghost-corp.localhost", source=outward) == 403

"""The edge as `tenantctl up` runs it (Caddy), driven through the route table as the ops drive it:
routing by host, 404 / 503 / the workload's own answers, the plain-HTTP port's redirects, changes
served without a restart, and a gateway that keeps what it had when the route table cannot be read.
Tenants here are made with the adapters themselves (routes, workloads), on the stack's data
directory, so each state is set up exactly."""

import os
import signal
import ssl
import time
from collections.abc import Iterator

import pytest

from resources.deployer import LocalProcessDeployer
from resources.identity import LocalSQLiteIdentityStore
from resources.traffic import LocalEdgeRoutes, routes_db_path
from tenant_pipelines.domain.tenant import TenantSpec
from tests.edge_client import http_get
from tests.stack_helpers import Stack, gateway_pid
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

DOMAIN = "localhost"
EDGE_BACK_S = 5.0


def spec(slug: str) -> TenantSpec:
    return TenantSpec(
        tenant_id=f"t-{slug}",
        request_id=f"r-{slug}",
        slug=slug,
        org="edge",
        plan="free",
        admin_email=f"admin@{slug}.example",
    )


def host(tenant: TenantSpec) -> str:
    return tenant.host(DOMAIN)


@pytest.fixture(scope="module")
def routes(stack: Stack) -> LocalEdgeRoutes:
    return LocalEdgeRoutes(data_dir=str(stack.data_dir), domain=DOMAIN)


@pytest.fixture(scope="module")
def deployer(stack: Stack) -> Iterator[LocalProcessDeployer]:
    started = LocalProcessDeployer(data_dir=str(stack.data_dir), domain=stack_served_at(stack))
    yield started
    started.stop_all()


def stack_served_at(stack: Stack) -> str:
    return f"{DOMAIN}:{stack.https_port}"


def serve(
    stack: Stack, deployer: LocalProcessDeployer, routes: LocalEdgeRoutes, slug: str
) -> TenantSpec:
    """`slug` fully up: identity store, ready workload, open route."""
    tenant = spec(slug)
    LocalSQLiteIdentityStore(data_dir=str(stack.data_dir)).ensure(tenant)
    deployer.ensure(tenant)
    routes.open(tenant)
    return tenant


def the_gateway(stack: Stack) -> int:
    return gateway_pid(stack.data_dir)


def test_health_answers_for_any_host(stack: Stack) -> None:
    answer = http_get(stack.edge_port, "no-such-tenant.localhost", "/_edge/healthz")
    assert (answer.status, answer.json()) == (200, {"status": "ok"})


def test_an_unknown_host_is_404_and_gets_no_certificate(stack: Stack) -> None:
    answer = http_get(stack.edge_port, "ghost-edge.localhost:8080", "/")
    assert (answer.status, answer.headers["content-type"]) == (404, "application/json")
    assert answer.json() == {"error": "unknown host"}
    with pytest.raises(ssl.SSLError):
        stack.edge_get("ghost-edge.localhost", "/")


def test_a_closed_route_is_503_with_the_reason(stack: Stack, routes: LocalEdgeRoutes) -> None:
    routes.ensure(spec("closed"))
    answer = http_get(stack.edge_port, host(spec("closed")), "/")
    assert (answer.status, answer.json()) == (503, {"error": "tenant 'closed-edge' is not active"})


def test_an_open_route_whose_workload_is_down_is_503(stack: Stack, routes: LocalEdgeRoutes) -> None:
    routes.open(spec("down"))
    answer = stack.edge_get(host(spec("down")), "/.well-known/openid-configuration")
    assert (answer.status, answer.json()) == (503, {"error": "tenant 'down-edge' workload is down"})


def test_an_open_route_is_relayed_to_the_workload(
    stack: Stack, deployer: LocalProcessDeployer, routes: LocalEdgeRoutes
) -> None:
    tenant = serve(stack, deployer, routes, "relay")
    discovery = stack.edge_get(host(tenant), "/.well-known/openid-configuration")
    assert (discovery.status, discovery.headers["content-type"]) == (200, "application/json")
    assert discovery.json()["issuer"] == f"https://relay-edge.{stack_served_at(stack)}"

    admin = stack.edge_get(host(tenant), "/admin")  # the workload's answer without a session
    assert (admin.status, admin.json()["tenant"]) == (401, "relay-edge")

    posted = stack.edge_get(
        host(tenant),
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


def test_plain_http_redirects_an_active_tenant_to_its_https_address(
    stack: Stack, deployer: LocalProcessDeployer, routes: LocalEdgeRoutes
) -> None:
    tenant = serve(stack, deployer, routes, "redirect")
    answer = http_get(stack.edge_port, host(tenant), "/admin/sign-in?next=%2Fadmin")
    assert answer.status == 308
    assert answer.headers["location"] == (
        f"https://redirect-edge.{stack_served_at(stack)}/admin/sign-in?next=%2Fadmin"
    )


def test_changes_are_served_without_a_restart(
    stack: Stack, deployer: LocalProcessDeployer, routes: LocalEdgeRoutes
) -> None:
    tenant = serve(stack, deployer, routes, "changes")
    gateway = the_gateway(stack)
    assert stack.edge_get(host(tenant), "/admin").status == 401
    deployer.release(tenant.key)
    assert stack.edge_get(host(tenant), "/admin").status == 503
    routes.release(tenant.key)
    gone = http_get(stack.edge_port, host(tenant), "/admin")
    assert (gone.status, gone.json()) == (404, {"error": "unknown host"})
    gone = stack.edge_get(host(tenant), "/admin")  # its certificate was issued before
    assert (gone.status, gone.json()) == (404, {"error": "unknown host"})
    assert the_gateway(stack) == gateway


def test_a_killed_gateway_serves_what_the_table_says_even_when_it_cannot_read_it(
    stack: Stack, deployer: LocalProcessDeployer, routes: LocalEdgeRoutes
) -> None:
    """A Caddy that dies while the route table is unreadable starts again on the last
    configuration it was given, its active tenants' certificates read back from storage without
    asking the platform (whose answer needs the table); once the table reads again, it rules."""
    tenant = serve(stack, deployer, routes, "survivor")
    assert stack.edge_get(host(tenant), "/healthz").status == 200  # its certificate is issued
    table = routes_db_path(stack.data_dir)
    kept = table.read_bytes()
    try:
        table.write_bytes(b"this is not a database" * 100)
        os.kill(the_gateway(stack), signal.SIGKILL)
        killed = time.monotonic()

        def served() -> bool:
            try:
                return stack.edge_get(host(tenant), "/healthz").status == 200
            except OSError:
                return False

        wait_until(served, EDGE_BACK_S, "the edge did not serve again", 0.05)
        assert time.monotonic() - killed < EDGE_BACK_S
        said = stack.wait_said("edge: after its start:")
        assert "file is not a database" in said
    finally:
        table.write_bytes(kept)
    routes.release(tenant.key)  # the table reads again: the gateway follows it
    assert http_get(stack.edge_port, host(tenant), "/healthz").status == 404

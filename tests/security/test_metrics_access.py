"""`/metrics` through real HTTP against a running API server: only a platform-admin or a
`metrics` token reads it, a `metrics` token reaches no tenant through any route, and no label
names a tenant (slug, org or email), whatever was asked of the API."""

import re
from collections.abc import Iterator

import pytest

from tenant_pipelines.domain.states import TenantState
from tests.api_helpers import World, api_server, seeded_platform
from tests.integration.test_api import OWN, grant, tenant

pytestmark = pytest.mark.integration

LABEL_VALUE = re.compile(r'="((?:[^"\\]|\\.)*)"')


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("metrics")
    env, registry = seeded_platform(tmp)
    tokens = {
        role: grant(registry, role, None if role in ("platform-admin", "metrics") else OWN)
        for role in ("platform-admin", "metrics", "org-admin", "viewer")
    }
    tenant(registry, "secret-active", OWN, TenantState.ACTIVE)
    tenant(registry, "secret-failed", OWN, TenantState.FAILED)
    with api_server(env, tmp / "api.log") as server:
        yield World(server, tokens)
    registry.close()


@pytest.mark.parametrize(
    ("who", "status"),
    [(None, 401), ("garbage", 401), ("org-admin", 403), ("viewer", 403)],
)
def test_metrics_are_refused_without_a_token_that_reads_them(
    world: World, who: str | None, status: int
) -> None:
    token = world.tokens.get(who or "", who)
    answer = world.server.call("GET", "/metrics", token)
    assert answer.status_code == status
    assert "tenant_" not in answer.text


@pytest.mark.parametrize("role", ["platform-admin", "metrics"])
def test_a_platform_admin_or_a_metrics_token_reads_them(world: World, role: str) -> None:
    answer = world.server.call("GET", "/metrics", world.tokens[role])
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'tenant_tenants{state="active"} 1.0' in answer.text
    assert 'tenant_tenants{state="failed"} 1.0' in answer.text
    assert 'tenant_provisioning_budget_seconds{plan="free"} 300.0' in answer.text


@pytest.mark.parametrize(
    ("method", "path", "refused"),
    [
        ("GET", "/v1/tenants/secret-active", 404),
        ("GET", "/v1/tenants/secret-active/events", 404),
        ("GET", "/v1/tenants/secret-active/diagnosis", 404),
        ("POST", "/v1/tenants/secret-failed/retry", 404),
        ("POST", "/v1/tenants/secret-active/decommission", 404),
    ],
)
def test_a_metrics_token_reaches_no_tenant(
    world: World, method: str, path: str, refused: int
) -> None:
    """Its token names no org, as a platform-admin's does, yet it sees none: the answer is the
    one a slug that does not exist gets."""
    token = world.tokens["metrics"]
    answer = world.server.call(method, path, token)
    absent = world.server.call(method, path.replace("secret-", "absent-"), token)
    assert answer.status_code == absent.status_code == refused
    assert answer.text == absent.text.replace("absent-", "secret-")


def test_a_metrics_token_lists_nothing_and_submits_nothing(world: World) -> None:
    token = world.tokens["metrics"]
    assert world.server.call("GET", "/v1/tenants", token).json() == []
    assert world.server.call("GET", "/v1/events", token).json() == []
    body = {"slug": "sneaky", "org": OWN, "plan": "free", "admin_email": "a@sneaky.example.com"}
    answer = world.server.call("POST", "/v1/tenants", token, body)
    assert answer.status_code == 403
    assert answer.json()["error"] == "role metrics may not submit tenants"


def test_no_label_names_a_tenant_or_a_path_it_was_asked(world: World) -> None:
    admin = world.tokens["platform-admin"]
    for path in ("/v1/tenants/secret-active", "/v1/tenants/no-such-secret", "/secret-path"):
        world.server.call("GET", path, admin)
    text = world.server.call("GET", "/metrics", admin).text
    values = set(LABEL_VALUE.findall(text))
    assert 'route="/v1/tenants/{slug}"' in text, "requests are counted by route template"
    assert 'route="unmatched"' in text
    leaked = {value for value in values if "secret" in value or OWN in value or "@" in value}
    assert leaked == set()

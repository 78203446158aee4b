"""Submission refusals through real HTTP against a running API server: a slug or a tenant key
held by another org is refused naming neither that org nor its tenant's state, and another
caller's Idempotency-Key reveals nothing of its request; the holder's own org, the
platform-admin and the host's operator (`/local`) still get the full account."""

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tenant_pipelines.domain.states import TenantState
from tenant_pipelines.registry.store import TenantRegistry
from tenant_pipelines.settings import Settings
from tenant_pipelines.support.operator_key import OPERATOR_KEY_HEADER, read_operator_key
from tests.api_helpers import ApiServer, api_server, platform_env
from tests.integration.test_api import grant, tenant

pytestmark = pytest.mark.integration

KEY_REFUSAL = "slug shop is not available in org prod-zeta: the address shop-prod-zeta is taken"
IDEMPOTENCY_REFUSAL = "this Idempotency-Key cannot be used; send a new one"


@dataclass
class World:
    server: ApiServer
    registry: TenantRegistry
    settings: Settings
    tokens: dict[str, str]

    def recorded(self) -> int:
        return len(self.registry.tenants.all()) + len(self.registry.requests.in_progress())

    def submit(
        self, who: str, slug: str, org: str, key: str | None = None, plan: str = "team"
    ) -> tuple[int, str]:
        sent = {"slug": slug, "org": org, "plan": plan, "admin_email": f"admin@{org}.example.com"}
        headers = {"Idempotency-Key": key} if key else None
        answer = self.server.call("POST", "/v1/tenants", self.tokens[who], sent, headers)
        return answer.status_code, answer.json().get("error", "")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("api-keys")
    env = platform_env(tmp / "data", tmp / "dagster")
    settings = Settings.from_env(env)
    settings.data_dir.mkdir(parents=True)
    registry = TenantRegistry.open(settings.db_url)
    tokens = {
        "platform-admin": grant(registry, "platform-admin"),
        "zeta-admin": grant(registry, "org-admin", "zeta"),
        "zeta-viewer": grant(registry, "viewer", "zeta"),
        "prod-zeta-admin": grant(registry, "org-admin", "prod-zeta"),
        "prod-zeta-viewer": grant(registry, "viewer", "prod-zeta"),
        "zeta-colleague": grant(registry, "org-admin", "zeta", subject="colleague@zeta"),
    }
    tenant(registry, "shop-prod", "zeta", TenantState.ACTIVE)  # the first tenant of issue 18
    tenant(registry, "bravo", "zeta", TenantState.FAILED)
    with api_server(env, tmp / "api.log") as server:
        yield World(server, registry, settings, tokens)
    registry.close()


# another org's slug or key ------------------------------------------------------------------
@pytest.mark.parametrize("slug", ["bravo", "shop-prod"])
def test_a_slug_held_by_another_org_is_only_not_available(world: World, slug: str) -> None:
    before = world.recorded()

    status, error = world.submit("prod-zeta-admin", slug, "prod-zeta")

    assert (status, error) == (409, f"slug {slug} is not available")
    assert world.recorded() == before


def test_a_key_held_by_another_org_names_only_the_callers_own_slug_and_org(world: World) -> None:
    before = world.recorded()

    status, error = world.submit("prod-zeta-admin", "shop", "prod-zeta")

    assert (status, error) == (409, KEY_REFUSAL)
    assert world.recorded() == before


def test_a_viewer_of_another_org_is_refused_by_its_role_before_any_name_is_checked(
    world: World,
) -> None:
    status, error = world.submit("prod-zeta-viewer", "bravo", "prod-zeta")
    assert (status, error) == (403, "role viewer may not submit tenants")


def test_the_holders_own_org_and_the_platform_admin_get_the_full_account(world: World) -> None:
    own = world.submit("zeta-admin", "bravo", "zeta")
    assert own == (409, "slug bravo is taken by tenant bravo (failed); choose another slug")

    admin = world.submit("platform-admin", "shop", "prod-zeta")
    assert admin == (409, f"{KEY_REFUSAL} by tenant shop-prod of org zeta (active)")


def test_the_hosts_operator_gets_the_full_account(world: World) -> None:
    key = read_operator_key(world.settings.data_dir)
    assert key is not None
    sent = {
        "slug": "shop",
        "org": "prod-zeta",
        "plan": "team",
        "admin_email": "admin@prod-zeta.example.com",
        "requested_by": {"subject": "operator:test", "role": "platform-admin"},
    }
    answer = world.server.call(
        "POST", "/local/requests", body=sent, headers={OPERATOR_KEY_HEADER: key}
    )
    assert answer.status_code == 409
    assert answer.json()["error"] == f"{KEY_REFUSAL} by tenant shop-prod of org zeta (active)"


def test_a_request_in_flight_of_another_org_is_not_named_either(world: World) -> None:
    slug = f"fly{uuid.uuid4().hex[:6]}"
    assert world.submit("zeta-admin", f"{slug}-prod", "zeta")[0] == 202  # not yet a tenant
    before = world.recorded()

    assert world.submit("prod-zeta-admin", f"{slug}-prod", "prod-zeta") == (
        409,
        f"slug {slug}-prod is not available",
    )
    assert world.submit("prod-zeta-admin", slug, "prod-zeta") == (
        409,
        f"slug {slug} is not available in org prod-zeta: the address {slug}-prod-zeta is taken",
    )
    assert world.recorded() == before


# Idempotency-Key scoped to its caller --------------------------------------------------------
@pytest.mark.parametrize("who", ["prod-zeta-admin", "zeta-colleague", "platform-admin"])
@pytest.mark.parametrize("same_body", [True, False])
def test_another_callers_key_is_refused_revealing_nothing(
    world: World, who: str, same_body: bool
) -> None:
    key = str(uuid.uuid4())
    slug = f"idem{uuid.uuid4().hex[:6]}"
    assert world.submit("zeta-admin", slug, "zeta", key)[0] == 202
    before = world.recorded()

    org = "prod-zeta" if who == "prod-zeta-admin" else "zeta"  # an org it may submit to
    status, error = world.submit(who, slug if same_body else f"{slug}x", org, key)

    assert (status, error) == (409, IDEMPOTENCY_REFUSAL)
    assert world.recorded() == before


def test_the_same_caller_gets_its_request_back_or_the_fields_that_differ(world: World) -> None:
    key = str(uuid.uuid4())
    slug = f"mine{uuid.uuid4().hex[:6]}"
    first = world.submit("zeta-admin", slug, "zeta", key)
    again = world.server.call(
        "POST",
        "/v1/tenants",
        world.tokens["zeta-admin"],
        {"slug": slug, "org": "zeta", "plan": "team", "admin_email": "admin@zeta.example.com"},
        {"Idempotency-Key": key},
    )
    changed = world.submit("zeta-admin", slug, "zeta", key, plan="free")

    assert first[0] == 202 and again.status_code == 202
    assert (again.json()["request_id"], again.json()["created"]) == (key, False)
    assert changed == (409, f"request {key} was already submitted with another plan")

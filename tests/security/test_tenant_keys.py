"""Issue 18, findings 1 and 6, against a real `tenantctl up` (one stack for the module).

1. Two tenants, one key: org `zeta` provisions slug `shop-prod`; org `prod-zeta` then asks for
   slug `shop`. Both make the key `shop-prod-zeta`, which names the tenant in every backend.
   The second is refused at submission (API and CLI) with nothing recorded, and a request that
   slips past submission is rejected at Validate: the first tenant keeps its route, storage,
   identity store, workload and outbox, stays active and served, and inventory stays clean.
6. Existence leaks across orgs: a slug or an address held by another org is only "not
   available" (neither its org nor its state), and another caller's Idempotency-Key answers a
   409 that reveals nothing of the request behind it.
"""

import json
import uuid

import pytest

from tenant_pipelines.domain.records import RequestRecord
from tenant_pipelines.domain.request import TenantRequest
from tenant_pipelines.registry.store import TenantRegistry
from tenant_pipelines.settings import Settings
from tests.stack_helpers import Stack
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

KEY = "shop-prod-zeta"
HOST = f"{KEY}.localhost"
KEY_REFUSAL = "slug shop is not available in org prod-zeta: the address shop-prod-zeta is taken"
IDEMPOTENCY_REFUSAL = "this Idempotency-Key cannot be used; send a new one"
WAIT_S = 60


@pytest.fixture(scope="module")
def tokens(stack: Stack) -> dict[str, str]:
    return {
        "zeta": stack.token("org-admin", "zeta", subject="ada@zeta"),
        "zeta-colleague": stack.token("org-admin", "zeta", subject="cy@zeta"),
        "prod-zeta": stack.token("org-admin", "prod-zeta", subject="pat@prod-zeta"),
        "platform": stack.token("platform-admin", subject="root@platform"),
    }


@pytest.fixture(scope="module")
def first(stack: Stack, tokens: dict[str, str]) -> dict:
    """Org zeta's tenant `shop-prod`, active: key `shop-prod-zeta`."""
    answer = stack.api("POST", "/v1/tenants", tokens["zeta"], body("shop-prod", "zeta"))
    assert answer.status_code == 202, answer.text
    status = stack.wait_for_state("shop-prod", {"active", "failed"})
    assert status["state"] == "active", status
    return status


def body(slug: str, org: str) -> dict[str, str]:
    return {"slug": slug, "org": org, "plan": "team", "admin_email": f"admin@{org}.example.com"}


def edge_get(stack: Stack, path: str) -> tuple[int, bytes]:
    answer = stack.edge_get(HOST, path)
    return answer.status, answer.body


def outbox(stack: Stack) -> dict[str, bytes]:
    folder = stack.data_dir / "outbox" / KEY
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.exists() else {}


def slugs_known(stack: Stack, tokens: dict[str, str]) -> list[str]:
    """Every tenant and request in flight, as the platform-admin lists them."""
    listed = stack.api("GET", "/v1/tenants", tokens["platform"]).json()
    return sorted(row["slug"] for row in listed)


def assert_first_tenant_intact(stack: Stack, first: dict) -> None:
    status = stack.cli_json("status", "shop-prod")
    assert status["state"] == "active"  # type: ignore[index]
    assert status["last_run_id"] == first["last_run_id"]  # type: ignore[index]
    code, served = edge_get(stack, "/.well-known/openid-configuration")
    assert code == 200, served
    assert json.loads(served)["issuer"] == f"https://{HOST}:{stack.https_port}"
    mails = outbox(stack)
    assert sorted(name for name in mails if name.endswith(".eml")) == [
        "console.eml",
        "onboarding.eml",
        "welcome.eml",
    ]
    assert all(b"To: admin@zeta.example.com" in mail for n, mail in mails.items() if ".eml" in n)
    assert not any(b"prod-zeta.example.com" in mail for mail in mails.values())
    inventory = stack.cli("inventory", check=False)
    assert inventory.returncode == 0, inventory.stdout + inventory.stderr
    assert inventory.stdout.strip().endswith("clean")


# finding 1 -----------------------------------------------------------------------------------
def test_another_org_cannot_take_the_key_through_the_api(
    stack: Stack, tokens: dict[str, str], first: dict
) -> None:
    before = slugs_known(stack, tokens)

    answer = stack.api("POST", "/v1/tenants", tokens["prod-zeta"], body("shop", "prod-zeta"))

    assert answer.status_code == 409, answer.text
    assert answer.json() == {"error": KEY_REFUSAL}
    assert slugs_known(stack, tokens) == before == ["shop-prod"]
    assert stack.cli("status", "shop", check=False).returncode != 0  # nothing recorded
    assert_first_tenant_intact(stack, first)


def test_another_org_cannot_take_the_key_through_tenantctl_request(
    stack: Stack, tokens: dict[str, str], first: dict
) -> None:
    refused = stack.cli(
        "request",
        *("--slug", "shop", "--org", "prod-zeta", "--plan", "team"),
        *("--admin-email", "admin@prod-zeta.example.com", "--caller", "pat", "--role", "org-admin"),
        check=False,
    )

    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.startswith(f"tenantctl: {KEY_REFUSAL}")
    assert slugs_known(stack, tokens) == ["shop-prod"]
    assert_first_tenant_intact(stack, first)


# finding 6 -----------------------------------------------------------------------------------
def test_a_slug_held_by_another_org_is_only_not_available(
    stack: Stack, tokens: dict[str, str], first: dict
) -> None:
    answer = stack.api("POST", "/v1/tenants", tokens["prod-zeta"], body("shop-prod", "prod-zeta"))

    assert answer.status_code == 409, answer.text
    assert answer.json() == {"error": "slug shop-prod is not available"}
    assert slugs_known(stack, tokens) == ["shop-prod"]


@pytest.mark.parametrize("who", ["prod-zeta", "zeta-colleague"])
def test_another_callers_idempotency_key_reveals_nothing(
    stack: Stack, tokens: dict[str, str], first: dict, who: str
) -> None:
    key = {"Idempotency-Key": str(uuid.uuid4())}
    slug = f"keyed{uuid.uuid4().hex[:6]}"
    mine = stack.api("POST", "/v1/tenants", tokens["zeta"], body(slug, "zeta"), key)
    assert mine.status_code == 202, mine.text
    org = "prod-zeta" if who == "prod-zeta" else "zeta"

    reused = stack.api("POST", "/v1/tenants", tokens[who], body(slug, org), key)

    assert reused.status_code == 409, reused.text
    assert reused.json() == {"error": IDEMPOTENCY_REFUSAL}
    again = stack.api("POST", "/v1/tenants", tokens["zeta"], body(slug, "zeta"), key)
    assert (again.status_code, again.json()["created"]) == (202, False)  # its owner's, as it was
    assert stack.wait_for_state(slug, {"active", "failed"})["state"] == "active"


# finding 1, past submission: the race Validate decides ---------------------------------------
def test_a_request_that_slips_past_submission_is_rejected_at_validate(
    stack: Stack, tokens: dict[str, str], first: dict
) -> None:
    """A request recorded through the registry alone (as one racing the first past submission
    would be), then launched by the intake sensor: Validate's reservation refuses the key."""
    mails = outbox(stack)
    registry = TenantRegistry.open(Settings.from_env(stack.env).db_url)
    try:
        request = TenantRequest.parse(
            {
                **body("shop", "prod-zeta"),
                "requested_by": {"subject": "pat@prod-zeta", "role": "org-admin"},
            }
        )
        record, created = registry.requests.submit(request)  # no submission check
        assert created
        settled = wait_settled(registry, record.request_id)
    finally:
        registry.close()

    assert (settled.state, settled.tenant_id) == ("rejected", None), settled
    assert settled.reason == KEY_REFUSAL
    assert outbox(stack) == mails  # nothing written for, or read by, the second org
    assert_first_tenant_intact(stack, first)


def wait_settled(registry: TenantRegistry, request_id: str) -> RequestRecord:
    """The request once Validate has decided: rejected, or given a tenant."""

    def decided() -> RequestRecord | None:
        record = registry.requests.get(request_id)
        return record if record.state == "rejected" or record.tenant_id is not None else None

    return wait_until(decided, WAIT_S, f"request {request_id} was never decided", 0.2)


def test_the_stack_holds_one_tenant_per_key(stack: Stack, tokens: dict[str, str]) -> None:
    listed = stack.cli_json("list")
    keys = [f"{row['slug']}-{row['org']}" for row in listed]  # type: ignore[union-attr]
    assert keys.count(KEY) == 1, listed

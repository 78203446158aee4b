"""What each state admits, at every door, for every tenant and request state and every role: the
console shows Retry and Decommission exactly when the API lets that action past both of its rules
(the role's: 403; the state's: 409 with the table's sentence), and the host's operator (`/local`,
what `tenantctl retry|decommission|compensate` call) meets the same sentences. Real HTTP against
a real API server; the console through a logged-in session."""

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests

from tenant_pipelines.domain.request import TenantRequest
from tenant_pipelines.domain.tokens import TokenGrant
from tenant_pipelines.registry.store import TenantRegistry
from tenant_pipelines.settings import Settings
from tenant_pipelines.support.operator_key import OPERATOR_KEY_HEADER, read_operator_key
from tests.api_helpers import ApiServer, api_server, platform_env
from tests.console_streams import console_login

pytestmark = pytest.mark.integration

ORG = "widgets"
ROLES = ("platform-admin", "org-admin", "viewer")
ACTIONS = ("retry", "decommission")
STATES = (
    "provisioning",
    "active",
    "failed",
    "decommissioning",
    "decommissioned",
    "request-pending",
    "request-launched",
    "request-rejected",
)
# What each state admits, as docs/contracts.md writes it (not read from the implementation).
ADMITS = {
    "provisioning": set(),
    "active": {"decommission"},
    "failed": {"retry", "decommission", "compensate"},
    "decommissioning": {"decommission"},  # a decommission whose run died is launched again
    "decommissioned": set(),
    "request-pending": set(),
    "request-launched": {"retry"},  # its run failed before the tenant existed
    "request-rejected": set(),
}
ONLY_FAILED = {
    "retry": "tenant {slug} is {state}; only a failed tenant can be retried",
    "compensate": "tenant {slug} is {state}; only a failed tenant is compensated",
}
REQUEST_REFUSAL = {
    "request-pending": "the request for {slug} is pending; wait for its tenant",
    "request-launched": (
        "the request for {slug} has no tenant yet; wait for its run, or retry or discard it"
    ),
    "request-rejected": "the request for {slug} was rejected; submit a new request",
}
DECOMMISSION_REFUSAL = {
    "provisioning": "tenant {slug} is provisioning; wait until it is active or failed",
    "decommissioned": "tenant {slug} is already decommissioned",
}
# An admitted action gets past both rules and stops at what this world lacks: a run to re-execute
# (none was ever made), or a Dagster UI to launch with (this server serves none).
NO_RUN = {
    "failed": "tenant {slug} has no provisioning run to retry",
    "request-launched": "request {request_id} has no run yet; the intake sensor launches it",
}
NO_PLATFORM = "the platform is not running: start it with `tenantctl up`"


def refusal(state: str, action: str, slug: str) -> str | None:
    """The sentence refusing `action` in `state`, as users read it today; None if admitted."""
    if action in ADMITS[state]:
        return None
    if state in REQUEST_REFUSAL:
        sentence = REQUEST_REFUSAL[state]
    elif action == "decommission":
        sentence = DECOMMISSION_REFUSAL[state]
    else:
        sentence = ONLY_FAILED[action]
    return sentence.format(slug=slug, state=state)


@dataclass
class Seeded:
    slug: str
    request_id: str


@dataclass
class World:
    server: ApiServer
    settings: Settings
    seeded: dict[str, Seeded]
    sessions: dict[str, requests.Session]
    tokens: dict[str, str]

    def past_both_rules(self, state: str, action: str) -> tuple[int, str]:
        seeded = self.seeded[state]
        if action == "decommission":
            return 503, NO_PLATFORM
        return 409, NO_RUN[state].format(slug=seeded.slug, request_id=seeded.request_id)


def seed(registry: TenantRegistry, state: str) -> Seeded:
    """A tenant in `state`, or a request in `request-<state>` that has no tenant."""
    slug = f"s-{state}"
    fields = {
        "slug": slug,
        "org": ORG,
        "plan": "team",
        "admin_email": f"admin@{slug}.example.com",
        "requested_by": {"subject": "seed", "role": "platform-admin"},
    }
    record, _ = registry.requests.submit(TenantRequest.parse(fields))
    request_id = record.request_id
    if state == "request-launched":
        registry.requests.mark_launched(request_id)
    elif state == "request-rejected":
        registry.requests.reject(request_id, "refused for the test")
    elif state != "request-pending":
        tenant = registry.tenants.reserve(registry.requests.get(request_id))
        path = {
            "provisioning": [],
            "active": ["active"],
            "failed": ["failed"],
            "decommissioning": ["active", "decommissioning"],
            "decommissioned": ["active", "decommissioning", "decommissioned"],
        }[state]
        for target in path:
            reason = {"failed_step": "deploy", "failure_reason": "x"} if target == "failed" else {}
            registry.tenants.transition(tenant.tenant_id, target, **reason)
    return Seeded(slug, request_id)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("rules")
    env = platform_env(tmp / "data", tmp / "dagster")
    settings = Settings.from_env(env)
    settings.data_dir.mkdir(parents=True)
    registry = TenantRegistry.open(settings.db_url)
    tokens = {}
    for role in ROLES:
        org = None if role == "platform-admin" else ORG
        grant = TokenGrant.parse({"subject": f"{role}@{ORG}", "role": role, "org": org})
        tokens[role], _ = registry.tokens.create(grant)
    seeded = {state: seed(registry, state) for state in STATES}
    with api_server(env, tmp / "api.log") as server:
        sessions = {role: console_login(server.base, tokens[role]) for role in ROLES}
        yield World(server, settings, seeded, sessions, tokens)
        for browser in sessions.values():
            browser.close()
    registry.close()


def test_every_state_is_seeded_as_the_status_shows_it(world: World) -> None:
    token = world.tokens["platform-admin"]
    for state, seeded in world.seeded.items():
        answer = world.server.call("GET", f"/v1/tenants/{seeded.slug}", token)
        assert answer.status_code == 200 and answer.json()["state"] == state, answer.text


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("state", STATES)
def test_the_consoles_buttons_and_the_apis_answers_agree(
    world: World, state: str, role: str
) -> None:
    slug = world.seeded[state].slug
    page = world.sessions[role].get(f"{world.server.base}/console/tenants/{slug}", timeout=30)
    assert page.status_code == 200 and 'id="state-badge"' in page.text
    for action in ACTIONS:
        shown = f'id="{action}"' in page.text
        answer = world.server.call("POST", f"/v1/tenants/{slug}/{action}", world.tokens[role])
        said = (answer.status_code, answer.json().get("error"))
        refused_by_role = answer.status_code == 403
        refused_by_state = said == (409, refusal(state, action, slug))
        assert shown == (not refused_by_role and not refused_by_state), (action, said)

        if role == "viewer":
            assert said == (403, f"role viewer may not {action} tenants")
        elif action in ADMITS[state]:
            assert said == world.past_both_rules(state, action)
        else:
            assert said == (409, refusal(state, action, slug))
        assert shown == (role != "viewer" and action in ADMITS[state])


# Every state with retry and decommission; compensate where it is refused (an admitted one would
# leave a compensation to do behind it, which holds the tenant for the other cases).
OPERATOR_CASES = [
    *[(state, action) for state in STATES for action in ACTIONS],
    *[(state, "compensate") for state in STATES if "compensate" not in ADMITS[state]],
]


@pytest.mark.parametrize(("state", "action"), OPERATOR_CASES)
def test_the_hosts_operator_meets_the_same_rules(world: World, state: str, action: str) -> None:
    """`/local`, as `tenantctl` calls it: refused with the same sentences (exit 3)."""
    key = read_operator_key(world.settings.data_dir)
    assert key is not None
    slug = world.seeded[state].slug
    answer = world.server.call(
        "POST",
        f"/local/tenants/{slug}/{action}",
        body={"requested_by": "operator:test"},
        headers={OPERATOR_KEY_HEADER: key},
    )
    said = (answer.status_code, answer.json().get("error"))
    if action in ADMITS[state]:
        assert said == world.past_both_rules(state, action)
    else:
        assert said == (409, refusal(state, action, slug))

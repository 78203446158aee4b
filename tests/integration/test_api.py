"""The HTTP API through real HTTP against a running API server: authentication, the full
authorization matrix, idempotency, validation, the feed (JSON and Server-Sent Events), and no
token in clear anywhere the platform writes."""

import http.client
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import pytest
import requests

from tenant_pipelines.domain.events import make_event
from tenant_pipelines.domain.request import TenantRequest
from tenant_pipelines.domain.states import TenantState
from tenant_pipelines.domain.tokens import TokenGrant
from tenant_pipelines.orchestration.feed import to_observation
from tenant_pipelines.orchestration.instance import open_instance
from tenant_pipelines.registry import tokens as token_queries
from tenant_pipelines.registry.store import TenantRegistry
from tenant_pipelines.settings import Settings
from tenant_pipelines.support.operator_key import (
    OPERATOR_KEY_HEADER,
    operator_key_file,
    read_operator_key,
)
from tests.api_helpers import ApiServer, api_server, platform_env

pytestmark = pytest.mark.integration

OWN, OTHER = "widgets", "gadgets"


@dataclass
class World:
    server: ApiServer
    registry: TenantRegistry
    settings: Settings
    tokens: dict[str, str]

    def requests_recorded(self) -> int:
        return len(self.registry.tenants.all()) + len(self.registry.requests.in_progress())


def grant(registry: TenantRegistry, role: str, org: str | None = None, subject: str = "") -> str:
    token, _ = registry.tokens.create(
        TokenGrant.parse({"subject": subject or f"{role}@{org}", "role": role, "org": org})
    )
    return token


def expired_token(registry: TenantRegistry) -> str:
    """A token issued long enough ago that its lifetime has passed."""
    issued = datetime.now(UTC) - timedelta(days=30)
    with registry.db.write() as conn:  # the registry's own insert, back-dated
        token, _ = token_queries.insert_token(
            conn,
            TokenGrant.parse({"subject": "old", "role": "platform-admin", "expires_in_days": 1}),
            issued,
        )
    return token


def tenant(registry: TenantRegistry, slug: str, org: str, state: TenantState) -> None:
    request = TenantRequest.parse(
        {
            "slug": slug,
            "org": org,
            "plan": "team",
            "admin_email": f"admin@{slug}.example.com",
            "requested_by": {"subject": "seed", "role": "platform-admin"},
        }
    )
    record, _ = registry.requests.submit(request)
    reserved = registry.tenants.reserve(registry.requests.get(record.request_id))
    if state == TenantState.FAILED:
        registry.tenants.transition(
            reserved.tenant_id, state, failed_step="deploy", failure_reason="x"
        )
    elif state == TenantState.ACTIVE:
        registry.tenants.transition(reserved.tenant_id, state)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("api")
    env = platform_env(tmp / "data", tmp / "dagster")
    settings = Settings.from_env(env)
    settings.data_dir.mkdir(parents=True)
    registry = TenantRegistry.open(settings.db_url)
    tokens = {
        "platform-admin": grant(registry, "platform-admin"),
        "org-admin": grant(registry, "org-admin", OWN),
        "viewer": grant(registry, "viewer", OWN),
        "other-org-admin": grant(registry, "org-admin", OTHER),
        "expired": expired_token(registry),
    }
    revoked = grant(registry, "platform-admin", subject="gone")
    registry.tokens.revoke(revoked[3:].split("_", 1)[0])
    tokens["revoked"] = revoked
    tenant(registry, "own-failed", OWN, TenantState.FAILED)
    tenant(registry, "own-active", OWN, TenantState.ACTIVE)
    tenant(registry, "other-failed", OTHER, TenantState.FAILED)
    tenant(registry, "other-active", OTHER, TenantState.ACTIVE)
    with api_server(env, tmp / "api.log") as server:
        yield World(server, registry, settings, tokens)
    registry.close()


def body(slug: str, org: str = OWN, plan: str = "team") -> dict[str, str]:
    return {"slug": slug, "org": org, "plan": plan, "admin_email": f"admin@{slug}.example.com"}


def test_health_and_openapi_are_open(world: World) -> None:
    assert world.server.call("GET", "/healthz").json() == {"status": "ok"}
    spec = world.server.call("GET", "/openapi.json").json()
    assert {"/v1/tenants", "/v1/tenants/{slug}", "/v1/tenants/{slug}/events"} <= set(spec["paths"])
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    fields = spec["components"]["schemas"]["TenantFields"]["properties"]
    assert fields["plan"]["enum"] == ["free", "team", "enterprise"]  # the catalog's, in order


@pytest.mark.parametrize("who", [None, "garbage", "tp_0000_nope", "revoked", "expired"])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/tenants"),
        ("GET", "/v1/tenants/own-active"),
        ("GET", "/v1/tenants/own-active/events"),
        ("GET", "/v1/tenants/own-active/diagnosis"),
        ("GET", "/v1/events"),
        ("POST", "/v1/tenants"),
        ("POST", "/v1/tenants/own-failed/retry"),
        ("POST", "/v1/tenants/own-active/decommission"),
    ],
)
def test_no_bad_revoked_or_expired_token_is_401(
    world: World, who: str | None, method: str, path: str
) -> None:
    token = world.tokens.get(who or "", who)
    before = world.requests_recorded()
    answer = world.server.call(method, path, token, body("sneaky") if method == "POST" else None)
    assert answer.status_code == 401, answer.text
    assert answer.headers["WWW-Authenticate"] == "Bearer"
    assert set(answer.json()) == {"error"}
    assert world.requests_recorded() == before


# (role, action, target org) -> the status the API must answer. "ok" is the action's own
# success code; an allowed lifecycle action gets past authorization and then answers 409 for a
# retry (this world's failed tenant has no run to re-execute) and 503 for a decommission (this
# server serves no Dagster UI to launch it with).
PASSED = {"retry": 409, "decommission": 503}
READ = {"read", "events", "diagnosis"}
MATRIX = [
    *[("platform-admin", action, org, "ok") for action in READ for org in (OWN, OTHER)],
    *[("org-admin", action, OWN, "ok") for action in READ],
    *[("org-admin", action, OTHER, 404) for action in READ],
    *[("viewer", action, OWN, "ok") for action in READ],
    *[("viewer", action, OTHER, 404) for action in READ],
    ("platform-admin", "submit", OWN, "ok"),
    ("platform-admin", "submit", OTHER, "ok"),
    ("org-admin", "submit", OWN, "ok"),
    ("org-admin", "submit", OTHER, 403),
    ("viewer", "submit", OWN, 403),
    ("viewer", "submit", OTHER, 403),
    *[("platform-admin", a, org, PASSED[a]) for a in PASSED for org in (OWN, OTHER)],
    *[("org-admin", a, OWN, PASSED[a]) for a in PASSED],
    *[("org-admin", a, OTHER, 404) for a in ("retry", "decommission")],
    *[("viewer", a, OWN, 403) for a in ("retry", "decommission")],
    *[("viewer", a, OTHER, 404) for a in ("retry", "decommission")],
]
OK = {"read": 200, "events": 200, "diagnosis": 200, "submit": 202}


def act(world: World, role: str, action: str, org: str) -> requests.Response:
    token = world.tokens[role]
    prefix = "own" if org == OWN else "other"
    if action == "submit":
        slug = f"{role.replace('-', '')}-{prefix}-{uuid.uuid4().hex[:6]}"
        return world.server.call("POST", "/v1/tenants", token, body(slug, org))
    path = {
        "read": f"/v1/tenants/{prefix}-active",
        "events": f"/v1/tenants/{prefix}-active/events",
        "diagnosis": f"/v1/tenants/{prefix}-active/diagnosis",
        "retry": f"/v1/tenants/{prefix}-failed/retry",
        "decommission": f"/v1/tenants/{prefix}-active/decommission",
    }[action]
    return world.server.call("POST" if action in ("retry", "decommission") else "GET", path, token)


@pytest.mark.parametrize(("role", "action", "org", "expected"), MATRIX)
def test_authorization_matrix(
    world: World, role: str, action: str, org: str, expected: object
) -> None:
    answer = act(world, role, action, org)
    wanted = OK[action] if expected == "ok" else expected
    assert answer.status_code == wanted, answer.text
    if answer.status_code >= 400:
        assert answer.json()["error"]


def test_another_orgs_tenant_is_not_found_like_a_missing_one(world: World) -> None:
    token = world.tokens["org-admin"]
    other = world.server.call("GET", "/v1/tenants/other-active", token)
    missing = world.server.call("GET", "/v1/tenants/never-was", token)
    assert (other.status_code, missing.status_code) == (404, 404)
    assert other.json()["error"].replace("other-active", "X") == missing.json()["error"].replace(
        "never-was", "X"
    )


def test_lists_show_only_what_the_caller_may_see(world: World) -> None:
    def slugs(role: str) -> set[str]:
        answer = world.server.call("GET", "/v1/tenants", world.tokens[role])
        assert answer.status_code == 200
        return {row["slug"] for row in answer.json()}

    assert {"own-active", "other-active"} <= slugs("platform-admin")
    for role in ("org-admin", "viewer"):
        assert "own-active" in slugs(role) and not any(s.startswith("other") for s in slugs(role))
    failed = world.server.call("GET", "/v1/tenants?state=failed", world.tokens["viewer"]).json()
    assert [row["slug"] for row in failed] == ["own-failed"]


def test_a_submission_records_the_tokens_subject_not_the_body(world: World) -> None:
    sneaky = {**body("who-asked"), "requested_by": {"subject": "mallory", "role": "platform-admin"}}
    refused = world.server.call("POST", "/v1/tenants", world.tokens["org-admin"], sneaky)
    assert refused.status_code == 422 and refused.json()["field"] == "requested_by"

    answer = world.server.call("POST", "/v1/tenants", world.tokens["org-admin"], body("who-asked"))
    assert answer.status_code == 202
    stored = world.registry.requests.get(answer.json()["request_id"])
    assert (stored.subject, stored.role) == ("org-admin@widgets", "org-admin")


@pytest.mark.parametrize(
    ("change", "field", "rule"),
    [
        ({"slug": "Ab"}, "slug", "3 to 30"),
        ({"slug": "admin"}, "slug", "reserved word"),
        ({"org": "-bad-"}, "org", "lowercase letters"),
        ({"admin_email": "not-an-email"}, "admin_email", "email"),
        ({"plan": 7}, "plan", "string"),
        ({"plan": "gold"}, "plan", "plan: 'gold' is not a plan (known: free, team, enterprise)"),
        ({"extra": "x"}, "extra", "not permitted"),
    ],
)
def test_bad_input_is_422_naming_the_field_and_nothing_is_recorded(
    world: World, change: dict[str, object], field: str, rule: str
) -> None:
    before = world.requests_recorded()
    answer = world.server.call(
        "POST", "/v1/tenants", world.tokens["platform-admin"], {**body("valid-slug"), **change}
    )
    assert answer.status_code == 422
    assert answer.json()["field"] == field and rule in answer.json()["error"]
    assert world.requests_recorded() == before


def test_a_bad_idempotency_key_is_422(world: World) -> None:
    answer = world.server.call(
        "POST",
        "/v1/tenants",
        world.tokens["platform-admin"],
        body("keyed"),
        {"Idempotency-Key": "not-a-uuid"},
    )
    assert answer.status_code == 422 and answer.json()["field"] == "Idempotency-Key"


def test_the_same_key_returns_the_first_answer_and_another_body_is_409(world: World) -> None:
    key = {"Idempotency-Key": str(uuid.uuid4())}
    admin = world.tokens["platform-admin"]
    first = world.server.call("POST", "/v1/tenants", admin, body("idem-one"), key)
    again = world.server.call("POST", "/v1/tenants", admin, body("idem-one"), key)
    other = world.server.call("POST", "/v1/tenants", admin, body("idem-two"), key)

    assert (first.status_code, again.status_code, other.status_code) == (202, 202, 409)
    assert first.json()["request_id"] == again.json()["request_id"] == key["Idempotency-Key"]
    assert (first.json()["created"], again.json()["created"]) == (True, False)
    assert "slug" in other.json()["error"]


def test_twenty_concurrent_submissions_with_one_key_record_one_request(world: World) -> None:
    key = {"Idempotency-Key": str(uuid.uuid4())}
    answers: list[requests.Response] = []

    def submit() -> None:
        answers.append(
            world.server.call(
                "POST", "/v1/tenants", world.tokens["platform-admin"], body("burst-one"), key
            )
        )

    threads = [threading.Thread(target=submit) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(a.status_code for a in answers) == [202] * 20
    assert {a.json()["request_id"] for a in answers} == {key["Idempotency-Key"]}
    assert sum(a.json()["created"] for a in answers) == 1
    recorded = [r for r in world.registry.requests.in_progress() if r.slug == "burst-one"]
    assert len(recorded) == 1


def test_a_tenants_feed_as_json_and_as_a_live_stream(world: World) -> None:
    instance = open_instance(world.settings.dagster_home, world.settings)
    record(instance, "own-active", OWN, "allocate")
    record(instance, "own-active", OTHER, "allocate")  # same slug, another org: never shown
    token = world.tokens["viewer"]

    listed = world.server.call("GET", "/v1/tenants/own-active/events", token).json()
    assert [(e["type"], e["step"], e["org"]) for e in listed] == [
        ("tenant.provisioning.step_completed", "allocate", OWN)
    ]
    assert set(listed[0]) == {
        "type",
        "tenant",
        "org",
        "run_id",
        "step",
        "step_name",
        "at",
        "details",
    }

    stream = requests.get(
        world.server.base + "/v1/tenants/own-active/events?type=tenant.provisioning.*",
        headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"},
        stream=True,
        timeout=30,
    )
    try:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines(decode_unicode=True)
        first = next_data(lines)
        record(instance, "own-active", OWN, "deploy")  # written while the client listens
        second = next_data(lines)
    finally:
        stream.close()
        instance.dispose()
    assert (first["step"], second["step"]) == ("allocate", "deploy")


def record(instance: object, slug: str, org: str, step: str) -> None:
    event = make_event(
        "tenant.provisioning.step_completed", tenant=slug, org=org, run_id="run-x", step=step
    )
    instance.report_runless_asset_event(to_observation(event))  # type: ignore[attr-defined]


def next_data(lines: Iterator[str]) -> dict[str, object]:
    for line in lines:
        if line.startswith("data: "):
            return dict(json.loads(line.removeprefix("data: ")))
    raise AssertionError("the stream ended")


def test_the_tenant_detail_is_the_status_object_with_a_timeline(world: World) -> None:
    answer = world.server.call("GET", "/v1/tenants/own-failed", world.tokens["org-admin"])
    detail = answer.json()
    assert answer.status_code == 200
    assert detail["state"] == "failed" and detail["failed_step"] == "deploy"
    assert isinstance(detail["timeline"], list)
    assert {"slug", "org", "plan", "state", "url", "last_run_id", "failed_step"} <= set(detail)


def test_no_token_is_stored_or_logged_in_clear(world: World) -> None:
    # Everything the tests above did is in the registry and the server's log by now.
    database = Path(world.settings.db_url.removeprefix("sqlite:///"))
    written = b"".join(
        path.read_bytes()
        for path in [*database.parent.glob(database.name + "*"), world.server.log]
        if path.is_file()
    )
    for token in world.tokens.values():
        secret = token.removeprefix("tp_").split("_", 1)[1]
        assert token.encode() not in written and secret.encode() not in written


def operator_headers(world: World) -> dict[str, str]:
    key = read_operator_key(world.settings.data_dir)
    assert key is not None
    return {OPERATOR_KEY_HEADER: key}


def operator_body(slug: str, **changes: object) -> dict[str, object]:
    """A request as `tenantctl request` sends it: the caller and role are the operator's say."""
    return {
        **body(slug),
        "requested_by": {"subject": "operator:test", "role": "platform-admin"},
        **changes,
    }


def test_the_operator_key_is_the_owners_alone_and_never_logged(world: World) -> None:
    path = operator_key_file(world.settings.data_dir)
    assert path.stat().st_mode & 0o777 == 0o600
    key = path.read_text().strip()
    assert len(key) >= 48
    world.server.call("GET", "/local/tenants", headers={OPERATOR_KEY_HEADER: key})
    assert key not in world.server.log.read_text()


@pytest.mark.parametrize(
    ("method", "path", "sent"),
    [
        ("POST", "/local/requests", operator_body("local-nokey")),
        ("GET", "/local/tenants/local-nokey", None),
        ("GET", "/local/tenants", None),
    ],
)
@pytest.mark.parametrize("key", [None, "not-the-key"])
def test_local_calls_without_the_operator_key_are_401_and_do_nothing(
    world: World, method: str, path: str, sent: object, key: str | None
) -> None:
    before = world.requests_recorded()
    headers = {OPERATOR_KEY_HEADER: key} if key else {}
    answer = world.server.call(method, path, body=sent, headers=headers)
    assert answer.status_code == 401
    assert OPERATOR_KEY_HEADER in answer.json()["error"]
    assert world.requests_recorded() == before


def test_a_local_request_is_recorded_and_claims_nothing_on_a_server_that_cannot_launch(
    world: World,
) -> None:
    """This server knows no workspace and no webserver: the request stays pending for the
    intake sensor, instead of being marked launched with no run to follow. The operator names
    the caller and role, and any org."""
    request_id = str(uuid.uuid4())
    sent = operator_body("local-pending", org=OTHER, request_id=request_id)
    answer = world.server.call(
        "POST", "/local/requests", body=sent, headers=operator_headers(world)
    )
    assert answer.status_code == 202
    assert answer.json() == {
        "request_id": request_id,
        "state": "pending",
        "created": True,
        "run_id": None,
        "slug": "local-pending",
        "org": OTHER,
        "plan": "team",
    }
    recorded = world.registry.requests.get(request_id)
    assert (recorded.state, recorded.subject, recorded.role) == (
        "pending",
        "operator:test",
        "platform-admin",
    )
    again = world.server.call("POST", "/local/requests", body=sent, headers=operator_headers(world))
    assert (again.status_code, again.json()["created"]) == (202, False)
    paths = world.server.call("GET", "/openapi.json").json()["paths"]
    assert not [path for path in paths if path.startswith("/local")]


@pytest.mark.parametrize(
    ("changes", "status", "message"),
    [
        ({"slug": "Bad"}, 422, "invalid request: slug: must be lowercase letters"),
        (
            {"requested_by": {"subject": "x", "role": "intern"}},
            422,
            "requested_by.role: role 'intern' is unknown",
        ),
        ({"org": "rivals"}, 409, "is taken by request"),
    ],
)
def test_a_local_request_refused_says_why_and_records_nothing(
    world: World, changes: dict[str, object], status: int, message: str
) -> None:
    """After a first request for the slug (a rival's, for the 409)."""
    headers = operator_headers(world)
    slug = f"local-taken{uuid.uuid4().hex[:6]}"
    first = world.server.call("POST", "/local/requests", body=operator_body(slug), headers=headers)
    assert first.status_code == 202
    before = world.requests_recorded()
    sent = {**operator_body(slug), **changes}
    answer = world.server.call("POST", "/local/requests", body=sent, headers=headers)
    assert answer.status_code == status
    assert message in answer.json()["error"]
    assert world.requests_recorded() == before


def test_local_status_and_list_answer_for_every_org(world: World) -> None:
    tenant(world.registry, "local-seen", OTHER, TenantState.ACTIVE)
    headers = operator_headers(world)
    found = world.server.call("GET", "/local/tenants/local-seen", headers=headers).json()
    assert (found["slug"], found["org"], found["state"]) == ("local-seen", OTHER, "active")
    listed = world.server.call("GET", "/local/tenants?state=active", headers=headers).json()
    assert "local-seen" in [row["slug"] for row in listed]
    assert {row["state"] for row in listed} == {"active"}
    missing = world.server.call("GET", "/local/tenants/local-nobody", headers=headers)
    assert missing.status_code == 404 and "local-nobody" in missing.json()["error"]
    bad_state = world.server.call("GET", "/local/tenants?state=sleeping", headers=headers)
    assert bad_state.status_code == 422


def test_local_calls_answer_only_the_hosts_own_command_line(world: World) -> None:
    """A caller from another address (here 127.0.0.2, as a proxy or a container would be) is
    refused even with the key, and nothing is recorded."""
    before = world.requests_recorded()
    port = int(world.server.base.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=30, source_address=("127.0.0.2", 0)
    )
    headers = {**operator_headers(world), "Content-Type": "application/json"}
    conn.request("POST", "/local/requests", json.dumps(operator_body("local-refused")), headers)
    answer = conn.getresponse()
    assert answer.status == 403
    assert "this host" in json.loads(answer.read())["error"]
    conn.close()
    assert world.requests_recorded() == before


def slugs_listed(world: World, token: str, query: str) -> list[str]:
    answer = world.server.call("GET", f"/v1/tenants?{query}", token)
    assert answer.status_code == 200, answer.text
    return sorted(row["slug"] for row in answer.json())


def test_the_list_filters_by_state_plan_org_slug_prefix_and_creation(world: World) -> None:
    """Other tests add tenants of their own to the module's world: the seeded four are told
    apart by their slugs' prefixes."""
    admin, own_admin = world.tokens["platform-admin"], world.tokens["org-admin"]
    assert slugs_listed(world, admin, f"org={OWN}&slug_prefix=own-") == ["own-active", "own-failed"]
    assert slugs_listed(world, admin, "state=failed&slug_prefix=own-") == ["own-failed"]
    others = ["other-active", "other-failed"]
    assert slugs_listed(world, admin, "plan=team&slug_prefix=other-") == others
    assert slugs_listed(world, admin, f"org={OWN}&slug_prefix=other-") == []
    assert slugs_listed(world, admin, "plan=free&slug_prefix=own-") == []
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert slugs_listed(world, admin, urlencode({"created_after": later})) == []
    assert slugs_listed(world, own_admin, f"org={OTHER}") == [], "another org's: none"
    naive = world.server.call("GET", "/v1/tenants?created_after=2026-01-01T00:00:00", admin)
    assert naive.status_code == 422
    assert "created_after needs a timezone" in naive.text

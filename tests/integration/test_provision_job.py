"""The provisioning job through Dagster on a persistent instance, with the real local backends."""

import pytest
from dagster import DagsterEventType

from tenant_pipelines.domain.plans import PLANS
from tenant_pipelines.domain.records import RequestRecord
from tenant_pipelines.domain.request import TenantRequest
from tenant_pipelines.orchestration.feed import read_events
from tenant_pipelines.support.unix_http import UnixHTTPConnection
from tests.edge_client import exchange
from tests.platform_fixtures import LocalPlatform

pytestmark = pytest.mark.integration

PHASES = ["validate", "allocate", "deploy", "mark_active", "send_welcome_emails"]


def test_job_brings_tenant_to_active_and_serving(local_platform: LocalPlatform) -> None:
    local = local_platform
    request = local.submit(plan="team")
    run_id, success, _ = local.provision(request.request_id)
    assert success

    tenant = local.registry.tenants.get("acme")
    assert tenant.state == "active" and tenant.last_run_id == run_id
    run = local.instance.get_run_by_id(run_id)
    assert run is not None
    assert {k: run.tags[k] for k in ("tenant", "org", "plan", "request_id")} == {
        "tenant": "acme",
        "org": "widgets",
        "plan": "team",
        "request_id": request.request_id,
    }
    assert {kind: keys for kind, keys in local.existing().items()} == {
        "storage": {"acme-widgets"},
        "identity": {"acme-widgets"},
        "route": {"acme-widgets"},
        "workload": {"acme-widgets"},
    }
    assert local.platform.traffic.is_open("acme-widgets")

    workload = local.registry.ledger.get(tenant.tenant_id, "workload")
    assert workload is not None
    conn = UnixHTTPConnection(workload.handle["details"]["socket"], 5)
    served = exchange(conn, "/.well-known/openid-configuration")
    assert served.json()["issuer"] == "https://acme-widgets.localhost:8443"  # the default port

    events, _ = read_events(local.instance, tenant="acme", type_glob="tenant.provisioning.*")
    assert [(e.type.rsplit(".", 1)[1], e.step) for e in events] == [
        ("started", "validate"),
        *[("step_completed", p) for p in PHASES[:4]],
        ("completed", "mark_active"),
        ("step_completed", "send_welcome_emails"),
    ]
    completed = events[5]
    assert completed.details["url"] == "https://acme-widgets.localhost:8443"
    assert completed.step_name == "Mark tenant active"


@pytest.mark.parametrize(
    ("plan", "role", "reason"),
    [
        ("free", "viewer", "role 'viewer' may not provision plan 'free'"),
        ("enterprise", "org-admin", "role 'org-admin' may not provision plan 'enterprise'"),
        ("gold", "platform-admin", "plan 'gold' does not exist"),
    ],
)
def test_business_refusal_fails_validate_once_and_allocates_nothing(
    local_platform: LocalPlatform, plan: str, role: str, reason: str
) -> None:
    local = local_platform
    request = local.submit(plan=plan, role=role) if plan in PLANS else retired(local, plan, role)
    _, success, event_types = local.provision(request.request_id)
    assert not success
    assert DagsterEventType.STEP_UP_FOR_RETRY not in event_types  # refusals are not retried
    rejected = local.registry.requests.get(request.request_id)
    assert rejected.state == "rejected" and reason in (rejected.reason or "")
    assert local.registry.tenants.all() == []
    assert all(keys == set() for keys in local.existing().values())
    events, _ = read_events(local.instance, tenant="acme")
    assert [e.type for e in events] == ["tenant.request.rejected"]
    assert reason in events[0].details["reason"]


def retired(local: LocalPlatform, plan: str, role: str) -> RequestRecord:
    """A request recorded while `plan` was in the catalog, which has since dropped it: submission
    refuses a plan the catalog does not have, so only such a request reaches Validate with one."""
    request = TenantRequest.parse(
        {
            "slug": "acme",
            "org": "widgets",
            "plan": "team",
            "admin_email": "admin@acme.example.com",
            "requested_by": {"subject": "alice", "role": role},
        }
    )
    record, _ = local.registry.requests.submit(request.model_copy(update={"plan": plan}))
    return record


def test_slug_taken_is_rejected_and_leaves_the_owner_alone(local_platform: LocalPlatform) -> None:
    local = local_platform
    first = local.submit(org="widgets")
    assert local.provision(first.request_id)[1]
    second = local.submit(org="gadgets")
    assert not local.provision(second.request_id)[1]
    assert local.registry.requests.get(second.request_id).reason == "slug acme is not available"
    assert local.registry.tenants.get("acme").org == "widgets"
    assert local.existing()["storage"] == {"acme-widgets"}


def test_a_second_run_for_one_request_does_nothing(local_platform: LocalPlatform) -> None:
    local = local_platform
    request = local.submit()
    first_run, success, _ = local.provision(request.request_id)
    assert success
    tenant = local.registry.tenants.get("acme")
    ledger_before = local.registry.ledger.entries(tenant.tenant_id)

    _, success, _ = local.provision(request.request_id)
    assert not success  # the request is owned by the first run
    assert local.registry.requests.get(request.request_id).run_id == first_run
    assert local.registry.ledger.entries(tenant.tenant_id) == ledger_before
    assert local.registry.tenants.get("acme").state == "active"

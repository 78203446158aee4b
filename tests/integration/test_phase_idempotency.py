"""Each phase run twice creates nothing twice; two requests racing for one slug give one tenant."""

import threading
import uuid

import pytest

from tenant_pipelines.domain.errors import SlugTaken
from tenant_pipelines.domain.events import EventType, Step
from tenant_pipelines.saga import compensation, emails, phases
from tests.platform_fixtures import LocalPlatform

pytestmark = pytest.mark.integration


def test_every_phase_twice_changes_nothing_the_second_time(
    local_platform: LocalPlatform,
) -> None:
    local = local_platform
    request = local.submit()
    run_id = str(uuid.uuid4())
    ctx = local.phase_context(run_id)
    tenant = phases.validate(ctx, request.request_id)
    steps = [
        lambda: phases.validate(ctx, request.request_id),
        lambda: phases.allocate(ctx, tenant),
        lambda: phases.deploy(ctx, tenant),
        lambda: phases.mark_active(ctx, tenant),
        lambda: emails.send_welcome_emails(ctx, tenant),
    ]
    for step in steps:
        step()
        ledger_after_first = local.registry.ledger.entries(tenant.tenant_id)
        existing_after_first = local.existing()
        step()
        assert local.registry.ledger.entries(tenant.tenant_id) == ledger_after_first
        assert local.existing() == existing_after_first

    assert local.registry.tenants.all()[0].state == "active"
    assert all(keys == {"acme-widgets"} for keys in local.existing().values())
    outbox = local.settings.data_dir / "outbox"
    assert sorted(p.name for p in outbox.rglob("*.eml")) == [
        "console.eml",
        "onboarding.eml",
        "welcome.eml",
    ]
    sent = [e for e in local.events if e.type == "tenant.email.sent"]
    assert len(sent) == 3


def test_deploy_reestablishes_what_was_released(local_platform: LocalPlatform) -> None:
    """Re-execution from failure skips allocate; deploy must bring back released resources."""
    local = local_platform
    request = local.submit()
    ctx = local.phase_context(str(uuid.uuid4()))
    tenant = phases.validate(ctx, request.request_id)
    phases.allocate(ctx, tenant)
    compensation.release_all(ctx, tenant, EventType.COMPENSATED, Step.COMPENSATE)
    assert all(keys == set() for keys in local.existing().values())

    phases.deploy(ctx, tenant)
    assert all(keys == {"acme-widgets"} for keys in local.existing().values())
    states = {e.kind: e.state for e in local.registry.ledger.entries(tenant.tenant_id)}
    assert states == dict.fromkeys(("storage", "identity", "route", "workload"), "allocated")


def test_two_requests_racing_for_one_slug_give_one_tenant(local_platform: LocalPlatform) -> None:
    local = local_platform
    requests = [local.submit(org=org) for org in ("widgets", "gadgets")]
    barrier = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def validate(request_id: str) -> None:
        ctx = local.phase_context(str(uuid.uuid4()))
        barrier.wait()
        try:
            phases.validate(ctx, request_id)
            outcomes[request_id] = "tenant"
        except SlugTaken:
            outcomes[request_id] = "rejected"

    threads = [threading.Thread(target=validate, args=(r.request_id,)) for r in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes.values()) == ["rejected", "tenant"]
    assert len(local.registry.tenants.all()) == 1
    loser = next(r for r, outcome in outcomes.items() if outcome == "rejected")
    assert local.registry.requests.get(loser).state == "rejected"

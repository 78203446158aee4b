"""One tenant key, one tenant: Validate refuses a key another tenant holds under another split,
and no phase adopts or releases what a backend made for another tenant id. The saga as plain
Python with in-memory ports."""

import pytest

from tenant_pipelines.domain.events import EventType, Step
from tenant_pipelines.domain.handles import ResourceKind
from tenant_pipelines.domain.states import RequestState, TenantState
from tenant_pipelines.domain.tenant import TenantSpec
from tenant_pipelines.saga import steps
from tenant_pipelines.saga.failure import Attempt, StepFailed
from tests.saga_fakes import InMemoryBackend, World

pytestmark = pytest.mark.unit

FIRST = Attempt(0)
SOMEONE_ELSE = "11111111-2222-3333-4444-555555555555"


def provision(world: World, slug: str, org: str, run_id: str) -> TenantSpec:
    ctx = world.context(run_id)
    tenant = steps.validate(ctx, world.request(slug, org=org), slug, org)
    steps.allocate(ctx, tenant, FIRST)
    steps.deploy(ctx, tenant, FIRST)
    steps.mark_active(ctx, tenant, FIRST)
    steps.send_welcome_emails(ctx, tenant, FIRST)
    return tenant


def backends(world: World) -> list[InMemoryBackend]:
    return [world.storage, world.identity, world.traffic, world.deployer]


def test_validate_rejects_a_key_held_under_another_split_and_allocates_nothing() -> None:
    world = World()
    first = provision(world, "shop-prod", "zeta", "run-1")
    calls_before = list(world.journal.calls)
    request_id = world.request("shop", org="prod-zeta")

    with pytest.raises(StepFailed) as failed:
        steps.validate(world.context("run-2"), request_id, "shop", "prod-zeta")

    reason = "slug shop is not available in org prod-zeta: the address shop-prod-zeta is taken"
    assert str(failed.value) == f"request rejected: {reason}"
    request = world.registry.requests.get(request_id)
    assert (request.state, request.reason, request.tenant_id) == (
        RequestState.REJECTED,
        reason,
        None,
    )
    [rejected] = [e for e in world.events if e.type == EventType.REQUEST_REJECTED]
    assert (rejected.tenant, rejected.org, rejected.details["reason"]) == (
        "shop",
        "prod-zeta",
        reason,
    )
    assert world.journal.calls == calls_before  # nothing ensured, nothing released
    assert world.registry.tenants.get_by_id(first.tenant_id).state == TenantState.ACTIVE


def test_a_key_is_free_for_another_split_once_its_tenant_is_decommissioned() -> None:
    world = World()
    first = provision(world, "shop-prod", "zeta", "run-1")
    steps.decommission(world.context("decom-1"), first.tenant_id)

    second = provision(world, "shop", "prod-zeta", "run-2")

    assert second.key == first.key and second.tenant_id != first.tenant_id
    assert world.registry.tenants.get_by_id(second.tenant_id).state == TenantState.ACTIVE
    assert all(b.made_for == {second.key: second.tenant_id} for b in backends(world))
    assert world.mailer.released == [(first.key, first.tenant_id)]


@pytest.mark.parametrize("kind", list(ResourceKind))
def test_a_resource_made_for_another_tenant_is_refused_at_once_and_never_released(
    kind: ResourceKind,
) -> None:
    world = World()
    ctx = world.context("run-1")
    tenant = steps.validate(ctx, world.request("shop", org="prod-zeta"), "shop", "prod-zeta")
    foreign = {b.kind: b for b in backends(world)}[kind]
    foreign.things[tenant.key] = 1  # left under this key by another tenant
    foreign.made_for[tenant.key] = SOMEONE_ELSE

    with pytest.raises(StepFailed, match="was made for another tenant") as failed:
        for step in (steps.allocate, steps.deploy, steps.mark_active):
            step(ctx, tenant, Attempt(0))  # the first attempt is the last: permanent
    assert "OwnedByAnotherTenant" in str(failed.value)
    record = world.registry.tenants.get_by_id(tenant.tenant_id)
    assert record.state == TenantState.FAILED
    assert tenant.key not in world.traffic.opened  # never served

    world.registry.compensations.claim("run-1", tenant.tenant_id)
    steps.compensate(world.context("comp-1"), tenant.tenant_id, "run-1")

    assert foreign.things == {tenant.key: 1}  # still there, still the other tenant's
    assert foreign.made_for == {tenant.key: SOMEONE_ELSE}
    others = [b for b in backends(world) if b is not foreign]
    assert all(not b.things for b in others)  # what this tenant made is released
    asked = {b.kind: b.released_for for b in backends(world) if b.released_for}
    assert asked and all(ids == [tenant.tenant_id] for ids in asked.values())


def test_compensation_and_decommission_name_the_tenant_id_in_every_release() -> None:
    world = World()
    tenant = provision(world, "acme", "widgets", "run-1")

    steps.decommission(world.context("decom-1"), tenant.tenant_id)

    assert all(b.released_for == [tenant.tenant_id] for b in backends(world))
    assert world.registry.tenants.get_by_id(tenant.tenant_id).state == TenantState.DECOMMISSIONED
    assert world.mailer.released == [(tenant.key, tenant.tenant_id)]
    assert (EventType.DECOMMISSION_COMPLETED, Step.DECOMMISSION) in world.types()

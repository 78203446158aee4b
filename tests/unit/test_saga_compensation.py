"""Compensation, retry after compensation, decommission, and the claim that decides who
compensates a failed run: the saga as plain Python with in-memory ports."""

from dataclasses import replace

import pytest

from tenant_pipelines.domain.errors import PermanentError, TenantPipelinesError
from tenant_pipelines.domain.events import EventType, Step
from tenant_pipelines.domain.states import LedgerState, TenantState
from tenant_pipelines.domain.tenant import TenantSpec
from tenant_pipelines.saga import steps
from tenant_pipelines.saga.compensation import ReleaseFailed
from tenant_pipelines.saga.failure import Attempt, EndedRun, StepFailed, claim_compensation
from tests.saga_fakes import World

pytestmark = pytest.mark.unit

FIRST = Attempt(0)
NEWEST_FIRST = ["workload", "route", "identity", "storage"]


class Flaky(TenantPipelinesError):
    pass


def fail_at_mark_active(world: World, run_id: str = "run-1") -> TenantSpec:
    """A run that allocated and deployed, then failed for good opening traffic."""
    ctx = world.context(run_id)
    tenant = steps.validate(ctx, world.request(), "acme", "widgets")
    steps.allocate(ctx, tenant, FIRST)
    steps.deploy(ctx, tenant, FIRST)
    world.traffic.fail_open = [PermanentError("edge refused the route")]
    with pytest.raises(StepFailed):
        steps.mark_active(ctx, tenant, FIRST)
    return tenant


def test_compensation_releases_newest_first_and_parks_the_tenant_in_failed() -> None:
    world = World()
    tenant = fail_at_mark_active(world)
    world.registry.compensations.claim("run-1", tenant.tenant_id)

    released = steps.compensate(world.context("comp-1"), tenant.tenant_id, "run-1")

    assert released == NEWEST_FIRST
    assert world.journal.of("release") == NEWEST_FIRST
    assert all(not backend.things for backend in (world.storage, world.identity, world.deployer))
    record = world.registry.tenants.get_by_id(tenant.tenant_id)
    assert (record.state, record.failed_step) == (TenantState.FAILED, Step.MARK_ACTIVE)
    assert [e.details["kind"] for e in world.events if e.type == EventType.COMPENSATED] == (
        NEWEST_FIRST
    )
    assert world.registry.compensations.unfinished(tenant.tenant_id) == []


def test_a_failing_release_does_not_stop_the_others_and_is_reported() -> None:
    world = World()
    tenant = fail_at_mark_active(world)
    world.registry.compensations.claim("run-1", tenant.tenant_id)
    world.identity.fail_release = [Flaky("identity store locked")]

    with pytest.raises(ReleaseFailed, match=r"identity.*identity store locked"):
        steps.compensate(world.context("comp-1"), tenant.tenant_id, "run-1")

    assert world.journal.of("release") == NEWEST_FIRST  # storage was still released
    assert world.identity.things == {"acme-widgets": 1} and not world.storage.things
    reports = [e.details for e in world.events if e.type == EventType.COMPENSATED]
    assert [(r["kind"], r["released"]) for r in reports] == [
        ("workload", True),
        ("route", True),
        ("identity", False),
        ("storage", True),
    ]
    entry = world.registry.ledger.get(tenant.tenant_id, "identity")
    assert entry is not None and entry.state == LedgerState.RELEASING  # still live
    assert world.registry.compensations.unfinished(tenant.tenant_id) != []

    # The compensation runs again (its op is retried): only what is left is released.
    assert steps.compensate(world.context("comp-1"), tenant.tenant_id, "run-1") == ["identity"]
    assert world.registry.compensations.unfinished(tenant.tenant_id) == []


def test_a_retry_after_compensation_reestablishes_what_was_released() -> None:
    world = World()
    tenant = fail_at_mark_active(world)
    world.registry.compensations.claim("run-1", tenant.tenant_id)
    steps.compensate(world.context("comp-1"), tenant.tenant_id, "run-1")
    # Re-execution from failure: only mark_active and what follows run again.
    retry = world.context("run-2", root_run_id="run-1")
    steps.mark_active(retry, tenant, FIRST)
    steps.send_welcome_emails(retry, tenant, FIRST)

    record = world.registry.tenants.get_by_id(tenant.tenant_id)
    assert (record.state, record.failed_step) == (TenantState.ACTIVE, None)
    for backend in (world.storage, world.identity, world.traffic, world.deployer):
        assert backend.things == {"acme-widgets": 1}, backend.kind
    assert world.traffic.opened == {"acme-widgets"}
    started = [e for e in world.events if e.type == EventType.STARTED]
    assert started[-1].details["retry"] and started[-1].details["previous_failed_step"] == (
        "mark_active"
    )
    live = [e.kind for _, e in world.registry.ledger.live()]
    assert sorted(live) == ["identity", "route", "storage", "workload"]


def test_a_late_compensation_skips_a_tenant_that_a_retry_owns() -> None:
    world = World()
    tenant = fail_at_mark_active(world)
    retry = world.context("run-2", root_run_id="run-1")
    steps.mark_active(retry, tenant, FIRST)
    world.registry.compensations.claim("run-1", tenant.tenant_id)

    assert steps.compensate(world.context("comp-1"), tenant.tenant_id, "run-1") == []
    assert world.journal.of("release") == []
    [finished] = [e for e in world.events if e.type == EventType.COMPENSATION_FINISHED]
    assert finished.details["outcome"].startswith("skipped")


def test_decommission_releases_everything_and_frees_the_slug() -> None:
    world = World()
    ctx = world.context("run-1")
    tenant = steps.validate(ctx, world.request(), "acme", "widgets")
    for step in (steps.allocate, steps.deploy, steps.mark_active):
        step(ctx, tenant, FIRST)

    released = steps.decommission(world.context("dec-1"), tenant.tenant_id)

    assert released == NEWEST_FIRST
    assert world.registry.tenants.get_by_id(tenant.tenant_id).state == TenantState.DECOMMISSIONED
    again = world.context("run-3")
    assert steps.validate(again, world.request(), "acme", "widgets").tenant_id != tenant.tenant_id


def test_decommission_refuses_a_tenant_still_provisioning() -> None:
    world = World()
    ctx = world.context("run-1")
    tenant = steps.validate(ctx, world.request(), "acme", "widgets")

    with pytest.raises(PermanentError, match="provisioning"):
        steps.decommission(world.context("dec-1"), tenant.tenant_id)


def test_exactly_one_compensation_per_failed_run() -> None:
    world = World()
    tenant = fail_at_mark_active(world)
    failed = EndedRun("run-1", None, tenant.request_id)

    first = claim_compensation(world.registry, failed)
    assert first is not None and first.tenant_id == tenant.tenant_id
    world.registry.compensations.set_run("run-1", "comp-1")  # the hook launched it

    assert claim_compensation(world.registry, failed) is None  # the backstop leaves it
    world.registry.compensations.finish("run-1")
    assert claim_compensation(world.registry, failed) is None


def test_a_claim_whose_compensation_never_started_is_handed_out_again() -> None:
    world = World()
    tenant = fail_at_mark_active(world)
    failed = EndedRun("run-1", None, tenant.request_id)
    assert claim_compensation(world.registry, failed) is not None
    # The claimant died between the claim and the launch (no compensation run recorded).

    again = claim_compensation(world.registry, failed)

    assert again is not None and again.tenant_id == tenant.tenant_id


def test_a_compensation_between_attempts_is_not_handed_out_again() -> None:
    world = World()
    tenant = fail_at_mark_active(world)
    failed = EndedRun("run-1", None, tenant.request_id)
    assert claim_compensation(world.registry, failed) is not None
    world.registry.compensations.set_run("run-1", "comp-1")  # the hook launched attempt 1
    # Attempt 1 failed; the backstop counted attempt 2, whose run has not named itself yet.
    claim = world.registry.compensations.records["run-1"]
    world.registry.compensations.records["run-1"] = replace(
        claim, attempts=2, compensation_run_id=None
    )

    # The failed run comes back to the backstop (Dagster tagged it: an update).
    assert claim_compensation(world.registry, failed) is None


@pytest.mark.parametrize(
    "run",
    [
        EndedRun("run-1", None, None),  # not one of ours
        EndedRun("run-1", None, "REQUEST", will_retry=True),  # resumed, not compensated
        EndedRun("run-9", None, "REQUEST"),  # a duplicate run that never owned the request
    ],
    ids=["no request tag", "will be retried", "duplicate run"],
)
def test_runs_that_need_no_compensation(run: EndedRun) -> None:
    world = World()
    tenant = fail_at_mark_active(world)
    if run.request_id == "REQUEST":
        run = EndedRun(run.run_id, run.root_run_id, tenant.request_id, run.will_retry)

    assert claim_compensation(world.registry, run) is None
    assert world.registry.compensations.records == {}


def test_a_request_refused_in_validate_needs_no_compensation() -> None:
    world = World()
    request_id = world.request(plan="enterprise", role="viewer")
    with pytest.raises(StepFailed):
        steps.validate(world.context("run-1"), request_id, "acme", "widgets")

    assert claim_compensation(world.registry, EndedRun("run-1", None, request_id)) is None


def test_a_reexecution_of_the_chain_is_compensated_under_its_own_run_id() -> None:
    world = World()
    tenant = fail_at_mark_active(world)
    world.traffic.fail_open = [PermanentError("still refused")]
    with pytest.raises(StepFailed):
        steps.mark_active(world.context("run-2", root_run_id="run-1"), tenant, FIRST)

    claimed = claim_compensation(world.registry, EndedRun("run-2", "run-1", tenant.request_id))

    assert claimed is not None and world.registry.compensations.get("run-2") is not None


def test_the_failed_first_run_of_a_retried_chain_is_not_compensated() -> None:
    """A run that failed before its tenant existed is retried by re-executing it: the chain is
    named by that first run, which then matches the request's owner, but the tenant is the
    retry's. The backstop, seeing the first run's failure late, must not claim the tenant."""
    world = World()
    request_id = world.request()
    retry = world.context("run-1", root_run_id="run-0")
    tenant = steps.validate(retry, request_id, "acme", "widgets")
    assert world.registry.tenants.get_by_id(tenant.tenant_id).last_run_id == "run-1"

    assert claim_compensation(world.registry, EndedRun("run-0", None, request_id)) is None
    assert world.registry.compensations.records == {}

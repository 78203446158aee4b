"""The saga's forward phases and its failure policy, driven as plain Python with in-memory ports."""

import pytest

from tenant_pipelines.domain.errors import (
    CompensationInProgress,
    PermanentError,
    TenantPipelinesError,
)
from tenant_pipelines.domain.events import EventType, Step
from tenant_pipelines.domain.mail import EmailKind
from tenant_pipelines.domain.plans import PLANS, Plan
from tenant_pipelines.domain.states import LedgerState, RequestState, TenantState
from tenant_pipelines.domain.tenant import TenantSpec
from tenant_pipelines.saga import phases, steps
from tenant_pipelines.saga.failure import Attempt, StepFailed, is_final_attempt
from tests.saga_fakes import World

pytestmark = pytest.mark.unit

FIRST = Attempt(0)


class Flaky(TenantPipelinesError):
    """A transient error: another attempt may succeed."""


def provision(world: World, run_id: str = "run-1", slug: str = "acme") -> TenantSpec:
    ctx = world.context(run_id)
    tenant = steps.validate(ctx, world.request(slug), slug, "widgets")
    steps.allocate(ctx, tenant, FIRST)
    steps.deploy(ctx, tenant, FIRST)
    steps.mark_active(ctx, tenant, FIRST)
    steps.send_welcome_emails(ctx, tenant, FIRST)
    return tenant


def created(world: World) -> dict[str, int]:
    return {
        b.kind: b.created for b in (world.storage, world.identity, world.traffic, world.deployer)
    }


def test_a_request_becomes_an_active_tenant_with_the_feed_in_order() -> None:
    world = World()
    tenant = provision(world)

    assert world.registry.tenants.get_by_id(tenant.tenant_id).state == TenantState.ACTIVE
    assert world.types("tenant.provisioning.") == [
        (EventType.STARTED, Step.VALIDATE),
        (EventType.STEP_COMPLETED, Step.VALIDATE),
        (EventType.STEP_COMPLETED, Step.ALLOCATE),
        (EventType.STEP_COMPLETED, Step.DEPLOY),
        (EventType.STEP_COMPLETED, Step.MARK_ACTIVE),
        (EventType.COMPLETED, Step.MARK_ACTIVE),
        (EventType.STEP_COMPLETED, Step.SEND_WELCOME_EMAILS),
    ]
    completed = [e for e in world.events if e.type == EventType.COMPLETED]
    assert completed[0].details["message"] == "Tenant activated"
    assert completed[0].details["url"] == "https://acme-widgets.example.test"
    assert world.traffic.opened == {"acme-widgets"}
    assert [m.kind for m in world.mailer.delivered] == list(EmailKind)


def test_each_phase_twice_creates_nothing_twice() -> None:
    world = World()
    ctx = world.context("run-1")
    request_id = world.request()
    tenant = phases.validate(ctx, request_id)
    for phase in (phases.allocate, phases.deploy, phases.mark_active):
        phase(ctx, tenant)
        before = (created(world), world.registry.ledger.entries(tenant.tenant_id))
        phase(ctx, tenant)
        assert (created(world), world.registry.ledger.entries(tenant.tenant_id)) == before
    steps.send_welcome_emails(ctx, tenant, FIRST)
    steps.send_welcome_emails(ctx, tenant, FIRST)

    assert phases.validate(ctx, request_id) == tenant  # the same run claims its request again
    assert created(world) == {"storage": 1, "identity": 1, "route": 1, "workload": 1}
    assert len(world.mailer.delivered) == 3
    assert len(world.registry.tenants.records) == 1


def test_a_second_run_for_the_same_request_is_refused_for_good() -> None:
    world = World()
    request_id = world.request()
    steps.validate(world.context("run-1"), request_id, "acme", "widgets")

    with pytest.raises(StepFailed, match="already owned by run run-1"):
        steps.validate(world.context("run-2"), request_id, "acme", "widgets")
    assert len(world.registry.tenants.records) == 1


def test_a_business_refusal_rejects_the_request_allocates_nothing_and_says_so() -> None:
    world = World()
    request_id = world.request(plan="enterprise", role="org-admin")

    with pytest.raises(StepFailed, match="may not provision plan 'enterprise'"):
        steps.validate(world.context("run-1"), request_id, "acme", "widgets")

    request = world.registry.requests.get(request_id)
    assert request.state == RequestState.REJECTED and request.tenant_id is None
    assert world.types() == [(EventType.REQUEST_REJECTED, Step.VALIDATE)]
    assert world.journal.calls == []


def test_a_slug_held_by_a_live_tenant_is_refused() -> None:
    world = World()
    provision(world)
    request_id = world.request()  # a new request for the same slug

    with pytest.raises(StepFailed, match=r"slug acme is not available$"):
        steps.validate(world.context("run-2"), request_id, "acme", "widgets")
    assert world.registry.requests.get(request_id).state == RequestState.REJECTED


@pytest.mark.parametrize("plan", sorted(PLANS))
def test_the_final_attempt_is_the_plans_retry_budget(plan: str) -> None:
    budget = PLANS[plan].retry_budget
    transient = Flaky("try again")

    assert [is_final_attempt(plan, n, transient) for n in range(budget + 1)] == [
        *([False] * budget),
        True,
    ]


@pytest.mark.parametrize("plan", sorted(PLANS))
def test_a_transient_error_is_retried_until_the_budget_then_fails_the_tenant(plan: str) -> None:
    world = World()
    ctx = world.context("run-1")
    tenant = steps.validate(ctx, world.request(plan=plan, role="platform-admin"), "acme", "w")
    budget = PLANS[plan].retry_budget
    world.traffic.fail_ensure = [Flaky("edge busy") for _ in range(budget + 1)]

    for number in range(budget):
        with pytest.raises(Flaky):
            steps.allocate(ctx, tenant, Attempt(number))
        assert world.registry.tenants.get_by_id(tenant.tenant_id).state == TenantState.PROVISIONING
    with pytest.raises(StepFailed, match="Allocate resources failed: Flaky: edge busy"):
        steps.allocate(ctx, tenant, Attempt(budget))

    record = world.registry.tenants.get_by_id(tenant.tenant_id)
    assert (record.state, record.failed_step) == (TenantState.FAILED, Step.ALLOCATE)
    [failed] = [e for e in world.events if e.type == EventType.FAILED]
    assert failed.details["attempts"] == budget + 1 and "edge busy" in failed.details["error"]


def test_a_permanent_error_is_never_retried() -> None:
    world = World()
    ctx = world.context("run-1")
    tenant = steps.validate(ctx, world.request(), "acme", "widgets")
    world.deployer.fail_ensure = [PermanentError("image does not exist")]

    with pytest.raises(StepFailed, match="image does not exist"):
        steps.deploy(ctx, tenant, Attempt(0))  # the first attempt is the last

    assert world.registry.tenants.get_by_id(tenant.tenant_id).failed_step == Step.DEPLOY
    assert is_final_attempt("enterprise", 0, PermanentError("no"))


def test_an_interrupted_phase_fails_the_tenant_instead_of_carrying_on() -> None:
    world = World()
    ctx = world.context("run-1")
    tenant = steps.validate(ctx, world.request(), "acme", "widgets")
    world.deployer.fail_ensure = [KeyboardInterrupt()]  # type: ignore[list-item]

    with pytest.raises(StepFailed, match="interrupted"):
        steps.deploy(ctx, tenant, Attempt(0))

    record = world.registry.tenants.get_by_id(tenant.tenant_id)
    assert record.state == TenantState.FAILED
    assert record.failure_reason == "the run was terminated"


def test_a_run_resumed_after_a_crash_says_so_and_redoes_nothing() -> None:
    world = World()
    first = world.context("run-1")
    tenant = steps.validate(first, world.request(), "acme", "widgets")
    steps.allocate(first, tenant, FIRST)
    # run-1's worker died; run-2 re-executes from deploy, in the same chain.
    resumed = world.context("run-2", root_run_id="run-1")
    steps.deploy(resumed, tenant, FIRST)

    assert (EventType.RESUMED, Step.DEPLOY) in world.types()
    assert world.registry.tenants.get_by_id(tenant.tenant_id).last_run_id == "run-2"
    assert created(world) == {"storage": 1, "identity": 1, "route": 1, "workload": 1}


def test_a_run_ensures_each_allocated_thing_once_and_a_new_run_again() -> None:
    """Later phases of the run that allocated take the ledger's word; a re-execution (a new
    run, which may follow a compensation) ensures everything again."""
    world = World()
    tenant = provision(world)
    allocated = ["storage", "identity", "route"]
    # deploy and mark_active ensure the workload; the route's `open` checks the route itself.
    assert world.journal.of("ensure") == [*allocated, "workload", "workload", "route"]

    world.journal.calls.clear()
    steps.deploy(world.context("run-2", root_run_id="run-1"), tenant, FIRST)
    assert world.journal.of("ensure") == [*allocated, "workload"]


def test_a_retry_waits_for_a_compensation_in_flight_and_gives_up_in_time() -> None:
    world = World()
    ctx = world.context("run-1")
    tenant = steps.validate(ctx, world.request(), "acme", "widgets")
    world.registry.compensations.claim("run-0", tenant.tenant_id)  # never finishes

    with pytest.raises(CompensationInProgress, match="run-0"):
        phases.allocate(ctx, tenant)
    assert sum(world.clock.slept) > phases.PHASE_COMPENSATION_WAIT_S
    assert world.journal.calls == []


@pytest.mark.parametrize("plan", PLANS.values(), ids=lambda plan: plan.name)
def test_a_phase_waiting_for_a_compensation_at_every_attempt_ends_within_the_run_limit(
    plan: Plan,
) -> None:
    attempts = plan.retry_budget + 1
    assert attempts * phases.PHASE_COMPENSATION_WAIT_S < plan.max_runtime_s


def test_mark_active_opens_traffic_only_after_the_workload_is_ready() -> None:
    world = World()
    ctx = world.context("run-1")
    tenant = steps.validate(ctx, world.request(), "acme", "widgets")
    steps.allocate(ctx, tenant, FIRST)
    steps.deploy(ctx, tenant, FIRST)
    steps.mark_active(ctx, tenant, FIRST)

    actions = [(kind, action) for kind, action, _ in world.journal.calls]
    assert actions.index(("workload", "ensure")) < actions.index(("route", "open"))
    entry = world.registry.ledger.get(tenant.tenant_id, "route")
    assert entry is not None and entry.state == LedgerState.ALLOCATED
    assert entry.handle["details"] == {"state": "open"}

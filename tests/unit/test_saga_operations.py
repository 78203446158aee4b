"""The tenant's one lifecycle operation as the saga sees it, and the policy for compensations
that fail: plain Python with in-memory ports (no Dagster)."""

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from tenant_pipelines.domain.errors import PermanentError, TenantPipelinesError
from tenant_pipelines.domain.events import EventType, Step
from tenant_pipelines.domain.records import CompensationRecord
from tenant_pipelines.saga import steps
from tenant_pipelines.saga.compensation import ReleaseFailed
from tenant_pipelines.saga.failure import Attempt, StepFailed
from tenant_pipelines.saga.operations import (
    MAX_COMPENSATION_ATTEMPTS,
    Move,
    backoff_s,
    compensation_failed_event,
    compensation_holder,
    next_move,
)
from tests.saga_fakes import World

pytestmark = pytest.mark.unit

FIRST = Attempt(0)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Locked(TenantPipelinesError):
    pass


def claim(attempts: int = 1, **changes: object) -> CompensationRecord:
    record = CompensationRecord("run-1", "t-1", "comp-1", T0, None, attempts, None)
    return replace(record, **changes)  # type: ignore[arg-type]


# the policy --------------------------------------------------------------------------------
def test_the_backoff_doubles_after_each_failed_attempt() -> None:
    assert [backoff_s(n) for n in (1, 2, 3)] == [2.0, 4.0, 8.0]
    assert MAX_COMPENSATION_ATTEMPTS == 3


@pytest.mark.parametrize(
    ("record", "ended", "since", "move"),
    [
        (claim(1), False, 0.0, Move.WAIT),  # the attempt is still running
        (claim(1), True, 1.9, Move.WAIT),  # backoff not over
        (claim(1), True, 2.0, Move.RELAUNCH),
        (claim(2), True, 3.9, Move.WAIT),
        (claim(2), True, 4.0, Move.RELAUNCH),
        (claim(3), True, 0.0, Move.GIVE_UP),  # attempts spent: at once, no backoff
        (claim(3), False, 0.0, Move.WAIT),
        (claim(1, finished_at=T0), True, 99.0, Move.DONE),
        (claim(3, gave_up_at=T0), True, 99.0, Move.DONE),
    ],
)
def test_next_move(record: CompensationRecord, ended: bool, since: float, move: Move) -> None:
    assert next_move(record, ended, since) == move


# the saga's side of the claim ---------------------------------------------------------------
def fail_at_deploy(world: World) -> str:
    ctx = world.context("run-1")
    tenant = steps.validate(ctx, world.request(), "acme", "widgets")
    steps.allocate(ctx, tenant, FIRST)
    world.deployer.fail_ensure = [PermanentError("no capacity")]
    with pytest.raises(StepFailed):
        steps.deploy(ctx, tenant, FIRST)
    world.registry.compensations.claim("run-1", tenant.tenant_id)
    world.registry.operations.hold(tenant.tenant_id, compensation_holder("run-1"))
    return tenant.tenant_id


def test_a_compensation_names_its_run_on_the_claim_and_releases_it_when_done() -> None:
    world = World()
    tenant_id = fail_at_deploy(world)

    steps.compensate(world.context("comp-1"), tenant_id, "run-1")

    record = world.registry.compensations.get("run-1")
    assert record is not None and record.compensation_run_id == "comp-1"
    assert record.finished_at is not None
    assert tenant_id not in world.registry.operations.held


def test_a_failing_compensation_keeps_the_claim_for_its_next_attempt() -> None:
    world = World()
    tenant_id = fail_at_deploy(world)
    world.storage.fail_release = [Locked("storage is locked")]

    with pytest.raises(ReleaseFailed, match="storage"):
        steps.compensate(world.context("comp-1"), tenant_id, "run-1")

    assert world.registry.operations.held[tenant_id] == (compensation_holder("run-1"), "comp-1")
    # the next attempt (another run) takes the same claim over and finishes
    steps.compensate(world.context("comp-2"), tenant_id, "run-1")
    record = world.registry.compensations.get("run-1")
    assert record is not None and record.compensation_run_id == "comp-2"
    assert tenant_id not in world.registry.operations.held


def test_a_retry_run_releases_its_claim_at_its_end_and_only_its_own() -> None:
    world = World()
    tenant_id = fail_at_deploy(world)
    steps.compensate(world.context("comp-1"), tenant_id, "run-1")
    tenant = world.registry.tenants.get_by_id(tenant_id).spec
    world.registry.operations.hold(tenant_id, "retry:x", "run-2")
    retry = world.context("run-2", root_run_id="run-1")
    for step in (steps.deploy, steps.mark_active):
        step(retry, tenant, FIRST)
    assert tenant_id in world.registry.operations.held  # held until the run's last step
    steps.send_welcome_emails(world.context("run-other"), tenant, FIRST)
    assert tenant_id in world.registry.operations.held  # another run cannot release it

    steps.send_welcome_emails(retry, tenant, FIRST)

    assert tenant_id not in world.registry.operations.held


def test_decommission_releases_its_claim_when_done() -> None:
    world = World()
    ctx = world.context("run-1")
    tenant = steps.validate(ctx, world.request(), "acme", "widgets")
    for step in (steps.allocate, steps.deploy, steps.mark_active):
        step(ctx, tenant, FIRST)
    world.registry.operations.hold(tenant.tenant_id, "decommission:x", "dec-1")

    steps.decommission(world.context("dec-1"), tenant.tenant_id)

    assert tenant.tenant_id not in world.registry.operations.held


def test_the_report_of_a_compensation_given_up_names_what_would_not_release() -> None:
    world = World()
    tenant_id = fail_at_deploy(world)
    world.storage.fail_release = [Locked("storage is locked")]
    with pytest.raises(ReleaseFailed):
        steps.compensate(world.context("comp-3"), tenant_id, "run-1")
    record = replace(world.registry.compensations.records["run-1"], attempts=3)

    event = compensation_failed_event(
        world.registry.ledger, world.registry.tenants.get_by_id(tenant_id), record, "comp-3"
    )

    assert (event.type, event.tenant, event.run_id, event.step) == (
        EventType.COMPENSATION_FAILED,
        "acme",
        "comp-3",
        Step.COMPENSATE,
    )
    assert event.type == "tenant.provisioning.compensation_failed"
    assert [r["kind"] for r in event.details["unreleased"]] == ["storage"]
    assert event.details["unreleased"][0]["state"] == "releasing"
    assert event.details["attempts"] == 3
    assert event.details["command"] == "tenantctl compensate acme --wait"
    assert "would not release: storage" in event.details["message"]

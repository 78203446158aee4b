"""One lifecycle operation per tenant, the slug check at submission and the compensation
attempt counter, on real SQLite and real PostgreSQL (every test runs on both backends)."""

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from tenant_pipelines.domain.errors import OperationInFlight, SlugInUse
from tenant_pipelines.domain.records import OperationRecord, TenantRecord
from tenant_pipelines.domain.request import TenantRequest
from tenant_pipelines.registry.status import waiting_request
from tenant_pipelines.registry.store import TenantRegistry
from tests.integration.test_registry import drive, make_request, reserved, submitted

pytestmark = pytest.mark.integration

RUNNING: Callable[[OperationRecord], bool] = lambda _claim: False  # noqa: E731
ENDED: Callable[[OperationRecord], bool] = lambda _claim: True  # noqa: E731


def together(action: Callable[[int], object], contenders: int) -> list[object]:
    """action(0..n-1) in threads released at once; each result or the error it raised."""
    barrier = threading.Barrier(contenders)

    def contend(index: int) -> object:
        barrier.wait(timeout=30)
        try:
            return action(index)
        except (OperationInFlight, SlugInUse) as refused:
            return refused

    with ThreadPoolExecutor(contenders) as pool:
        return list(pool.map(contend, range(contenders)))


def failed_tenant(registry: TenantRegistry) -> TenantRecord:
    return drive(registry, reserved(registry), "failed")


# the operation claim ---------------------------------------------------------------------
def test_a_second_operation_is_refused_naming_the_one_in_flight(registry: TenantRegistry) -> None:
    tenant = failed_tenant(registry)
    registry.operations.claim(tenant.tenant_id, "retry", "retry:a", ended=RUNNING)
    assert registry.operations.set_run(tenant.tenant_id, "retry:a", "run-a")

    with pytest.raises(OperationInFlight) as refused:
        registry.operations.claim(tenant.tenant_id, "decommission", "decommission:b", ended=RUNNING)
    assert (refused.value.kind, refused.value.run_id) == ("retry", "run-a")
    assert str(refused.value) == (
        "tenant acme has a retry in flight (run run-a); try again when it has ended"
    )
    held = registry.operations.get(tenant.tenant_id)
    assert held is not None and (held.kind, held.holder) == ("retry", "retry:a")


def test_the_same_holder_gets_its_claim_back(registry: TenantRegistry) -> None:
    tenant = failed_tenant(registry)
    first = registry.operations.claim(tenant.tenant_id, "compensation", "c:1", ended=RUNNING)
    again = registry.operations.claim(tenant.tenant_id, "compensation", "c:1", ended=RUNNING)
    assert again == first


def test_a_claim_whose_run_ended_is_taken_over(registry: TenantRegistry) -> None:
    tenant = failed_tenant(registry)
    registry.operations.claim(tenant.tenant_id, "retry", "retry:a", ended=RUNNING)
    registry.operations.set_run(tenant.tenant_id, "retry:a", "run-a")
    seen: list[OperationRecord] = []

    def ended(claim: OperationRecord) -> bool:
        seen.append(claim)
        return claim.run_id == "run-a"

    taken = registry.operations.claim(tenant.tenant_id, "decommission", "d:b", ended=ended)
    assert (taken.kind, taken.holder, taken.run_id) == ("decommission", "d:b", None)
    assert [claim.run_id for claim in seen] == ["run-a"]
    # the stale holder can no longer name a run or release the new claim
    assert not registry.operations.set_run(tenant.tenant_id, "retry:a", "run-x")
    assert not registry.operations.release(tenant.tenant_id, run_id="run-a")
    assert registry.operations.get(tenant.tenant_id) == taken


def test_a_compensation_succeeds_the_failed_run_that_held_the_claim(
    registry: TenantRegistry,
) -> None:
    tenant = failed_tenant(registry)
    registry.operations.claim(tenant.tenant_id, "retry", "retry:a", ended=RUNNING)
    registry.operations.set_run(tenant.tenant_id, "retry:a", "run-a")
    with pytest.raises(OperationInFlight):
        registry.operations.claim(
            tenant.tenant_id, "compensation", "c:x", ended=RUNNING, successor_of="run-other"
        )
    taken = registry.operations.claim(
        tenant.tenant_id, "compensation", "c:run-a", ended=RUNNING, successor_of="run-a"
    )
    assert (taken.kind, taken.holder) == ("compensation", "c:run-a")


def test_release_by_run_or_holder_and_only_its_own(registry: TenantRegistry) -> None:
    tenant = failed_tenant(registry)
    registry.operations.claim(tenant.tenant_id, "retry", "retry:a", ended=RUNNING)
    assert not registry.operations.release(tenant.tenant_id, run_id="run-a")  # not named yet
    registry.operations.set_run(tenant.tenant_id, "retry:a", "run-a")
    assert not registry.operations.release(tenant.tenant_id, holder="retry:b")
    assert registry.operations.release(tenant.tenant_id, run_id="run-a")
    assert not registry.operations.release(tenant.tenant_id, run_id="run-a")  # idempotent
    assert registry.operations.get(tenant.tenant_id) is None
    assert registry.operations.all() == []
    fresh = registry.operations.claim(tenant.tenant_id, "decommission", "d:1", ended=RUNNING)
    assert registry.operations.all() == [fresh]


def test_of_many_operations_at_once_exactly_one_holds_the_tenant(
    registry: TenantRegistry,
) -> None:
    tenant = failed_tenant(registry)
    kinds = ["retry", "decommission", "compensation"] * 3

    outcomes = together(
        lambda i: registry.operations.claim(
            tenant.tenant_id, kinds[i], f"{kinds[i]}:{i}", ended=RUNNING
        ),
        len(kinds),
    )

    winners = [o for o in outcomes if isinstance(o, OperationRecord)]
    assert len(winners) == 1
    assert all(isinstance(o, OperationInFlight) for o in outcomes if o not in winners)
    assert registry.operations.get(tenant.tenant_id) == winners[0]


def test_of_many_takeovers_of_a_stale_claim_exactly_one_wins(registry: TenantRegistry) -> None:
    tenant = failed_tenant(registry)
    registry.operations.claim(tenant.tenant_id, "retry", "retry:dead", ended=RUNNING)
    registry.operations.set_run(tenant.tenant_id, "retry:dead", "run-dead")

    def ended(claim: OperationRecord) -> bool:
        return claim.run_id == "run-dead"

    outcomes = together(
        lambda i: registry.operations.claim(tenant.tenant_id, "retry", f"retry:{i}", ended=ended),
        6,
    )

    winners = [o for o in outcomes if isinstance(o, OperationRecord)]
    assert len(winners) == 1, outcomes
    assert registry.operations.get(tenant.tenant_id) == winners[0]


# the slug at submission ------------------------------------------------------------------
def request_for(slug: str = "acme", org: str = "corp") -> TenantRequest:
    return make_request(slug, org)


@pytest.mark.parametrize("holder_path", [(), ("active",), ("failed",)])
def test_a_slug_held_by_a_live_tenant_is_refused_at_submission(
    registry: TenantRegistry, holder_path: tuple[str, ...]
) -> None:
    drive(registry, reserved(registry), *holder_path)
    rival = request_for(org="other")

    with pytest.raises(SlugInUse) as refused:
        registry.requests.submit(rival, exclusive_slug=True)

    assert str(refused.value) == "slug acme is not available"  # another org may be asking
    state = holder_path[-1] if holder_path else "provisioning"
    assert str(refused.value.told_to(lambda org: org == "corp")) == (
        f"slug acme is taken by tenant acme ({state}); choose another slug"
    )
    assert registry.requests.latest_for_slug("acme") is not None
    with pytest.raises(Exception, match="no request"):
        registry.requests.get(str(rival.request_id))  # nothing recorded


def test_a_slug_held_by_a_request_in_flight_is_refused_but_the_same_request_is_not(
    registry: TenantRegistry,
) -> None:
    first = request_for()
    record, created = registry.requests.submit(first, exclusive_slug=True)
    assert created

    again, created_again = registry.requests.submit(first, exclusive_slug=True)
    assert (again, created_again) == (record, False)
    with pytest.raises(SlugInUse) as refused:
        registry.requests.submit(request_for(org="other"), exclusive_slug=True)
    assert str(refused.value.told_to(lambda _org: True)) == (
        f"slug acme is taken by request {record.request_id}, in flight; choose another slug"
    )

    registry.requests.mark_launched(record.request_id)
    registry.tenants.reserve(registry.requests.get(record.request_id))
    again, created_again = registry.requests.submit(first, exclusive_slug=True)
    assert not created_again and again.tenant_id is not None  # its own tenant: no conflict


def test_a_slug_is_free_again_after_rejection_or_decommission(registry: TenantRegistry) -> None:
    rejected = submitted(registry)
    registry.requests.reject(rejected.request_id, "discarded by operator:test")
    _, created = registry.requests.submit(request_for(org="second"), exclusive_slug=True)
    assert created

    tenant = registry.tenants.reserve(registry.requests.latest_for_slug("acme"))  # type: ignore[arg-type]
    drive(registry, tenant, "active", "decommissioning", "decommissioned")
    _, created = registry.requests.submit(request_for(org="third"), exclusive_slug=True)
    assert created


def test_twenty_requests_for_one_slug_at_once_record_exactly_one(
    registry: TenantRegistry,
) -> None:
    outcomes = together(
        lambda i: registry.requests.submit(request_for(org=f"org{i:02d}"), exclusive_slug=True),
        20,
    )

    accepted = [o for o in outcomes if isinstance(o, tuple)]
    assert len(accepted) == 1
    assert sum(isinstance(o, SlugInUse) for o in outcomes) == 19
    assert registry.requests.in_progress() == [accepted[0][0]]


def test_one_request_id_a_hundred_times_at_once_is_one_request(registry: TenantRegistry) -> None:
    request = request_for()
    outcomes = together(lambda _i: registry.requests.submit(request, exclusive_slug=True), 100)
    assert sum(1 for o in outcomes if isinstance(o, tuple) and o[1]) == 1
    assert all(isinstance(o, tuple) for o in outcomes)
    assert len(registry.requests.in_progress()) == 1


# requests without a tenant ---------------------------------------------------------------
def test_a_launched_request_without_tenant_is_waiting_and_reopened_once(
    registry: TenantRegistry,
) -> None:
    record = submitted(registry)
    assert waiting_request(registry, "acme") is None  # pending: the intake's, not a person's
    registry.requests.mark_launched(record.request_id)
    registry.requests.claim(record.request_id, "run-1")
    assert waiting_request(registry, "acme") == registry.requests.get(record.request_id)

    outcomes = together(lambda _i: registry.requests.reopen(record.request_id, "run-1", "run-1"), 4)
    assert sorted(outcomes) == [False, False, False, True]
    assert registry.requests.get(record.request_id).run_id == "retrying:run-1"
    assert not registry.requests.reopen(record.request_id, None, "run-1")
    # only the failed run's re-execution (same root) claims it in Validate
    assert not registry.requests.claim(record.request_id, "run-x")
    assert registry.requests.claim(record.request_id, "run-2", root_run_id="run-1")
    assert registry.requests.get(record.request_id).run_id == "run-1"
    assert not registry.requests.reopen(record.request_id, "retrying:run-1", "run-1")

    registry.requests.reject(record.request_id, "discarded by operator:test")
    assert waiting_request(registry, "acme") is None


# compensation attempts ---------------------------------------------------------------------
def test_compensation_attempts_are_counted_once_and_given_up_once(
    registry: TenantRegistry,
) -> None:
    tenant = failed_tenant(registry)
    registry.compensations.claim("run-1", tenant.tenant_id)
    registry.compensations.set_run("run-1", "comp-1")

    counted = together(lambda _i: registry.compensations.record_attempt("run-1", 1), 4)
    assert sorted(counted) == [False, False, False, True]
    claim = registry.compensations.get("run-1")
    assert claim is not None and (claim.attempts, claim.compensation_run_id) == (2, None)
    assert registry.compensations.in_progress(10) == [claim]

    gave_up = together(lambda _i: registry.compensations.give_up("run-1"), 4)
    assert sorted(gave_up) == [False, False, False, True]
    assert registry.compensations.in_progress(10) == []
    assert registry.compensations.unfinished(tenant.tenant_id) == []  # a retry need not wait
    assert not registry.compensations.record_attempt("run-1", 2)

    registry.compensations.reopen("run-1", 3)
    reopened = registry.compensations.get("run-1")
    assert reopened is not None and (reopened.attempts, reopened.gave_up_at) == (3, None)
    assert registry.compensations.unfinished(tenant.tenant_id) == [reopened]
    registry.compensations.finish("run-1")
    assert registry.compensations.in_progress(10) == []


def test_an_unnamed_claim_keeps_its_claim_time(registry: TenantRegistry) -> None:
    tenant = failed_tenant(registry)
    before = datetime.now(UTC) - timedelta(seconds=1)
    claim = registry.operations.claim(
        tenant.tenant_id, "retry", f"retry:{uuid.uuid4()}", ended=ENDED
    )
    assert claim.run_id is None and before < claim.claimed_at <= datetime.now(UTC)

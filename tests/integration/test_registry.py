"""The tenant registry on real SQLite and real PostgreSQL (every test runs on both backends)."""

import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tenant_pipelines.domain.errors import InvalidTransition, NotFound, RequestConflict, SlugTaken
from tenant_pipelines.domain.mail import EmailKind
from tenant_pipelines.domain.records import RequestRecord, TenantRecord
from tenant_pipelines.domain.request import TenantRequest
from tenant_pipelines.domain.states import LedgerState, TenantState
from tenant_pipelines.registry.engine import make_engine
from tenant_pipelines.registry.store import TenantRegistry
from tenant_pipelines.saga.email_content import ledger_kind

pytestmark = pytest.mark.integration


def make_request(slug: str = "acme", org: str = "corp", plan: str = "team") -> TenantRequest:
    return TenantRequest.parse(
        {
            "slug": slug,
            "org": org,
            "plan": plan,
            "admin_email": f"admin@{org}.example.com",
            "requested_by": {"subject": "alice", "role": "platform-admin"},
        }
    )


def submitted(registry: TenantRegistry, slug: str = "acme", org: str = "corp") -> RequestRecord:
    record, created = registry.requests.submit(make_request(slug, org))
    assert created
    return record


def reserved(registry: TenantRegistry, slug: str = "acme") -> TenantRecord:
    return registry.tenants.reserve(submitted(registry, slug))


def drive(registry: TenantRegistry, tenant: TenantRecord, *states: str) -> TenantRecord:
    for state in states:
        tenant = registry.tenants.transition(tenant.tenant_id, state)
    return tenant


def assert_utc(*moments: datetime) -> None:
    assert all(m.tzinfo is not None and m.utcoffset() == UTC.utcoffset(None) for m in moments)


# requests -----------------------------------------------------------------------------------
def test_submit_is_idempotent_by_request_id(registry: TenantRegistry) -> None:
    request = make_request()
    first, created = registry.requests.submit(request)
    again, created_again = registry.requests.submit(request)

    assert (created, created_again) == (True, False)
    assert again == first == registry.requests.get(str(request.request_id).upper())
    assert (first.state, first.run_id, first.tenant_id, first.reason) == (
        "pending",
        None,
        None,
        None,
    )
    assert first.to_request() == request
    assert_utc(first.created_at, first.updated_at)


def test_same_id_with_other_content_is_a_conflict(registry: TenantRegistry) -> None:
    request = make_request()
    original, _ = registry.requests.submit(request)
    changed = request.model_copy(update={"slug": "other", "plan": "free"})

    with pytest.raises(RequestConflict, match=r"another slug, plan$"):
        registry.requests.submit(changed)
    assert registry.requests.get(original.request_id) == original


def test_unknown_request_is_not_found(registry: TenantRegistry) -> None:
    with pytest.raises(NotFound):
        registry.requests.get("00000000-0000-0000-0000-000000000000")
    with pytest.raises(NotFound):
        registry.requests.mark_launched("not-a-uuid")


def test_pending_requests_are_listed_oldest_first(registry: TenantRegistry) -> None:
    records = [submitted(registry, slug) for slug in ("one", "two", "three", "four")]
    registry.requests.mark_launched(records[1].request_id)

    pending = [r.request_id for r in registry.requests.to_launch(limit=10)]
    assert pending == [records[0].request_id, records[2].request_id, records[3].request_id]
    assert [r.slug for r in registry.requests.to_launch(limit=2)] == ["one", "three"]


def test_mark_launched_is_compare_and_set(registry: TenantRegistry) -> None:
    record = submitted(registry)
    assert registry.requests.mark_launched(record.request_id) is True
    assert registry.requests.mark_launched(record.request_id) is False
    assert registry.requests.get(record.request_id).state == "launched"


def test_one_request_owns_one_run_and_its_reexecutions(registry: TenantRegistry) -> None:
    rid = submitted(registry).request_id
    assert registry.requests.claim(rid, "run-1") is True
    assert registry.requests.claim(rid, "run-1") is True  # the same run again (a retried op)
    assert registry.requests.claim(rid, "run-2") is False  # another run
    assert registry.requests.claim(rid, "run-3", root_run_id="run-1") is True  # re-execution
    assert registry.requests.claim(rid, "run-4", root_run_id="run-2") is False
    assert registry.requests.get(rid).run_id == "run-1"


def test_a_reexecution_that_claims_first_names_the_chain_by_its_root(
    registry: TenantRegistry,
) -> None:
    rid = submitted(registry).request_id
    assert registry.requests.claim(rid, "run-2", root_run_id="run-1") is True
    assert registry.requests.claim(rid, "run-3", root_run_id="run-1") is True
    assert registry.requests.claim(rid, "run-1") is True
    assert registry.requests.claim(rid, "run-9") is False


def test_reject_is_final_and_keeps_the_first_reason(registry: TenantRegistry) -> None:
    pending, launched = submitted(registry, "one"), submitted(registry, "two")
    registry.requests.mark_launched(launched.request_id)

    assert registry.requests.reject(pending.request_id, "slug taken").state == "rejected"
    rejected = registry.requests.reject(launched.request_id, "role not allowed")
    assert (rejected.state, rejected.reason) == ("rejected", "role not allowed")
    assert registry.requests.reject(launched.request_id, "other").reason == "role not allowed"
    assert registry.requests.mark_launched(pending.request_id) is False


# tenants ------------------------------------------------------------------------------------
def test_reserve_is_idempotent_for_the_same_request(registry: TenantRegistry) -> None:
    request = submitted(registry)
    tenant = registry.tenants.reserve(request)

    assert registry.tenants.reserve(request) == tenant
    assert registry.tenants.reserve(registry.requests.get(request.request_id)) == tenant
    assert (tenant.state, tenant.slug, tenant.request_id) == (
        "provisioning",
        "acme",
        request.request_id,
    )
    assert registry.requests.get(request.request_id).tenant_id == tenant.tenant_id
    assert tenant.spec.key == "acme-corp"
    assert registry.tenants.get_by_id(tenant.tenant_id) == registry.tenants.get("acme") == tenant
    assert_utc(tenant.created_at, tenant.updated_at)


@pytest.mark.parametrize(
    "holder_path", [(), ("active",), ("failed",), ("active", "decommissioning")]
)
def test_a_slug_held_by_a_live_tenant_is_taken(
    registry: TenantRegistry, holder_path: tuple[str, ...]
) -> None:
    holder = drive(registry, reserved(registry), *holder_path)
    rival = submitted(registry, org="other")

    with pytest.raises(SlugTaken) as caught:
        registry.tenants.reserve(rival)
    assert caught.value.slug == "acme"
    assert registry.requests.get(rival.request_id).tenant_id is None
    assert [t.tenant_id for t in registry.tenants.all()] == [holder.tenant_id]


def test_a_decommissioned_slug_is_free_again(registry: TenantRegistry) -> None:
    first = drive(registry, reserved(registry), "active", "decommissioning", "decommissioned")
    second = reserved(registry)

    assert second.tenant_id != first.tenant_id
    # the live one wins over a newer-or-older dead one
    assert registry.tenants.get("acme") == second
    assert registry.tenants.reserve(registry.requests.get(first.request_id)) == first
    assert [t.tenant_id for t in registry.tenants.all()] == [first.tenant_id, second.tenant_id]
    assert registry.tenants.all(state="decommissioned") == [first]

    second = drive(registry, second, "failed", "decommissioning", "decommissioned")
    assert registry.tenants.get("acme") == second  # none live: the most recent


def test_unknown_tenants_are_not_found(registry: TenantRegistry) -> None:
    with pytest.raises(NotFound):
        registry.tenants.get("nobody")
    with pytest.raises(NotFound):
        registry.tenants.get_by_id("missing")
    with pytest.raises(NotFound):
        registry.tenants.transition("missing", "active")
    with pytest.raises(NotFound):
        registry.tenants.record_run("missing", "run-1")


def test_transitions_record_and_clear_the_failure(registry: TenantRegistry) -> None:
    tenant = reserved(registry)
    failed = registry.tenants.transition(
        tenant.tenant_id, "failed", failed_step="deploy", failure_reason="readiness timed out"
    )
    assert (failed.state, failed.failed_step, failed.failure_reason) == (
        "failed",
        "deploy",
        "readiness timed out",
    )
    assert failed.updated_at >= tenant.updated_at
    again = registry.tenants.transition(tenant.tenant_id, "failed", failed_step="other")
    assert again == failed  # no-op

    retried = registry.tenants.transition(tenant.tenant_id, "provisioning")
    assert (retried.state, retried.failed_step, retried.failure_reason) == (
        "provisioning",
        None,
        None,
    )
    assert registry.tenants.transition(tenant.tenant_id, "active").state == "active"

    registry.tenants.record_run(tenant.tenant_id, "run-7")
    assert registry.tenants.get_by_id(tenant.tenant_id).last_run_id == "run-7"


def test_states_may_be_given_as_enums(registry: TenantRegistry) -> None:
    tenant = reserved(registry)
    active = registry.tenants.transition(tenant.tenant_id, TenantState.ACTIVE)
    assert active.state == "active" and type(active.state) is str
    assert registry.tenants.all(TenantState.ACTIVE) == [active]
    with pytest.raises(ValueError):
        registry.tenants.all("archived")


PATHS = {
    "provisioning": (),
    "active": ("active",),
    "failed": ("failed",),
    "decommissioning": ("active", "decommissioning"),
    "decommissioned": ("active", "decommissioning", "decommissioned"),
}
VALID = {
    ("provisioning", "active"),
    ("provisioning", "failed"),
    ("failed", "provisioning"),
    ("active", "decommissioning"),
    ("failed", "decommissioning"),
    ("decommissioning", "decommissioned"),
}


def test_invalid_transitions_are_refused_and_change_nothing(registry: TenantRegistry) -> None:
    for number, (current, path) in enumerate(PATHS.items()):
        tenant = drive(registry, reserved(registry, f"tenant{number}"), *path)
        for target in PATHS:
            if target == current or (current, target) in VALID:
                continue
            with pytest.raises(InvalidTransition):
                registry.tenants.transition(tenant.tenant_id, target)
            assert registry.tenants.get_by_id(tenant.tenant_id) == tenant


def test_concurrent_transitions_have_exactly_one_winner(
    registry: TenantRegistry, registry_url: str
) -> None:
    others = [TenantRegistry.open(registry_url) for _ in range(2)]
    try:
        for number in range(5):
            tid = reserved(registry, f"cas{number}").tenant_id
            outcomes = race(
                lambda i, tid=tid: others[i].tenants.transition(tid, ("active", "failed")[i])
            )
            winners = [o for o in outcomes if isinstance(o, TenantRecord)]
            assert len(winners) == 1
            assert [type(o) for o in outcomes if o not in winners] == [InvalidTransition]
            assert registry.tenants.get_by_id(tid).state == winners[0].state
    finally:
        for other in others:
            other.close()


# ledger -------------------------------------------------------------------------------------
def test_ledger_keeps_allocation_order(registry: TenantRegistry) -> None:
    tid = reserved(registry).tenant_id
    for kind in ("storage", "identity", "route"):
        registry.ledger.set(tid, kind, "allocating", run_id="run-1")
        registry.ledger.set(tid, kind, "allocated", handle={"name": kind}, run_id="run-1")
    assert [(e.kind, e.seq) for e in registry.ledger.entries(tid)] == [
        ("storage", 1),
        ("identity", 2),
        ("route", 3),
    ]

    registry.ledger.set(tid, "storage", "releasing", run_id="comp-1")
    released = registry.ledger.set(tid, "storage", "released", run_id="comp-1")
    assert (released.seq, released.handle, released.run_id) == (1, {"name": "storage"}, "comp-1")

    again = registry.ledger.set(tid, "storage", "allocating", run_id="run-2")
    assert again.seq == 4 and again.handle == {"name": "storage"}
    again = registry.ledger.set(tid, "storage", "allocated", handle={"name": "s2"})
    assert (again.seq, again.handle, again.run_id) == (4, {"name": "s2"}, "run-2")
    assert [e.kind for e in registry.ledger.entries(tid)] == ["identity", "route", "storage"]
    assert registry.ledger.get(tid, "storage") == again
    assert registry.ledger.get(tid, "workload") is None
    assert_utc(again.updated_at)


def test_ledger_refuses_unknown_states_and_tenants(registry: TenantRegistry) -> None:
    tid = reserved(registry).tenant_id
    with pytest.raises(ValueError, match="ledger state"):
        registry.ledger.set(tid, "storage", "gone")
    with pytest.raises(NotFound):
        registry.ledger.set("missing", "storage", "allocating")
    assert registry.ledger.entries(tid) == []


def test_live_ledger_lists_what_may_exist_across_tenants(registry: TenantRegistry) -> None:
    one, two = reserved(registry, "one"), reserved(registry, "two")
    registry.ledger.set(one.tenant_id, "storage", "allocated", handle={"path": "/x"})
    registry.ledger.set(one.tenant_id, "identity", "released")
    registry.ledger.set(one.tenant_id, "email:welcome", "sent")
    registry.ledger.set(two.tenant_id, "route", "allocating")
    registry.ledger.set(two.tenant_id, "workload", "releasing")
    registry.ledger.set(two.tenant_id, "storage", "failed")

    live = registry.ledger.live()
    assert [(t.slug, e.kind, e.state) for t, e in live] == [
        ("one", "storage", "allocated"),
        ("two", "route", "allocating"),
        ("two", "workload", "releasing"),
    ]
    assert live[0][0] == registry.tenants.get_by_id(one.tenant_id)
    assert live[0][1].handle == {"path": "/x"}


# compensations ------------------------------------------------------------------------------
def test_compensation_is_claimed_exactly_once(registry: TenantRegistry, registry_url: str) -> None:
    tid = reserved(registry).tenant_id
    assert registry.compensations.get("run-1") is None
    claimers = [TenantRegistry.open(registry_url) for _ in range(4)]
    try:
        with ThreadPoolExecutor(len(claimers)) as pool:
            claims = list(pool.map(lambda r: r.compensations.claim("run-1", tid), claimers))
    finally:
        for claimer in claimers:
            claimer.close()
    assert sorted(claims) == [False, False, False, True]
    assert registry.compensations.claim("run-1", tid) is False

    registry.compensations.set_run("run-1", "comp-1")
    record = registry.compensations.get("run-1")
    assert record is not None
    assert (record.tenant_id, record.compensation_run_id) == (tid, "comp-1")
    assert_utc(record.created_at)
    with pytest.raises(NotFound):
        registry.compensations.set_run("run-unknown", "comp-2")


# the slug race ------------------------------------------------------------------------------
RACE_ROUNDS = 20


def race(action: Callable[[int], object], contenders: int = 2) -> list[object]:
    """Run action(0..n-1) in threads released together; each result or raised error."""
    barrier = threading.Barrier(contenders)

    def contend(index: int) -> object:
        barrier.wait(timeout=30)
        try:
            return action(index)
        except (SlugTaken, InvalidTransition) as refused:
            return refused

    with ThreadPoolExecutor(contenders) as pool:
        return list(pool.map(contend, range(contenders)))


def assert_one_winner(registry: TenantRegistry, slug: str, outcomes: list[object]) -> None:
    assert sorted(type(o).__name__ for o in outcomes) == ["SlugTaken", "TenantRecord"]
    assert [t.slug for t in registry.tenants.all()].count(slug) == 1


def test_same_slug_race_between_threads(registry: TenantRegistry, registry_url: str) -> None:
    # Separate registries, separate engines: real concurrent connections to the database.
    contenders = [TenantRegistry.open(registry_url) for _ in range(2)]
    try:
        for number in range(RACE_ROUNDS):
            slug = f"race{number}"
            requests = [submitted(registry, slug, org) for org in ("red", "blue")]
            outcomes = race(lambda i, rs=requests: contenders[i].tenants.reserve(rs[i]))
            assert_one_winner(registry, slug, outcomes)
    finally:
        for contender in contenders:
            contender.close()


def _reserve_in_process(url: str, request_ids: list[str], barrier: Any, results: Any) -> None:
    """Child process: reserve each request as soon as the other process is ready too."""
    registry = TenantRegistry.open(url)
    try:
        for request_id in request_ids:
            request = registry.requests.get(request_id)
            try:
                barrier.wait(timeout=30)
                registry.tenants.reserve(request)
                results.put((request_id, "TenantRecord"))
            except SlugTaken:
                results.put((request_id, "SlugTaken"))
            except Exception as error:  # reported to the parent, which fails the test
                results.put((request_id, f"error: {error!r}"))
    finally:
        registry.close()


def test_same_slug_race_between_processes(registry: TenantRegistry, registry_url: str) -> None:
    rounds = [
        [submitted(registry, f"proc{number}", org).request_id for org in ("red", "blue")]
        for number in range(RACE_ROUNDS)
    ]
    # spawn, not fork: a forked child would share the parent's pooled connections.
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    workers = [
        context.Process(
            target=_reserve_in_process,
            args=(registry_url, [pair[side] for pair in rounds], barrier, results),
        )
        for side in (0, 1)
    ]
    for worker in workers:
        worker.start()
    try:
        outcomes = dict(results.get(timeout=60) for _ in range(2 * RACE_ROUNDS))
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.terminate()
    assert all(worker.exitcode == 0 for worker in workers)
    for number, pair in enumerate(rounds):
        assert sorted(outcomes[rid] for rid in pair) == ["SlugTaken", "TenantRecord"]
        assert [t.slug for t in registry.tenants.all()].count(f"proc{number}") == 1


def test_sqlite_connections_share_the_file_safely(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'deep' / 'er' / 'registry.db'}"
    TenantRegistry.open(url).close()  # creates the missing directories
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10_000
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()


def test_of_executions_racing_to_claim_an_email_exactly_one_wins(
    registry: TenantRegistry,
) -> None:
    """Two runs of one tenant's email phase at once (a resumed run beside its original): the
    claim is taken in one transaction, so only one of them sends."""
    tenant = reserved(registry)
    racers = 4
    barrier = threading.Barrier(racers)

    def claim(run: int) -> bool:
        barrier.wait()
        won, _ = registry.ledger.claim(
            tenant.tenant_id,
            ledger_kind(EmailKind.WELCOME),
            LedgerState.SENDING,
            allowed=lambda entry: entry is None,
            run_id=f"run-{run}",
        )
        return won

    with ThreadPoolExecutor(racers) as pool:
        wins = list(pool.map(claim, range(racers)))
    assert wins.count(True) == 1
    winner = f"run-{wins.index(True)}"
    with ThreadPoolExecutor(racers) as pool:
        assert not any(pool.map(claim, range(racers))), "a claimed email is nobody's to take"
    entry = registry.ledger.get(tenant.tenant_id, ledger_kind(EmailKind.WELCOME))
    assert entry is not None
    assert (entry.state, entry.run_id) == (LedgerState.SENDING, winner)

"""Tenant keys `<slug>-<org>` in the registry, on real SQLite and real PostgreSQL: one key is
one tenant whatever the split of slug and org, refused at submission without a word about the
holder to another org, reserved atomically at Validate; request ids scoped to their caller."""

import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import inspect, text

from tenant_pipelines.domain.errors import (
    NotFound,
    RequestConflict,
    RequestIdTaken,
    SlugInUse,
    SlugTaken,
)
from tenant_pipelines.domain.records import RequestRecord
from tenant_pipelines.domain.request import TenantRequest
from tenant_pipelines.registry import migrate
from tenant_pipelines.registry.engine import make_engine
from tenant_pipelines.registry.store import TenantRegistry
from tests.integration.test_registry import drive

pytestmark = pytest.mark.integration
RACE_ROUNDS = 10

# One key, fourteen splits of it into slug and org (each part 3 to 30 characters).
LETTERS = "abcdefghijklmnopq"
MANY_SPLITS = [
    ("-".join(LETTERS[:cut]), "-".join(LETTERS[cut:])) for cut in range(2, len(LETTERS) - 1)
]


def request(
    slug: str,
    org: str = "corp",
    *,
    subject: str = "alice",
    role: str = "org-admin",
    plan: str = "team",
    request_id: str | None = None,
) -> TenantRequest:
    fields: dict[str, object] = {
        "slug": slug,
        "org": org,
        "plan": plan,
        "admin_email": f"admin@{org}.example.com",
        "requested_by": {"subject": subject, "role": role},
    }
    if request_id is not None:
        fields["request_id"] = request_id
    return TenantRequest.parse(fields)


def recorded(registry: TenantRegistry, slug: str, org: str) -> RequestRecord:
    """A request recorded without the submission check: as a race past it would leave it."""
    record, created = registry.requests.submit(request(slug, org))
    assert created
    return record


def nothing_recorded(registry: TenantRegistry, refused: TenantRequest) -> bool:
    try:
        registry.requests.get(str(refused.request_id))
    except NotFound:
        return True
    return False


# refused at submission ---------------------------------------------------------------------
@pytest.mark.parametrize("holder_state", ["provisioning", "active", "failed"])
def test_a_key_held_by_a_live_tenant_is_refused_at_submission(
    registry: TenantRegistry, holder_state: str
) -> None:
    holder = registry.tenants.reserve(recorded(registry, "shop-prod", "zeta"))
    if holder_state != "provisioning":
        drive(registry, holder, holder_state)
    rival = request("shop", "prod-zeta")

    with pytest.raises(SlugInUse) as refused:
        registry.requests.submit(rival, exclusive_slug=True)

    message = str(refused.value)
    assert message == (
        "slug shop is not available in org prod-zeta: the address shop-prod-zeta is taken"
    )
    assert "org zeta" not in message and holder_state not in message
    assert str(refused.value.told_to(lambda org: org == "zeta")) == (
        "slug shop is not available in org prod-zeta: the address shop-prod-zeta is taken by "
        f"tenant shop-prod of org zeta ({holder_state})"
    )
    assert refused.value.told_to(lambda org: org == "prod-zeta") is refused.value
    assert nothing_recorded(registry, rival)


def test_a_key_held_by_a_request_in_flight_is_refused_at_submission(
    registry: TenantRegistry,
) -> None:
    first, created = registry.requests.submit(request("shop", "prod-zeta"), exclusive_slug=True)
    assert created
    rival = request("shop-prod", "zeta")

    with pytest.raises(SlugInUse) as refused:
        registry.requests.submit(rival, exclusive_slug=True)

    assert str(refused.value) == (
        "slug shop-prod is not available in org zeta: the address shop-prod-zeta is taken"
    )
    assert str(refused.value.told_to(lambda _org: True)) == (
        "slug shop-prod is not available in org zeta: the address shop-prod-zeta is taken by "
        f"request {first.request_id} of org prod-zeta, in flight"
    )
    assert nothing_recorded(registry, rival)


def test_a_key_is_free_again_once_its_tenant_is_decommissioned_or_its_request_rejected(
    registry: TenantRegistry,
) -> None:
    first, _ = registry.requests.submit(request("shop-prod", "zeta"), exclusive_slug=True)
    registry.requests.reject(first.request_id, "discarded by operator:test")
    second, created = registry.requests.submit(request("shop", "prod-zeta"), exclusive_slug=True)
    assert created

    tenant = registry.tenants.reserve(second)
    drive(registry, tenant, "active", "decommissioning", "decommissioned")
    third, created = registry.requests.submit(request("shop-prod", "zeta"), exclusive_slug=True)
    assert created
    assert registry.tenants.reserve(third).org == "zeta"


def test_fourteen_splits_of_one_key_at_once_record_exactly_one(
    registry: TenantRegistry,
) -> None:
    requests = [request(slug, org) for slug, org in MANY_SPLITS]
    assert len(requests) == 14 and len({f"{r.slug}-{r.org}" for r in requests}) == 1
    outcomes = together(lambda i: registry.requests.submit(requests[i], exclusive_slug=True), 14)

    accepted = [o for o in outcomes if isinstance(o, tuple)]
    assert len(accepted) == 1
    assert sum(isinstance(o, SlugInUse) for o in outcomes) == 13
    assert registry.requests.in_progress() == [accepted[0][0]]


def together(action: Callable[[int], object], contenders: int) -> list[object]:
    """action(0..n-1) in threads released at once; each result or the refusal it raised."""
    barrier = threading.Barrier(contenders)

    def contend(index: int) -> object:
        barrier.wait(timeout=30)
        try:
            return action(index)
        except SlugTaken as refused:
            return refused

    with ThreadPoolExecutor(contenders) as pool:
        return list(pool.map(contend, range(contenders)))


# reserved at Validate ------------------------------------------------------------------------
def test_validate_refuses_a_key_held_by_a_live_tenant_naming_only_its_own_request(
    registry: TenantRegistry,
) -> None:
    registry.tenants.reserve(recorded(registry, "shop-prod", "zeta"))
    loser = recorded(registry, "shop", "prod-zeta")  # past submission, as a race would be

    with pytest.raises(SlugTaken) as refused:
        registry.tenants.reserve(loser)

    assert str(refused.value) == (
        "slug shop is not available in org prod-zeta: the address shop-prod-zeta is taken"
    )
    assert registry.tenants.for_request(loser.request_id) is None
    assert [(t.slug, t.org) for t in registry.tenants.all()] == [("shop-prod", "zeta")]


def test_the_same_key_race_between_threads_gives_one_tenant(
    registry: TenantRegistry, registry_url: str
) -> None:
    # Separate registries, separate engines: real concurrent connections to the database.
    contenders = [TenantRegistry.open(registry_url) for _ in range(2)]
    try:
        for number in range(RACE_ROUNDS):
            pair = [
                recorded(registry, f"run{number}-shop", "prod"),
                recorded(registry, f"run{number}", "shop-prod"),
            ]
            outcomes = together(lambda i, rs=pair: contenders[i].tenants.reserve(rs[i]), 2)
            assert sorted(type(o).__name__ for o in outcomes) == ["SlugTaken", "TenantRecord"]
            key = f"run{number}-shop-prod"
            assert [t.spec.key for t in registry.tenants.all()].count(key) == 1
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
            except SlugTaken as refused:
                results.put((request_id, str(refused)))
            except Exception as error:  # reported to the parent, which fails the test
                results.put((request_id, f"error: {error!r}"))
    finally:
        registry.close()


def test_the_same_key_race_between_processes_gives_one_tenant(
    registry: TenantRegistry, registry_url: str
) -> None:
    rounds = [
        [
            recorded(registry, f"proc{number}-shop", "prod").request_id,
            recorded(registry, f"proc{number}", "shop-prod").request_id,
        ]
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
        won = [rid for rid in pair if outcomes[rid] == "TenantRecord"]
        assert len(won) == 1, [outcomes[rid] for rid in pair]
        [lost] = set(pair) - set(won)
        assert outcomes[lost].endswith(f"the address proc{number}-shop-prod is taken")


# request ids scoped to their caller ----------------------------------------------------------
ID = "6f1c2b9e-0d7a-4c1e-9a55-3b7f1f0e2d11"


def test_the_same_caller_gets_its_request_back_or_the_fields_that_differ(
    registry: TenantRegistry,
) -> None:
    first, created = registry.requests.submit(
        request("acme", "corp", request_id=ID), exclusive_slug=True
    )
    again, created_again = registry.requests.submit(
        request("acme", "corp", request_id=ID), exclusive_slug=True
    )
    assert created and (again, created_again) == (first, False)

    with pytest.raises(RequestConflict) as conflict:
        registry.requests.submit(request("acme", "corp", plan="free", request_id=ID))
    assert str(conflict.value) == f"request {ID} was already submitted with another plan"
    assert not isinstance(conflict.value, RequestIdTaken)


@pytest.mark.parametrize(
    "caller",
    [
        {"subject": "mallory"},  # another subject, the same body
        {"subject": "mallory", "plan": "free"},
        {"subject": "alice", "role": "platform-admin"},  # the same name, another role
        {"subject": "alice", "org": "rivals"},  # the same name in another org
    ],
)
def test_another_callers_request_id_reveals_nothing_of_its_request(
    registry: TenantRegistry, caller: dict[str, str]
) -> None:
    first, _ = registry.requests.submit(request("acme", "corp", request_id=ID))
    fields = {"org": "corp", **caller}

    with pytest.raises(RequestIdTaken) as refused:
        registry.requests.submit(request("acme", request_id=ID, **fields))

    assert str(refused.value) == "this request id cannot be used; send a new one"
    assert registry.requests.get(ID) == first  # unchanged


def test_a_platform_admin_gets_its_own_request_back_whatever_the_org(
    registry: TenantRegistry,
) -> None:
    registry.requests.submit(request("acme", "corp", role="platform-admin", request_id=ID))
    with pytest.raises(RequestConflict) as conflict:
        registry.requests.submit(request("acme", "other", role="platform-admin", request_id=ID))
    assert str(conflict.value).endswith("already submitted with another org, admin_email")


# the migration -------------------------------------------------------------------------------
def test_the_upgrade_backfills_keys_and_the_older_of_two_sharing_one_keeps_it(
    registry_url: str,
) -> None:
    migrate.upgrade(registry_url, "0004")
    engine = make_engine(registry_url, pooled=False)
    rows = [  # tenant, slug, org, live_slug, created
        ("t1", "shop-prod", "zeta", "shop-prod", "2024-01-01 00:00:01"),
        ("t2", "shop", "prod-zeta", "shop", "2024-01-01 00:00:02"),  # the incident of issue 18
        ("t3", "acme", "corp", None, "2024-01-01 00:00:03"),  # decommissioned
        ("t4", "beta-one", "corp", "beta-one", "2024-01-01 00:00:04"),
    ]
    try:
        with engine.begin() as conn:
            for tenant_id, slug, org, live, created in rows:
                insert_tenant(conn, tenant_id, slug, org, live, created)
        migrate.upgrade(registry_url)
        with engine.connect() as conn:
            found = conn.execute(text("SELECT tenant_id, live_key FROM tenants ORDER BY 1"))
            assert [tuple(r) for r in found] == [
                ("t1", "shop-prod-zeta"),
                ("t2", None),
                ("t3", None),
                ("t4", "beta-one-corp"),
            ]
    finally:
        engine.dispose()
    reopened = TenantRegistry.open(registry_url)
    try:
        with pytest.raises(SlugInUse, match="the address beta-one-corp is taken"):
            reopened.requests.submit(request("beta", "one-corp"), exclusive_slug=True)
    finally:
        reopened.close()


def insert_tenant(
    conn: Any, tenant_id: str, slug: str, org: str, live: str | None, at: str
) -> None:
    values = {"t": tenant_id, "r": f"r-{tenant_id}", "slug": slug, "org": org, "at": at}
    conn.execute(
        text(
            "INSERT INTO requests (request_id, slug, org, plan, admin_email, subject, role, state,"
            " tenant_id, created_at, updated_at) VALUES (:r, :slug, :org, 'team',"
            " 'a@example.com', 'alice', 'org-admin', 'launched', :t, :at, :at)"
        ),
        values,
    )
    state = "active" if live else "decommissioned"
    conn.execute(
        text(
            "INSERT INTO tenants (tenant_id, request_id, slug, org, plan, admin_email, state,"
            " live_slug, created_at, updated_at) VALUES (:t, :r, :slug, :org, 'team',"
            " 'a@example.com', :state, :live, :at, :at)"
        ),
        {**values, "state": state, "live": live},
    )


def test_the_key_is_a_unique_index_in_the_migrated_schema(registry_url: str) -> None:
    migrate.upgrade(registry_url)
    engine = make_engine(registry_url, pooled=False)
    try:
        with engine.connect() as conn:
            indexes = {i["name"]: i for i in inspect(conn).get_indexes("tenants")}
            assert indexes["uq_tenants_live_key"]["column_names"] == ["live_key"]
            assert indexes["uq_tenants_live_key"]["unique"]
    finally:
        engine.dispose()

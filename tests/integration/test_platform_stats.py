"""The platform page's registry reads (`registry.platform_stats`) on SQLite and PostgreSQL: tenants
by state, the last hour's submit-to-active and failures, and the tenants held past their plan's
budget. Tenants are made with the registry's own methods, then their moments are back-dated in
the registry's database, as if they had happened then."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from tenant_pipelines.domain.records import TenantRecord
from tenant_pipelines.domain.request import TenantRequest
from tenant_pipelines.domain.states import TenantState
from tenant_pipelines.registry.schema import requests, tenants
from tenant_pipelines.registry.store import TenantRegistry

pytestmark = pytest.mark.integration

HOUR = timedelta(hours=1)


def seeded(registry: TenantRegistry, slug: str, plan: str = "team", *path: str) -> TenantRecord:
    """A submitted request, its tenant reserved (provisioning), then moved along `path`."""
    request = TenantRequest.parse(
        {
            "slug": slug,
            "org": "acme",
            "plan": plan,
            "admin_email": f"admin@{slug}.example.com",
            "requested_by": {"subject": "seed", "role": "platform-admin"},
        }
    )
    record, _ = registry.requests.submit(request)
    tenant = registry.tenants.reserve(registry.requests.get(record.request_id))
    for state in path:
        failed_step = "deploy" if state == TenantState.FAILED else None
        tenant = registry.tenants.transition(tenant.tenant_id, state, failed_step=failed_step)
    return tenant


def backdate(registry: TenantRegistry, tenant: TenantRecord, **moments: datetime) -> None:
    """Set the tenant's `created_at`/`updated_at` (and `submitted`: its request's creation)."""
    submitted = moments.pop("submitted", None)
    with registry.db.write() as conn:
        if moments:
            mine = tenants.c.tenant_id == tenant.tenant_id
            conn.execute(update(tenants).where(mine).values(**moments))
        if submitted is not None:
            its = requests.c.request_id == tenant.request_id
            conn.execute(update(requests).where(its).values(created_at=submitted))


def activated(
    registry: TenantRegistry, slug: str, plan: str, at: datetime, after_s: float
) -> TenantRecord:
    """A tenant active since `at`, whose request was submitted `after_s` seconds before."""
    tenant = seeded(registry, slug, plan, TenantState.ACTIVE)
    backdate(registry, tenant, updated_at=at, submitted=at - timedelta(seconds=after_s))
    return tenant


def test_every_state_is_counted_and_a_state_without_tenants_reads_zero(
    registry: TenantRegistry,
) -> None:
    stats = registry.platform_stats
    assert stats.tenants_by_state() == {state.value: 0 for state in TenantState}
    seeded(registry, "one-active", "team", TenantState.ACTIVE)
    seeded(registry, "two-active", "free", TenantState.ACTIVE)
    seeded(registry, "broken", "team", TenantState.FAILED)
    seeded(registry, "starting", "team")
    seeded(registry, "leaving", "team", TenantState.ACTIVE, TenantState.DECOMMISSIONING)
    assert stats.tenants_by_state() == {
        "provisioning": 1,
        "active": 2,
        "failed": 1,
        "decommissioning": 1,
        "decommissioned": 0,
    }
    assert list(stats.tenants_by_state()) == [state.value for state in TenantState]


def test_submit_to_active_counts_the_last_hours_activations_by_plan(
    registry: TenantRegistry,
) -> None:
    now = datetime.now(UTC)
    recent = now - timedelta(minutes=5)
    for slug, after_s in (("team-a", 10), ("team-b", 20), ("team-c", 100.5)):
        activated(registry, slug, "team", recent, after_s)
    activated(registry, "ent-a", "enterprise", now - timedelta(minutes=59), 30)
    activated(registry, "team-old", "team", now - 2 * HOUR, 5)  # before the hour
    backdate(registry, seeded(registry, "team-busy"), submitted=now - 2 * HOUR)  # not active

    stats = registry.platform_stats
    durations = stats.activation_durations(now - HOUR)
    assert sorted(durations["team"]) == [10.0, 20.0, 100.5]
    assert durations["enterprise"] == [30.0]
    assert "free" not in durations  # no activation: the page says "no activations"

    latencies = stats.activation_latencies(now - HOUR)
    assert set(latencies) == {"team", "enterprise"}
    team = latencies["team"]
    assert (team.activations, team.p50_s, team.p95_s) == (3, 20.0, 100.5)  # nearest rank
    enterprise = latencies["enterprise"]
    assert (enterprise.activations, enterprise.p50_s, enterprise.p95_s) == (1, 30.0, 30.0)


def test_an_active_tenant_later_decommissioned_no_longer_counts(registry: TenantRegistry) -> None:
    now = datetime.now(UTC)
    tenant = activated(registry, "gone-soon", "team", now - timedelta(minutes=1), 12)
    assert registry.platform_stats.activation_durations(now - HOUR) == {"team": [12.0]}
    registry.tenants.transition(tenant.tenant_id, TenantState.DECOMMISSIONING)
    assert registry.platform_stats.activation_durations(now - HOUR) == {}


def test_the_last_hours_failures_are_counted_by_the_step_they_failed_at(
    registry: TenantRegistry,
) -> None:
    now = datetime.now(UTC)
    seeded(registry, "dep-one", "team", TenantState.FAILED)
    seeded(registry, "dep-two", "free", TenantState.FAILED)
    early = seeded(registry, "dep-old", "team", TenantState.FAILED)
    backdate(registry, early, updated_at=now - 2 * HOUR)  # failed before the hour
    allocate = seeded(registry, "alloc-one", "team")
    registry.tenants.transition(allocate.tenant_id, TenantState.FAILED, failed_step="allocate")
    unnamed = seeded(registry, "no-step", "team")
    registry.tenants.transition(unnamed.tenant_id, TenantState.FAILED)
    retried = seeded(registry, "retried", "team", TenantState.FAILED, TenantState.PROVISIONING)
    assert retried.failed_step is None  # provisioning again: not a failure now

    failures = registry.platform_stats.failures_by_step(now - HOUR)
    assert failures == {"deploy": 2, "allocate": 1, None: 1}
    assert list(failures) == ["deploy", "allocate", None]  # most first


def test_tenants_held_past_their_plans_budget_are_stuck_longest_first(
    registry: TenantRegistry,
) -> None:
    now = datetime.now(UTC)

    def ago(seconds: float) -> datetime:
        return now - timedelta(seconds=seconds)

    # free: 300 s, team: 600 s, enterprise: 900 s (domain/plans.py)
    slow = seeded(registry, "slow-free", "free")
    backdate(registry, slow, created_at=ago(400), updated_at=ago(400))
    young = seeded(registry, "young-free", "free")
    backdate(registry, young, created_at=ago(200), updated_at=ago(200))
    # Provisioning counts from creation: a run recorded since (updated_at) does not reset it.
    rerun = seeded(registry, "rerun-team", "team")
    backdate(registry, rerun, created_at=ago(700), updated_at=ago(5))
    leaving = seeded(registry, "leaving-ent", "enterprise", "active", "decommissioning")
    backdate(registry, leaving, created_at=ago(86_400), updated_at=ago(1000))
    # Decommissioning counts from when it began (updated_at), not from the tenant's creation.
    just_left = seeded(registry, "just-left", "team", "active", "decommissioning")
    backdate(registry, just_left, created_at=ago(86_400), updated_at=ago(60))
    old_active = seeded(registry, "old-active", "free", "active")
    backdate(registry, old_active, created_at=ago(86_400), updated_at=ago(86_400))
    old_failed = seeded(registry, "old-failed", "free", "failed")
    backdate(registry, old_failed, created_at=ago(86_400), updated_at=ago(86_400))

    stuck = registry.platform_stats.stuck(now)
    assert [(t.slug, t.state, t.plan) for t in stuck] == [
        ("leaving-ent", "decommissioning", "enterprise"),
        ("rerun-team", "provisioning", "team"),
        ("slow-free", "provisioning", "free"),
    ]
    leaving_row, rerun_row, slow_row = stuck
    assert leaving_row.budget_s == 900 and leaving_row.held_s == pytest.approx(1000, abs=1)
    assert abs((leaving_row.since - ago(1000)).total_seconds()) < 1
    assert rerun_row.held_s == pytest.approx(700, abs=1) and rerun_row.budget_s == 600
    assert slow_row.org == "acme" and slow_row.held_s == pytest.approx(400, abs=1)


def test_a_tenant_exactly_at_its_budget_is_not_yet_stuck(registry: TenantRegistry) -> None:
    now = datetime.now(UTC)
    edge = seeded(registry, "on-the-edge", "free")
    backdate(registry, edge, created_at=now - timedelta(seconds=300))
    assert registry.platform_stats.stuck(now) == []
    assert [t.slug for t in registry.platform_stats.stuck(now + timedelta(seconds=1))] == [
        "on-the-edge"
    ]

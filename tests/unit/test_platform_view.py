"""What the platform page makes of the registry's aggregates (`api.platform_view`), over a fake
store: who may open it, a plan without activations, phases by name, the stuck list's words."""

from datetime import UTC, datetime, timedelta

import pytest

from tenant_pipelines.api.platform_view import (
    LAST_HOUR,
    NO_ACTIVATIONS,
    platform_view,
    require_platform_admin,
)
from tenant_pipelines.domain.access import Caller, Forbidden
from tenant_pipelines.domain.plans import Role
from tenant_pipelines.registry.platform_stats import Latency, StuckTenant

pytestmark = pytest.mark.unit

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


class FakeStats:
    """The four reads, with answers fixed; it records the moments it was asked about."""

    def __init__(self) -> None:
        self.asked: list[datetime] = []

    def tenants_by_state(self) -> dict[str, int]:
        return {"provisioning": 1, "active": 4, "failed": 2, "decommissioning": 0}

    def activation_latencies(self, since: datetime) -> dict[str, Latency]:
        self.asked.append(since)
        return {"team": Latency("team", 3, 12.5, 61.0)}

    def failures_by_step(self, since: datetime) -> dict[str | None, int]:
        self.asked.append(since)
        return {"deploy": 2, None: 1}

    def stuck(self, now: datetime) -> list[StuckTenant]:
        self.asked.append(now)
        since = now - timedelta(seconds=700)
        return [StuckTenant("slow", "acme", "free", "provisioning", since, 700.0, 300)]


def caller(role: Role) -> Caller:
    return Caller("someone", role, None if role == Role.PLATFORM_ADMIN else "acme", "t1")


def test_only_a_platform_admin_may_open_the_page() -> None:
    require_platform_admin(caller(Role.PLATFORM_ADMIN))
    for role in (Role.ORG_ADMIN, Role.VIEWER, Role.METRICS):
        with pytest.raises(Forbidden, match=f"role {role} may not open the platform page"):
            require_platform_admin(caller(role))


def test_the_view_reads_the_last_hour_and_the_stuck_list_as_of_now() -> None:
    stats = FakeStats()
    view = platform_view(stats, NOW)  # type: ignore[arg-type]
    assert stats.asked == [NOW - LAST_HOUR, NOW - LAST_HOUR, NOW]
    assert view.since == NOW - timedelta(hours=1)


def test_every_state_is_charted_with_its_count() -> None:
    view = platform_view(FakeStats(), NOW)  # type: ignore[arg-type]
    assert [(b.full_label, b.text, b.kind) for b in view.states.bars] == [
        ("provisioning", "1", "provisioning"),
        ("active", "4", "active"),
        ("failed", "2", "failed"),
        ("decommissioning", "0", "decommissioning"),
    ]


def test_a_plan_without_activations_says_so_and_the_others_get_p50_and_p95() -> None:
    view = platform_view(FakeStats(), NOW)  # type: ignore[arg-type]
    rows = [(b.full_label, b.text, b.drawn) for b in view.latency.bars]
    assert rows == [
        ("free", NO_ACTIVATIONS, False),
        ("team p50", "12.5 s", True),
        ("team p95", "1 min 01 s", True),
        ("enterprise", NO_ACTIVATIONS, False),
    ]
    by_plan = {row.plan: row for row in view.latencies}
    assert by_plan["team"].activations == 3 and by_plan["team"].p95 == "1 min 01 s"
    assert by_plan["free"].p50 is None and by_plan["enterprise"].activations == 0


def test_failures_are_named_as_the_timeline_names_their_phase() -> None:
    view = platform_view(FakeStats(), NOW)  # type: ignore[arg-type]
    assert [(r.step, r.name, r.count) for r in view.failure_rows] == [
        ("deploy", "Deploy workloads", 2),
        ("", "unknown step", 1),
    ]
    assert view.failures is not None and view.failures.bars[0].text == "2"


def test_no_failure_draws_no_failure_chart() -> None:
    class Quiet(FakeStats):
        def failures_by_step(self, since: datetime) -> dict[str | None, int]:
            return {}

    assert platform_view(Quiet(), NOW).failures is None  # type: ignore[arg-type]


def test_a_stuck_tenant_reads_how_long_against_its_budget() -> None:
    (row,) = platform_view(FakeStats(), NOW).stuck  # type: ignore[arg-type]
    assert (row.slug, row.org, row.plan, row.state) == ("slow", "acme", "free", "provisioning")
    assert (row.held, row.budget) == ("11 min 40 s", "5 min 00 s")

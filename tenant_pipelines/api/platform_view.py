"""What the console's platform page (`/console/platform`) shows: every org's tenants by state, the
last hour's submit-to-active and failures, and the tenants held past their plan's budget.

It shows every org at once, so only a platform-admin may open it (anyone else is refused,
rather than shown a part: the aggregates would still speak of other orgs).
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tenant_pipelines.api.charts import BarChart, Datum, bar_chart, seconds_text
from tenant_pipelines.domain.access import Caller, Forbidden
from tenant_pipelines.domain.events import STEP_NAMES
from tenant_pipelines.domain.plans import PLANS, Role
from tenant_pipelines.registry.platform_stats import Latency, PlatformStatsStore, StuckTenant

LAST_HOUR = timedelta(hours=1)
NO_ACTIVATIONS = "no activations"
UNKNOWN_STEP = "unknown step"


@dataclass(frozen=True)
class LatencyRow:
    plan: str
    activations: int
    p50: str | None  # None: no activation in the hour
    p95: str | None


@dataclass(frozen=True)
class FailureRow:
    step: str  # as recorded (`tenants.failed_step`)
    name: str  # as the timeline names it
    count: int


@dataclass(frozen=True)
class StuckRow:
    slug: str
    org: str
    plan: str
    state: str
    held: str
    budget: str
    since: datetime


@dataclass(frozen=True)
class PlatformView:
    now: datetime
    since: datetime  # the start of "the last hour"
    states: BarChart
    latency: BarChart
    latencies: list[LatencyRow]
    failures: BarChart | None  # None: no failure in the hour
    failure_rows: list[FailureRow]
    stuck: list[StuckRow]


def require_platform_admin(caller: Caller) -> None:
    """Forbidden for any role but platform-admin: the page is every org's."""
    if caller.role != Role.PLATFORM_ADMIN:
        raise Forbidden(f"role {caller.role} may not open the platform page (it shows every org)")


def platform_view(stats: PlatformStatsStore, now: datetime | None = None) -> PlatformView:
    """Four registry reads, as of `now` (by default, now)."""
    now = now or datetime.now(UTC)
    since = now - LAST_HOUR
    latencies = stats.activation_latencies(since)
    failures = failure_rows(stats.failures_by_step(since))
    return PlatformView(
        now=now,
        since=since,
        states=states_chart(stats.tenants_by_state()),
        latency=latency_chart(latencies),
        latencies=[latency_row(plan, latencies.get(plan)) for plan in _plans(latencies)],
        failures=failures_chart(failures) if failures else None,
        failure_rows=failures,
        stuck=[stuck_row(tenant) for tenant in stats.stuck(now)],
    )


def states_chart(counts: dict[str, int]) -> BarChart:
    data = [Datum(state, count, str(count), kind=state) for state, count in counts.items()]
    return bar_chart("chart-states", "Tenants by state", data)


def _plans(latencies: dict[str, Latency]) -> list[str]:
    """The catalog's plans in its order, then any other plan that had activations."""
    return [*PLANS, *sorted(set(latencies) - set(PLANS))]


def latency_chart(latencies: dict[str, Latency]) -> BarChart:
    """Two bars a plan (p50, p95) on one scale, or the words "no activations"."""
    data: list[Datum] = []
    for plan in _plans(latencies):
        latency = latencies.get(plan)
        if latency is None:
            data.append(Datum(plan, None, NO_ACTIVATIONS, kind="none"))
            continue
        data.append(Datum(f"{plan} p50", latency.p50_s, seconds_text(latency.p50_s), "p50"))
        data.append(Datum(f"{plan} p95", latency.p95_s, seconds_text(latency.p95_s), "p95"))
    return bar_chart("chart-latency", "Submit to active in the last hour, p50 and p95", data)


def latency_row(plan: str, latency: Latency | None) -> LatencyRow:
    if latency is None:
        return LatencyRow(plan, 0, None, None)
    return LatencyRow(
        plan, latency.activations, seconds_text(latency.p50_s), seconds_text(latency.p95_s)
    )


def failure_rows(counts: dict[str | None, int]) -> list[FailureRow]:
    rows = []
    for step, count in counts.items():
        name = STEP_NAMES.get(step or "", step or UNKNOWN_STEP)
        rows.append(FailureRow(step or "", name, count))
    return rows


def failures_chart(rows: list[FailureRow]) -> BarChart:
    data = [Datum(row.name, row.count, str(row.count), kind="failed") for row in rows]
    return bar_chart("chart-failures", "Failures by phase in the last hour", data)


def stuck_row(tenant: StuckTenant) -> StuckRow:
    return StuckRow(
        slug=tenant.slug,
        org=tenant.org,
        plan=tenant.plan,
        state=tenant.state,
        held=seconds_text(tenant.held_s),
        budget=seconds_text(tenant.budget_s),
        since=tenant.since,
    )

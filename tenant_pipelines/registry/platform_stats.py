"""What the console's platform page reads of the registry (`registry.platform_stats`): tenants by
state, the activations and failures since a moment, and the tenants held longer than their
plan's budget.

Grouped or filtered reads of `tenants` (joined to `requests` for the submission time), with the
moments computed in Python and passed as parameters: no date arithmetic in SQL, so the same
statements run on SQLite and PostgreSQL. The page shows every org, so these reads are for a
platform-admin only (the console checks the role before it calls them).
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, func, or_, select

from tenant_pipelines.domain.plans import PLANS
from tenant_pipelines.domain.states import TenantState
from tenant_pipelines.registry.engine import Database
from tenant_pipelines.registry.schema import requests, tenants
from tenant_pipelines.support.percentiles import nearest_rank

# Whose clock runs against the plan's budget (`Plan.max_runtime_s`, the whole-run bound).
HELD_STATES = (TenantState.PROVISIONING, TenantState.DECOMMISSIONING)


@dataclass(frozen=True)
class Latency:
    """Submit-to-active of one plan's activations: nearest-rank percentiles
    (`support.percentiles`), in seconds."""

    plan: str
    activations: int
    p50_s: float
    p95_s: float


@dataclass(frozen=True)
class StuckTenant:
    """A tenant provisioning or decommissioning for longer than its plan's budget."""

    slug: str
    org: str
    plan: str
    state: str
    since: datetime  # when its clock started (see `PlatformStatsStore.stuck`)
    held_s: float
    budget_s: int


class PlatformStatsStore:
    """Platform-wide aggregates over the tenants table: `registry.platform_stats`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def tenants_by_state(self) -> dict[str, int]:
        """How many tenants are in each state, every state named (0 for none), in the state
        machine's order: a chart whose bars come and go would read as a change of scale."""
        query = select(tenants.c.state, func.count()).group_by(tenants.c.state)
        with self._db.read() as conn:
            counted = {str(state): int(n) for state, n in conn.execute(query)}
        return {state.value: counted.get(state.value, 0) for state in TenantState}

    def activation_durations(self, since: datetime) -> dict[str, list[float]]:
        """Seconds from each request's submission (`requests.created_at`) to its tenant's
        activation, for tenants active now whose `updated_at` is at or after `since`, by plan.
        That `updated_at` is the activation: no phase writes to an active tenant, save a run
        re-executed on it by hand (its `record_run` moves `updated_at`). A tenant that failed
        and was retried to active counts its failure and its retry too: it is what the
        submitter waited."""
        query = (
            select(tenants.c.plan, requests.c.created_at, tenants.c.updated_at)
            .join(requests, requests.c.request_id == tenants.c.request_id)
            .where(tenants.c.state == TenantState.ACTIVE.value, tenants.c.updated_at >= since)
        )
        durations: dict[str, list[float]] = defaultdict(list)
        with self._db.read() as conn:
            for plan, submitted, activated in conn.execute(query):
                durations[str(plan)].append((activated - submitted).total_seconds())
        return dict(durations)

    def activation_latencies(self, since: datetime) -> dict[str, Latency]:
        """p50 and p95 of `activation_durations` by plan; a plan without one is absent."""
        return {
            plan: Latency(plan, len(seconds), nearest_rank(seconds, 50), nearest_rank(seconds, 95))
            for plan, seconds in self.activation_durations(since).items()
        }

    def failures_by_step(self, since: datetime) -> dict[str | None, int]:
        """Tenants failed now whose failure (`updated_at`) is at or after `since`, counted by
        the step they failed at (None: not recorded), most first (then by name, None last)."""
        query = (
            select(tenants.c.failed_step, func.count())
            .where(tenants.c.state == TenantState.FAILED.value, tenants.c.updated_at >= since)
            .group_by(tenants.c.failed_step)
        )
        with self._db.read() as conn:
            counted = [(step, int(n)) for step, n in conn.execute(query)]
        counted.sort(key=lambda item: (-item[1], item[0] is None, item[0] or ""))
        return dict(counted)

    def stuck(self, now: datetime) -> list[StuckTenant]:
        """Tenants held longer than their plan's budget at `now`, the longest first.

        A provisioning tenant's clock starts at its creation (`created_at`), as the
        `tenant_oldest_provisioning_seconds` gauge's does: its `updated_at` moves at each run it
        records, which would hide a tenant retried over and over. A decommissioning tenant's
        starts when it entered that state (`updated_at`): its creation says nothing of the
        decommission. A plan missing from the catalog has no budget and is never listed."""
        columns = (tenants.c.slug, tenants.c.org, tenants.c.plan, tenants.c.state)
        query = select(*columns, tenants.c.created_at, tenants.c.updated_at).where(
            tenants.c.state.in_([state.value for state in HELD_STATES]), _over_budget(now)
        )
        with self._db.read() as conn:
            rows = list(conn.execute(query))
        found = [_stuck(now, *row) for row in rows]
        return sorted(found, key=lambda tenant: (-tenant.held_s, tenant.slug))


def _clock_start(state: str, created_at: datetime, updated_at: datetime) -> datetime:
    return created_at if state == TenantState.PROVISIONING else updated_at


def _over_budget(now: datetime) -> ColumnElement[bool]:
    """Per plan, a clock started before `now` minus the plan's budget."""
    by_plan = []
    for name, plan in PLANS.items():
        cutoff = now - timedelta(seconds=plan.max_runtime_s)
        provisioning = and_(
            tenants.c.state == TenantState.PROVISIONING.value, tenants.c.created_at < cutoff
        )
        decommissioning = and_(
            tenants.c.state == TenantState.DECOMMISSIONING.value, tenants.c.updated_at < cutoff
        )
        by_plan.append(and_(tenants.c.plan == name, or_(provisioning, decommissioning)))
    return or_(*by_plan)


def _stuck(
    now: datetime,
    slug: str,
    org: str,
    plan: str,
    state: str,
    created_at: datetime,
    updated_at: datetime,
) -> StuckTenant:
    since = _clock_start(state, created_at, updated_at)
    held = (now - since).total_seconds()
    return StuckTenant(slug, org, plan, state, since, held, PLANS[plan].max_runtime_s)

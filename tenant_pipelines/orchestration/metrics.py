"""What the jobs and the runs tell the metrics (`support.metrics`): counted where Dagster meets
the saga, so the saga stays plain Python and every door's runs are counted once.

The gauges (runs queued and in flight, tenants by state, the oldest provisioning tenant) are not
kept by any process: `PlatformCollector` reads them from Dagster's run storage and the registry
at each scrape, so they are right whatever process started or ended what.
"""

from collections import Counter as Tally
from collections.abc import Iterator
from datetime import UTC, datetime

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tenant_pipelines.domain.errors import PermanentError, ReadinessTimeout
from tenant_pipelines.domain.events import PROVISION_STEPS, AuditEvent, EventType
from tenant_pipelines.domain.mail import EmailStatus
from tenant_pipelines.domain.plans import PLANS
from tenant_pipelines.domain.states import TenantState
from tenant_pipelines.domain.tenant import TenantSpec
from tenant_pipelines.orchestration.resources import TenantPlatform
from tenant_pipelines.registry.store import TenantRegistry
from tenant_pipelines.saga.deadline import PhaseTimeout
from tenant_pipelines.service.jobs import PLAN_TAG
from tenant_pipelines.support import metrics
from tenant_pipelines.support.metrics import Door, FailureKind

IN_FLIGHT = (DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING)
UNKNOWN = "unknown"  # a run without the plan tag (none of ours), an event without a step


def failure_kind(error: BaseException) -> FailureKind:
    if isinstance(error, PhaseTimeout | ReadinessTimeout):
        return FailureKind.TIMEOUT
    if isinstance(error, PermanentError):
        return FailureKind.PERMANENT
    return FailureKind.TRANSIENT


def count_phase_failure(phase: str, plan: str, error: BaseException) -> None:
    kind = failure_kind(error)
    metrics.PHASE_FAILURES.labels(phase=str(phase), plan=plan, kind=kind).inc()


def count_event(event: AuditEvent, plan: str | None) -> None:
    """The feed's events that the metrics count: a tenant failed, a compensation finished."""
    if event.type == EventType.FAILED:
        phase = event.step or UNKNOWN
        metrics.PROVISIONINGS_FAILED.labels(plan=plan or UNKNOWN, phase=phase).inc()
    elif event.type == EventType.COMPENSATION_FINISHED:
        metrics.COMPENSATIONS.inc()


def count_activation(platform: TenantPlatform, tenant: TenantSpec) -> None:
    """The tenant's time from its request's record (the submission) to now, when it is active."""
    request = platform.build().registry.requests.get(tenant.request_id)
    seconds = (datetime.now(UTC) - request.created_at).total_seconds()
    metrics.SUBMIT_TO_ACTIVE.labels(plan=tenant.plan).observe(max(seconds, 0.0))


def export_zero_series() -> None:
    """Every label set the counters can take, at 0, from the process that serves `/metrics`: a
    counter that first appears at 1 after a restart would hide that first event from `rate()`
    and `increase()` (the alert rules use them)."""
    phases = [str(step) for step in PROVISION_STEPS]
    for plan in PLANS:
        metrics.REQUESTS_SUBMITTED.labels(plan=plan)
        for phase in phases:
            metrics.PROVISIONINGS_FAILED.labels(plan=plan, phase=phase)
            for kind in FailureKind:
                metrics.PHASE_FAILURES.labels(phase=phase, plan=plan, kind=kind)
    for door in Door:
        metrics.RETRIES.labels(started_by=door)
        metrics.DECOMMISSIONS.labels(started_by=door)
    for status in EmailStatus:
        metrics.WELCOME_EMAILS.labels(outcome=str(status))


class PlatformCollector(Collector):
    """The gauges, read at each scrape: one query to Dagster for the runs waiting or running,
    one grouped query to the registry for the tenants."""

    def __init__(self, instance: DagsterInstance, registry: TenantRegistry) -> None:
        self._instance = instance
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from self._runs()
        yield from self._tenants()

    def _runs(self) -> Iterator[Metric]:
        statuses = [DagsterRunStatus.QUEUED, *IN_FLIGHT]
        records = self._instance.get_run_records(filters=RunsFilter(statuses=statuses))
        queued: Tally[str] = Tally()
        running: Tally[str] = Tally()
        for record in records:
            run = record.dagster_run
            plan = run.tags.get(PLAN_TAG, UNKNOWN)
            (queued if run.status == DagsterRunStatus.QUEUED else running)[plan] += 1
        yield _by_plan("tenant_runs_queued", "Runs waiting for a slot, by plan", queued)
        yield _by_plan("tenant_runs_in_flight", "Runs starting or running, by plan", running)

    def _tenants(self) -> Iterator[Metric]:
        census = self._registry.tenants.census()
        by_state: Tally[str] = Tally()
        oldest: dict[str, datetime] = {}
        for state, plan, count, created_at in census:
            by_state[state] += count
            if state == TenantState.PROVISIONING:
                oldest[plan] = min(created_at, oldest.get(plan, created_at))
        states = GaugeMetricFamily("tenant_tenants", "Tenants by state", labels=["state"])
        for state in TenantState:
            states.add_metric([str(state)], by_state[state])
        yield states
        now = datetime.now(UTC)
        ages = {plan: (now - moment).total_seconds() for plan, moment in oldest.items()}
        yield _by_plan(
            "tenant_oldest_provisioning_seconds",
            "How long the oldest tenant still provisioning has been, by plan (0: none)",
            ages,
        )
        budgets = {name: float(plan.max_runtime_s) for name, plan in PLANS.items()}
        yield _by_plan(
            "tenant_provisioning_budget_seconds",
            "The plan's bound on a whole provisioning run",
            budgets,
        )


def _by_plan(name: str, documentation: str, values: Tally[str] | dict[str, float]) -> Metric:
    """A gauge with one series per plan (0 for a plan without any) and per other tag seen."""
    family = GaugeMetricFamily(name, documentation, labels=["plan"])
    for plan in sorted({*PLANS, *values}):
        family.add_metric([plan], float(values.get(plan, 0)))
    return family

"""Backstop: every provisioning run that failed or was canceled gets exactly one compensation,
a compensation that fails is tried again (bounded), and no operation claim outlives its run.

The failure hook launches compensation when an op fails for good, and it finishes before the
run is marked failed; this sensor covers the runs whose hook never fired or died midway (killed
workers, canceled runs). Whether a run needs compensation is the saga's call, the same one the
hook makes (`service.compensation`); runs that Dagster will retry are resumed, not compensated.
When a compensation run ends without finishing, the saga's policy (`saga.operations.next_move`)
says whether to launch it again after a backoff or to give up and report
`tenant.provisioning.compensation_failed`. This module only adapts a sensor's tick to those
calls: which runs ended since the cursor, and the launches as run requests.
"""

from datetime import datetime

from dagster import (
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from tenant_pipelines.orchestration.feed import to_observation
from tenant_pipelines.orchestration.jobs import compensate_tenant
from tenant_pipelines.orchestration.resources import TenantPlatform
from tenant_pipelines.orchestration.runs import DagsterRuns, run_view
from tenant_pipelines.orchestration.sensor_launch import SensorLauncher
from tenant_pipelines.registry.store import TenantRegistry
from tenant_pipelines.service.claims import release_stale
from tenant_pipelines.service.compensation import compensate_failed_run, follow_up_compensations
from tenant_pipelines.service.context import ServiceContext
from tenant_pipelines.service.jobs import PROVISION_JOB

BACKSTOP_SENSOR = "compensation_backstop"
MAX_RUNS_PER_TICK = 50
ENDED = [DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]


def context_for(registry: TenantRegistry, instance: DagsterInstance) -> ServiceContext:
    """The service's context in a tick: a compensation given up is reported as a runless
    event, so it still reaches the feed."""
    return ServiceContext(
        registry,
        DagsterRuns(instance),
        report=lambda event: instance.report_runless_asset_event(to_observation(event)),
    )


def evaluate_backstop(
    ctx: ServiceContext, instance: DagsterInstance, launcher: SensorLauncher, cursor: str | None
) -> str | None:
    """Compensate the provisioning runs that ended since the cursor (their last update time),
    oldest first; the next cursor."""
    since = datetime.fromisoformat(cursor) if cursor else None
    records = instance.get_run_records(
        filters=RunsFilter(job_name=PROVISION_JOB, statuses=ENDED, updated_after=since),
        limit=MAX_RUNS_PER_TICK,
        order_by="update_timestamp",
        ascending=True,
    )
    for record in records:
        compensate_failed_run(ctx, run_view(record.dagster_run), launcher)
    return records[-1].update_timestamp.isoformat() if records else cursor


def backstop_tick(
    registry: TenantRegistry, instance: DagsterInstance, cursor: str | None
) -> tuple[list[RunRequest], str | None, list[str]]:
    """One tick: (run requests, next cursor, the stale claims released, described)."""
    ctx, launcher = context_for(registry, instance), SensorLauncher()
    cursor = evaluate_backstop(ctx, instance, launcher, cursor)
    follow_up_compensations(ctx, launcher)
    released = [f"the stale {c.kind} claim of run {c.run_id}" for c in release_stale(ctx)]
    return launcher.requests, cursor, released


def build_backstop_sensor(interval_s: int) -> SensorDefinition:
    @sensor(
        name=BACKSTOP_SENSOR,
        job=compensate_tenant,
        minimum_interval_seconds=interval_s,
        default_status=DefaultSensorStatus.RUNNING,
        description="Compensates failed or canceled provisioning runs the failure hook missed, "
        "launches failed compensations again (bounded) and releases stale operation claims.",
    )
    def compensation_backstop(
        context: SensorEvaluationContext, platform: TenantPlatform
    ) -> SensorResult:
        requests, cursor, released = backstop_tick(
            platform.build().registry, context.instance, context.cursor
        )
        for claim in released:
            context.log.info(f"released {claim}")
        return SensorResult(run_requests=requests, cursor=cursor)

    return compensation_backstop

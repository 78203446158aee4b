"""Backstop: every provisioning run that failed or was canceled gets exactly one compensation.

The failure hook launches compensation when an op fails for good, and it finishes before the
run is marked failed; this sensor covers the runs whose hook never fired or died midway (killed
workers, canceled runs). Whether a run needs compensation is the saga's call, the same one the
hook makes; runs that Dagster will retry are resumed, not compensated.
"""

from datetime import datetime

from dagster import (
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from tenant_pipelines.domain.events import Step
from tenant_pipelines.orchestration.jobs import compensate_tenant
from tenant_pipelines.orchestration.resources import TenantPlatform
from tenant_pipelines.orchestration.runs import (
    FAILED_RUN_TAG,
    PROVISION_JOB,
    ended_run,
    tenant_op_config,
    tenant_tags,
)
from tenant_pipelines.registry.store import TenantRegistry
from tenant_pipelines.saga.failure import claim_compensation

BACKSTOP_SENSOR = "compensation_backstop"
MAX_RUNS_PER_TICK = 50
ENDED = [DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]


def compensation_request(registry: TenantRegistry, run: DagsterRun) -> RunRequest | None:
    """The compensation this ended run still needs, if any."""
    tenant = claim_compensation(registry, ended_run(run))
    if tenant is None:
        return None
    return RunRequest(
        run_key=f"compensate:{run.run_id}",
        job_name=compensate_tenant.name,
        run_config=tenant_op_config(tenant, Step.COMPENSATE, failed_run_id=run.run_id),
        tags=tenant_tags(tenant, **{FAILED_RUN_TAG: run.run_id}),
    )


def evaluate_backstop(
    registry: TenantRegistry, instance: DagsterInstance, cursor: str | None
) -> tuple[list[RunRequest], str | None]:
    """Look at runs that ended since the cursor (their last update time), oldest first."""
    since = datetime.fromisoformat(cursor) if cursor else None
    records = instance.get_run_records(
        filters=RunsFilter(job_name=PROVISION_JOB, statuses=ENDED, updated_after=since),
        limit=MAX_RUNS_PER_TICK,
        order_by="update_timestamp",
        ascending=True,
    )
    requests = []
    for record in records:
        request = compensation_request(registry, record.dagster_run)
        if request is not None:
            requests.append(request)
    return requests, records[-1].update_timestamp.isoformat() if records else cursor


def build_backstop_sensor(interval_s: int) -> SensorDefinition:
    @sensor(
        name=BACKSTOP_SENSOR,
        job=compensate_tenant,
        minimum_interval_seconds=interval_s,
        default_status=DefaultSensorStatus.RUNNING,
        description="Compensates failed or canceled provisioning runs the failure hook missed.",
    )
    def compensation_backstop(
        context: SensorEvaluationContext, platform: TenantPlatform
    ) -> SensorResult:
        requests, cursor = evaluate_backstop(
            platform.registry.get(), context.instance, context.cursor
        )
        return SensorResult(run_requests=requests, cursor=cursor)

    return compensation_backstop

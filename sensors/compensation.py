"""Backstop: every provisioning run that failed or was canceled gets exactly one compensation.

The failure hook launches compensation when an op fails for good, and it finishes before the
run is marked failed; so when this sensor sees a failed run, a claim without a launched run means
the hook died midway. Runs that Dagster will retry (a crashed worker, `dagster/will_retry`) are
left to the retry: they resume, they are not compensated.
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

from resources.platform import TenantPlatform
from tenant_pipelines.compensation import compensate_tenant
from tenant_pipelines.registry import TenantRegistry
from tenant_pipelines.runs import (
    FAILED_RUN_TAG,
    PROVISION_JOB,
    REQUEST_TAG,
    tenant_op_config,
    tenant_tags,
)

BACKSTOP_SENSOR = "compensation_backstop"
WILL_RETRY_TAG = "dagster/will_retry"
MAX_RUNS_PER_TICK = 50
ENDED = [DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]


def compensation_request(registry: TenantRegistry, run: DagsterRun) -> RunRequest | None:
    """The compensation this ended run still needs, if any."""
    if run.tags.get(WILL_RETRY_TAG) == "true" or REQUEST_TAG not in run.tags:
        return None
    request = registry.get_request(run.tags[REQUEST_TAG])
    if request.tenant_id is None or request.run_id not in (run.run_id, run.root_run_id):
        return None  # refused in Validate, or a duplicate run that never owned the request
    tenant = registry.get_tenant_by_id(request.tenant_id)
    if not registry.claim_compensation(run.run_id, tenant.tenant_id):
        claim = registry.get_compensation(run.run_id)
        if claim is None or claim.compensation_run_id or claim.finished_at:
            return None  # the hook launched it (or it already ran)
    return RunRequest(
        run_key=f"compensate:{run.run_id}",
        job_name=compensate_tenant.name,
        run_config=tenant_op_config(tenant, "compensate", failed_run_id=run.run_id),
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

"""Backstop: every provisioning run that failed or was canceled gets exactly one compensation,
a compensation that fails is tried again (bounded), and no operation claim outlives its run.

The failure hook launches compensation when an op fails for good, and it finishes before the
run is marked failed; this sensor covers the runs whose hook never fired or died midway (killed
workers, canceled runs). Whether a run needs compensation is the saga's call, the same one the
hook makes; runs that Dagster will retry are resumed, not compensated. When a compensation run
ends without finishing, the saga's policy (`saga.operations.next_move`) says whether to launch
it again after a backoff or to give up and report `tenant.provisioning.compensation_failed`.
"""

from datetime import UTC, datetime

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
from tenant_pipelines.domain.records import CompensationRecord, TenantRecord
from tenant_pipelines.orchestration.feed import to_observation
from tenant_pipelines.orchestration.jobs import compensate_tenant
from tenant_pipelines.orchestration.operations import (
    LAUNCH_GRACE_S,
    claim_compensation_operation,
    claim_ended,
    release_ended,
)
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
from tenant_pipelines.saga.operations import (
    Move,
    compensation_failed_event,
    compensation_holder,
    next_move,
)

BACKSTOP_SENSOR = "compensation_backstop"
MAX_RUNS_PER_TICK = 50
ENDED = [DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]


def compensation_run_request(tenant: TenantRecord, failed_run_id: str, attempt: int) -> RunRequest:
    suffix = "" if attempt <= 1 else f":{attempt}"
    return RunRequest(
        run_key=f"compensate:{failed_run_id}{suffix}",
        job_name=compensate_tenant.name,
        run_config=tenant_op_config(tenant, Step.COMPENSATE, failed_run_id=failed_run_id),
        tags=tenant_tags(tenant, **{FAILED_RUN_TAG: failed_run_id}),
    )


def compensation_request(
    registry: TenantRegistry, instance: DagsterInstance, run: DagsterRun
) -> RunRequest | None:
    """The compensation this ended run still needs, if any, with the tenant claimed for it."""
    tenant = claim_compensation(registry, ended_run(run))
    if tenant is None or not claim_compensation_operation(registry, instance, tenant, run.run_id):
        return None
    return compensation_run_request(tenant, run.run_id, 1)


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
        request = compensation_request(registry, instance, record.dagster_run)
        if request is not None:
            requests.append(request)
    return requests, records[-1].update_timestamp.isoformat() if records else cursor


def attempt_end(
    registry: TenantRegistry, instance: DagsterInstance, claim: CompensationRecord
) -> datetime | None:
    """When the compensation's latest attempt ended without finishing; None while it may still
    be running (or being launched)."""
    if claim.compensation_run_id is None:
        holder = registry.get_operation(claim.tenant_id)
        if holder is not None and holder.holder == compensation_holder(claim.failed_run_id):
            return None if not claim_ended(instance)(holder) else holder.claimed_at
        age = (datetime.now(UTC) - claim.created_at).total_seconds()
        return claim.created_at if age > LAUNCH_GRACE_S else None
    record = instance.get_run_record_by_id(claim.compensation_run_id)
    if record is None:
        return claim.created_at
    if not record.dagster_run.is_finished:
        return None
    return (record.end_time and datetime.fromtimestamp(record.end_time, UTC)) or claim.created_at


def follow_up_compensations(
    registry: TenantRegistry, instance: DagsterInstance
) -> list[RunRequest]:
    """Launch again the compensations whose attempt failed (after their backoff); report those
    that have used up their attempts."""
    requests = []
    for claim in registry.compensations_in_progress(MAX_RUNS_PER_TICK):
        ended_at = attempt_end(registry, instance, claim)
        since = 0.0 if ended_at is None else (datetime.now(UTC) - ended_at).total_seconds()
        move = next_move(claim, ended_at is not None, since)
        tenant = registry.get_tenant_by_id(claim.tenant_id)
        if move == Move.GIVE_UP and registry.give_up_compensation(claim.failed_run_id):
            event = compensation_failed_event(registry, tenant, claim, claim.compensation_run_id)
            instance.report_runless_asset_event(to_observation(event))
            registry.release_operation(
                tenant.tenant_id, holder=compensation_holder(claim.failed_run_id)
            )
        elif move == Move.RELAUNCH:
            if not claim_compensation_operation(registry, instance, tenant, claim.failed_run_id):
                continue  # another operation holds the tenant: next tick
            if registry.record_compensation_attempt(claim.failed_run_id, claim.attempts):
                requests.append(
                    compensation_run_request(tenant, claim.failed_run_id, claim.attempts + 1)
                )
    return requests


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
        registry = platform.registry.get()
        requests, cursor = evaluate_backstop(registry, context.instance, context.cursor)
        requests += follow_up_compensations(registry, context.instance)
        for claim in release_ended(registry, context.instance):
            context.log.info(f"released the stale {claim.kind} claim of run {claim.run_id}")
        return SensorResult(run_requests=requests, cursor=cursor)

    return compensation_backstop

"""Intake: every pending tenant request becomes exactly one provisioning run.

Whoever wins the registry's compare-and-set `pending -> launched` launches the run: this sensor,
or `tenantctl request` submitting directly to a running webserver. The sensor also catches up on
launches that never produced a run: its own from the previous tick (the cursor lists them) and
anyone's that stayed unclaimed too long. Asking again is safe: the `run_key` is the request id,
and Validate's claim on the request lets only one run ever work on it.
"""

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from dagster import (
    DagsterInstance,
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from tenant_pipelines.domain.records import RequestRecord
from tenant_pipelines.domain.states import RequestState
from tenant_pipelines.orchestration.jobs import provision_tenant
from tenant_pipelines.orchestration.resources import TenantPlatform
from tenant_pipelines.orchestration.runs import (
    provision_run_config,
    provision_tags,
    runs_for_request,
)
from tenant_pipelines.registry.store import TenantRegistry

INTAKE_SENSOR = "tenant_request_intake"
MAX_REQUESTS_PER_TICK = 50
UNCLAIMED_AFTER = timedelta(seconds=30)


@dataclass(frozen=True)
class IntakeTick:
    run_requests: list[RunRequest]
    cursor: str  # JSON list of the request ids this tick asked runs for


def run_request(request: RequestRecord) -> RunRequest:
    return RunRequest(
        run_key=request.request_id,
        run_config=provision_run_config(request),
        tags=provision_tags(request),
    )


def _lost_launches(
    registry: TenantRegistry, instance: DagsterInstance, cursor: str | None
) -> list[RequestRecord]:
    """Launched requests with no run: ours from the last tick, anyone's after a while."""
    candidates = [registry.get_request(rid) for rid in (json.loads(cursor) if cursor else [])]
    stale_before = datetime.now(UTC) - UNCLAIMED_AFTER
    candidates += registry.unclaimed_launches(stale_before, MAX_REQUESTS_PER_TICK)
    lost: dict[str, RequestRecord] = {}
    for request in candidates:
        launched = request.state == RequestState.LAUNCHED
        if launched and not runs_for_request(instance, request.request_id):
            lost[request.request_id] = request
    return list(lost.values())


def evaluate_intake(
    registry: TenantRegistry, instance: DagsterInstance, cursor: str | None
) -> IntakeTick:
    launches = _lost_launches(registry, instance, cursor)
    for request in registry.requests_to_launch(MAX_REQUESTS_PER_TICK):
        if registry.mark_launched(request.request_id):  # lost: someone else launches it
            launches.append(request)
    ids = sorted(r.request_id for r in launches)
    return IntakeTick([run_request(r) for r in launches], json.dumps(ids))


def build_intake_sensor(interval_s: int) -> SensorDefinition:
    @sensor(
        name=INTAKE_SENSOR,
        job=provision_tenant,
        minimum_interval_seconds=interval_s,
        default_status=DefaultSensorStatus.RUNNING,
        description="Turns each pending tenant request into exactly one provisioning run.",
    )
    def tenant_request_intake(
        context: SensorEvaluationContext, platform: TenantPlatform
    ) -> SensorResult | SkipReason:
        tick = evaluate_intake(platform.registry.get(), context.instance, context.cursor)
        if not tick.run_requests:
            return SensorResult(skip_reason="no pending tenant requests", cursor=tick.cursor)
        return SensorResult(run_requests=tick.run_requests, cursor=tick.cursor)

    return tenant_request_intake

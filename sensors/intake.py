"""Intake: every pending tenant request becomes exactly one provisioning run.

The cursor holds the requests launched by earlier ticks whose run is not yet confirmed. A request
is marked `launched` only once a run carrying its id exists, so a tick that dies between asking
for the run and Dagster creating it loses nothing: the next tick asks again with the same
`run_key`, which Dagster deduplicates. Validate's claim on the request is the last guard.
"""

import json
from dataclasses import dataclass

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

from resources.platform import TenantPlatform
from tenant_pipelines.jobs import provision_tenant
from tenant_pipelines.registry import TenantRegistry
from tenant_pipelines.runs import provision_run_config, provision_tags, runs_for_request

INTAKE_SENSOR = "tenant_request_intake"
MAX_REQUESTS_PER_TICK = 50


@dataclass(frozen=True)
class IntakeTick:
    run_requests: list[RunRequest]
    confirmed: list[str]  # request ids marked launched in this tick
    cursor: str


def evaluate_intake(
    registry: TenantRegistry, instance: DagsterInstance, cursor: str | None
) -> IntakeTick:
    in_flight: list[str] = json.loads(cursor) if cursor else []
    confirmed, still_in_flight = [], []
    for request_id in in_flight:
        if runs_for_request(instance, request_id):
            registry.mark_launched(request_id)  # False if Validate already rejected it
            confirmed.append(request_id)
        else:
            still_in_flight.append(request_id)
    settled = set(confirmed)
    pending = [
        r for r in registry.requests_to_launch(MAX_REQUESTS_PER_TICK) if r.request_id not in settled
    ]
    run_requests = [
        RunRequest(
            run_key=r.request_id,
            run_config=provision_run_config(r),
            tags=provision_tags(r),
        )
        for r in pending
    ]
    next_in_flight = sorted({*still_in_flight, *(r.request_id for r in pending)})
    return IntakeTick(run_requests, confirmed, json.dumps(next_in_flight))


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
        if not tick.run_requests and tick.cursor == (context.cursor or "[]"):
            return SkipReason("no pending tenant requests")
        return SensorResult(run_requests=tick.run_requests, cursor=tick.cursor)

    return tenant_request_intake

"""Intake: every pending tenant request becomes exactly one provisioning run.

A thin adapter of the service's `launch_pending` (`service.submit`): whoever wins the registry's
compare-and-set `pending -> launched` launches the run (this sensor, or the API server for a
request submitted while the platform runs), and the sensor catches up on launches that never
produced a run. Asking again is safe: the `run_key` is the request id, and Validate's claim on
the request lets only one run ever work on it.
"""

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

from tenant_pipelines.orchestration.jobs import provision_tenant
from tenant_pipelines.orchestration.resources import TenantPlatform
from tenant_pipelines.orchestration.runs import DagsterRuns
from tenant_pipelines.orchestration.sensor_launch import SensorLauncher
from tenant_pipelines.registry.store import TenantRegistry
from tenant_pipelines.service.context import ServiceContext
from tenant_pipelines.service.submit import UNCLAIMED_AFTER, launch_pending

__all__ = ["UNCLAIMED_AFTER", "IntakeTick", "build_intake_sensor", "evaluate_intake"]
INTAKE_SENSOR = "tenant_request_intake"


@dataclass(frozen=True)
class IntakeTick:
    run_requests: list[RunRequest]
    cursor: str  # JSON list of the request ids this tick asked runs for


def evaluate_intake(
    registry: TenantRegistry, instance: DagsterInstance, cursor: str | None
) -> IntakeTick:
    """One tick of the service's `launch_pending`, its launches as run requests."""
    launcher = SensorLauncher()
    ctx = ServiceContext(registry, DagsterRuns(instance), launcher=None)
    cursor = launch_pending(ctx, cursor, launcher)
    return IntakeTick(launcher.requests, cursor)


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
        tick = evaluate_intake(platform.build().registry, context.instance, context.cursor)
        if not tick.run_requests:
            return SensorResult(skip_reason="no pending tenant requests", cursor=tick.cursor)
        return SensorResult(run_requests=tick.run_requests, cursor=tick.cursor)

    return tenant_request_intake

"""The code location: jobs, sensors and resources, assembled. No logic lives here."""

from dagster import Definitions, definitions

from sensors.backstop import build_backstop_sensor
from sensors.intake import build_intake_sensor
from tenant_pipelines.orchestration.hooks import LAUNCHER_RESOURCE
from tenant_pipelines.orchestration.jobs import (
    compensate_tenant,
    decommission_tenant,
    provision_tenant,
)
from tenant_pipelines.orchestration.resources import TenantPlatform
from tenant_pipelines.runtime.launchers import SiblingLaunchers
from tenant_pipelines.settings import Settings


def build_definitions(settings: Settings) -> Definitions:
    return Definitions(
        jobs=[provision_tenant, compensate_tenant, decommission_tenant],
        sensors=[
            build_intake_sensor(settings.sensor_interval_s),
            build_backstop_sensor(settings.sensor_interval_s),
        ],
        resources={
            "platform": TenantPlatform.for_settings(settings),
            # How a run's failure hook launches its compensation (orchestration.hooks).
            LAUNCHER_RESOURCE: SiblingLaunchers(),
        },
    )


@definitions
def defs() -> Definitions:
    """Loaded when the code location starts: the environment is read then, not at import."""
    return build_definitions(Settings.from_env())

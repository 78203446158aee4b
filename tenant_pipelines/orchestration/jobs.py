"""The three jobs: provision a tenant, compensate a failed provisioning run, decommission."""

from dagster import in_process_executor, job

from tenant_pipelines.orchestration.hooks import compensation_hook
from tenant_pipelines.orchestration.ops import (
    allocate,
    compensate,
    decommission,
    deploy,
    mark_active,
    send_welcome_emails,
    validate,
)
from tenant_pipelines.service.jobs import COMPENSATE_JOB, DECOMMISSION_JOB, PROVISION_JOB


@job(name=COMPENSATE_JOB, executor_def=in_process_executor)
def compensate_tenant() -> None:
    compensate()


@job(name=DECOMMISSION_JOB, executor_def=in_process_executor)
def decommission_tenant() -> None:
    decommission()


launch_compensation = compensation_hook(compensate_tenant)


@job(
    name=PROVISION_JOB,
    executor_def=in_process_executor,
    description="Validate, allocate, deploy, mark active, send welcome emails.",
)
def provision_tenant() -> None:
    allocated = allocate.with_hooks({launch_compensation})(after=validate())
    deployed = deploy.with_hooks({launch_compensation})(after=allocated)
    active = mark_active.with_hooks({launch_compensation})(after=deployed)
    send_welcome_emails(after=active)

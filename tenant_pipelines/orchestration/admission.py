"""Runs launched from the Dagster UI, admitted on the same terms as the API's and the CLI's.

The UI (served only through the API server's door, `api.dagster_door`) can launch any job with
any tags, and re-execute any run. When such a run is submitted, the run coordinator
(`runtime.run_coordinator`) hands it here with the door's caller:

- `requested_by` becomes the caller's subject, whatever tag the launch carried (re-executions
  copy their parent's), so the feed names who really asked;
- a lifecycle job takes the tenant's one operation claim, with the same state rules as
  `tenantctl` and the API (`lifecycle`): a re-execution of a provisioning run is a retry, a
  decommission run a decommission, a compensation run a person's compensation. Refused, the run
  is deleted before it starts and the error (naming the operation in flight) goes back to the UI:
  nothing is released, nothing queued.
"""

from dataclasses import dataclass
from typing import Any

from dagster import DagsterInstance, DagsterRun

from tenant_pipelines.domain.errors import NotFound, TenantPipelinesError
from tenant_pipelines.domain.events import Step
from tenant_pipelines.domain.records import OperationKind, TenantRecord
from tenant_pipelines.orchestration import lifecycle
from tenant_pipelines.orchestration.operations import exclusive_operation
from tenant_pipelines.orchestration.runs import (
    COMPENSATE_JOB,
    DECOMMISSION_JOB,
    PROVISION_JOB,
    REQUESTED_BY_TAG,
)
from tenant_pipelines.registry.store import TenantRegistry

# Where the door leaves its caller in the ASGI scope of a UI request; Dagster hands that request
# to the run coordinator as the submission's source.
DOOR_SCOPE_KEY = "tenant_pipelines.door"


@dataclass(frozen=True)
class DoorCaller:
    """Who is launching through the door, and the registry their claims are taken in."""

    subject: str
    registry: TenantRegistry


def admit(instance: DagsterInstance, run: DagsterRun, caller: DoorCaller) -> DagsterRun:
    """The run as it may start: requested by the caller, holding its claim. Raises (and deletes
    the run) when the tenant's state or another operation refuses it."""
    instance.add_run_tags(run.run_id, {REQUESTED_BY_TAG: caller.subject})
    try:
        _claim(instance, caller.registry, run)
    except TenantPipelinesError:
        instance.delete_run(run.run_id)
        raise
    admitted = instance.get_run_by_id(run.run_id)
    if admitted is None:
        raise NotFound(f"run {run.run_id} disappeared while it was being admitted")
    return admitted


def _claim(instance: DagsterInstance, registry: TenantRegistry, run: DagsterRun) -> None:
    if run.job_name == DECOMMISSION_JOB:
        tenant = registry.get_tenant_by_id(_op_config(run, Step.DECOMMISSION)["tenant_id"])
        _claim_for_run(instance, registry, tenant, OperationKind.DECOMMISSION, run.run_id)
    elif run.job_name == COMPENSATE_JOB:
        config = _op_config(run, Step.COMPENSATE)
        tenant = registry.get_tenant_by_id(config["tenant_id"])
        lifecycle.check_compensable(tenant)
        failed_run_id = str(config["failed_run_id"])
        with lifecycle.compensation_claim(registry, instance, tenant, failed_run_id) as holder:
            pass
        registry.set_operation_run(tenant.tenant_id, holder, run.run_id)
    elif run.job_name == PROVISION_JOB and run.parent_run_id is not None:
        _claim_retry(instance, registry, run)


def _claim_retry(instance: DagsterInstance, registry: TenantRegistry, run: DagsterRun) -> None:
    """A re-execution of a provisioning run: a retry of its tenant, or of its request when the
    run failed before the tenant existed."""
    request_id = str(_op_config(run, Step.VALIDATE)["request_id"])
    tenant = registry.find_tenant_for_request(request_id)
    if tenant is None:
        request = registry.get_request(request_id)
        lifecycle.hand_request_to_retry(registry, request, run.root_run_id or run.run_id)
        return
    _claim_for_run(instance, registry, tenant, OperationKind.RETRY, run.run_id)


CHECKS = {
    OperationKind.RETRY: lifecycle.check_retryable,
    OperationKind.DECOMMISSION: lifecycle.check_decommissionable,
}


def _claim_for_run(
    instance: DagsterInstance,
    registry: TenantRegistry,
    tenant: TenantRecord,
    kind: OperationKind,
    run_id: str,
) -> None:
    holder = f"{kind}:{run_id}"
    with exclusive_operation(registry, instance, tenant, kind, holder) as current:
        CHECKS[kind](current)
    registry.set_operation_run(tenant.tenant_id, holder, run_id)


def _op_config(run: DagsterRun, op_name: str) -> dict[str, Any]:
    """The op's config in the run's config; NotFound when the run does not carry it."""
    run_config: Any = run.run_config
    try:
        config = run_config["ops"][str(op_name)]["config"]
    except (KeyError, TypeError):
        raise NotFound(f"run {run.run_id} has no config for op {op_name}") from None
    if not isinstance(config, dict):
        raise NotFound(f"run {run.run_id} has no config for op {op_name}")
    return config

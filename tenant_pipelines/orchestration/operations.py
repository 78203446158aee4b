"""The tenant's one lifecycle operation, as the orchestrator holds it: a claim in the registry,
taken before a run is launched and named after that run once it exists.

A claim is released by the run's own last step; whatever ends a run otherwise (a failed or
canceled run, a killed worker) leaves a claim whose run has ended: stale. A stale claim is taken
over by the next caller and swept by the backstop sensor, so no claim stays stuck.
"""

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from dagster import DagsterInstance

from tenant_pipelines.domain.errors import OperationInFlight
from tenant_pipelines.domain.records import OperationKind, OperationRecord, TenantRecord
from tenant_pipelines.registry.store import TenantRegistry
from tenant_pipelines.saga.operations import compensation_holder

# A claim whose run was never named (its claimant died between claiming and launching) is stale
# after this long; launching a run takes well under a second.
LAUNCH_GRACE_S = 60.0


def claim_ended(instance: DagsterInstance) -> Callable[[OperationRecord], bool]:
    """Whether a claim's run has ended (a stale claim), as the Dagster instance knows it."""

    def ended(claim: OperationRecord) -> bool:
        if claim.run_id is None:
            return (datetime.now(UTC) - claim.claimed_at).total_seconds() > LAUNCH_GRACE_S
        run = instance.get_run_by_id(claim.run_id)
        return run is None or run.is_finished

    return ended


@contextmanager
def exclusive_operation(
    registry: TenantRegistry,
    instance: DagsterInstance,
    tenant: TenantRecord,
    kind: OperationKind,
    holder: str,
) -> Iterator[TenantRecord]:
    """Hold the tenant's operation claim as `holder` while the body launches (or admits) its
    run; the body gets the tenant as read under the claim, so state checks see what no other
    operation can change. Whatever the body raises releases the claim; the caller names the
    run once it exists (`registry.set_operation_run`).

    Raises OperationInFlight at once if another operation holds the tenant. A compensation
    still due for the tenant (between attempts) counts as one in flight.
    """
    registry.claim_operation(tenant.tenant_id, kind, holder, ended=claim_ended(instance))
    try:
        if pending := registry.unfinished_compensations(tenant.tenant_id):
            latest = pending[-1]
            raise OperationInFlight(
                tenant.slug, OperationKind.COMPENSATION, latest.compensation_run_id
            )
        yield registry.get_tenant_by_id(tenant.tenant_id)
    except BaseException:
        registry.release_operation(tenant.tenant_id, holder=holder)
        raise


def run_exclusively(
    registry: TenantRegistry,
    instance: DagsterInstance,
    tenant: TenantRecord,
    kind: OperationKind,
    launch: Callable[[TenantRecord], str],
) -> str:
    """Claim the tenant's operation, then launch its run (`exclusive_operation`); the run id."""
    holder = f"{kind}:{uuid.uuid4()}"
    with exclusive_operation(registry, instance, tenant, kind, holder) as current:
        run_id = launch(current)
    registry.set_operation_run(tenant.tenant_id, holder, run_id)
    return run_id


def claim_compensation_operation(
    registry: TenantRegistry, instance: DagsterInstance, tenant: TenantRecord, failed_run_id: str
) -> bool:
    """Claim the tenant for the compensation of `failed_run_id`; False while another operation
    holds it (the backstop launches the compensation once it is free). A claim held by the
    failed run itself (a retry that failed) passes to its compensation."""
    try:
        registry.claim_operation(
            tenant.tenant_id,
            OperationKind.COMPENSATION,
            compensation_holder(failed_run_id),
            ended=claim_ended(instance),
            successor_of=failed_run_id,
        )
    except OperationInFlight:
        return False
    return True


def release_ended(registry: TenantRegistry, instance: DagsterInstance) -> list[OperationRecord]:
    """Release every claim whose run has ended; the claims released."""
    ended = claim_ended(instance)
    released = []
    for claim in registry.operations():
        if ended(claim) and registry.release_operation(
            claim.tenant_id, holder=claim.holder, run_id=claim.run_id
        ):
            released.append(claim)
    return released

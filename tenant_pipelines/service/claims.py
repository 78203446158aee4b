"""The tenant's one lifecycle operation: a claim in the registry, held while its run is launched,
then named after that run.

Every use case that launches a retry, a decommission or a compensation does it inside
`operation_claim`: a second operation on the same tenant is refused at once (OperationInFlight,
naming the first); whatever the launch raises releases the claim; the launched run is named on
the claim. The run's own last step releases it. A claim whose run ended any other way (a failed
or canceled run, a killed worker), or that was never named within `LAUNCH_GRACE_S`, is stale:
the next claimant takes it over and the backstop sensor sweeps it (`release_stale`).
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from tenant_pipelines.domain.errors import OperationInFlight
from tenant_pipelines.domain.records import OperationKind, OperationRecord, TenantRecord
from tenant_pipelines.registry.operations import OperationStore
from tenant_pipelines.service.context import ServiceContext
from tenant_pipelines.service.ports import Runs

# A claim whose run was never named (its claimant died between claiming and launching) is stale
# after this long; launching a run takes well under a second.
LAUNCH_GRACE_S = 60.0


def claim_ended(runs: Runs) -> Callable[[OperationRecord], bool]:
    """Whether a claim's run has ended (a stale claim), as the orchestrator knows it."""

    def ended(claim: OperationRecord) -> bool:
        if claim.run_id is None:
            return (datetime.now(UTC) - claim.claimed_at).total_seconds() > LAUNCH_GRACE_S
        run = runs.get(claim.run_id)
        return run is None or run.finished

    return ended


@dataclass
class Claim:
    """A claim held: the tenant as read under it, and how to name the run that does the work."""

    operations: OperationStore
    tenant: TenantRecord
    holder: str

    def name_run(self, run_id: str | None) -> None:
        """Name the run doing the operation (a sensor's run request names itself later)."""
        if run_id is not None:
            self.operations.set_run(self.tenant.tenant_id, self.holder, run_id)


@contextmanager
def operation_claim(
    ctx: ServiceContext,
    tenant: TenantRecord,
    kind: OperationKind,
    holder: str,
    *,
    successor_of: str | None = None,
) -> Iterator[Claim]:
    """Hold the tenant's operation as `holder` while the body launches (or admits) its run.

    Raises OperationInFlight at once if another operation holds the tenant, or, for anything but
    a compensation, while a compensation is still due (between attempts). `successor_of`: the
    run whose claim this one may take over (the compensation of a retry that failed). Whatever
    the body raises releases the claim.
    """
    registry = ctx.registry
    registry.operations.claim(
        tenant.tenant_id, kind, holder, ended=claim_ended(ctx.runs), successor_of=successor_of
    )
    try:
        due = registry.compensations.unfinished(tenant.tenant_id)
        if kind != OperationKind.COMPENSATION and due:
            raise OperationInFlight(
                tenant.slug, OperationKind.COMPENSATION, due[-1].compensation_run_id
            )
        yield Claim(registry.operations, registry.tenants.get_by_id(tenant.tenant_id), holder)
    except BaseException:
        registry.operations.release(tenant.tenant_id, holder=holder)
        raise


def release_stale(ctx: ServiceContext) -> list[OperationRecord]:
    """Release every claim whose run has ended; the claims released."""
    ended = claim_ended(ctx.runs)
    released = []
    for claim in ctx.registry.operations.all():
        if ended(claim) and ctx.registry.operations.release(
            claim.tenant_id, holder=claim.holder, run_id=claim.run_id
        ):
            released.append(claim)
    return released

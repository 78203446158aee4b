"""The provisioning saga's forward phases.

Every phase is idempotent through the resource ledger: it marks an entry `allocating` before the
side effect and `allocated` after it, and backends' `ensure` is itself idempotent, so running a
phase again (retry, re-execution, resume) finds its work done and creates nothing twice. A phase
re-establishes the prerequisites of earlier phases, because re-execution from failure skips those
phases even when compensation has released what they made; what the same run already recorded
as allocated it takes from the ledger instead (nothing else acts on the tenant meanwhile: the
tenant's operation claim, and compensation waits for the run to end), which on PostgreSQL
backends spares each run five transactions of schema and grant statements.
"""

from tenant_pipelines.domain.errors import BusinessRefusal, CompensationInProgress, PermanentError
from tenant_pipelines.domain.events import EventType, Step
from tenant_pipelines.domain.handles import Handle, ResourceKind
from tenant_pipelines.domain.plans import check_role_admits, get_plan
from tenant_pipelines.domain.states import LedgerState, RequestState, TenantState
from tenant_pipelines.domain.tenant import TenantSpec
from tenant_pipelines.saga.context import SagaContext
from tenant_pipelines.saga.deadline import call_with_timeout
from tenant_pipelines.saga.ports import TenantBackend

READINESS_MARGIN_S = 5.0
# A phase waits this long, per attempt, for a compensation still releasing its tenant (a retry
# that caught up with one). Its attempts multiply the wait inside a run that the plan's
# max_runtime bounds (free: 3 x 60 s of 300 s), so it stays below the decommission command's
# wait for a compensation (120 s), which no run bounds and which covers all of a compensation's
# attempts and backoff.
PHASE_COMPENSATION_WAIT_S = 60.0
COMPENSATION_POLL_S = 0.5


def validate(ctx: SagaContext, request_id: str) -> TenantSpec:
    """Claim the request for this run, check plan and role, reserve the slug."""
    registry = ctx.registry
    request = registry.requests.get(request_id)
    if not registry.requests.claim(request_id, ctx.run_id, ctx.root_run_id):
        owner = registry.requests.get(request_id).run_id
        raise PermanentError(f"request {request_id} is already owned by run {owner}")
    if request.state == RequestState.REJECTED:
        raise BusinessRefusal(f"request {request_id} was rejected: {request.reason}")
    try:
        get_plan(request.plan)
        check_role_admits(request.role, request.plan)
        tenant = registry.tenants.reserve(request).spec
    except BusinessRefusal as refusal:
        registry.requests.reject(request_id, str(refusal))
        raise
    registry.tenants.record_run(tenant.tenant_id, ctx.run_id)
    ctx.event(
        EventType.STARTED,
        tenant,
        Step.VALIDATE,
        request_id=request_id,
        plan=tenant.plan,
        requested_by=request.subject,
    )
    return tenant


def begin_phase(ctx: SagaContext, tenant: TenantSpec, step: Step) -> None:
    """Enter a phase: a failed tenant is being retried, a decommissioned one is refused, and so
    is one placed on another host.

    A retry waits for a compensation still releasing this tenant, or the two would undo each
    other; once the retry has recorded itself as the tenant's run, a late compensation skips.
    """
    ctx.check_host(tenant)
    wait_for_compensations(ctx, tenant)
    record = ctx.registry.tenants.get_by_id(tenant.tenant_id)
    if record.state in (TenantState.DECOMMISSIONING, TenantState.DECOMMISSIONED):
        raise PermanentError(f"tenant {tenant.slug} is {record.state}; provisioning stopped")
    first_phase_of_run = record.last_run_id != ctx.run_id
    if first_phase_of_run:
        ctx.registry.tenants.record_run(tenant.tenant_id, ctx.run_id)
    if record.state == TenantState.FAILED:
        ctx.registry.tenants.transition(tenant.tenant_id, TenantState.PROVISIONING)
        ctx.event(
            EventType.STARTED,
            tenant,
            step,
            retry=True,
            requested_by=ctx.requested_by,
            previous_run_id=record.last_run_id,
            previous_failed_step=record.failed_step,
        )
    elif first_phase_of_run and record.state == TenantState.PROVISIONING:
        # A run that died mid-saga is being re-executed: it picks up where it stopped.
        ctx.event(EventType.RESUMED, tenant, step, previous_run_id=record.last_run_id)


def wait_for_compensations(ctx: SagaContext, tenant: TenantSpec) -> None:
    deadline = ctx.clock.monotonic() + PHASE_COMPENSATION_WAIT_S
    while pending := ctx.registry.compensations.unfinished(tenant.tenant_id):
        if ctx.clock.monotonic() > deadline:
            runs = ", ".join(c.failed_run_id for c in pending)
            raise CompensationInProgress(f"compensation of run(s) {runs} has not finished")
        ctx.clock.sleep(COMPENSATION_POLL_S)


def ensure_resource(
    ctx: SagaContext, backend: TenantBackend, tenant: TenantSpec, *, once_per_run: bool = False
) -> Handle:
    """Ensure one backend's thing for the tenant, recording intent and result in the ledger.

    `once_per_run`: take the handle an earlier phase (or attempt) of this run recorded as
    allocated, if it did. A run that starts mid-saga (re-execution from failure, a resumed run)
    finds an earlier run's id in the entry, and ensures the thing again."""
    entry = ctx.registry.ledger.get(tenant.tenant_id, backend.kind)
    allocated = entry is not None and entry.state == LedgerState.ALLOCATED
    if once_per_run and allocated and entry is not None and entry.run_id == ctx.run_id:
        return Handle(**entry.handle)
    if not allocated:
        ctx.registry.ledger.set(
            tenant.tenant_id, backend.kind, LedgerState.ALLOCATING, run_id=ctx.run_id
        )
    handle = call_with_timeout(
        lambda: backend.ensure(tenant), _timeout_for(backend, tenant), f"{backend.kind} ensure"
    )
    return record_allocated(ctx, tenant, handle)


def _timeout_for(backend: TenantBackend, tenant: TenantSpec) -> float:
    plan = get_plan(tenant.plan)
    if backend.kind == ResourceKind.WORKLOAD:  # the deployer polls readiness up to this itself
        return plan.readiness_timeout_s + READINESS_MARGIN_S
    return plan.backend_timeout_s


def record_allocated(ctx: SagaContext, tenant: TenantSpec, handle: Handle) -> Handle:
    """Write the ledger only when something changed, so a repeated phase leaves it as it was."""
    entry = ctx.registry.ledger.get(tenant.tenant_id, handle.kind)
    if entry is None or entry.state != LedgerState.ALLOCATED or entry.handle != handle.to_json():
        ctx.registry.ledger.set(
            tenant.tenant_id,
            handle.kind,
            LedgerState.ALLOCATED,
            handle=handle.to_json(),
            run_id=ctx.run_id,
        )
    return handle


def _allocate_resources(ctx: SagaContext, tenant: TenantSpec) -> list[Handle]:
    b = ctx.backends
    return [
        ensure_resource(ctx, backend, tenant, once_per_run=True)
        for backend in (b.storage, b.identity, b.traffic)
    ]


def allocate(ctx: SagaContext, tenant: TenantSpec) -> list[Handle]:
    """Storage, identity store (first admin seeded), traffic boundary (closed)."""
    begin_phase(ctx, tenant, Step.ALLOCATE)
    return _allocate_resources(ctx, tenant)


def deploy(ctx: SagaContext, tenant: TenantSpec) -> Handle:
    """Workloads running and ready within the plan's readiness timeout."""
    begin_phase(ctx, tenant, Step.DEPLOY)
    _allocate_resources(ctx, tenant)
    return ensure_resource(ctx, ctx.backends.deployer, tenant)


def mark_active(ctx: SagaContext, tenant: TenantSpec) -> str:
    """Open the traffic boundary and flip the tenant to active; returns the tenant's URL."""
    begin_phase(ctx, tenant, Step.MARK_ACTIVE)
    _allocate_resources(ctx, tenant)
    ensure_resource(ctx, ctx.backends.deployer, tenant)
    traffic = ctx.backends.traffic
    handle = call_with_timeout(
        lambda: traffic.open(tenant), get_plan(tenant.plan).backend_timeout_s, "route open"
    )
    record_allocated(ctx, tenant, handle)
    ctx.registry.tenants.transition(tenant.tenant_id, TenantState.ACTIVE)
    return tenant.url(ctx.served_at)

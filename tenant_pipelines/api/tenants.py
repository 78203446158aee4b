"""What the API and the console do with tenants, for one authenticated caller.

Reads are filtered to what the caller may see (another org's tenant does not exist for it);
actions are authorized first, then handed to the registry, the intake or the lifecycle code.
"""

import fnmatch
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import anyio
import anyio.to_thread

from tenant_pipelines.api.context import ApiContext
from tenant_pipelines.domain.access import Caller, Operator, check_visible
from tenant_pipelines.domain.batches import TenantFilter
from tenant_pipelines.domain.errors import OperationInFlight
from tenant_pipelines.domain.events import AuditEvent, FeedRecord
from tenant_pipelines.domain.records import OperationKind
from tenant_pipelines.domain.request import TenantFields, TenantRequest
from tenant_pipelines.domain.states import TenantState
from tenant_pipelines.domain.status import TenantDetail, TenantStatus
from tenant_pipelines.domain.timeline import timeline
from tenant_pipelines.orchestration import feed
from tenant_pipelines.orchestration.diagnose import Diagnosis, diagnose, explain_request
from tenant_pipelines.registry import status as statuses
from tenant_pipelines.service import lifecycle
from tenant_pipelines.service import submit as submitting
from tenant_pipelines.service.submit import Submission
from tenant_pipelines.support import metrics
from tenant_pipelines.support.metrics import Door

log = logging.getLogger(__name__)


def visible_status(ctx: ApiContext, caller: Caller, slug: str) -> TenantStatus:
    found = statuses.tenant_status(ctx.registry, ctx.settings.served_at, slug)
    check_visible(caller, found.org, slug)
    # A launched request whose run ended before making its tenant shows that run's failure.
    return explain_request(ctx.instance(), found)


def list_visible(ctx: ApiContext, caller: Caller, wanted: TenantFilter) -> list[TenantStatus]:
    """Tenants matching `wanted`, and requests still on their way to becoming one, which count
    as provisioning."""
    state = wanted.state
    every = statuses.list_statuses(ctx.registry, ctx.settings.served_at, state)
    if state in (None, TenantState.PROVISIONING):
        served_at = ctx.settings.served_at
        every += [statuses.of_request(r, served_at) for r in ctx.registry.requests.in_progress()]
    return [t for t in every if caller.sees(t.org) and _admitted(wanted, t)]


def _admitted(wanted: TenantFilter, tenant: TenantStatus) -> bool:
    created_at = datetime.fromisoformat(tenant.created_at)
    return wanted.admits(slug=tenant.slug, org=tenant.org, plan=tenant.plan, created_at=created_at)


def detail(ctx: ApiContext, caller: Caller, slug: str) -> TenantDetail:
    found = visible_status(ctx, caller, slug)
    entries = timeline(tenant_events(ctx, found, None))
    return TenantDetail(**found.model_dump(), timeline=entries)


@dataclass(frozen=True)
class TenantFeed:
    """One tenant's events: its slug's, of its org, since it was requested (a slug can be
    reused, and another org's events never show), of the types asked for."""

    tenant: str
    org: str
    since: datetime
    type_glob: str | None

    def matches(self, event: AuditEvent) -> bool:
        return (
            event.tenant == self.tenant
            and event.org == self.org
            and datetime.fromisoformat(event.at) >= self.since
            and (self.type_glob is None or fnmatch.fnmatchcase(event.type, self.type_glob))
        )


def tenant_feed(tenant: TenantStatus, type_glob: str | None) -> TenantFeed:
    since = datetime.fromisoformat(tenant.created_at)
    return TenantFeed(tenant.slug, tenant.org, since, type_glob)


def tenant_records(ctx: ApiContext, wants: TenantFeed) -> list[FeedRecord]:
    """The tenant's feed so far, with each event's place in it (a stream's backlog)."""
    found, _ = feed.read_records(ctx.instance(), tenant=wants.tenant, type_glob=wants.type_glob)
    return [record for record in found if wants.matches(record.event)]


def tenant_events(ctx: ApiContext, tenant: TenantStatus, type_glob: str | None) -> list[AuditEvent]:
    """This tenant's feed so far."""
    return [record.event for record in tenant_records(ctx, tenant_feed(tenant, type_glob))]


def visible_events(ctx: ApiContext, caller: Caller, type_glob: str | None) -> list[AuditEvent]:
    events, _ = feed.read_events(ctx.instance(), type_glob=type_glob)
    return [event for event in events if caller.sees(event.org)]


def submit(
    ctx: ApiContext, caller: Caller, fields: TenantFields, request_id: uuid.UUID | None
) -> Submission:
    """The request is the caller's: its subject and role come from the token."""
    return submitting.submit(ctx.service, caller, submitting.request_of(caller, fields, request_id))


def submit_as_operator(ctx: ApiContext, fields: dict[str, object]) -> Submission:
    """A request from the host's command line, which names its caller and role itself (the
    operator's authority): recorded, and its launch taken when this server can launch it; the
    door starts the run (`start_claimed`) after the command has its answer."""
    request = TenantRequest.parse(fields)  # ValidationError: 422 naming each field
    operator = Operator(request.requested_by.subject)
    return submitting.submit(ctx.service, operator, request, start_now=False)


def start_claimed(ctx: ApiContext, request_id: str) -> None:
    submitting.start_claimed(ctx.service, request_id)


def operator_status(ctx: ApiContext, slug: str) -> TenantStatus:
    """`tenantctl status`: any org's tenant, or its request, with a failed run explained."""
    found = statuses.tenant_status(ctx.registry, ctx.settings.served_at, slug)
    return explain_request(ctx.instance(), found)


class Operation(StrEnum):
    """The lifecycle operations the host's operator launches on a tenant."""

    RETRY = "retry"
    DECOMMISSION = "decommission"
    COMPENSATE = "compensate"


OPERATIONS = {
    Operation.RETRY: lifecycle.retry,
    Operation.DECOMMISSION: lifecycle.decommission,
    Operation.COMPENSATE: lifecycle.compensate,
}


def operate_as_operator(ctx: ApiContext, operation: Operation, slug: str, requested_by: str) -> str:
    """A lifecycle operation from the host's command line (the operator's authority); its run."""
    run_id = OPERATIONS[operation](ctx.service, Operator(requested_by), slug)
    if operation in COUNTED:
        COUNTED[operation].labels(started_by=Door.CLI).inc()
    return run_id


COUNTED = {Operation.RETRY: metrics.RETRIES, Operation.DECOMMISSION: metrics.DECOMMISSIONS}


async def retry(ctx: ApiContext, caller: Caller, slug: str, door: Door) -> str:
    """Re-execute the tenant's failed run (a few registry reads and one in-process GraphQL
    launch, in a worker thread)."""
    run_id = await anyio.to_thread.run_sync(lifecycle.retry, ctx.service, caller, slug)
    metrics.RETRIES.labels(started_by=door).inc()
    return run_id


async def decommission(ctx: ApiContext, caller: Caller, slug: str, door: Door) -> str:
    """Decommission the tenant (`_decommission_now`), counted by the door that asked."""
    run_id = await _decommission_now(ctx, caller, slug)
    metrics.DECOMMISSIONS.labels(started_by=door).inc()
    return run_id


async def _decommission_now(ctx: ApiContext, caller: Caller, slug: str) -> str:
    """Decommission the tenant; a compensation in flight is waited for (as `tenantctl
    decommission` does, up to its bound) between attempts made in a worker thread, sleeping
    in the event loop rather than holding the thread."""
    deadline = time.monotonic() + lifecycle.DECOMMISSION_COMPENSATION_WAIT_S
    while True:
        try:
            return await anyio.to_thread.run_sync(
                lifecycle.decommission_now, ctx.service, caller, slug
            )
        except OperationInFlight as busy:
            if busy.kind != OperationKind.COMPENSATION or time.monotonic() >= deadline:
                raise
        await anyio.sleep(lifecycle.WAIT_POLL_S)


def diagnosis(ctx: ApiContext, caller: Caller, slug: str) -> Diagnosis:
    visible_status(ctx, caller, slug)
    return diagnose(ctx.registry, ctx.instance(), slug)

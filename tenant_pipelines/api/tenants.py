"""What the API and the console do with tenants, for one authenticated caller.

Reads are filtered to what the caller may see (another org's tenant does not exist for it);
actions are authorized first, then handed to the registry, the intake or the lifecycle code.
"""

import fnmatch
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import anyio
import anyio.to_thread

from tenant_pipelines.api.context import ApiContext
from tenant_pipelines.api.errors import InvalidInput
from tenant_pipelines.domain.access import Action, Caller, authorize, check_visible
from tenant_pipelines.domain.errors import OperationInFlight, SlugInUse, sees_every_org
from tenant_pipelines.domain.events import AuditEvent, FeedRecord
from tenant_pipelines.domain.plans import PLANS
from tenant_pipelines.domain.records import OperationKind
from tenant_pipelines.domain.request import RequestedBy, TenantFields, TenantRequest
from tenant_pipelines.domain.states import TenantState
from tenant_pipelines.domain.status import TenantDetail, TenantStatus
from tenant_pipelines.domain.timeline import timeline
from tenant_pipelines.orchestration import feed, intake, lifecycle
from tenant_pipelines.orchestration.diagnose import Diagnosis, diagnose, explain_request
from tenant_pipelines.registry import status as statuses

log = logging.getLogger(__name__)


def visible_status(ctx: ApiContext, caller: Caller, slug: str) -> TenantStatus:
    found = statuses.tenant_status(ctx.registry, ctx.settings.domain, slug)
    check_visible(caller, found.org, slug)
    # A launched request whose run ended before making its tenant shows that run's failure.
    return explain_request(ctx.instance(), found)


def list_visible(ctx: ApiContext, caller: Caller, state: str | None) -> list[TenantStatus]:
    """Tenants (in `state`, if given), and requests still on their way to becoming one, which
    count as provisioning."""
    every = statuses.list_statuses(ctx.registry, ctx.settings.domain, state)
    if state in (None, TenantState.PROVISIONING):
        domain = ctx.settings.domain
        every += [statuses.of_request(r, domain) for r in ctx.registry.requests_in_progress()]
    return [tenant for tenant in every if caller.sees(tenant.org)]


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
) -> intake.Submission:
    """The request is the caller's: its subject and role come from the token."""
    if fields.plan not in PLANS:
        known = ", ".join(PLANS)
        raise InvalidInput(f"plan: {fields.plan!r} is not a plan (known: {known})", "plan")
    authorize(caller, Action.SUBMIT, fields.org, fields.plan)
    request = TenantRequest(
        **fields.model_dump(),
        request_id=request_id or uuid.uuid4(),
        requested_by=RequestedBy(subject=caller.subject, role=caller.role.value),
    )
    launcher = ctx.launcher
    launch = intake.launching(ctx.registry, launcher, log.warning) if launcher else None
    try:
        return intake.submit(ctx.registry, request, launch)
    except SlugInUse as taken:  # the holder is named only to a caller who sees its org
        raise taken.told_to(caller.sees) from None


def submit_as_operator(
    ctx: ApiContext, fields: dict[str, object], start_after_answer: Callable[[str], None]
) -> intake.Submission:
    """A request from the host's command line, which names its caller and role itself (the
    operator's authority): recorded, and marked launched when this server can launch it; the
    run is started by `start_after_answer`, after the command has its answer."""
    request = TenantRequest.parse(fields)  # ValidationError: 422 naming each field

    def claim(request_id: str) -> None:
        if ctx.launcher is not None and ctx.registry.mark_launched(request_id):
            start_after_answer(request_id)

    try:
        return intake.submit(ctx.registry, request, claim)
    except SlugInUse as taken:  # the operator sees every org
        raise taken.told_to(sees_every_org) from None


def start_claimed(ctx: ApiContext, request_id: str) -> None:
    if ctx.launcher is not None:
        intake.start_claimed(ctx.registry, ctx.launcher, request_id, log.warning)


def operator_status(ctx: ApiContext, slug: str) -> TenantStatus:
    """`tenantctl status`: any org's tenant, or its request, with a failed run explained."""
    found = statuses.tenant_status(ctx.registry, ctx.settings.domain, slug)
    return explain_request(ctx.instance(), found)


class Operation(StrEnum):
    """The lifecycle operations a person launches on a tenant."""

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
    launch = OPERATIONS[operation]
    return launch(ctx.registry, ctx.instance(), ctx.orchestrator, slug, requested_by)


async def retry(ctx: ApiContext, caller: Caller, slug: str) -> str:
    """Re-execute the tenant's failed run (a few registry reads and one in-process GraphQL
    launch, in a worker thread)."""
    return await anyio.to_thread.run_sync(_retry, ctx, caller, slug)


def _retry(ctx: ApiContext, caller: Caller, slug: str) -> str:
    tenant = visible_status(ctx, caller, slug)
    authorize(caller, Action.RETRY, tenant.org)
    return lifecycle.retry(ctx.registry, ctx.instance(), ctx.orchestrator, slug, caller.subject)


async def decommission(ctx: ApiContext, caller: Caller, slug: str) -> str:
    """Decommission the tenant; a compensation in flight is waited for (as `tenantctl
    decommission` does, up to its bound) between attempts made in a worker thread, sleeping
    in the event loop rather than holding the thread."""
    deadline = time.monotonic() + lifecycle.COMPENSATION_WAIT_S
    while True:
        try:
            return await anyio.to_thread.run_sync(_decommission_now, ctx, caller, slug)
        except OperationInFlight as busy:
            if busy.kind != OperationKind.COMPENSATION or time.monotonic() >= deadline:
                raise
        await anyio.sleep(lifecycle.WAIT_POLL_S)


def _decommission_now(ctx: ApiContext, caller: Caller, slug: str) -> str:
    tenant = visible_status(ctx, caller, slug)
    authorize(caller, Action.DECOMMISSION, tenant.org)
    return lifecycle.decommission(
        ctx.registry, ctx.instance(), ctx.orchestrator, slug, caller.subject, wait_s=0
    )


def diagnosis(ctx: ApiContext, caller: Caller, slug: str) -> Diagnosis:
    visible_status(ctx, caller, slug)
    return diagnose(ctx.registry, ctx.instance(), slug)

"""What the API and the console do with tenants, for one authenticated caller.

Reads are filtered to what the caller may see (another org's tenant does not exist for it);
actions are authorized first, then handed to the registry, the intake or the lifecycle code.
"""

import logging
import uuid
from collections.abc import Callable
from datetime import datetime

from tenant_pipelines.api.context import ApiContext
from tenant_pipelines.api.errors import InvalidInput
from tenant_pipelines.domain.access import Action, Caller, authorize, check_visible
from tenant_pipelines.domain.errors import SlugInUse, sees_every_org
from tenant_pipelines.domain.events import AuditEvent
from tenant_pipelines.domain.plans import PLANS
from tenant_pipelines.domain.request import RequestedBy, TenantFields, TenantRequest
from tenant_pipelines.domain.states import TenantState
from tenant_pipelines.domain.status import TenantDetail, TenantStatus
from tenant_pipelines.domain.timeline import timeline
from tenant_pipelines.orchestration import feed, intake, lifecycle
from tenant_pipelines.orchestration.diagnose import Diagnosis, diagnose, explain_request
from tenant_pipelines.orchestration.graphql import DagsterApi, DagsterApiError
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


def tenant_events(ctx: ApiContext, tenant: TenantStatus, type_glob: str | None) -> list[AuditEvent]:
    """This tenant's feed: its slug's events since it was requested (a slug can be reused)."""
    events, _ = tenant_events_after(ctx, tenant, type_glob, None)
    return events


def tenant_events_after(
    ctx: ApiContext, tenant: TenantStatus, type_glob: str | None, cursor: str | None
) -> tuple[list[AuditEvent], str | None]:
    events, cursor = feed.read_events(
        ctx.instance(), tenant=tenant.slug, type_glob=type_glob, cursor=cursor
    )
    since = datetime.fromisoformat(tenant.created_at)
    mine = [e for e in events if e.org == tenant.org and datetime.fromisoformat(e.at) >= since]
    return mine, cursor


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


def retry(ctx: ApiContext, caller: Caller, slug: str) -> str:
    tenant = visible_status(ctx, caller, slug)
    authorize(caller, Action.RETRY, tenant.org)
    return lifecycle.retry(ctx.registry, ctx.instance(), _orchestrator(ctx), slug, caller.subject)


def decommission(ctx: ApiContext, caller: Caller, slug: str) -> str:
    tenant = visible_status(ctx, caller, slug)
    authorize(caller, Action.DECOMMISSION, tenant.org)
    return lifecycle.decommission(
        ctx.registry, ctx.instance(), _orchestrator(ctx), slug, caller.subject
    )


def diagnosis(ctx: ApiContext, caller: Caller, slug: str) -> Diagnosis:
    visible_status(ctx, caller, slug)
    return diagnose(ctx.registry, ctx.instance(), slug)


def _orchestrator(ctx: ApiContext) -> DagsterApi:
    if ctx.dagster is None:
        raise DagsterApiError("the platform is not running: start it with `tenantctl up`")
    return ctx.dagster

"""`/v1`: the HTTP API (docs/contracts.md). Each handler parses, asks `api.tenants` (which
authorizes), and answers with the same objects as `tenantctl ... --json`.

No handler holds a worker thread for long: the event stream waits in the event loop
(`api.streams`), and a decommission waiting for a compensation in flight sleeps there too.
"""

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Header, Query, Request
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from tenant_pipelines.api import tenants
from tenant_pipelines.api.auth import ApiCaller, Ctx
from tenant_pipelines.api.errors import ErrorBody, InvalidInput
from tenant_pipelines.api.streams import EVENT_STREAM, Hub, open_stream
from tenant_pipelines.domain.batches import BatchAction, BatchRecord, Selection, TenantFilter
from tenant_pipelines.domain.errors import RequestIdTaken
from tenant_pipelines.domain.events import AuditEvent
from tenant_pipelines.domain.request import TenantFields
from tenant_pipelines.domain.status import TenantDetail, TenantStatus
from tenant_pipelines.orchestration.diagnose import Diagnosis
from tenant_pipelines.service import batches
from tenant_pipelines.support.metrics import Door

IDEMPOTENCY_KEY = "Idempotency-Key"


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody} for status in (401, *statuses)}


router = APIRouter(prefix="/v1", tags=["tenants"])


class SubmissionOut(BaseModel):
    request_id: str
    state: str
    created: bool
    run_id: str | None
    slug: str
    org: str
    plan: str


class RunLaunched(BaseModel):
    slug: str
    run_id: str


TypeGlob = Annotated[
    str | None,
    Query(alias="type", max_length=200, description="event type glob, e.g. tenant.provisioning.*"),
]


@router.post(
    "/tenants",
    status_code=202,
    response_model=SubmissionOut,
    responses=_errors(400, 403, 409, 422),
)
def submit_tenant(
    body: TenantFields,
    caller: ApiCaller,
    ctx: Ctx,
    idempotency_key: Annotated[str | None, Header(alias=IDEMPOTENCY_KEY)] = None,
) -> dict[str, Any]:
    """Submit a new tenant; the Idempotency-Key (a UUID) becomes the request id."""
    request_id = _request_id(idempotency_key)
    try:
        return tenants.submit(ctx, caller, body, request_id).to_json()
    except RequestIdTaken:  # another caller's key: nothing of its request is said
        raise RequestIdTaken(f"this {IDEMPOTENCY_KEY}") from None


def _request_id(key: str | None) -> uuid.UUID | None:
    if key is None:
        return None
    try:
        return uuid.UUID(key)
    except ValueError:
        raise InvalidInput(f"{IDEMPOTENCY_KEY} must be a UUID", IDEMPOTENCY_KEY) from None


class TenantQuery(TenantFilter):
    """The list's filters as query parameters; any other parameter is ignored, as HTTP servers
    do (a body, by contrast, refuses unknown fields)."""

    model_config = ConfigDict(extra="ignore", frozen=True)


@router.get("/tenants", response_model=list[TenantStatus], responses=_errors(422))
def list_tenants(
    caller: ApiCaller, ctx: Ctx, wanted: Annotated[TenantQuery, Query()]
) -> list[TenantStatus]:
    """Every tenant the caller may see (its token's org, or all for platform-admin), filtered
    by state, plan, org, slug prefix and creation time (`created_after`, ISO 8601 with a
    timezone); requests without a tenant yet count as provisioning."""
    return tenants.list_visible(ctx, caller, wanted)


class BatchIn(Selection):
    """`{"action": "retry" | "decommission", "filter": {...}}` or `{..., "slugs": [...]}`."""

    action: BatchAction
    expect: int | None = None  # the count the person confirmed (409 if the selection differs)


class BatchStarted(BaseModel):
    id: str
    count: int  # the tenants it acts on, fixed as it starts


@router.post(
    "/batches",
    status_code=202,
    response_model=BatchStarted,
    responses=_errors(400, 401, 403, 409, 422),
    tags=["batches"],
)
def start_batch(
    body: BatchIn, caller: ApiCaller, ctx: Ctx, after_answer: BackgroundTasks
) -> BatchStarted:
    """Retry or decommission many tenants: those the caller sees that match the filter, or the
    slugs named. Answered at once; the batch acts after the answer (`GET /v1/batches/{id}`)."""
    selection = Selection(filter=body.filter, slugs=body.slugs)
    record = batches.start(ctx.service, caller, body.action, selection, body.expect)
    after_answer.add_task(batches.run, ctx.service, caller, record.batch_id, Door.API)
    return BatchStarted(id=record.batch_id, count=len(record.items))


@router.get(
    "/batches/{batch_id}",
    response_model=BatchRecord,
    responses=_errors(401, 404),
    tags=["batches"],
)
def batch_status(batch_id: str, caller: ApiCaller, ctx: Ctx) -> BatchRecord:
    """Each tenant's outcome so far: pending, done (its run), skipped (the operation in
    flight) or refused (why); `finished_at` once every tenant has one."""
    return batches.visible_batch(ctx.service, caller, batch_id)


@router.get("/tenants/{slug}", response_model=TenantDetail, responses=_errors(404))
def tenant_detail(slug: str, caller: ApiCaller, ctx: Ctx) -> TenantDetail:
    """Status (as `tenantctl status --json`) and the provisioning timeline."""
    return tenants.detail(ctx, caller, slug)


@router.get(
    "/tenants/{slug}/events",
    response_model=list[AuditEvent],
    responses={
        **_errors(404, 422, 429, 503),
        200: {"content": {EVENT_STREAM: {"schema": {"type": "string"}}}},
    },
)
async def tenant_events(
    slug: str,
    request: Request,
    caller: ApiCaller,
    ctx: Ctx,
    hub: Hub,
    type_glob: TypeGlob = None,
) -> Any:
    """The tenant's audit feed; with `Accept: text/event-stream`, followed live (SSE): 429
    beyond a token's open streams, 503 beyond the server's."""
    tenant = await run_in_threadpool(tenants.visible_status, ctx, caller, slug)
    if EVENT_STREAM in request.headers.get("accept", ""):
        wants = tenants.tenant_feed(tenant, type_glob)
        backlog = lambda: tenants.tenant_records(ctx, wants)  # noqa: E731
        return await open_stream(hub, caller.token_id, wants, backlog)
    return await run_in_threadpool(tenants.tenant_events, ctx, tenant, type_glob)


@router.get("/events", response_model=list[AuditEvent], responses=_errors(422))
def events(caller: ApiCaller, ctx: Ctx, type_glob: TypeGlob = None) -> list[AuditEvent]:
    """The audit feed of every tenant the caller may see."""
    return tenants.visible_events(ctx, caller, type_glob)


@router.post(
    "/tenants/{slug}/retry",
    status_code=202,
    response_model=RunLaunched,
    responses=_errors(403, 404, 409, 503),
)
async def retry_tenant(slug: str, caller: ApiCaller, ctx: Ctx) -> RunLaunched:
    """Re-execute a failed tenant's run from the failed step."""
    return RunLaunched(slug=slug, run_id=await tenants.retry(ctx, caller, slug, Door.API))


@router.post(
    "/tenants/{slug}/decommission",
    status_code=202,
    response_model=RunLaunched,
    responses=_errors(403, 404, 409, 503),
)
async def decommission_tenant(slug: str, caller: ApiCaller, ctx: Ctx) -> RunLaunched:
    """Release everything the tenant holds and free its slug."""
    return RunLaunched(slug=slug, run_id=await tenants.decommission(ctx, caller, slug, Door.API))


@router.get("/tenants/{slug}/diagnosis", response_model=Diagnosis, responses=_errors(404))
def tenant_diagnosis(slug: str, caller: ApiCaller, ctx: Ctx) -> Diagnosis:
    """`tenantctl diagnose --json`: state, recent runs, ledger, the next action."""
    return tenants.diagnosis(ctx, caller, slug)

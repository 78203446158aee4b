"""`/local`: the host's own command line, answered by the API server of `tenantctl up`.

`tenantctl request`, `status` and `list` call these while the platform runs, so that the command
imports neither SQLAlchemy nor pydantic and the work is done by a process that holds the registry
and the Dagster instance open (`cli.platform_api`); `retry`, `decommission` and `compensate`
call them because this server is the one that launches lifecycle runs (through the Dagster UI's
schema, in-process: no webserver listens anywhere else). They act with the operator's authority, the
commands' own on this host, and so answer only a caller on the loopback that carries the operator
key (`support.operator_key`). They stay out of the OpenAPI schema: `/v1` is the API.

A submitted request is marked launched before the answer (the registry's compare-and-set, as on
every path) and its run started after it: the command returns without waiting for the run's
creation. If this server dies in between, the intake sensor launches the request, as for any
launch that produced no run.
"""

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Body, Depends, Header, Request
from pydantic import BaseModel, Field

from tenant_pipelines.api import tenants
from tenant_pipelines.api.auth import Ctx
from tenant_pipelines.domain.access import Forbidden, NotAuthenticated, Operator
from tenant_pipelines.domain.batches import BatchAction, Selection, TenantFilter
from tenant_pipelines.domain.states import TenantState
from tenant_pipelines.registry import status as statuses
from tenant_pipelines.service import batches
from tenant_pipelines.support.metrics import Door
from tenant_pipelines.support.operator_key import OPERATOR_KEY_HEADER

LOOPBACK_CLIENTS = frozenset({"127.0.0.1", "::1"})


def operator_only(
    ctx: Ctx,
    request: Request,
    key: Annotated[str | None, Header(alias=OPERATOR_KEY_HEADER)] = None,
) -> None:
    if request.client is None or request.client.host not in LOOPBACK_CLIENTS:
        raise Forbidden("only a command on this host may call /local")
    if key is None or not secrets.compare_digest(key.encode(), ctx.operator_key.encode()):
        raise NotAuthenticated(f"send the data directory's operator key as {OPERATOR_KEY_HEADER}")


router = APIRouter(prefix="/local", include_in_schema=False, dependencies=[Depends(operator_only)])


@router.post("/requests", status_code=202)
def submit(
    ctx: Ctx, fields: Annotated[dict[str, Any], Body()], after_answer: BackgroundTasks
) -> dict[str, Any]:
    """`tenantctl request --json`: {"request_id", "state", "created", "run_id", ...}; the run,
    if this server took its launch, is started after the answer."""
    submission = tenants.submit_as_operator(ctx, fields)
    if submission.claimed:
        after_answer.add_task(tenants.start_claimed, ctx, submission.request.request_id)
    return submission.to_json()


class LifecycleCall(BaseModel):
    """Who on this host asked (`operator:<login>`), as the runs and the feed will say."""

    requested_by: str = Field(pattern=r"^operator:[^\s]{1,100}$")


@router.post("/tenants/{slug}/{operation}", status_code=202)
def lifecycle_operation(
    ctx: Ctx, slug: str, operation: tenants.Operation, call: LifecycleCall
) -> dict[str, str]:
    """`tenantctl retry|decommission|compensate`: {"slug", "run_id"}."""
    run_id = tenants.operate_as_operator(ctx, operation, slug, call.requested_by)
    return {"slug": slug, "run_id": run_id}


@router.get("/tenants/{slug}")
def status(ctx: Ctx, slug: str) -> dict[str, Any]:
    """`tenantctl status --json`."""
    return tenants.operator_status(ctx, slug).model_dump()


@router.get("/tenants")
def listing(ctx: Ctx, state: TenantState | None = None) -> list[dict[str, Any]]:
    """`tenantctl list --json`: every org's tenants (in `state`, if given)."""
    found = statuses.list_statuses(ctx.registry, ctx.settings.served_at, state)
    return [row.model_dump() for row in found]


class LocalBatch(LifecycleCall):
    """`tenantctl retry|decommission` with a filter: what to act on, and the count confirmed."""

    action: BatchAction
    filter: TenantFilter
    expect: int | None = None


@router.post("/batch-preview")
def batch_preview(ctx: Ctx, wanted: TenantFilter) -> dict[str, Any]:
    """The slugs a batch with this filter would act on now, for the operator to confirm."""
    slugs = batches.selected_slugs(
        ctx.service, Operator("operator:preview"), Selection(filter=wanted)
    )
    return {"slugs": slugs}


@router.post("/batches", status_code=202)
def start_batch(ctx: Ctx, call: LocalBatch, after_answer: BackgroundTasks) -> dict[str, Any]:
    """{"id", "count"}; the batch acts after the answer (`GET /local/batches/{id}`)."""
    operator = Operator(call.requested_by)
    selection = Selection(filter=call.filter)
    record = batches.start(ctx.service, operator, call.action, selection, call.expect)
    after_answer.add_task(batches.run, ctx.service, operator, record.batch_id, Door.CLI)
    return {"id": record.batch_id, "count": len(record.items)}


@router.get("/batches/{batch_id}")
def batch_status(ctx: Ctx, batch_id: str) -> dict[str, Any]:
    return ctx.registry.batches.get(batch_id).model_dump(mode="json")

"""Bulk retry and decommission: one batch, many tenants, each through the same use case as a
single call (`service.lifecycle`), so the rules, claims and authorization are the same.

`start` fixes which tenants the batch acts on (the caller's visible ones matching the filter,
or the slugs as named) and records it; `run` then acts on each in turn and records each
outcome as it comes, so `GET /v1/batches/{id}` shows progress and a batch interrupted midway
says which tenants it did not reach (`pending`). An operation already in flight on a tenant
makes it `skipped`, naming that operation; nothing waits behind it. Every outcome on a tenant
the caller can see is in the audit feed (`tenant.batch.acted`), with the caller and the
selection.
"""

from collections.abc import Callable

from tenant_pipelines.domain.access import Action, Actor, Caller, authorize_batch
from tenant_pipelines.domain.batches import (
    BatchAction,
    BatchItem,
    BatchRecord,
    ItemOutcome,
    Selection,
    new_batch_id,
)
from tenant_pipelines.domain.errors import (
    NotFound,
    OperationInFlight,
    Refused,
    TenantPipelinesError,
)
from tenant_pipelines.domain.events import EventType, make_event
from tenant_pipelines.domain.plans import Role
from tenant_pipelines.registry.queries import now
from tenant_pipelines.service import lifecycle
from tenant_pipelines.service.context import ServiceContext
from tenant_pipelines.support import metrics

ACTS: dict[BatchAction, Callable[[ServiceContext, Actor, str], str]] = {
    BatchAction.RETRY: lifecycle.retry,
    BatchAction.DECOMMISSION: lifecycle.decommission_now,
}
COUNTERS = {BatchAction.RETRY: metrics.RETRIES, BatchAction.DECOMMISSION: metrics.DECOMMISSIONS}


def selected_slugs(ctx: ServiceContext, actor: Actor, selection: Selection) -> list[str]:
    """The slugs a batch with `selection` would act on now (for a filter: the tenants the actor
    sees that match it), each once, oldest tenant first."""
    if selection.slugs is not None:
        return list(dict.fromkeys(selection.slugs))
    wanted = selection.filter
    assert wanted is not None  # Selection holds exactly one of the two
    return list(
        dict.fromkeys(
            t.slug
            for t in ctx.registry.tenants.all(wanted.state)
            if actor.sees(t.org)
            and wanted.admits(slug=t.slug, org=t.org, plan=t.plan, created_at=t.created_at)
        )
    )


def start(
    ctx: ServiceContext,
    actor: Actor,
    action: BatchAction,
    selection: Selection,
    expect: int | None = None,
) -> BatchRecord:
    """Record a batch of `action` on the tenants `selection` names now; `run` acts on them.
    `expect`: the count the person confirmed; a selection that has changed size since is
    refused rather than acted on."""
    authorize_batch(actor, Action(action.value))
    items = [BatchItem(slug=slug) for slug in selected_slugs(ctx, actor, selection)]
    if expect is not None and expect != len(items):
        raise Refused(
            f"{len(items)} tenant(s) match now, not the {expect} confirmed; look again and confirm"
        )
    record = BatchRecord(
        batch_id=new_batch_id(),
        action=action,
        requested_by=actor.subject,
        selection=selection,
        created_at=now(),
        items=items,
    )
    ctx.registry.batches.create(record, owner_of(actor))
    return record


def run(ctx: ServiceContext, actor: Actor, batch_id: str, door: metrics.Door) -> BatchRecord:
    """Act on each pending tenant of the batch, recording each outcome as it comes."""
    record = ctx.registry.batches.get(batch_id)
    items = list(record.items)
    for index, item in enumerate(items):
        if item.outcome != ItemOutcome.PENDING:
            continue
        items[index] = act(ctx, actor, record.action, item.slug)
        if items[index].outcome == ItemOutcome.DONE:
            COUNTERS[record.action].labels(started_by=door).inc()
        report(ctx, actor, record, items[index])
        ctx.registry.batches.record_items(batch_id, items, finished=index == len(items) - 1)
    if not items:
        ctx.registry.batches.record_items(batch_id, items, finished=True)
    return ctx.registry.batches.get(batch_id)


def act(ctx: ServiceContext, actor: Actor, action: BatchAction, slug: str) -> BatchItem:
    """One tenant's outcome: its run launched, skipped for an operation in flight, or refused."""
    try:
        run_id = ACTS[action](ctx, actor, slug)
    except OperationInFlight as busy:
        return BatchItem(slug=slug, outcome=ItemOutcome.SKIPPED, detail=str(busy))
    except TenantPipelinesError as refusal:
        return BatchItem(slug=slug, outcome=ItemOutcome.REFUSED, detail=str(refusal))
    return BatchItem(slug=slug, outcome=ItemOutcome.DONE, run_id=run_id)


def report(ctx: ServiceContext, actor: Actor, record: BatchRecord, item: BatchItem) -> None:
    """The feed's entry for one tenant of the batch, if the actor can see that tenant."""
    try:
        tenant = ctx.registry.tenants.get(item.slug)
    except NotFound:
        return
    if not actor.sees(tenant.org):
        return
    details = {
        "batch_id": record.batch_id,
        "action": record.action.value,
        "requested_by": record.requested_by,
        "selection": record.selection.model_dump(mode="json", exclude_none=True),
        "outcome": item.outcome.value,
        "detail": item.detail,
        "run_id": item.run_id,
    }
    event = make_event(
        EventType.BATCH_ACTED,
        tenant=tenant.slug,
        org=tenant.org,
        run_id=item.run_id or "",  # no run: skipped or refused
        step=None,
        details=details,
    )
    ctx.report(event)


def owner_of(actor: Actor) -> str:
    """Whose batch it is: the token's role, org and subject (a subject alone could be another
    org's), or the host's operator."""
    if isinstance(actor, Caller):
        return f"{actor.role}/{actor.org or '*'}/{actor.subject}"
    return "operator"


def visible_batch(ctx: ServiceContext, actor: Actor, batch_id: str) -> BatchRecord:
    """A batch, for whoever started it, a platform-admin or the host's operator; to anyone
    else it does not exist."""
    record, owner = ctx.registry.batches.get_with_owner(batch_id)
    if isinstance(actor, Caller) and actor.role != Role.PLATFORM_ADMIN and owner != owner_of(actor):
        raise NotFound(f"no batch {batch_id!r}")
    return record

"""Submitting a tenant request, once for every door: the API and the console (a token's caller),
`/local` and `tenantctl request` (the host's operator), and the intake sensor's catch-up.

The actor must be allowed to submit for the org and plan; the slug and the tenant key must be
free (a refusal names the holder only to an actor that sees its org); the request is recorded
once however often it is sent (its id is the idempotency key). Whoever wins the registry's
compare-and-set `pending -> launched` launches its run: this process, when it has a launcher,
or the intake sensor, which also catches up on launches that never produced a run.
"""

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tenant_pipelines.domain.access import Action, Actor, Caller, authorize
from tenant_pipelines.domain.errors import SlugInUse
from tenant_pipelines.domain.plans import PLANS
from tenant_pipelines.domain.records import RequestRecord
from tenant_pipelines.domain.request import RequestedBy, TenantFields, TenantRequest
from tenant_pipelines.domain.states import RequestState
from tenant_pipelines.service.context import ServiceContext
from tenant_pipelines.service.jobs import PROVISION_JOB, provision_run_config, provision_tags
from tenant_pipelines.service.placement import place
from tenant_pipelines.service.ports import Launcher
from tenant_pipelines.support import metrics
from tenant_pipelines.support.priority_gate import PriorityGate

log = logging.getLogger(__name__)

MAX_REQUESTS_PER_TICK = 50
UNCLAIMED_AFTER = timedelta(seconds=30)
# Submissions a process works on at once; the others wait, larger plans first (a lower nice
# value). In a burst the API server has a submission in each of its threads, and they share one
# interpreter: all at once, each took as long as all of them (1.2-1.7 s for 16 in flight on
# PostgreSQL), an enterprise request's too. Through the gate it waits for two.
SUBMISSIONS_AT_ONCE = 2
_submissions = PriorityGate(SUBMISSIONS_AT_ONCE)
UNKNOWN_PLAN_PRIORITY = 100  # after every plan's (it is refused anyway)


def _priority(plan: str) -> int:
    known = PLANS.get(plan)
    return known.cpu_nice if known is not None else UNKNOWN_PLAN_PRIORITY


@dataclass(frozen=True)
class Submission:
    request: RequestRecord
    created: bool  # False: the same request was submitted before (same id, same content)
    run_id: str | None  # the run launched by this submission, if it launched one
    claimed: bool = False  # this submission took the launch (its run started, or is to start)

    def to_json(self) -> dict[str, Any]:
        """What `tenantctl request --json` prints and `POST /v1/tenants` answers."""
        state = RequestState.LAUNCHED.value if self.run_id else self.request.state
        return {
            "request_id": self.request.request_id,
            "state": state,
            "created": self.created,
            "run_id": self.run_id,
            "slug": self.request.slug,
            "org": self.request.org,
            "plan": self.request.plan,
        }


def request_of(caller: Caller, fields: TenantFields, request_id: uuid.UUID | None) -> TenantRequest:
    """A token's caller's request: its subject and role are the token's, never the body's."""
    return TenantRequest(
        **fields.model_dump(),
        request_id=request_id or uuid.uuid4(),
        requested_by=RequestedBy(subject=caller.subject, role=caller.role.value),
    )


def submit(
    ctx: ServiceContext, actor: Actor, request: TenantRequest, *, start_now: bool = True
) -> Submission:
    """Record the request (RequestConflict: its id came with other content; SlugInUse: a live
    tenant or another request in flight holds the slug or the key) and, when this process can
    launch, take its launch and start its run: now, or, with `start_now` False, when the door
    calls `start_claimed` after it has answered."""
    authorize(actor, Action.SUBMIT, request.org, request.plan)
    with _submissions.through(_priority(request.plan)):
        return _submit(ctx, actor, request, start_now)


def _submit(
    ctx: ServiceContext, actor: Actor, request: TenantRequest, start_now: bool
) -> Submission:
    try:
        record, created = ctx.registry.requests.submit(
            request, exclusive_slug=True, worker_host=place(ctx.registry, ctx.hosts)
        )
    except SlugInUse as taken:  # the holder is named only to an actor who sees its org
        raise taken.told_to(actor.sees) from None
    if created:  # an idempotent repeat of the same request is not a second one
        metrics.REQUESTS_SUBMITTED.labels(plan=request.plan).inc()
    launcher = ctx.launcher
    claimed = launcher is not None and ctx.registry.requests.mark_launched(record.request_id)
    run_id = None
    if launcher is not None and claimed and start_now:
        run_id = _start(launcher, record)
    return Submission(ctx.registry.requests.get(record.request_id), created, run_id, claimed)


def start_claimed(ctx: ServiceContext, request_id: str) -> str | None:
    """Start the run of a request this process has marked launched; its run id, or None (the
    launch failed: the request stays launched without a run, which the intake sensor notices)."""
    if ctx.launcher is None:
        return None
    request = ctx.registry.requests.get(request_id)
    with _submissions.through(_priority(request.plan)):
        return _start(ctx.launcher, request)


def _start(launcher: Launcher, request: RequestRecord) -> str | None:
    """Launch the request's run (what it asks for is fixed when it is recorded)."""
    try:
        return launcher.launch(
            PROVISION_JOB, provision_run_config(request), provision_tags(request)
        )
    except Exception as error:  # the sensor's job now
        log.warning("direct launch failed, the intake sensor will launch it: %s", error)
        return None


def launch_pending(ctx: ServiceContext, cursor: str | None, launcher: Launcher) -> str:
    """The intake sensor's tick: launch every pending request it wins, and again every launched
    request that has no run (its own launches of the last tick, named by `cursor`, and anyone's
    unclaimed too long); the cursor for the next tick."""
    requests = ctx.registry.requests
    launches = _lost_launches(ctx, cursor)
    for request in requests.to_launch(MAX_REQUESTS_PER_TICK):
        if requests.mark_launched(request.request_id):  # lost: someone else launches it
            launches.append(request)
    for request in launches:
        _start(launcher, request)
    return json.dumps(sorted(r.request_id for r in launches))


def _lost_launches(ctx: ServiceContext, cursor: str | None) -> list[RequestRecord]:
    """Launched requests with no run: ours from the last tick, anyone's after a while."""
    requests = ctx.registry.requests
    ours = [requests.get(rid) for rid in (json.loads(cursor) if cursor else [])]
    stale_before = datetime.now(UTC) - UNCLAIMED_AFTER
    candidates = ours + requests.unclaimed_launches(stale_before, MAX_REQUESTS_PER_TICK)
    launched = {r.request_id: r for r in candidates if r.state == RequestState.LAUNCHED}
    # One question for all of them: in a burst, every tick finds dozens launched and waiting in
    # the run queue, unclaimed but not lost.
    with_runs = ctx.runs.requests_with_runs(launched)
    return [request for rid, request in launched.items() if rid not in with_runs]

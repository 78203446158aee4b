"""`POST /local/requests/{request_id}/launch`: how `tenantctl request` on the control-plane host
has the API server launch the run of a request it has just recorded.

The API server launches a run in this process (`runtime.direct_launch`); the command line would
otherwise ask the webserver over GraphQL (~0.3 s) or import Dagster itself (~1 s). It answers
once the request is marked launched (the registry's compare-and-set, as on every path) and
starts the run after answering: the command returns without waiting for the run's creation. If
this server dies in between, the intake sensor launches the request, as for any launch that
produced no run.

The call carries no data and grants no power: it only starts, now, what the intake sensor starts
on its next tick anyway (a request already recorded in the registry by a caller with the
registry's authority), so it needs no token. It is answered on the loopback only and stays out
of the OpenAPI schema.
"""

from typing import Any

from fastapi import APIRouter, BackgroundTasks, Request

from tenant_pipelines.api import tenants
from tenant_pipelines.api.auth import Ctx
from tenant_pipelines.domain.access import Forbidden

LOOPBACK_CLIENTS = frozenset({"127.0.0.1", "::1"})

router = APIRouter(prefix="/local", include_in_schema=False)


@router.post("/requests/{request_id}/launch", status_code=202)
def launch_recorded(
    ctx: Ctx, request: Request, request_id: str, after_answer: BackgroundTasks
) -> dict[str, Any]:
    """{"request_id", "launching"}: false if someone had launched it, or this server cannot."""
    if request.client is None or request.client.host not in LOOPBACK_CLIENTS:
        raise Forbidden("only a command on this host may ask for a launch")
    launching = tenants.claim_recorded(ctx, request_id)
    if launching:
        after_answer.add_task(tenants.start_claimed, ctx, request_id)
    return {"request_id": request_id, "launching": launching}

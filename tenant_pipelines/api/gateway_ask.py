"""`/gateway/ask`: the gateway's question before it issues a certificate on demand.

Caddy asks `GET /gateway/ask?domain=<host>` during a TLS handshake for a name it has no
certificate for, and issues one only on a 200. The answer is yes only for the host of an open
route (an active tenant), read from the route table the gateway is configured from (the
registry's, with several hosts): a client naming any other host gets no certificate, so nobody
can make the platform ask a CA (ACME, with its rate limits, in production) for names of their
choosing. Loopback callers only: the gateway runs on this host. The answer says no more than the
edge itself answers for that host.
"""

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from tenant_pipelines.api.auth import Ctx
from tenant_pipelines.api.local import LOOPBACK_CLIENTS
from tenant_pipelines.composition import route_source
from tenant_pipelines.domain.access import Forbidden

MAX_HOST_CHARS = 253  # a DNS name


def gateway_only(request: Request) -> None:
    if request.client is None or request.client.host not in LOOPBACK_CLIENTS:
        raise Forbidden("only the gateway on this host may ask")


router = APIRouter(include_in_schema=False, dependencies=[Depends(gateway_only)])


@router.get("/gateway/ask")
def ask(ctx: Ctx, domain: Annotated[str, Query(max_length=MAX_HOST_CHARS)]) -> Response:
    """200 if `domain` is an active tenant's host, 404 otherwise."""
    route = route_source(ctx.settings).lookup(domain.strip().lower().rstrip("."))
    return Response(status_code=200 if route is not None and route.is_open else 404)

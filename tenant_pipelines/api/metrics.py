"""`/metrics` for Prometheus (a token required), and the timing of every request the API server
answers, by route template, so that no label carries a slug."""

import time

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tenant_pipelines.api.auth import ApiCaller, Ctx
from tenant_pipelines.api.errors import ErrorBody
from tenant_pipelines.domain.access import authorize_metrics
from tenant_pipelines.support import metrics

router = APIRouter(tags=["metrics"])
UNMATCHED = "unmatched"  # a path no route serves: one series, whatever was asked


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        401: {"model": ErrorBody},
        403: {"model": ErrorBody},
    },
)
async def read_metrics(caller: ApiCaller, ctx: Ctx) -> Response:
    """Every process's counters and histograms, and the gauges read now (runs, tenants)."""
    authorize_metrics(caller)
    from tenant_pipelines.orchestration.metrics import PlatformCollector

    collector = PlatformCollector(ctx.instance(), ctx.registry)
    body = await run_in_threadpool(metrics.exposition, collector)
    return Response(body, media_type=metrics.CONTENT_TYPE)


class RequestTiming:
    """Observe each HTTP request's duration by its route's template (`/v1/tenants/{slug}`),
    method and status class. The Dagster UI's requests count under its mount, `/dagster`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before the answer started

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            metrics.API_REQUEST_DURATION.labels(
                route=route_template(scope),
                method=scope.get("method", "GET"),
                status_class=f"{status // 100}xx",
            ).observe(time.perf_counter() - started)


def route_template(scope: Scope) -> str:
    """The template of the route that served `scope` (the router records it in the scope as it
    matches), never the path itself."""
    if str(scope.get("path", "")).startswith("/dagster"):
        return "/dagster"
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return str(path) if path else UNMATCHED

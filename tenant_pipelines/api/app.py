"""The API server's application: `/v1`, `/console`, `/healthz`, `/metrics`, `/openapi.json`, the
host's own `/local` command line (`api.local`), the gateway's certificate question
(`api.gateway_ask`) and the Dagster UI behind its door (`/dagster`), assembled."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from tenant_pipelines.api import console, errors, gateway_ask, local, metrics, v1
from tenant_pipelines.api.context import Addresses, ApiContext
from tenant_pipelines.api.dagster_door import DagsterDoor
from tenant_pipelines.api.headers import SecurityHeaders
from tenant_pipelines.api.hub import StreamLimits
from tenant_pipelines.api.sessions import ServerSessions
from tenant_pipelines.api.streams import make_hub
from tenant_pipelines.settings import Settings


def create_app(
    settings: Settings,
    addresses: Addresses,
    secure_cookies: bool = False,
    stream_limits: StreamLimits | None = None,
) -> FastAPI:
    ctx = ApiContext(settings, addresses)
    hub = make_hub(ctx, stream_limits or StreamLimits())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Open the registry and the instance (importing Dagster) before answering /healthz,
        # which `tenantctl up` waits for: the first caller should not pay for them.
        ctx.open()
        from tenant_pipelines.orchestration.metrics import export_zero_series

        export_zero_series()  # the counters' label sets at 0, once Dagster is loaded anyway
        async with anyio.create_task_group() as background:
            await background.start(hub.run)  # event streams follow the feed through it
            yield
            background.cancel_scope.cancel()
        ctx.close()

    app = FastAPI(
        title="tenant-pipelines",
        version="1",
        description="Provision tenants, follow them, retry and decommission them.",
        lifespan=lifespan,
        # Swagger and ReDoc pages fetch their scripts from a CDN; /openapi.json is the contract.
        docs_url=None,
        redoc_url=None,
    )
    app.state.context = ctx
    app.state.hub = hub
    # Innermost first: the door reads the console session; every answer, the Dagster UI's
    # included, gets the browser hardening headers.
    app.add_middleware(DagsterDoor, ctx=ctx)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(
        ServerSessions, store=lambda: ctx.registry.sessions, secure_cookies=secure_cookies
    )
    app.add_middleware(metrics.RequestTiming)  # outermost: times every answer
    errors.install(app)
    console.install_handlers(app)
    app.include_router(v1.router)
    app.include_router(local.router)
    app.include_router(gateway_ask.router)
    app.include_router(console.router)
    app.include_router(metrics.router)
    console.mount_static(app)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """Open to all: whether the API server answers."""
        return {"status": "ok"}

    return app

"""Server-Sent Events: a tenant's audit feed followed live, as `text/event-stream`.

A stream is registered with the hub (`api.hub`), within its caps, and its backlog is read once
in a worker thread, before it answers 200 (a feed that cannot be read is a 503). Then it is a
small ASGI response with two tasks and no thread: one sends the backlog, then each event the
hub hands it, and a keepalive comment after 15 s of quiet; the other waits for the client to
go away. The client leaving, or the hub ending the stream (its token revoked or expired, its
buffer full because the client stopped reading, the server stopping) cancels both, a send
blocked by a client that does not read included. However it ends, the stream unregisters
itself from the hub.
"""

import json
import logging
from collections.abc import Callable
from typing import Annotated

import anyio
from fastapi import Depends, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from tenant_pipelines.api.context import ApiContext
from tenant_pipelines.api.hub import (
    FULL,
    Chunk,
    FeedHub,
    Filter,
    StreamLimits,
    Subscription,
    sse_chunk,
)
from tenant_pipelines.domain.events import FeedRecord
from tenant_pipelines.orchestration import feed

log = logging.getLogger(__name__)

EVENT_STREAM = "text/event-stream"
KEEPALIVE_S = 15.0
KEEPALIVE = b": keepalive\n\n"
FAREWELL_S = 1.0  # how long the message saying why a stream ends may take to leave


class InstanceFeed:
    """The feed in the API server's Dagster instance, as the hub reads it."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def end(self) -> str | None:
        return feed.feed_end(self.ctx.instance())

    def after(self, cursor: str | None) -> tuple[list[FeedRecord], str | None]:
        return feed.read_records(self.ctx.instance(), cursor=cursor)


def make_hub(ctx: ApiContext, limits: StreamLimits) -> FeedHub:
    """The hub of this server's streams; `app.state.hub`, run in the app's lifespan."""
    return FeedHub(InstanceFeed(ctx), lambda ids: ctx.registry.tokens.usable_ids(ids), limits)


def stream_hub(request: Request) -> FeedHub:
    hub: FeedHub = request.app.state.hub
    return hub


Hub = Annotated[FeedHub, Depends(stream_hub)]


async def open_stream(
    hub: FeedHub, token_id: str, wants: Filter, backlog: Callable[[], list[FeedRecord]]
) -> "EventStream":
    """Register a stream (TooManyStreams, ServerBusy beyond the caps) and read its backlog."""
    subscription = hub.subscribe(token_id, wants)
    try:
        records = await hub.read(backlog)
    except BaseException:
        hub.unsubscribe(subscription)
        raise
    return EventStream(hub, subscription, records)


class EventStream(Response):
    """The response of one registered stream."""

    media_type = EVENT_STREAM

    def __init__(self, hub: FeedHub, subscription: Subscription, backlog: list[FeedRecord]) -> None:
        # Not Response.__init__: that would announce an empty body (content-length: 0).
        self.status_code = 200
        self.background = None
        # The connection ends with the stream: a client sees the end as the connection closing.
        headers = {"cache-control": "no-cache", "x-accel-buffering": "no", "connection": "close"}
        self.init_headers(headers)
        self.hub = hub
        self.subscription = subscription
        self.backlog = backlog

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        subscription = self.subscription
        left = anyio.Event()
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async with anyio.create_task_group() as tasks:
                subscription.on_end(tasks.cancel_scope.cancel)
                tasks.start_soon(_until_gone, receive, left, tasks.cancel_scope)
                await self._pump(send)
        finally:
            self.hub.unsubscribe(subscription)
        if subscription.ended is not None and not left.is_set():
            await _farewell(send, subscription.ended)

    async def _pump(self, send: Send) -> None:
        """The backlog, then what the hub hands over; an event both in the backlog and handed
        over (written while the backlog was read) is sent once."""
        sent_up_to = -1
        for record in self.backlog:
            await _send(send, sse_chunk(record).data)
            sent_up_to = max(sent_up_to, record.storage_id)
        while True:
            chunk: Chunk | None = None
            with anyio.move_on_after(KEEPALIVE_S):
                chunk = await self.subscription.next()
            if chunk is None:
                await _send(send, KEEPALIVE)
            elif chunk.storage_id > sent_up_to:
                await _send(send, chunk.data)


async def _send(send: Send, data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": True})


async def _until_gone(receive: Receive, left: anyio.Event, scope: anyio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    left.set()
    scope.cancel()


async def _farewell(send: Send, reason: str) -> None:
    """Say why the stream ends and end the response; a client that does not read gets
    nothing more (the server then closes the connection once what it holds is sent)."""
    if reason == FULL:  # uvicorn then also says that the response was not completed
        log.warning("event stream closed: %s", reason)
    else:
        log.info("event stream ended: %s", reason)
    data = f"event: end\ndata: {json.dumps({'reason': reason})}\n\n".encode()
    with anyio.move_on_after(FAREWELL_S):
        await _send(send, data)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

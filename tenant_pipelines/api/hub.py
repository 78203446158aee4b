"""One reader of the audit feed per API server, for every open event stream.

A stream used to poll the feed itself from a worker thread, sleeping in between: forty idle
streams took every thread and the server stopped answering. Now one loop (started in the app's
lifespan) reads what is new in the feed every half second, in a worker thread, and hands each
event to the streams whose filter matches; once a second it checks, in one query, that the
tokens of the open streams are still usable, and ends the streams of those that are not. A
stream itself is a coroutine waiting on its own bounded buffer (`api.streams`): it holds no
thread, and a stream whose client stops reading is ended once its buffer is full.

What it costs with N open streams: two tasks and at most one worker thread for the hub (a feed
query every 0.5 s and a token query every second, whatever N), two tasks per stream, and one
feed query per stream when it opens (its backlog).
"""

import json
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import anyio.to_thread
from anyio.abc import TaskStatus

from tenant_pipelines.api.errors import ServerBusy, TooManyStreams
from tenant_pipelines.domain.events import AuditEvent, FeedRecord

log = logging.getLogger(__name__)

POLL_S = 0.5
TOKEN_CHECK_S = 1.0
BACKLOG_READERS = 4  # streams opening at once read their backlogs this many at a time
REVOKED = "the token was revoked or has expired"
FULL = "the client stopped reading and the stream's buffer is full"
STOPPING = "the server is stopping"


@dataclass(frozen=True)
class StreamLimits:
    per_token: int = 16
    total: int = 1000
    buffer_events: int = 1000  # events waiting for a client that reads slowly ...
    buffer_bytes: int = 1 << 20  # ... or this many bytes of them, whichever comes first


class Filter(Protocol):
    """Which events a stream wants; `tenant` (the feed's partition) indexes the streams."""

    @property
    def tenant(self) -> str: ...

    def matches(self, event: AuditEvent) -> bool: ...


class FeedSource(Protocol):
    """The feed as the hub reads it (blocking calls, made in a worker thread)."""

    def end(self) -> str | None:
        """The cursor after the newest event."""
        ...

    def after(self, cursor: str | None) -> tuple[list[FeedRecord], str | None]:
        """Every event after `cursor`, and the cursor to continue from."""
        ...


@dataclass(frozen=True)
class Chunk:
    """One Server-Sent Event, ready to send; its place in the feed removes duplicates."""

    storage_id: int
    data: bytes


def sse_chunk(record: FeedRecord) -> Chunk:
    payload = json.dumps(record.event.to_json(), sort_keys=True)
    return Chunk(record.storage_id, f"event: audit\ndata: {payload}\n\n".encode())


class Subscription:
    """One open stream: its filter, its token, its bounded buffer, and how it ended."""

    def __init__(self, token_id: str, wants: Filter, limits: StreamLimits) -> None:
        self.token_id = token_id
        self.wants = wants
        self._limits = limits
        self._pending: deque[Chunk] = deque()
        self._bytes = 0
        self._wake = anyio.Event()
        self._on_end: Callable[[], Any] | None = None
        self.ended: str | None = None  # why, once it has ended

    def offer(self, chunk: Chunk) -> None:
        if self.ended is not None:
            return
        self._pending.append(chunk)
        self._bytes += len(chunk.data)
        limits = self._limits
        if len(self._pending) > limits.buffer_events or self._bytes > limits.buffer_bytes:
            self.end(FULL)
        else:
            self._wake.set()

    async def next(self) -> Chunk:
        """The next event for the client, waiting for one if need be."""
        while not self._pending:
            self._wake = anyio.Event()
            await self._wake.wait()
        chunk = self._pending.popleft()
        self._bytes -= len(chunk.data)
        return chunk

    def on_end(self, callback: Callable[[], Any]) -> None:
        """Call `callback` when the stream is ended (at once if it already is)."""
        self._on_end = callback
        if self.ended is not None:
            callback()

    def end(self, reason: str) -> None:
        if self.ended is None:
            self.ended = reason
            self._pending.clear()
            if self._on_end is not None:
                self._on_end()


class FeedHub:
    """The open streams of this server and the loop that feeds them."""

    def __init__(
        self,
        feed: FeedSource,
        usable_tokens: Callable[[set[str]], set[str]],
        limits: StreamLimits,
        poll_s: float = POLL_S,
        token_check_s: float = TOKEN_CHECK_S,
    ) -> None:
        self.feed = feed
        self.usable_tokens = usable_tokens
        self.limits = limits
        self.poll_s = poll_s
        self.token_check_s = token_check_s
        self._by_tenant: dict[str, set[Subscription]] = {}
        self._per_token: Counter[str] = Counter()
        self._cursor: str | None = None
        self._running = False
        # Made in `run`, inside the event loop (anyio needs one to make them).
        self._own_thread: anyio.CapacityLimiter | None = None
        self._backlog_threads: anyio.CapacityLimiter | None = None

    @property
    def open_streams(self) -> int:
        return sum(self._per_token.values())

    def subscribe(self, token_id: str, wants: Filter) -> Subscription:
        """Register a stream, within the caps; call from the event loop."""
        if not self._running:
            raise ServerBusy("this server is starting or stopping; open the stream again")
        if self._per_token[token_id] >= self.limits.per_token:
            raise TooManyStreams(
                f"this token already has {self.limits.per_token} event streams open, the most"
                " one token may hold; close one first"
            )
        if self.open_streams >= self.limits.total:
            raise ServerBusy(
                f"this server already serves {self.limits.total} event streams, its limit;"
                " try again later"
            )
        subscription = Subscription(token_id, wants, self.limits)
        self._by_tenant.setdefault(wants.tenant, set()).add(subscription)
        self._per_token[token_id] += 1
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Idempotent: a stream unregisters itself however it ended."""
        streams = self._by_tenant.get(subscription.wants.tenant, set())
        if subscription not in streams:
            return
        streams.discard(subscription)
        if not streams:
            del self._by_tenant[subscription.wants.tenant]
        self._per_token[subscription.token_id] -= 1
        if self._per_token[subscription.token_id] <= 0:
            del self._per_token[subscription.token_id]

    async def read(self, function: Callable[[], list[FeedRecord]]) -> list[FeedRecord]:
        """A stream's backlog, read in a worker thread (a few at a time, never the pool)."""
        return await anyio.to_thread.run_sync(function, limiter=self._backlog_threads)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Follow the feed until cancelled (the app's lifespan); streams are refused until the
        starting cursor is known, so none misses an event."""
        self._own_thread = anyio.CapacityLimiter(1)
        self._backlog_threads = anyio.CapacityLimiter(BACKLOG_READERS)
        try:
            self._cursor = await self._in_thread(self.feed.end)
        except Exception as error:
            log.warning("event streams: could not find the feed's end (%s)", error)
        self._running = True
        task_status.started()
        try:
            async with anyio.create_task_group() as loops:
                loops.start_soon(self._every, self.poll_s, self.poll)
                loops.start_soon(self._every, self.token_check_s, self.check_tokens)
        finally:
            self.close_streams()

    def close_streams(self) -> None:
        """The server is stopping: end every stream now (each says why and closes its
        connection, so the server need not wait for them) and open no more."""
        self._running = False
        for subscription in self._all():
            subscription.end(STOPPING)

    async def poll(self) -> None:
        """Hand what is new in the feed to the streams that want it. With no stream open, only
        the cursor follows the feed's end (one row read, nothing decoded): during a burst the
        feed grows by hundreds of events a second that nobody is waiting for."""
        if not self._by_tenant:
            end = await self._in_thread(self.feed.end)
            if not self._by_tenant:  # a stream that opened meanwhile is served from the cursor
                self._cursor = end
            return
        records, self._cursor = await self._in_thread(self.feed.after, self._cursor)
        for record in records:
            chunk: Chunk | None = None
            for subscription in tuple(self._by_tenant.get(record.event.tenant, ())):
                if subscription.wants.matches(record.event):
                    chunk = chunk or sse_chunk(record)
                    subscription.offer(chunk)

    async def check_tokens(self) -> None:
        """End the streams whose token was revoked or has expired: one query for all."""
        if not self._per_token:
            return
        usable = await self._in_thread(self.usable_tokens, set(self._per_token))
        for subscription in self._all():
            if subscription.token_id not in usable:
                subscription.end(REVOKED)

    def _all(self) -> Iterable[Subscription]:
        return [s for streams in self._by_tenant.values() for s in streams]

    async def _in_thread(self, function: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(function, *args, limiter=self._own_thread)

    @staticmethod
    async def _every(interval_s: float, step: Callable[[], Awaitable[None]]) -> None:
        """Run `step` every `interval_s`; a failing step (the registry or the instance out of
        reach) is logged and tried again at the next interval."""
        while True:
            started = anyio.current_time()
            try:
                await step()
            except Exception as error:
                log.warning("event streams: %s failed: %s", step.__name__, error)
            await anyio.sleep(max(0.0, interval_s - (anyio.current_time() - started)))

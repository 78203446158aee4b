"""The hub of the event streams, without I/O: caps, who gets which event, the end of a revoked
token's streams and of a stream whose buffer is full. The feed and the token check are small
typed fakes; the loop runs on anyio's asyncio backend."""

from collections.abc import Iterable

import anyio
import pytest

from tenant_pipelines.api.errors import ServerBusy, TooManyStreams
from tenant_pipelines.api.hub import FULL, REVOKED, STOPPING, FeedHub, StreamLimits, Subscription
from tenant_pipelines.domain.events import AuditEvent, FeedRecord

pytestmark = [pytest.mark.unit, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class ListFeed:
    """A feed in memory: storage ids 1, 2, ...; a cursor is the last id read."""

    def __init__(self) -> None:
        self.records: list[FeedRecord] = []
        self.failing = False
        self.reads = 0

    def write(self, tenant: str, step: str, org: str = "widgets") -> FeedRecord:
        event = AuditEvent(
            type="tenant.provisioning.step_completed", tenant=tenant, org=org, run_id="r", step=step
        )
        record = FeedRecord(len(self.records) + 1, event)
        self.records.append(record)
        return record

    def end(self) -> str | None:
        return str(len(self.records)) if self.records else None

    def after(self, cursor: str | None) -> tuple[list[FeedRecord], str | None]:
        self.reads += 1
        if self.failing:
            raise OSError("the instance is out of reach")
        start = int(cursor or 0)
        return self.records[start:], str(len(self.records)) if self.records else cursor


class Wants:
    def __init__(self, tenant: str, org: str = "widgets", step: str | None = None) -> None:
        self._tenant, self.org, self.step = tenant, org, step

    @property
    def tenant(self) -> str:
        return self._tenant

    def matches(self, event: AuditEvent) -> bool:
        return event.org == self.org and self.step in (None, event.step)


class Tokens:
    def __init__(self, usable: Iterable[str]) -> None:
        self.usable = set(usable)
        self.queries: list[set[str]] = []

    def __call__(self, token_ids: set[str]) -> set[str]:
        self.queries.append(set(token_ids))
        return token_ids & self.usable


def hub(feed: ListFeed, tokens: Tokens, **limits: int) -> FeedHub:
    return FeedHub(feed, tokens, StreamLimits(**limits), poll_s=0.01, token_check_s=0.01)


async def running(made: FeedHub, tasks: anyio.abc.TaskGroup) -> FeedHub:
    await tasks.start(made.run)
    return made


def drained(subscription: Subscription) -> list[bytes]:
    found = []
    while subscription._pending:
        found.append(subscription._pending.popleft().data)
    return found


async def test_a_token_gets_its_cap_then_429_and_the_server_its_own_then_503() -> None:
    made = hub(ListFeed(), Tokens({"a", "b"}), per_token=2, total=3)
    with pytest.raises(ServerBusy, match="starting or stopping"):
        made.subscribe("a", Wants("acme"))
    async with anyio.create_task_group() as tasks:
        await running(made, tasks)
        first = made.subscribe("a", Wants("acme"))
        made.subscribe("a", Wants("beta"))
        with pytest.raises(TooManyStreams, match="already has 2 event streams open"):
            made.subscribe("a", Wants("acme"))
        made.subscribe("b", Wants("acme"))
        with pytest.raises(ServerBusy, match="already serves 3 event streams"):
            made.subscribe("b", Wants("acme"))
        made.unsubscribe(first)
        made.unsubscribe(first)  # twice is harmless
        assert made.open_streams == 2
        made.subscribe("a", Wants("acme"))
        tasks.cancel_scope.cancel()


async def test_new_events_reach_only_the_streams_that_want_them() -> None:
    feed = ListFeed()
    feed.write("acme", "validate")  # before the hub started: a backlog, never handed over
    made = hub(feed, Tokens({"a"}))
    async with anyio.create_task_group() as tasks:
        await running(made, tasks)
        everything = made.subscribe("a", Wants("acme"))
        deploys = made.subscribe("a", Wants("acme", step="deploy"))
        other_org = made.subscribe("a", Wants("acme", org="gadgets"))
        other_tenant = made.subscribe("a", Wants("beta"))
        feed.write("acme", "allocate")
        feed.write("acme", "deploy")
        feed.write("acme", "deploy", org="gadgets")
        await made.poll()
        assert [b"allocate" in d for d in drained(everything)] == [True, False]
        assert len(drained(deploys)) == 1
        assert len(drained(other_org)) == 1
        assert drained(other_tenant) == []
        tasks.cancel_scope.cancel()


async def test_the_loop_polls_on_its_own_and_outlives_a_failing_feed() -> None:
    feed = ListFeed()
    made = hub(feed, Tokens({"a"}))
    async with anyio.create_task_group() as tasks:
        await running(made, tasks)
        stream = made.subscribe("a", Wants("acme"))
        feed.failing = True
        failed_reads = feed.reads
        with anyio.fail_after(5):
            while feed.reads < failed_reads + 2:
                await anyio.sleep(0.01)
        feed.failing = False
        feed.write("acme", "allocate")
        with anyio.fail_after(5):
            chunk = await stream.next()
        tasks.cancel_scope.cancel()
    assert b'"step": "allocate"' in chunk.data and chunk.storage_id == 1
    assert stream.ended == STOPPING  # the hub stopped: every stream is ended


async def test_a_revoked_tokens_streams_end_and_only_those_with_one_query() -> None:
    tokens = Tokens({"keep", "revoke"})
    made = hub(ListFeed(), tokens)
    ended: list[str] = []
    async with anyio.create_task_group() as tasks:
        await running(made, tasks)
        kept = made.subscribe("keep", Wants("acme"))
        doomed = [made.subscribe("revoke", Wants(tenant)) for tenant in ("acme", "beta")]
        doomed[0].on_end(lambda: ended.append("callback"))
        tokens.usable.discard("revoke")
        await made.check_tokens()
        tasks.cancel_scope.cancel()
    assert [s.ended for s in doomed] == [REVOKED, REVOKED]
    assert ended == ["callback"]
    assert kept.ended == STOPPING
    assert tokens.queries[-1] == {"keep", "revoke"}


async def test_a_stream_whose_buffer_fills_ends_and_a_reader_that_keeps_up_does_not() -> None:
    feed = ListFeed()
    made = hub(feed, Tokens({"a"}), buffer_events=3)
    async with anyio.create_task_group() as tasks:
        await running(made, tasks)
        stuck = made.subscribe("a", Wants("acme"))
        reading = made.subscribe("a", Wants("acme"))
        for step in ("one", "two", "three", "four"):
            feed.write("acme", step)
            await made.poll()
            await reading.next()
        tasks.cancel_scope.cancel()
    assert stuck.ended == FULL
    assert stuck._pending == type(stuck._pending)()  # what it held is let go
    assert reading.ended == STOPPING


async def test_the_buffer_is_bounded_in_bytes_too() -> None:
    feed = ListFeed()
    made = hub(feed, Tokens({"a"}), buffer_bytes=600)
    async with anyio.create_task_group() as tasks:
        await running(made, tasks)
        stream = made.subscribe("a", Wants("acme"))
        feed.write("acme", "one")
        await made.poll()
        assert stream.ended is None
        feed.write("acme", "two")
        feed.write("acme", "three")
        await made.poll()
        tasks.cancel_scope.cancel()
    assert stream.ended == FULL


async def test_on_end_after_the_end_calls_back_at_once() -> None:
    made = hub(ListFeed(), Tokens({"a"}))
    async with anyio.create_task_group() as tasks:
        await running(made, tasks)
        stream = made.subscribe("a", Wants("acme"))
        stream.end(REVOKED)
        called: list[bool] = []
        stream.on_end(lambda: called.append(True))
        stream.end(FULL)  # the first reason stays
        tasks.cancel_scope.cancel()
    assert called == [True]
    assert stream.ended == REVOKED

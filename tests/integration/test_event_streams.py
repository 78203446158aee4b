"""Event streams through real HTTP against a running API server and a real Dagster instance:
the backlog then live events, each once; the end of a stream whose token expires; the caps per
token and per server; 500 unread streams that cost the API nothing; a client that stops
reading is closed once its buffer is full; stopping the server ends its streams."""

import json
import resource
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from tenant_pipelines.domain.tokens import TokenGrant
from tenant_pipelines.orchestration.instance import open_instance
from tenant_pipelines.registry import tokens as token_queries
from tenant_pipelines.registry.store import TenantRegistry
from tenant_pipelines.settings import Settings
from tenant_pipelines.support.operator_key import OPERATOR_KEY_HEADER, read_operator_key
from tests.api_helpers import ApiServer, api_server, platform_env
from tests.console_streams import RawStream, grant, seed_tenant, write_event
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

ORG, OTHER = "widgets", "gadgets"
STREAMS_PER_TOKEN = 16
UNREAD_STREAMS = 500
FAST_S = 0.2
ENDED_WITHIN_S = 2.0
SMALL_CAPS = ("--streams-per-token", "2", "--max-streams", "5")
BIG_DETAILS = "x" * 20_000  # events this large fill a stalled client's buffers quickly


@dataclass
class Platform:
    server: ApiServer
    registry: TenantRegistry
    settings: Settings
    instance: Any

    def stream(self, slug: str, token: str, query: str = "", **options: Any) -> RawStream:
        return RawStream(self.server.base, f"/v1/tenants/{slug}/events{query}", token, **options)


@contextmanager
def platform(tmp: Path, *server_args: str) -> Iterator[Platform]:
    env = platform_env(tmp / "data", tmp / "dagster")
    settings = Settings.from_env(env)
    settings.data_dir.mkdir(parents=True)
    registry = TenantRegistry.open(settings.db_url)
    with api_server(env, tmp / "api.log", *server_args) as server:
        instance = open_instance(settings.dagster_home, settings)
        try:
            yield Platform(server, registry, settings, instance)
        finally:
            instance.dispose()
            registry.close()


@pytest.fixture(scope="module")
def default(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """A server with the default caps (16 streams per token, 1000 in all)."""
    _enough_file_descriptors(4 * UNREAD_STREAMS)
    with platform(tmp_path_factory.mktemp("streams")) as made:
        yield made


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """A server with small caps: 2 streams per token, 5 in all."""
    with platform(tmp_path_factory.mktemp("small-caps"), *SMALL_CAPS) as made:
        yield made


def _enough_file_descriptors(wanted: int) -> None:
    """Raise this process's soft limit (the server started after it inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        ceiling = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))


def steps(stream: RawStream) -> list[str]:
    found = []
    for line in stream.received.split(b"\n"):
        if line.startswith(b"data: "):
            event = json.loads(line.removeprefix(b"data: "))
            found.append(f"{event['org']}:{event['step']}")
    return found


def read_until(stream: RawStream, count: int, within_s: float = 10) -> None:
    deadline = time.monotonic() + within_s
    while stream.events() < count and not stream.eof:
        assert time.monotonic() < deadline, f"only {stream.events()} of {count} events came"
        stream.read_for(0.2)


def test_a_stream_sends_its_backlog_then_what_is_written_each_once(default: Platform) -> None:
    seed_tenant(default.registry, "live", ORG)
    token = grant(default.registry, "viewer", ORG)
    write_event(default.instance, "live", ORG, "validate")
    write_event(default.instance, "live", OTHER, "validate")  # same slug, another org: never
    write_event(default.instance, "live", ORG, "allocate")
    stream = default.stream("live", token, "?type=tenant.provisioning.*")
    other_type = default.stream("live", token, "?type=tenant.email.*")
    try:
        assert stream.status() == 200
        assert other_type.status() == 200
        read_until(stream, 2)
        for step in ("deploy", "mark_active"):  # written while the client listens
            write_event(default.instance, "live", ORG, step)
            write_event(default.instance, "other", ORG, step)  # another tenant: never
        read_until(stream, 4)
        stream.read_for(1.5)  # three polls more: nothing else comes
        other_type.read_for(0.1)
    finally:
        stream.close()
        other_type.close()
    assert steps(stream) == [
        f"{ORG}:{s}" for s in ("validate", "allocate", "deploy", "mark_active")
    ]
    assert other_type.events() == 0


def test_the_stream_of_a_token_that_expires_ends_within_two_seconds(default: Platform) -> None:
    seed_tenant(default.registry, "expiring", ORG)
    expires_at = datetime.now(UTC) + timedelta(seconds=3)
    with default.registry.db.write() as conn:  # the registry's own insert, back-dated
        grant_ = TokenGrant.parse({"subject": "brief", "role": "viewer", "org": ORG})
        token, _ = token_queries.insert_token(conn, grant_, expires_at - timedelta(days=90))
    stream = default.stream("expiring", token)
    try:
        assert stream.status() == 200
        while datetime.now(UTC) < expires_at:
            stream.read_for(0.1)
            assert not stream.eof, "the stream ended before its token expired"
        expired = time.monotonic()
        stream.read_for(ENDED_WITHIN_S + 1)
        took = time.monotonic() - expired
    finally:
        stream.close()
    assert stream.eof and took < ENDED_WITHIN_S, f"the stream was still open after {took:.1f} s"
    assert b'event: end\ndata: {"reason": "the token was revoked or has expired"}' in (
        stream.received
    )


def test_a_token_has_its_cap_of_streams_and_the_server_its_own(small: Platform) -> None:
    seed_tenant(small.registry, "capped", ORG)
    first, second, third = (grant(small.registry, "viewer", ORG) for _ in range(3))
    streams = [small.stream("capped", token) for token in (first, first)]
    try:
        assert [s.status() for s in streams] == [200, 200]
        refused = requests.get(
            f"{small.server.base}/v1/tenants/capped/events",
            headers={"Authorization": f"Bearer {first}", "Accept": "text/event-stream"},
            timeout=30,
        )
        assert refused.status_code == 429
        assert refused.json() == {
            "error": "this token already has 2 event streams open, the most one token may"
            " hold; close one first"
        }
        streams += [small.stream("capped", token) for token in (second, second, third)]
        assert [s.status() for s in streams[2:]] == [200, 200, 200]
        busy = small.stream("capped", third)
        assert busy.status() == 503
        assert busy.read_until(b"this server already serves 5 event streams, its limit")
        busy.close()

        streams.pop(0).close()  # a stream that goes away frees its place at once
        _opens_within(small, "capped", first, within_s=5).close()
    finally:
        for stream in streams:
            stream.close()


def _opens_within(at: Platform, slug: str, token: str, within_s: float) -> RawStream:

    def opened() -> RawStream | None:
        stream = at.stream(slug, token)
        if stream.status() == 200:
            return stream
        stream.close()
        return None

    return wait_until(opened, within_s, "the closed stream still holds its place")


def test_500_unread_streams_leave_the_api_answering_at_once(default: Platform) -> None:
    seed_tenant(default.registry, "crowded", ORG)
    tokens = [
        grant(default.registry, "viewer", ORG, subject=f"reader-{number}")
        for number in range(-(-UNREAD_STREAMS // STREAMS_PER_TOKEN))
    ]
    streams = []
    try:
        for number in range(UNREAD_STREAMS):
            streams.append(default.stream("crowded", tokens[number // STREAMS_PER_TOKEN]))
        assert [s.status() for s in streams] == [200] * UNREAD_STREAMS  # then never read
        probes = {
            "/healthz": {},
            "/v1/tenants": {"Authorization": f"Bearer {tokens[0]}"},
            "/local/tenants": {
                OPERATOR_KEY_HEADER: str(read_operator_key(default.settings.data_dir))
            },
        }
        for path, headers in probes.items():
            took = sorted(_answer_time(default.server.base + path, headers) for _ in range(10))
            assert took[-2] < FAST_S, f"{path} with {UNREAD_STREAMS} unread streams: {took}"
    finally:
        for stream in streams:
            stream.close()


def _answer_time(url: str, headers: dict[str, str]) -> float:
    started = time.monotonic()
    answer = requests.get(url, headers=headers, timeout=5)
    assert answer.status_code == 200, answer.text
    return time.monotonic() - started


def test_a_client_that_stops_reading_is_closed_once_its_buffer_is_full(small: Platform) -> None:
    seed_tenant(small.registry, "flood", ORG)
    stalled_token, reader_token = (
        grant(small.registry, "viewer", ORG),
        grant(small.registry, "viewer", ORG),
    )
    stalled = small.stream("flood", stalled_token, receive_buffer=4096)
    reader = small.stream("flood", reader_token)
    second = small.stream("flood", stalled_token)  # the token's cap of 2 is now reached
    try:
        assert [stalled.status(), reader.status(), second.status()] == [200, 200, 200]
        written = 0
        deadline = time.monotonic() + 120
        while not _has_room(small, "flood", stalled_token):
            assert time.monotonic() < deadline, f"still open after {written} large events"
            for _ in range(10):  # the feed goes on; the stalled client never reads
                write_event(small.instance, "flood", ORG, "deploy", blob=BIG_DETAILS)
                written += 1
            reader.read_for(0.3)  # a client that reads keeps up and stays
            second.read_for(0.05)
        stalled.read_for(60)  # once it reads again: what was already sent, then the end
        read_until(reader, written, within_s=30)
    finally:
        for stream in (stalled, reader, second):
            stream.close()
    assert stalled.eof
    assert stalled.events() < written
    assert not reader.eof and reader.events() == written


def _has_room(at: Platform, slug: str, token: str) -> bool:
    """Whether the token may open one more stream (the probe is closed again)."""
    probe = at.stream(slug, token)
    try:
        return probe.status() == 200
    finally:
        probe.close()


def test_stopping_the_server_ends_its_open_streams(tmp_path: Path) -> None:
    with platform(tmp_path) as made:
        seed_tenant(made.registry, "stopping", ORG)
        stream = made.stream("stopping", grant(made.registry, "viewer", ORG))
        try:
            assert stream.status() == 200
            asked = time.monotonic()
            made.server.process.send_signal(signal.SIGTERM)
            made.server.process.wait(timeout=15)
            stopped_in = time.monotonic() - asked
            stream.read_for(5)
        finally:
            stream.close()
    assert stopped_in < 2, f"the server took {stopped_in:.1f} s to stop with a stream open"
    assert stream.eof and b'data: {"reason": "the server is stopping"}' in stream.received
    assert "Traceback" not in made.server.log.read_text()

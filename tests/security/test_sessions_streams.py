"""Issue 18, findings 3, 4 and 5, reproduced against a real API server on loopback:

3. Unread event streams took the API down: each held a worker thread while it slept.
4. A revoked token's open stream kept receiving events.
5. Logging out of the console did not end the session: the saved cookie still opened it.
"""

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from tenant_pipelines.orchestration.instance import open_instance
from tenant_pipelines.registry.store import TenantRegistry
from tenant_pipelines.settings import Settings
from tenant_pipelines.support.operator_key import OPERATOR_KEY_HEADER, read_operator_key
from tests.api_helpers import ApiServer, api_server, platform_env
from tests.console_streams import (
    COOKIE,
    RawStream,
    console_login,
    console_logout,
    grant,
    seed_tenant,
    tenants_page,
    token_id,
    write_event,
)

pytestmark = pytest.mark.integration

ORG = "widgets"
SLUG = "acme"
EVENTS = f"/v1/tenants/{SLUG}/events"
UNREAD_STREAMS = 100  # the API stopped answering at about 40
STREAMS_PER_TOKEN = 16  # the cap of one token's open streams (the next is refused)
FAST_S = 0.2
ENDED_WITHIN_S = 2.0


@dataclass
class Server:
    api: ApiServer
    registry: TenantRegistry
    settings: Settings
    instance: Any


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("sessions-streams")
    env = platform_env(tmp / "data", tmp / "dagster")
    settings = Settings.from_env(env)
    settings.data_dir.mkdir(parents=True)
    registry = TenantRegistry.open(settings.db_url)
    seed_tenant(registry, SLUG, ORG)
    with api_server(env, tmp / "api.log") as api:
        instance = open_instance(settings.dagster_home, settings)
        try:
            yield Server(api, registry, settings, instance)
        finally:
            instance.dispose()
            registry.close()


def test_finding_5_the_cookie_saved_before_logout_no_longer_opens_the_console(
    server: Server,
) -> None:
    base = server.api.base
    browser = console_login(base, grant(server.registry, "org-admin", ORG))
    saved = browser.cookies[COOKIE]
    assert tenants_page(base, saved).status_code == 200

    assert console_logout(browser, base).headers["location"] == "/console/login"

    replayed = tenants_page(base, saved)
    assert (replayed.status_code, replayed.headers.get("location")) == (303, "/console/login"), (
        f"the cookie saved before logout still opens the console ({replayed.status_code})"
    )


def test_finding_4_a_revoked_tokens_open_stream_ends_within_two_seconds(server: Server) -> None:
    token = grant(server.registry, "viewer", ORG, subject="revoked-streamer")
    write_event(server.instance, SLUG, ORG, "validate")
    stream = RawStream(server.api.base, EVENTS, token)
    try:
        assert stream.status() == 200
        while stream.events() < 1:  # the backlog: the stream is open
            assert stream.read_for(10), "the backlog never came"
        write_event(server.instance, SLUG, ORG, "allocate")
        while stream.events() < 2:  # followed live
            assert stream.read_for(10), "the live event never came"

        server.registry.tokens.revoke(token_id(token))
        revoked_at = time.monotonic()
        received_before = stream.events()
        while not stream.eof and time.monotonic() - revoked_at < ENDED_WITHIN_S:
            write_event(server.instance, SLUG, ORG, "deploy")  # the feed goes on
            stream.read_for(0.2)
        late = stream.events() - received_before
        assert stream.eof, (
            f"the stream of the revoked token was still open {ENDED_WITHIN_S} s after the"
            f" revocation, and received {late} more events"
        )
    finally:
        stream.close()


def test_finding_3_unread_streams_leave_the_api_answering_at_once(server: Server) -> None:
    tokens = [
        grant(server.registry, "viewer", ORG, subject=f"reader-{number}")
        for number in range(-(-UNREAD_STREAMS // STREAMS_PER_TOKEN))
    ]
    streams = [
        RawStream(server.api.base, EVENTS, tokens[number // STREAMS_PER_TOKEN])
        for number in range(UNREAD_STREAMS)
    ]
    try:
        statuses = _heads(streams, within_s=10)  # none is ever read past its head
        probes = {
            "/healthz": {},
            "/v1/tenants": {"Authorization": f"Bearer {tokens[0]}"},
            "/local/tenants": {
                OPERATOR_KEY_HEADER: str(read_operator_key(server.settings.data_dir))
            },
        }
        took = {
            path: _answer_time(server.api.base + path, headers) for path, headers in probes.items()
        }
        slow = {path: seconds for path, seconds in took.items() if seconds >= FAST_S}
        assert not slow, f"with {UNREAD_STREAMS} unread streams open, answers took {slow} s"
        assert statuses == [200] * UNREAD_STREAMS
    finally:
        for stream in streams:
            stream.close()


def _heads(streams: list[RawStream], within_s: float) -> list[int | None]:
    """Each stream's status, or None if its answer did not start in time."""
    deadline = time.monotonic() + within_s
    found: list[int | None] = []
    for stream in streams:
        try:
            found.append(stream.status(timeout_s=max(0.01, deadline - time.monotonic())))
        except AssertionError:
            found.append(None)
    return found


def _answer_time(url: str, headers: dict[str, str]) -> float:
    """The slowest of three calls (a call that times out counts as 5 s)."""
    slowest = 0.0
    for _ in range(3):
        started = time.monotonic()
        try:
            answer = requests.get(url, headers=headers, timeout=5)
            assert answer.status_code == 200, answer.text
        except requests.Timeout:
            return 5.0
        slowest = max(slowest, time.monotonic() - started)
    return slowest

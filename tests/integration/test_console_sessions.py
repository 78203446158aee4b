"""Console sessions through real HTTP against a running API server: the cookie holds only a
random id, the session lives in the registry and ends there (logout in tests/security, token
revoked or expired, 8 hours), login gives a new id, and the cookie is Secure over HTTPS."""

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
import uvicorn
from sqlalchemy import create_engine, select, text, update
from starlette.types import Receive, Scope, Send

from tenant_pipelines.api.sessions import ServerSessions
from tenant_pipelines.registry.schema import api_tokens, console_sessions
from tenant_pipelines.registry.sessions import new_session_id
from tenant_pipelines.registry.store import TenantRegistry
from tenant_pipelines.settings import Settings
from tenant_pipelines.support.db_url import normalize_url
from tests.api_helpers import ApiServer, api_server, platform_env
from tests.conftest import fresh_pg_database
from tests.console_streams import COOKIE, console_login, grant, tenants_page, token_id
from tests.stack_helpers import free_port
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

ORG = "widgets"
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{43}")
EIGHT_HOURS_S = 8 * 3600


@dataclass
class World:
    server: ApiServer
    registry: TenantRegistry

    @property
    def base(self) -> str:
        return self.server.base

    def session_rows(self) -> list[dict[str, object]]:
        with self.registry.db.read() as conn:
            return [dict(row._mapping) for row in conn.execute(select(console_sessions))]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("console-sessions")
    env = platform_env(tmp / "data", tmp / "dagster")
    settings = Settings.from_env(env)
    settings.data_dir.mkdir(parents=True)
    registry = TenantRegistry.open(settings.db_url)
    with api_server(env, tmp / "api.log") as server:
        yield World(server, registry)
    registry.close()


def set_cookie(answer: requests.Response) -> str:
    return answer.headers["set-cookie"]


def cookie_value(header: str) -> str:
    return header.split(";", 1)[0].split("=", 1)[1]


def test_the_cookie_carries_only_an_id_and_the_registry_only_its_hash(world: World) -> None:
    token = grant(world.registry, "org-admin", ORG)
    browser = console_login(world.base, token)
    session_id = browser.cookies[COOKIE]
    assert SESSION_ID.fullmatch(session_id)
    assert tenants_page(world.base, session_id).status_code == 200
    rows = [row for row in world.session_rows() if row["token_id"] == token_id(token)]
    assert len(rows) == 1
    assert session_id not in str(rows) and token not in str(rows)
    assert set(rows[0]) == {"session_hash", "token_id", "data", "created_at", "expires_at"}


def login_by_hand(
    base: str, token: str, cookie: str | None = None, **headers: str
) -> tuple[str, requests.Response]:
    """The login form fetched with `cookie` (if any) and posted with the cookie it set, as a
    browser would: (the pre-login session id, the login's answer)."""
    sent = dict(headers)
    if cookie is not None:
        sent["Cookie"] = f"{COOKIE}={cookie}"
    form = requests.get(f"{base}/console/login", headers=sent, timeout=30)
    before_login = cookie_value(set_cookie(form))
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert csrf is not None
    login = requests.post(
        f"{base}/console/login",
        data={"token": token, "csrf_token": csrf.group(1)},
        headers={**headers, "Cookie": f"{COOKIE}={before_login}"},
        allow_redirects=False,
        timeout=30,
    )
    assert login.status_code == 303, login.text
    return before_login, login


def test_login_gives_the_session_a_new_id_and_a_chosen_id_is_never_adopted(world: World) -> None:
    chosen = new_session_id()  # an attacker's, planted in the victim's browser
    token = grant(world.registry, "viewer", ORG)
    before_login, login = login_by_hand(world.base, token, cookie=chosen)
    assert before_login != chosen  # an id that names no session is replaced, not adopted
    after_login = cookie_value(set_cookie(login))
    assert after_login not in (before_login, chosen)
    assert tenants_page(world.base, after_login).status_code == 200
    for old in (before_login, chosen):
        assert tenants_page(world.base, old).headers["location"] == "/console/login"


def test_revoking_the_token_sends_its_sessions_to_the_login_page(world: World) -> None:
    token = grant(world.registry, "org-admin", ORG)
    sessions = [console_login(world.base, token).cookies[COOKIE] for _ in range(2)]
    assert [tenants_page(world.base, s).status_code for s in sessions] == [200, 200]

    world.registry.tokens.revoke(token_id(token))

    for session_id in sessions:
        answer = tenants_page(world.base, session_id)
        assert (answer.status_code, answer.headers["location"]) == (303, "/console/login")
    assert not [row for row in world.session_rows() if row["token_id"] == token_id(token)]


def test_a_token_that_expires_sends_its_session_to_the_login_page(world: World) -> None:
    token = grant(world.registry, "org-admin", ORG)
    session_id = console_login(world.base, token).cookies[COOKIE]
    assert tenants_page(world.base, session_id).status_code == 200
    with world.registry.db.write() as conn:  # its lifetime has passed
        past = datetime.now(UTC) - timedelta(seconds=1)
        key = api_tokens.c.token_id == token_id(token)
        conn.execute(update(api_tokens).where(key).values(expires_at=past))
    assert tenants_page(world.base, session_id).headers["location"] == "/console/login"


def test_a_session_lives_eight_hours_from_login_then_lands_on_login(world: World) -> None:
    token = grant(world.registry, "org-admin", ORG)
    _, login = login_by_hand(world.base, token)
    max_age = int(re.search(r"Max-Age=(\d+)", set_cookie(login)).group(1))  # type: ignore[union-attr]
    assert EIGHT_HOURS_S - 60 <= max_age <= EIGHT_HOURS_S
    (row,) = [r for r in world.session_rows() if r["token_id"] == token_id(token)]
    lifetime = row["expires_at"] - row["created_at"]  # type: ignore[operator]
    assert lifetime == timedelta(hours=8)

    session_id = cookie_value(set_cookie(login))
    for _ in range(3):  # using it does not extend it: the 8 hours are counted from login
        assert tenants_page(world.base, session_id).status_code == 200
    (again,) = [r for r in world.session_rows() if r["token_id"] == token_id(token)]
    assert again["expires_at"] == row["expires_at"]

    with world.registry.db.write() as conn:  # 8 hours later
        past = datetime.now(UTC) - timedelta(seconds=1)
        key = console_sessions.c.token_id == token_id(token)
        conn.execute(update(console_sessions).where(key).values(expires_at=past))
    answer = tenants_page(world.base, session_id)
    assert answer.headers["location"] == "/console/login"
    assert "Max-Age=0" in set_cookie(answer)  # the browser is told to drop it


def test_the_cookie_is_http_only_strict_and_secure_when_served_over_https(world: World) -> None:
    plain = requests.get(f"{world.base}/console/login", timeout=30)
    attributes = [part.strip() for part in set_cookie(plain).split(";")]
    assert {"Path=/", "HttpOnly", "SameSite=Strict"} <= set(attributes)
    assert "Secure" not in attributes

    # A TLS-terminating proxy on this host says the request came over HTTPS: uvicorn takes
    # X-Forwarded-Proto from the loopback only (its forwarded_allow_ips default).
    token = grant(world.registry, "viewer", ORG)
    _, login = login_by_hand(world.base, token, **{"X-Forwarded-Proto": "https"})
    for answer in (
        login,
        requests.get(
            f"{world.base}/console/login", headers={"X-Forwarded-Proto": "https"}, timeout=30
        ),
    ):
        assert "Secure" in [part.strip() for part in set_cookie(answer).split(";")]


def test_the_middleware_keeps_sessions_for_any_asgi_app(tmp_path: Path) -> None:
    """`ServerSessions` in front of a plain ASGI app (as the Dagster webserver will be): the
    app reads and writes `scope["session"]`; a change of token gives a new id."""
    registry = TenantRegistry.open(f"sqlite:///{tmp_path / 'registry.db'}")
    token = grant(registry, "viewer", ORG)

    async def counter(scope: Scope, receive: Receive, send: Send) -> None:
        session = scope["session"]
        session["visits"] = int(session.get("visits", 0)) + 1
        if scope["path"] == "/login":
            session["token_id"] = token_id(token)
        body = str(session["visits"]).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    port = free_port()
    config = uvicorn.Config(
        ServerSessions(counter, store=lambda: registry.sessions), port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{port}"
        browser = requests.Session()
        _wait_until_serving(browser, base)
        first_id = browser.cookies[COOKIE]
        assert browser.get(f"{base}/", timeout=10).text == "2"
        assert browser.cookies[COOKIE] == first_id
        assert browser.get(f"{base}/login", timeout=10).text == "3"
        assert browser.cookies[COOKIE] != first_id
        assert browser.get(f"{base}/", timeout=10).text == "4"
        loaded = registry.sessions.load(browser.cookies[COOKIE])
        assert loaded is not None and loaded.token_id == token_id(token)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        registry.close()
    assert not thread.is_alive()


def _wait_until_serving(browser: requests.Session, base: str) -> None:
    def serving() -> bool:
        try:
            assert browser.get(f"{base}/", timeout=10).text == "1"
            return True
        except requests.ConnectionError:
            return False

    wait_until(serving, 10, "the test server did not start", 0.05)


@pytest.mark.postgres
def test_a_registry_out_of_reach_is_a_503_with_the_reason(
    tmp_path: Path, pg_admin_url: str
) -> None:
    with fresh_pg_database(pg_admin_url, "sessions503") as url:
        registry = TenantRegistry.open(url)
        token = grant(registry, "org-admin", ORG)
        registry.close()
        data = tmp_path / "data"
        env = platform_env(data, data / "dagster", TENANT_DB_URL=url)
        with api_server(env, tmp_path / "api.log") as server:
            session_id = console_login(server.base, token).cookies[COOKIE]
            _refuse_connections(pg_admin_url, url.rsplit("/", 1)[1])
            try:
                loading = tenants_page(server.base, session_id)  # the session cannot be read
                saving = requests.get(f"{server.base}/console/login", timeout=30)  # nor made
            finally:
                _refuse_connections(pg_admin_url, url.rsplit("/", 1)[1], allow=True)
            for answer in (loading, saving):
                assert answer.status_code == 503, answer.text
                assert "registry" in answer.json()["error"]
                assert "is unavailable" in answer.json()["error"]
            assert "Traceback" not in server.log.read_text()


def _refuse_connections(admin_url: str, database: str, allow: bool = False) -> None:
    admin = create_engine(normalize_url(admin_url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(
                text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(allow).lower()}')
            )
            if not allow:
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": database},
                )
    finally:
        admin.dispose()

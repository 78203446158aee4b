"""The admin console's sign-in in a real workload process, started by the deployer, over real
HTTP, on both identity stores: a local SQLite file and a PostgreSQL schema read as the tenant's
identity role. Every path: no session, wrong code, the code once, an expired invitation, the
password set and used, a wrong password, the limit on attempts, a missing CSRF token, sign-out,
and a store made before sign-in existed."""

import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from psycopg2 import sql

from resources.deployer import LocalProcessDeployer
from resources.identity import (
    LocalSQLiteIdentityStore,
    PostgresIdentityStore,
    identity_db_path,
    pg_identity_schema,
)
from resources.workload_state import state_path
from tenant_pipelines.domain.tenant import TenantSpec
from tenant_pipelines.support.unix_http import UnixHTTPConnection
from tests.admin_client import PASSWORD, AdminClient, Reply
from tests.pg_helpers import admin_sql, drop_our_roles

pytestmark = pytest.mark.integration

DOMAIN = "localhost"


def spec() -> TenantSpec:
    org = f"adm{uuid.uuid4().hex[:6]}"
    return TenantSpec(
        tenant_id=f"t-{org}",
        request_id=str(uuid.uuid4()),
        slug="acme",
        org=org,
        plan="free",
        admin_email=f"admin@{org}.example.com",
    )


@dataclass
class Workload:
    """One tenant's running workload and a way to read and alter its store as the platform can."""

    tenant: TenantSpec
    socket: str
    pid: int
    code: str
    log: Path
    sql: Callable[[str, tuple[Any, ...]], list[Any]]  # on its users table, written as {users}

    def client(self, forwarded_for: str | None = None) -> AdminClient:
        return AdminClient(
            lambda: UnixHTTPConnection(self.socket, 30),
            f"{self.tenant.key}.localhost",
            forwarded_for,
        )

    def admin_row(self) -> dict[str, Any]:
        [row] = self.sql(
            "SELECT status, invitation_token, invitation_redeemed_at, password_hash FROM {users}"
            " WHERE role = 'admin'",
            (),
        )
        return dict(zip(("status", "token", "redeemed_at", "password_hash"), row, strict=True))


def sqlite_runner(path: Path) -> Callable[[str, tuple[Any, ...]], list[Any]]:
    def run(statement: str, params: tuple[Any, ...]) -> list[Any]:
        conn = sqlite3.connect(path)
        try:
            with conn:
                rows = conn.execute(statement.format(users="users"), params).fetchall()
            return [tuple(datetime.fromisoformat(v) if _is_iso(v) else v for v in r) for r in rows]
        finally:
            conn.close()

    return run


def _is_iso(value: object) -> bool:
    return isinstance(value, str) and value[:2] == "20" and "T" in value


def pg_runner(url: str, schema: str) -> Callable[[str, tuple[Any, ...]], list[Any]]:
    def run(statement: str, params: tuple[Any, ...]) -> list[Any]:
        users = sql.Identifier(schema, "users")
        return admin_sql(url, sql.SQL(statement.replace("?", "%s")).format(users=users), params)

    return run


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def workload(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Workload]:
    tenant = spec()
    data_dir = tmp_path / "data"
    if request.param == "sqlite":
        identity: LocalSQLiteIdentityStore | PostgresIdentityStore = LocalSQLiteIdentityStore(
            data_dir=str(data_dir)
        )
        deployer = LocalProcessDeployer(data_dir=str(data_dir), domain=DOMAIN)
        run = sqlite_runner(identity_db_path(data_dir, tenant.key))
        url = None
    else:
        url = str(request.getfixturevalue("pg_database"))
        monkeypatch.setenv("TENANT_BACKENDS_PG_URL", url)
        identity = PostgresIdentityStore(admin_url=url)
        deployer = LocalProcessDeployer(
            data_dir=str(data_dir),
            domain=DOMAIN,
            identity_pg_url=url,
        )
        run = pg_runner(url, pg_identity_schema(tenant.key))
    try:
        identity.ensure(tenant)
        handle = deployer.ensure(tenant)
        yield Workload(
            tenant,
            handle.details["socket"],
            handle.details["pid"],
            identity.invitation(tenant.key).token,
            state_path(data_dir, tenant.key).with_suffix(".log"),
            run,
        )
    finally:
        deployer.stop_all()
        if url is not None:
            drop_our_roles(url)


def location(reply: Reply) -> str | None:
    return reply.headers.get("location")


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_without_a_session_admin_answers_401_or_sends_a_browser_to_sign_in(
    workload: Workload, method: str
) -> None:
    client = workload.client()
    refused = client.send(method, "/admin", accept="application/json")
    assert refused.status == 401
    assert refused.headers["content-type"] == "application/json"
    if method == "GET":
        assert b"sign in first" in refused.body and b"user(s)" not in refused.body
    else:
        assert refused.body == b""
    browser = client.send(method, "/admin", accept="text/html,application/xhtml+xml")
    assert (browser.status, location(browser)) == (303, "/admin/sign-in")
    sign_in = client.send(method, "/admin/sign-in")
    assert sign_in.status == 200


def test_a_wrong_code_is_refused_and_changes_nothing(workload: Workload) -> None:
    client = workload.client()
    for email, code in (
        (workload.tenant.admin_email, workload.code[:-2]),
        (workload.tenant.admin_email, ""),
        ("someone@else.example", workload.code),
    ):
        refused = client.check_code(email, code)
        assert refused.status == 401
        assert refused.error == "The email address or the invitation code is wrong."
    assert workload.admin_row()["status"] == "pending_invitation"


def test_the_code_works_once_and_the_password_is_stored_hashed(workload: Workload) -> None:
    first = workload.client()
    done = first.redeem(workload.tenant.admin_email, workload.code)
    assert (done.status, location(done)) == (303, "/admin")
    console = first.send("GET", "/admin")
    assert console.status == 200
    assert f"Admin console: {workload.tenant.key}".encode() in console.body
    assert b"1 user(s)" in console.body and b"Issuer: https://" in console.body

    row = workload.admin_row()
    assert row["status"] == "active" and row["redeemed_at"] is not None
    scheme, iterations, _salt, _digest = row["password_hash"].split("$")
    assert (scheme, iterations) == ("pbkdf2_sha256", "600000")
    assert PASSWORD not in row["password_hash"]

    second = workload.client(forwarded_for="198.51.100.2")
    used = second.check_code(workload.tenant.admin_email, workload.code)
    assert used.status == 409
    assert (
        used.error == "This invitation has already been used: sign in with the password you chose."
    )
    fields = {"email": workload.tenant.admin_email, "code": workload.code}
    again = second.post("/admin/password", **fields, password="x" * 16, confirm="x" * 16)
    assert again.status == 409
    assert workload.admin_row()["password_hash"] == row["password_hash"]


def test_concurrent_redemptions_let_exactly_one_in(workload: Workload) -> None:
    """Each has checked the code; the store's conditional update admits one password only."""
    clients = [workload.client(forwarded_for=f"198.51.100.{n}") for n in range(4)]
    for client in clients:
        assert client.check_code(workload.tenant.admin_email, workload.code).status == 200
    statuses: dict[int, int] = {}

    def finish(client: AdminClient, n: int) -> None:
        password = f"password number {n} of four"
        fields = {"email": workload.tenant.admin_email, "code": workload.code}
        reply = client.post("/admin/password", **fields, password=password, confirm=password)
        statuses[n] = reply.status

    threads = [threading.Thread(target=finish, args=(c, n)) for n, c in enumerate(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses.values()) == [303, 409, 409, 409]
    [winner] = [n for n, status in statuses.items() if status == 303]
    email = workload.tenant.admin_email
    for n in range(4):
        signed = workload.client().sign_in(email, f"password number {n} of four")
        assert signed.status == (303 if n == winner else 401)


def test_an_expired_invitation_is_refused_with_a_clear_sentence(workload: Workload) -> None:
    expired = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
    workload.sql("UPDATE {users} SET invitation_expires_at = ?", (expired.isoformat(),))
    client = workload.client()
    refused = client.check_code(workload.tenant.admin_email, workload.code)
    assert refused.status == 410
    assert refused.error == (
        "This invitation expired on 2026-01-02 03:04 UTC."
        " Ask the platform team for a new invitation."
    )
    assert client.redeem(workload.tenant.admin_email, workload.code).status == 410
    assert workload.admin_row()["password_hash"] is None


def test_sign_in_with_the_password_works_and_a_wrong_one_is_refused(workload: Workload) -> None:
    assert workload.client().redeem(workload.tenant.admin_email, workload.code).status == 303

    client = workload.client(forwarded_for="198.51.100.7")
    wrong = client.sign_in(workload.tenant.admin_email, PASSWORD + "!")
    assert (wrong.status, wrong.error) == (401, "The email address or the password is wrong.")
    assert "tadmin_session" not in client.cookies
    assert client.send("GET", "/admin", accept="*/*").status == 401

    right = client.sign_in(workload.tenant.admin_email.upper(), PASSWORD)
    assert (right.status, location(right)) == (303, "/admin")
    cookie = next(c for c in right.headers["set-cookie"].split("\n") if "tadmin_session=" in c)
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/admin" in cookie
    assert "Secure" not in cookie  # plain HTTP, no X-Forwarded-Proto
    assert client.send("GET", "/admin").status == 200


def test_the_session_cookie_is_secure_when_the_edge_says_https(workload: Workload) -> None:
    workload.client().redeem(workload.tenant.admin_email, workload.code)
    client = workload.client()
    client.send("GET", "/admin/sign-in", headers={"X-Forwarded-Proto": "https"})
    fields = {"csrf_token": client.csrf, "email": workload.tenant.admin_email, "password": PASSWORD}
    signed = client.send("POST", "/admin/sign-in", fields, headers={"X-Forwarded-Proto": "https"})
    assert signed.status == 303
    assert all(c.endswith("; Secure") for c in signed.headers["set-cookie"].split("\n"))


def test_failed_attempts_are_limited_per_client_and_overall(workload: Workload) -> None:
    client = workload.client(forwarded_for="203.0.113.5")
    for _ in range(5):
        assert client.check_code(workload.tenant.admin_email, "guess").status == 401
    limited = client.check_code(workload.tenant.admin_email, workload.code)
    assert limited.status == 429 and limited.error.startswith("Too many failed attempts")
    assert 0 < int(limited.headers["retry-after"]) <= 300
    assert client.sign_in(workload.tenant.admin_email).status == 429

    # A client that invents a new address for each try meets the limit on all attempts.
    for n in range(19):
        liar = workload.client(forwarded_for=f"10.9.{n}.1")
        for _ in range(5):
            assert liar.check_code(workload.tenant.admin_email, "guess").status == 401
    newcomer = workload.client(forwarded_for="10.10.10.10")
    assert newcomer.check_code(workload.tenant.admin_email, workload.code).status == 429
    assert workload.admin_row()["status"] == "pending_invitation"


def test_posts_without_the_csrf_token_are_refused_and_change_nothing(workload: Workload) -> None:
    client = workload.client()
    client.send("GET", "/admin/invitation")
    fields = {
        "email": workload.tenant.admin_email,
        "code": workload.code,
        "password": PASSWORD,
        "confirm": PASSWORD,
    }
    refused = client.send("POST", "/admin/password", fields)
    assert refused.status == 403
    assert (
        refused.error == "This form has expired or did not come from this page: please try again."
    )
    forged = client.send("POST", "/admin/password", {**fields, "csrf_token": "forged"})
    assert forged.status == 403
    foreign = client.send(
        "POST",
        "/admin/password",
        {**fields, "csrf_token": client.csrf},
        headers={"Origin": "http://evil.example"},
    )
    assert foreign.status == 403
    assert workload.admin_row()["password_hash"] is None

    assert client.redeem(workload.tenant.admin_email, workload.code).status == 303
    sign_out = client.send("POST", "/admin/sign-out", {"email": "x"})
    assert sign_out.status == 403
    assert client.send("GET", "/admin").status == 200, "still signed in"


def test_sign_out_ends_the_session_on_the_server(workload: Workload) -> None:
    client = workload.client()
    client.redeem(workload.tenant.admin_email, workload.code)
    client.send("GET", "/admin")
    saved = dict(client.cookies)

    out = client.post("/admin/sign-out")
    assert (out.status, location(out)) == (303, "/admin/sign-in")
    assert "tadmin_session" not in client.cookies

    client.cookies = saved  # the cookie kept from before signing out
    landed = client.send("GET", "/admin")
    assert (landed.status, location(landed)) == (303, "/admin/sign-in")
    assert client.send("GET", "/admin", accept="*/*").status == 401


def test_the_log_holds_no_code_password_cookie_or_query(workload: Workload) -> None:
    client = workload.client()
    client.send("GET", f"/admin/sign-in?code={workload.code}")
    client.redeem(workload.tenant.admin_email, workload.code)
    client.send("GET", "/admin")
    client.post("/admin/sign-out")
    log = workload.log.read_text()
    assert '"POST /admin/password" 303' in log and '"GET /admin/sign-in" 200' in log
    for secret in (workload.code, PASSWORD, "tadmin_session", "csrf", "?code"):
        assert secret not in log


def old_store(data_dir: Path, tenant: TenantSpec) -> None:
    """An identity store as the code before the admin sign-in made it (no expiry, no password)."""
    path = identity_db_path(data_dir, tenant.key)
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path)
    with conn:
        conn.executescript(
            "CREATE TABLE tenant_meta (tenant_key TEXT PRIMARY KEY, plan TEXT NOT NULL,"
            " max_users INTEGER NOT NULL, created_at TEXT NOT NULL);"
            "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE,"
            " role TEXT NOT NULL, status TEXT NOT NULL, invitation_token TEXT,"
            " created_at TEXT NOT NULL);"
            f"INSERT INTO users (email, role, status, invitation_token, created_at) VALUES"
            f" ('{tenant.admin_email}', 'admin', 'pending_invitation', 'old-code', '2024-01-01');"
            "PRAGMA user_version = 1;"
        )
    conn.close()


def test_a_store_from_before_sign_in_lets_nobody_in_until_upgraded(tmp_path: Path) -> None:
    """The old code's store has no expiry or password columns: its workload fails closed;
    `upgrade`, which `tenantctl up` runs for every active tenant before it starts the tenant's
    workload (while the store is still the platform's), lets the admin redeem the code."""
    data_dir = tmp_path / "data"
    stale, upgraded = spec(), spec()
    for tenant in (stale, upgraded):
        old_store(data_dir, tenant)
    assert LocalSQLiteIdentityStore(data_dir=str(data_dir)).upgrade(upgraded.key)
    deployer = LocalProcessDeployer(data_dir=str(data_dir), domain=DOMAIN)
    try:
        where = deployer.ensure(stale).details["socket"]
        client = AdminClient(lambda: UnixHTTPConnection(where, 30), f"{stale.key}.localhost")
        refused = client.check_code(stale.admin_email, "old-code")
        assert refused.status == 503 and "predates the admin sign-in" in refused.error
        assert client.sign_in(stale.admin_email).status == 503
        assert client.send("GET", "/admin", accept="*/*").status == 401

        then = deployer.ensure(upgraded).details["socket"]
        client = AdminClient(lambda: UnixHTTPConnection(then, 30), f"{upgraded.key}.localhost")
        assert client.redeem(upgraded.admin_email, "old-code").status == 303
        assert client.send("GET", "/admin").status == 200
    finally:
        deployer.stop_all()

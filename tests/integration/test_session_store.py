"""Console sessions and the token check of open streams, in the registry (SQLite and
PostgreSQL): only a hash of a session id is stored, a revoked token's sessions go with it, a
session never outlives its token, expired and surplus pre-login sessions are purged."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from tenant_pipelines.domain.tokens import TokenGrant
from tenant_pipelines.registry import tokens as token_queries
from tenant_pipelines.registry.schema import console_sessions as S
from tenant_pipelines.registry.sessions import new_session_id
from tenant_pipelines.registry.store import TenantRegistry

pytestmark = pytest.mark.integration

HOURS_8 = timedelta(hours=8)


def token(registry: TenantRegistry, days: int = 90) -> str:
    grant = TokenGrant.parse(
        {"subject": "alice", "role": "platform-admin", "expires_in_days": days}
    )
    _, record = registry.tokens.create(grant)
    return record.token_id


def rows(registry: TenantRegistry) -> list[dict[str, object]]:
    with registry.db.read() as conn:
        return [dict(row._mapping) for row in conn.execute(select(S))]


def test_a_session_is_stored_under_a_hash_and_read_back(registry: TenantRegistry) -> None:
    token_id = token(registry)
    session_id = new_session_id()
    assert len(session_id) == 43  # 256 bits, URL-safe
    expires_at = registry.sessions.start(
        session_id, {"token_id": token_id, "csrf": "c"}, token_id, HOURS_8
    )
    assert abs(expires_at - (datetime.now(UTC) + HOURS_8)) < timedelta(minutes=1)

    (row,) = rows(registry)
    assert row["session_hash"] != session_id and session_id not in str(row)
    loaded = registry.sessions.load(session_id)
    assert loaded is not None
    assert (loaded.data, loaded.token_id) == ({"token_id": token_id, "csrf": "c"}, token_id)

    assert registry.sessions.save(session_id, {"token_id": token_id, "flash": "done"})
    assert registry.sessions.load(session_id).data["flash"] == "done"  # type: ignore[union-attr]
    assert registry.sessions.load(new_session_id()) is None


def test_a_new_id_replaces_the_old_and_an_ended_session_stays_ended(
    registry: TenantRegistry,
) -> None:
    before_login = new_session_id()
    registry.sessions.start(before_login, {"csrf": "c"}, None, timedelta(hours=1))
    token_id = token(registry)
    after_login = new_session_id()
    registry.sessions.start(after_login, {"token_id": token_id}, token_id, HOURS_8, before_login)
    assert registry.sessions.load(before_login) is None
    assert registry.sessions.load(after_login) is not None

    registry.sessions.end(after_login)
    assert registry.sessions.load(after_login) is None
    assert not registry.sessions.save(after_login, {"token_id": token_id})  # not brought back
    assert rows(registry) == []


def test_revoking_a_token_ends_its_sessions_only(registry: TenantRegistry) -> None:
    revoked, kept = token(registry), token(registry)
    ids = {name: new_session_id() for name in ("revoked-1", "revoked-2", "kept")}
    for name, session_id in ids.items():
        owner = revoked if name.startswith("revoked") else kept
        registry.sessions.start(session_id, {"token_id": owner}, owner, HOURS_8)
    registry.tokens.revoke(revoked)
    assert registry.sessions.load(ids["revoked-1"]) is None
    assert registry.sessions.load(ids["revoked-2"]) is None
    assert registry.sessions.load(ids["kept"]) is not None


def test_a_session_never_outlives_its_token(registry: TenantRegistry) -> None:
    token_expiry = datetime.now(UTC) + timedelta(hours=1)
    with registry.db.write() as conn:  # the registry's own insert, back-dated: one hour left
        grant = TokenGrant.parse({"subject": "old", "role": "platform-admin", "expires_in_days": 1})
        _, record = token_queries.insert_token(conn, grant, token_expiry - timedelta(days=1))
    expires_at = registry.sessions.start(new_session_id(), {}, record.token_id, HOURS_8)
    assert abs(expires_at - token_expiry) < timedelta(seconds=1)


def test_expired_and_surplus_pre_login_sessions_are_purged(registry: TenantRegistry) -> None:
    live_token, old_token = token(registry), token(registry)
    logged_in, expired = new_session_id(), new_session_id()
    registry.sessions.start(logged_in, {"token_id": live_token}, live_token, HOURS_8)
    registry.sessions.start(expired, {"token_id": old_token}, old_token, HOURS_8)
    with registry.db.write() as conn:  # its 8 hours have passed
        past = datetime.now(UTC) - timedelta(seconds=1)
        conn.execute(update(S).where(S.c.token_id == old_token).values(expires_at=past))
    assert registry.sessions.load(expired) is None  # an expired session opens nothing ...
    visitors = [new_session_id() for _ in range(5)]
    for visitor in visitors:
        registry.sessions.start(visitor, {"csrf": visitor}, None, timedelta(hours=1))

    assert registry.sessions.purge(max_anonymous=3) == 3  # ... and is purged, with 2 visitors
    assert len(rows(registry)) == 4
    assert registry.sessions.load(logged_in) is not None
    kept = [v for v in visitors if registry.sessions.load(v) is not None]
    assert kept == visitors[2:]  # the newest pre-login sessions stay
    assert registry.sessions.purge(max_anonymous=3) == 0


def test_usable_token_ids_leaves_out_revoked_expired_and_unknown_ones(
    registry: TenantRegistry,
) -> None:
    good, revoked = token(registry), token(registry)
    registry.tokens.revoke(revoked)
    with registry.db.write() as conn:
        grant = TokenGrant.parse({"subject": "old", "role": "platform-admin"})
        _, expired = token_queries.insert_token(conn, grant, datetime.now(UTC) - timedelta(days=91))
    asked = {good, revoked, expired.token_id, "unknown"}
    assert registry.tokens.usable_ids(asked) == {good}
    assert registry.tokens.usable_ids(set()) == set()
    many = {good} | {f"x{number}" for number in range(2500)}  # more than one statement's worth
    assert registry.tokens.usable_ids(many) == {good}

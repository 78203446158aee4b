"""Console sessions and the token checks of long-lived connections, inside the registry's
transactions.

A session's id (256 random bits) lives only in the browser's cookie; the registry keeps its
SHA-256, so a database dump opens no session, and a lookup by hash needs no constant-time
comparison (the hash is the primary key; guessing one is guessing the id). A session names the
token it was opened with: revoking the token deletes its sessions, and a session never outlives
its token. Expired rows are purged, and pre-login rows (kept only for the login form's CSRF
token, which any visitor can make) are capped, so the table stays bounded.
"""

import hashlib
import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from tenant_pipelines.registry.engine import Database
from tenant_pipelines.registry.queries import now as current_time
from tenant_pipelines.registry.schema import api_tokens, console_sessions

SESSION_ID_BYTES = 32
# Ids per statement when checking or deleting many: far below SQLite's and PostgreSQL's bind limits.
IDS_PER_QUERY = 1000


@dataclass(frozen=True)
class ConsoleSession:
    """A live session as the registry holds it."""

    data: dict[str, Any]
    token_id: str | None
    expires_at: datetime


def new_session_id() -> str:
    return secrets.token_urlsafe(SESSION_ID_BYTES)


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def load_session(conn: Connection, session_id: str, now: datetime) -> ConsoleSession | None:
    """The session, unless it is unknown, ended or expired."""
    query = select(
        console_sessions.c.data, console_sessions.c.token_id, console_sessions.c.expires_at
    ).where(
        console_sessions.c.session_hash == _hash(session_id), console_sessions.c.expires_at > now
    )
    row = conn.execute(query).first()
    if row is None:
        return None
    return ConsoleSession(json.loads(row.data), row.token_id, row.expires_at)


def start_session(
    conn: Connection,
    session_id: str,
    data: Mapping[str, Any],
    token_id: str | None,
    *,
    now: datetime,
    lifetime: timedelta,
    replaces: str | None = None,
) -> datetime:
    """Record a new session (ending `replaces`, the id it takes over from); its expiry, which
    is never later than its token's."""
    if replaces is not None:
        end_session(conn, replaces)
    expires_at = now + lifetime
    if token_id is not None:
        token_expiry = conn.execute(
            select(api_tokens.c.expires_at).where(api_tokens.c.token_id == token_id)
        ).scalar()
        expires_at = min(expires_at, token_expiry or now)
    values = {
        "session_hash": _hash(session_id),
        "token_id": token_id,
        "data": json.dumps(dict(data), sort_keys=True),
        "created_at": now,
        "expires_at": expires_at,
    }
    conn.execute(insert(console_sessions).values(values))
    return expires_at


def save_session(conn: Connection, session_id: str, data: Mapping[str, Any], now: datetime) -> bool:
    """Replace a live session's data; False if it ended meanwhile (it is not brought back)."""
    key = (console_sessions.c.session_hash == _hash(session_id)) & (
        console_sessions.c.expires_at > now
    )
    stored = json.dumps(dict(data), sort_keys=True)
    return bool(conn.execute(update(console_sessions).where(key).values(data=stored)).rowcount)


def end_session(conn: Connection, session_id: str) -> None:
    conn.execute(
        delete(console_sessions).where(console_sessions.c.session_hash == _hash(session_id))
    )


def end_token_sessions(conn: Connection, token_id: str) -> int:
    """End every session opened with this token (it was revoked); how many there were."""
    return int(
        conn.execute(
            delete(console_sessions).where(console_sessions.c.token_id == token_id)
        ).rowcount
    )


def purge_sessions(conn: Connection, now: datetime, max_anonymous: int) -> int:
    """Delete expired sessions, and pre-login sessions beyond the newest `max_anonymous`;
    how many rows went."""
    purged = int(
        conn.execute(delete(console_sessions).where(console_sessions.c.expires_at <= now)).rowcount
    )
    surplus = (
        select(console_sessions.c.session_hash)
        .where(console_sessions.c.token_id.is_(None))
        .order_by(console_sessions.c.created_at.desc(), console_sessions.c.session_hash)
        .offset(max_anonymous)
    )
    doomed = [row.session_hash for row in conn.execute(surplus)]
    for start in range(0, len(doomed), IDS_PER_QUERY):
        batch = doomed[start : start + IDS_PER_QUERY]
        purged += int(
            conn.execute(
                delete(console_sessions).where(console_sessions.c.session_hash.in_(batch))
            ).rowcount
        )
    return purged


def usable_token_ids(conn: Connection, token_ids: Iterable[str], now: datetime) -> set[str]:
    """Which of these tokens are neither revoked nor expired (unknown ids are not usable)."""
    wanted = sorted(set(token_ids))
    usable: set[str] = set()
    for start in range(0, len(wanted), IDS_PER_QUERY):
        query = select(api_tokens.c.token_id).where(
            api_tokens.c.token_id.in_(wanted[start : start + IDS_PER_QUERY]),
            api_tokens.c.revoked_at.is_(None),
            api_tokens.c.expires_at > now,
        )
        usable.update(conn.execute(query).scalars())
    return usable


class SessionStore:
    """The console_sessions table: `registry.sessions`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def load(self, session_id: str) -> ConsoleSession | None:
        with self._db.read() as conn:
            return load_session(conn, session_id, current_time())

    def start(
        self,
        session_id: str,
        data: Mapping[str, Any],
        token_id: str | None,
        lifetime: timedelta,
        replaces: str | None = None,
    ) -> datetime:
        """Record a new session, ending `replaces`; when it expires."""
        with self._db.write() as conn:
            moment = current_time()
            return start_session(
                conn, session_id, data, token_id, now=moment, lifetime=lifetime, replaces=replaces
            )

    def save(self, session_id: str, data: Mapping[str, Any]) -> bool:
        with self._db.write() as conn:
            return save_session(conn, session_id, data, current_time())

    def end(self, session_id: str) -> None:
        with self._db.write() as conn:
            end_session(conn, session_id)

    def purge(self, max_anonymous: int) -> int:
        with self._db.write() as conn:
            return purge_sessions(conn, current_time(), max_anonymous)

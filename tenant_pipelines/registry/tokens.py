"""Issuing, listing, revoking and checking API tokens, inside the registry's transactions.

Only the SHA-256 of a token's secret part is stored: the secret has 256 bits of randomness, so a
slow password hash buys nothing, and a database dump holds no usable token. A check looks the
token up by its id and compares hashes in constant time.
"""

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, insert, select, update

from tenant_pipelines.domain.access import Caller, NotAuthenticated
from tenant_pipelines.domain.errors import NotFound
from tenant_pipelines.domain.tokens import TOKEN_PREFIX, TokenGrant, TokenRecord, split_token
from tenant_pipelines.registry.engine import Database
from tenant_pipelines.registry.queries import now as current_time
from tenant_pipelines.registry.schema import api_tokens
from tenant_pipelines.registry.sessions import end_token_sessions, usable_token_ids

TOKEN_ID_BYTES = 6
SECRET_BYTES = 32
INVALID = "the token is unknown, expired or revoked"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _record(row: Row[Any]) -> TokenRecord:
    fields = dict(row._mapping)
    fields.pop("secret_hash")
    return TokenRecord(**fields)


def insert_token(conn: Connection, grant: TokenGrant, now: datetime) -> tuple[str, TokenRecord]:
    """A new token (shown once) and its record."""
    token_id = secrets.token_hex(TOKEN_ID_BYTES)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    values = {
        "token_id": token_id,
        "secret_hash": _hash(secret),
        "subject": grant.subject,
        "role": grant.role.value,
        "org": grant.org,
        "created_at": now,
        "expires_at": now + timedelta(days=grant.expires_in_days),
        "revoked_at": None,
    }
    conn.execute(insert(api_tokens).values(values))
    return f"{TOKEN_PREFIX}{token_id}_{secret}", fetch_token(conn, token_id)


def fetch_token(conn: Connection, token_id: str) -> TokenRecord:
    row = conn.execute(select(api_tokens).where(api_tokens.c.token_id == token_id)).first()
    if row is None:
        raise NotFound(f"no token with id {token_id!r}")
    return _record(row)


def all_tokens(conn: Connection) -> list[TokenRecord]:
    rows = conn.execute(select(api_tokens).order_by(api_tokens.c.created_at, api_tokens.c.token_id))
    return [_record(row) for row in rows]


def revoke_token(conn: Connection, token_id: str, now: datetime) -> TokenRecord:
    """Idempotent: a revoked token keeps its first revocation time."""
    record = fetch_token(conn, token_id)
    if record.revoked_at is None:
        conn.execute(
            update(api_tokens).where(api_tokens.c.token_id == token_id).values(revoked_at=now)
        )
    return fetch_token(conn, token_id)


def check_token(conn: Connection, token: str, now: datetime) -> TokenRecord:
    """The record of a usable token; NotAuthenticated for anything else (one message for all,
    so a caller learns nothing about which tokens exist)."""
    parts = split_token(token)
    if parts is None:
        raise NotAuthenticated(INVALID)
    token_id, secret = parts
    row = conn.execute(select(api_tokens).where(api_tokens.c.token_id == token_id)).first()
    if row is None or not hmac.compare_digest(row.secret_hash, _hash(secret)):
        raise NotAuthenticated(INVALID)
    record = _record(row)
    if not record.usable_at(now):
        raise NotAuthenticated(INVALID)
    return record


def usable_token(conn: Connection, token_id: str, now: datetime) -> TokenRecord:
    """A token named by id (a console session holds only the id) if it is still usable."""
    row = conn.execute(select(api_tokens).where(api_tokens.c.token_id == token_id)).first()
    if row is None or not _record(row).usable_at(now):
        raise NotAuthenticated(INVALID)
    return _record(row)


class TokenStore:
    """The api_tokens table: `registry.tokens`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def create(self, grant: TokenGrant) -> tuple[str, TokenRecord]:
        """A new token, to be shown once, and its record (the registry keeps only a hash)."""
        with self._db.write() as conn:
            return insert_token(conn, grant, current_time())

    def all(self) -> list[TokenRecord]:
        with self._db.read() as conn:
            return all_tokens(conn)

    def revoke(self, token_id: str) -> TokenRecord:
        """Raises NotFound; revoking twice is harmless. Ends the token's console sessions in
        the same transaction: no session outlives its token, even for a moment."""
        with self._db.write() as conn:
            record = revoke_token(conn, token_id, current_time())
            end_token_sessions(conn, token_id)
            return record

    def authenticate(self, token: str) -> Caller:
        """The caller a bearer token stands for; raises NotAuthenticated."""
        with self._db.read() as conn:
            return check_token(conn, token, current_time()).caller()

    def caller_for_id(self, token_id: str) -> Caller:
        """The caller of a console session, if its token is still usable."""
        with self._db.read() as conn:
            return usable_token(conn, token_id, current_time()).caller()

    def usable_ids(self, token_ids: Iterable[str]) -> set[str]:
        """Which of these tokens may still be used: one query for every open event stream."""
        with self._db.read() as conn:
            return usable_token_ids(conn, token_ids, current_time())

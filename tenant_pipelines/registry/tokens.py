"""Issuing, listing, revoking and checking API tokens, inside the registry's transactions.

Only the SHA-256 of a token's secret part is stored: the secret has 256 bits of randomness, so a
slow password hash buys nothing, and a database dump holds no usable token. A check looks the
token up by its id and compares hashes in constant time.
"""

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, insert, select, update

from tenant_pipelines.domain.access import NotAuthenticated
from tenant_pipelines.domain.errors import NotFound
from tenant_pipelines.domain.tokens import TOKEN_PREFIX, TokenGrant, TokenRecord, split_token
from tenant_pipelines.registry.schema import api_tokens as K

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
    conn.execute(insert(K).values(values))
    return f"{TOKEN_PREFIX}{token_id}_{secret}", fetch_token(conn, token_id)


def fetch_token(conn: Connection, token_id: str) -> TokenRecord:
    row = conn.execute(select(K).where(K.c.token_id == token_id)).first()
    if row is None:
        raise NotFound(f"no token with id {token_id!r}")
    return _record(row)


def all_tokens(conn: Connection) -> list[TokenRecord]:
    rows = conn.execute(select(K).order_by(K.c.created_at, K.c.token_id))
    return [_record(row) for row in rows]


def revoke_token(conn: Connection, token_id: str, now: datetime) -> TokenRecord:
    """Idempotent: a revoked token keeps its first revocation time."""
    record = fetch_token(conn, token_id)
    if record.revoked_at is None:
        conn.execute(update(K).where(K.c.token_id == token_id).values(revoked_at=now))
    return fetch_token(conn, token_id)


def check_token(conn: Connection, token: str, now: datetime) -> TokenRecord:
    """The record of a usable token; NotAuthenticated for anything else (one message for all,
    so a caller learns nothing about which tokens exist)."""
    parts = split_token(token)
    if parts is None:
        raise NotAuthenticated(INVALID)
    token_id, secret = parts
    row = conn.execute(select(K).where(K.c.token_id == token_id)).first()
    if row is None or not hmac.compare_digest(row.secret_hash, _hash(secret)):
        raise NotAuthenticated(INVALID)
    record = _record(row)
    if not record.usable_at(now):
        raise NotAuthenticated(INVALID)
    return record


def usable_token(conn: Connection, token_id: str, now: datetime) -> TokenRecord:
    """A token named by id (a console session holds only the id) if it is still usable."""
    row = conn.execute(select(K).where(K.c.token_id == token_id)).first()
    if row is None or not _record(row).usable_at(now):
        raise NotAuthenticated(INVALID)
    return _record(row)

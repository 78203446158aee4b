"""The tenant's admin account in its identity store, as the workload's sign-in reads and redeems it.

Standard library only (psycopg2 for a PostgreSQL store, already imported by the workload's start
check before it serves), so the workload stays light. The control plane creates and upgrades the
store (`resources.identity`); this side only reads the admin and, once, redeems the invitation:
on PostgreSQL as the tenant's identity role, which may update just the columns redemption writes.
"""

import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from resources.admin_auth import Account
from tenant_pipelines.support import sqlite

ADMIN_ROLE = "admin"
PENDING_INVITATION = "pending_invitation"
ACTIVE = "active"
# What redemption writes: the identity role may update these columns of its users table only.
REDEMPTION_COLUMNS = ("status", "password_hash", "invitation_redeemed_at")
PG_CONNECT_TIMEOUT_S = 5
PG_UNDEFINED_COLUMN = "42703"

_SELECT = (
    "SELECT email, status, invitation_token, invitation_expires_at, invitation_redeemed_at,"
    " password_hash FROM {users} WHERE role = {p} AND lower(email) = lower({p})"
    " ORDER BY id LIMIT 1"
)
_REDEEM = (
    "UPDATE {users} SET status = {p}, password_hash = {p}, invitation_redeemed_at = {p}"
    " WHERE role = {p} AND email = {p} AND status = {p} AND invitation_token = {p}"
    " AND invitation_redeemed_at IS NULL AND password_hash IS NULL"
)


class AccountsUnavailable(Exception):
    """The identity store cannot be read or written now."""


class AccountsOutdated(AccountsUnavailable):
    """The store was made before sign-in existed (no expiry or password columns): nobody can
    redeem or sign in until the control plane upgrades it (`tenantctl up` does)."""


class Accounts(Protocol):
    """What the console's sign-in needs of the identity store."""

    def find_admin(self, email: str) -> Account | None: ...

    def redeem(self, account: Account, password_hash: str, now: datetime) -> bool:
        """Mark the invitation used and store the password, atomically: True for exactly one
        of any number of concurrent calls, False if it was redeemed already."""
        ...


def _account(row: tuple[Any, ...] | None) -> Account | None:
    if row is None:
        return None
    email, status, token, expires, redeemed, password_hash = row
    return Account(email, status, token, _when(expires), _when(redeemed), password_hash)


def _when(value: datetime | str | None) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _redeem_params(account: Account, password_hash: str, now: object) -> list[Any]:
    """In the order of `_REDEEM`'s placeholders."""
    return [
        *(ACTIVE, password_hash, now),
        *(ADMIN_ROLE, account.email, PENDING_INVITATION, account.invitation_token),
    ]


class SQLiteAccounts:
    """A local identity database (the file the control plane made for this tenant)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def find_admin(self, email: str) -> Account | None:
        query = _SELECT.format(users="users", p="?")
        try:
            conn = sqlite.connect(self.path, "ro")
            try:
                return _account(conn.execute(query, (ADMIN_ROLE, email)).fetchone())
            finally:
                conn.close()
        except sqlite3.Error as error:
            raise _unavailable(error, "no such column" in str(error)) from None

    def redeem(self, account: Account, password_hash: str, now: datetime) -> bool:
        params = _redeem_params(account, password_hash, now.isoformat())
        try:
            with sqlite.transaction(self.path, "rw") as conn:
                return conn.execute(_REDEEM.format(users="users", p="?"), params).rowcount == 1
        except sqlite3.Error as error:
            raise _unavailable(error, "no such column" in str(error)) from None


class PostgresAccounts:
    """The tenant's identity schema, used as its own role (`SET ROLE`), like the start check."""

    def __init__(self, dsn: str, schema: str) -> None:
        self.dsn = dsn
        self.schema = schema

    def find_admin(self, email: str) -> Account | None:
        rows = self._run(_SELECT, [ADMIN_ROLE, email])
        return _account(rows[0] if rows else None)

    def redeem(self, account: Account, password_hash: str, now: datetime) -> bool:
        return self._run(_REDEEM, _redeem_params(account, password_hash, now)) == 1

    def _run(self, statement: str, params: list[Any]) -> Any:
        """Rows of a query, or the row count of an update, in one transaction as the role."""
        import psycopg2  # imported at the workload's start check already: no file is read here
        from psycopg2 import sql

        composed = sql.SQL(statement).format(
            users=sql.Identifier(self.schema, "users"), p=sql.Placeholder()
        )
        try:
            conn = psycopg2.connect(self.dsn, connect_timeout=PG_CONNECT_TIMEOUT_S)
            try:
                with conn, conn.cursor() as cursor:
                    cursor.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(self.schema)))
                    cursor.execute(composed, params)
                    return cursor.fetchall() if cursor.description else cursor.rowcount
            finally:
                conn.close()
        except psycopg2.Error as error:
            raise _unavailable(error, error.pgcode == PG_UNDEFINED_COLUMN) from None


def _unavailable(error: Exception, outdated: bool) -> AccountsUnavailable:
    if outdated:
        return AccountsOutdated("the identity store predates sign-in")
    return AccountsUnavailable(str(error).strip().splitlines()[0] if str(error) else "error")

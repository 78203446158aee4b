"""Statements and record reads that more than one kind of record runs inside its transactions:
one connection in, records out. What only one kind runs lives in that kind's module."""

import importlib
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, Table, select, update

from tenant_pipelines.domain.errors import NotFound
from tenant_pipelines.domain.records import RequestRecord, TenantRecord
from tenant_pipelines.registry.schema import requests, tenants

# live_slug and live_key are the reservation mechanism, not part of the record.
TENANT_COLUMNS = [c for c in tenants.c if c.name not in ("live_slug", "live_key")]


def now() -> datetime:
    return datetime.now(UTC)


def canonical_id(request_id: str) -> str:
    """Request ids are UUIDs; accept any spelling a user might paste (upper case, no dashes)."""
    try:
        return str(uuid.UUID(str(request_id)))
    except ValueError:
        return str(request_id)


def insert_if_absent(conn: Connection, table: Table, values: dict[str, Any]) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING: the database, not a prior read, decides who wins."""
    # SQLite's and PostgreSQL's own INSERT; the engine has imported its dialect's module already
    # (importing both up front cost every command ~40 ms: PostgreSQL's pulls in asyncio).
    dialect = importlib.import_module(f"sqlalchemy.dialects.{conn.dialect.name}")
    result = conn.execute(dialect.insert(table).values(values).on_conflict_do_nothing())
    return result.rowcount == 1


def compare_and_set(
    conn: Connection,
    table: Table,
    key: ColumnElement[bool],
    values: dict[str, Any],
    *,
    state: str | None = None,
) -> bool:
    """UPDATE ... WHERE <key> [AND state = :state]; False when another writer got there first."""
    condition = key if state is None else key & (table.c.state == state)
    return bool(conn.execute(update(table).where(condition).values(values)).rowcount)


def request_record(row: Row[Any]) -> RequestRecord:
    return RequestRecord(**row._mapping)


def fetch_request(conn: Connection, request_id: str) -> RequestRecord:
    row = conn.execute(select(requests).where(requests.c.request_id == request_id)).first()
    if row is None:
        raise NotFound(f"no request with id {request_id!r}")
    return request_record(row)


def tenant_record(row: Row[Any], prefix: str = "") -> TenantRecord:
    return TenantRecord(**{c.name: row._mapping[prefix + c.name] for c in TENANT_COLUMNS})


def find_tenant(conn: Connection, condition: ColumnElement[bool]) -> TenantRecord | None:
    row = conn.execute(select(*TENANT_COLUMNS).where(condition)).first()
    return None if row is None else tenant_record(row)


def fetch_tenant(conn: Connection, tenant_id: str, *, for_update: bool = False) -> TenantRecord:
    """The tenant by id; for_update locks its row (PostgreSQL) until the transaction ends."""
    query = select(*TENANT_COLUMNS).where(tenants.c.tenant_id == tenant_id)
    row = conn.execute(query.with_for_update() if for_update else query).first()
    if row is None:
        raise NotFound(f"no tenant with id {tenant_id!r}")
    return tenant_record(row)

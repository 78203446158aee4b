"""Statements the registry runs inside its transactions, one connection in, records out."""

import importlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Connection, Row, Table, func, select, text, update

from tenant_pipelines.domain.errors import Holder, NotFound
from tenant_pipelines.domain.records import (
    CompensationRecord,
    LedgerEntry,
    OperationRecord,
    RequestRecord,
    TenantRecord,
)
from tenant_pipelines.domain.states import LIVE_LEDGER_STATES, RequestState, TenantState
from tenant_pipelines.domain.tenant import tenant_key
from tenant_pipelines.registry import schema

if TYPE_CHECKING:  # its models (and email validation) load only where requests are parsed
    from tenant_pipelines.domain.request import TenantRequest

R, T, L, C = schema.requests, schema.tenants, schema.ledger, schema.compensations
OPS = schema.operations
# live_slug and live_key are the reservation mechanism, not part of the record.
TENANT_COLUMNS = [c for c in T.c if c.name not in ("live_slug", "live_key")]
WAITING = [RequestState.PENDING.value, RequestState.LAUNCHED.value]


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


def request_record(row: Row[Any]) -> RequestRecord:
    return RequestRecord(**row._mapping)


def tenant_record(row: Row[Any], prefix: str = "") -> TenantRecord:
    return TenantRecord(**{c.name: row._mapping[prefix + c.name] for c in TENANT_COLUMNS})


def ledger_entry(row: Row[Any]) -> LedgerEntry:
    fields = {c.name: row._mapping[c.name] for c in L.c}
    return LedgerEntry(**{**fields, "handle": json.loads(fields["handle"])})


def compensation_record(row: Row[Any]) -> CompensationRecord:
    return CompensationRecord(**row._mapping)


def find_operation(conn: Connection, tenant_id: str) -> OperationRecord | None:
    row = conn.execute(select(OPS).where(OPS.c.tenant_id == tenant_id)).first()
    return None if row is None else OperationRecord(**row._mapping)


@dataclass(frozen=True)
class Taken:
    """What holds a new request's slug or tenant key; `key` set when only the key collides."""

    holder: Holder
    key: str | None = None


def name_holder(conn: Connection, slug: str, org: str, request_id: str) -> Taken | None:
    """What holds `slug`, or the key `<slug>-<org>` under another split, besides this request:
    a live tenant, or another request in flight (pending or launched, no tenant yet); None when
    both are free."""
    key = tenant_key(slug, org)
    others = T.c.request_id != request_id
    if tenant := find_tenant(conn, (T.c.live_slug == slug) & others):
        return Taken(_tenant_holder(tenant))
    if request := _request_in_flight(conn, R.c.slug == slug, request_id):
        return Taken(_request_holder(request))
    if tenant := find_tenant(conn, (T.c.live_key == key) & others):
        return Taken(_tenant_holder(tenant), key)
    if request := _request_in_flight(conn, request_key() == key, request_id):
        return Taken(_request_holder(request), key)
    return None


def request_key() -> ColumnElement[str]:
    """A request's tenant key, `<slug>-<org>`, in SQL (`||` on SQLite and PostgreSQL)."""
    return R.c.slug.concat("-").concat(R.c.org)


def _request_in_flight(
    conn: Connection, condition: ColumnElement[bool], request_id: str
) -> RequestRecord | None:
    query = select(R).where(
        condition,
        R.c.request_id != request_id,
        R.c.state.in_(WAITING),
        R.c.tenant_id.is_(None),
    )
    row = conn.execute(query.limit(1)).first()
    return None if row is None else request_record(row)


def _tenant_holder(tenant: TenantRecord) -> Holder:
    return Holder("tenant", tenant.slug, tenant.org, tenant.state)


def _request_holder(request: RequestRecord) -> Holder:
    return Holder("request", request.request_id, request.org, request.state)


def lock_names(conn: Connection, slug: str, org: str) -> None:
    """Serialize submissions for one slug, and for one tenant key, until the transaction ends.
    SQLite transactions that write already hold the database's write lock (BEGIN IMMEDIATE);
    PostgreSQL needs locks: always the slug's first, then the key's, so none waits in a cycle."""
    if conn.dialect.name == "postgresql":
        for name in (f"slug:{slug}", f"key:{tenant_key(slug, org)}"):
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": name})


def fetch_request(conn: Connection, request_id: str) -> RequestRecord:
    row = conn.execute(select(R).where(R.c.request_id == request_id)).first()
    if row is None:
        raise NotFound(f"no request with id {request_id!r}")
    return request_record(row)


def find_tenant(conn: Connection, condition: ColumnElement[bool]) -> TenantRecord | None:
    row = conn.execute(select(*TENANT_COLUMNS).where(condition)).first()
    return None if row is None else tenant_record(row)


def fetch_tenant(conn: Connection, tenant_id: str, *, for_update: bool = False) -> TenantRecord:
    """The tenant by id; for_update locks its row (PostgreSQL) until the transaction ends."""
    query = select(*TENANT_COLUMNS).where(T.c.tenant_id == tenant_id)
    row = conn.execute(query.with_for_update() if for_update else query).first()
    if row is None:
        raise NotFound(f"no tenant with id {tenant_id!r}")
    return tenant_record(row)


def find_ledger_entry(conn: Connection, tenant_id: str, kind: str) -> LedgerEntry | None:
    row = conn.execute(select(L).where(L.c.tenant_id == tenant_id, L.c.kind == kind)).first()
    return None if row is None else ledger_entry(row)


def next_seq(conn: Connection, tenant_id: str) -> int:
    """One more than any seq the tenant's ledger holds: the next allocation sorts last."""
    query = select(func.coalesce(func.max(L.c.seq), 0) + 1).where(L.c.tenant_id == tenant_id)
    return int(conn.execute(query).scalar_one())


def new_request_row(request: "TenantRequest") -> dict[str, Any]:
    moment = now()
    return {
        "request_id": str(request.request_id),
        "slug": request.slug,
        "org": request.org,
        "plan": request.plan,
        "admin_email": str(request.admin_email),
        "subject": request.requested_by.subject,
        "role": request.requested_by.role,
        "state": RequestState.PENDING.value,
        "created_at": moment,
        "updated_at": moment,
    }


def new_tenant_row(request: RequestRecord) -> dict[str, Any]:
    moment = now()
    return {
        "tenant_id": str(uuid.uuid4()),
        "request_id": request.request_id,
        "slug": request.slug,
        "org": request.org,
        "plan": request.plan,
        "admin_email": request.admin_email,
        "state": TenantState.PROVISIONING.value,
        "live_slug": request.slug,
        "live_key": tenant_key(request.slug, request.org),
        "created_at": moment,
        "updated_at": moment,
    }


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


def pending_requests(conn: Connection, limit: int) -> list[RequestRecord]:
    query = (
        select(R)
        .where(R.c.state == RequestState.PENDING.value)
        .order_by(R.c.created_at, R.c.request_id)
        .limit(limit)
    )
    return [request_record(row) for row in conn.execute(query)]


def tenant_by_slug(conn: Connection, slug: str) -> TenantRecord | None:
    """The live tenant with `slug`, else the most recently created one."""
    query = (
        select(*TENANT_COLUMNS)
        .where(T.c.slug == slug)
        .order_by(T.c.live_slug.is_(None), T.c.created_at.desc(), T.c.tenant_id)
        .limit(1)
    )
    row = conn.execute(query).first()
    return None if row is None else tenant_record(row)


def live_ledger(conn: Connection) -> list[tuple[TenantRecord, LedgerEntry]]:
    query = (
        select(L, *[c.label(f"t_{c.name}") for c in TENANT_COLUMNS])
        .join(T, T.c.tenant_id == L.c.tenant_id)
        .where(L.c.state.in_([state.value for state in LIVE_LEDGER_STATES]))
        .order_by(T.c.created_at, T.c.tenant_id, L.c.seq)
    )
    return [(tenant_record(row, prefix="t_"), ledger_entry(row)) for row in conn.execute(query)]

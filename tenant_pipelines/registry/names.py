"""What holds a slug or a tenant key: a live tenant, or another request in flight. Submission
asks it inside the transaction that records the request, serialized per slug and per key."""

from dataclasses import dataclass

from sqlalchemy import ColumnElement, Connection, select, text

from tenant_pipelines.domain.errors import Holder
from tenant_pipelines.domain.records import RequestRecord, TenantRecord
from tenant_pipelines.domain.states import RequestState
from tenant_pipelines.domain.tenant import tenant_key
from tenant_pipelines.registry.queries import find_tenant, request_record
from tenant_pipelines.registry.schema import requests, tenants

WAITING = [RequestState.PENDING.value, RequestState.LAUNCHED.value]


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
    others = tenants.c.request_id != request_id
    if tenant := find_tenant(conn, (tenants.c.live_slug == slug) & others):
        return Taken(_tenant_holder(tenant))
    if request := _request_in_flight(conn, requests.c.slug == slug, request_id):
        return Taken(_request_holder(request))
    if tenant := find_tenant(conn, (tenants.c.live_key == key) & others):
        return Taken(_tenant_holder(tenant), key)
    if request := _request_in_flight(conn, request_key() == key, request_id):
        return Taken(_request_holder(request), key)
    return None


def request_key() -> ColumnElement[str]:
    """A request's tenant key, `<slug>-<org>`, in SQL (`||` on SQLite and PostgreSQL)."""
    return requests.c.slug.concat("-").concat(requests.c.org)


def _request_in_flight(
    conn: Connection, condition: ColumnElement[bool], request_id: str
) -> RequestRecord | None:
    query = select(requests).where(
        condition,
        requests.c.request_id != request_id,
        requests.c.state.in_(WAITING),
        requests.c.tenant_id.is_(None),
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

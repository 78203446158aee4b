"""Tenants: reserved once per request, their slug and their key `<slug>-<org>` held by unique
constraints until decommissioned; every state change a compare-and-set along the state machine."""

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from tenant_pipelines.domain.errors import NotFound, SlugTaken
from tenant_pipelines.domain.records import RequestRecord, TenantRecord
from tenant_pipelines.domain.states import RequestState, TenantState, check_tenant_transition
from tenant_pipelines.domain.tenant import tenant_key
from tenant_pipelines.registry.engine import Database
from tenant_pipelines.registry.queries import (
    TENANT_COLUMNS,
    canonical_id,
    compare_and_set,
    fetch_tenant,
    find_tenant,
    insert_if_absent,
    now,
    tenant_record,
)
from tenant_pipelines.registry.schema import requests, tenants


def _new_row(request: RequestRecord) -> dict[str, Any]:
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
        "worker_host": request.worker_host,
        "created_at": moment,
        "updated_at": moment,
    }


class TenantStore:
    """The tenants table: `registry.tenants`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def reserve(self, request: RequestRecord) -> TenantRecord:
        """Insert the tenant (state provisioning) for this request; the slug and the tenant key
        `<slug>-<org>` are reserved by unique constraints among tenants not decommissioned.
        Idempotent for the same request. Raises SlugTaken if another live tenant holds the slug
        or the key (saying nothing of that tenant: the refused request's org reads it).

        It also links the request to its tenant, in the same transaction: a tenant is what the
        reservation makes, and the request's tenant_id only points back at it, so a request
        never names a tenant that was rolled back, nor a tenant lacks its request's link."""
        mine = tenants.c.request_id == request.request_id
        while True:
            with self._db.write() as conn:
                if existing := find_tenant(conn, mine):
                    return existing
                row = _new_row(request)
                if insert_if_absent(conn, tenants, row):
                    link = {"tenant_id": row["tenant_id"], "updated_at": row["created_at"]}
                    its_request = requests.c.request_id == request.request_id
                    compare_and_set(conn, requests, its_request, link)
                    return fetch_tenant(conn, row["tenant_id"])
                if existing := find_tenant(conn, mine):
                    return existing  # the same request, reserved concurrently
                if find_tenant(conn, tenants.c.live_slug == request.slug):
                    raise SlugTaken(request.slug)
                key = tenant_key(request.slug, request.org)
                if find_tenant(conn, tenants.c.live_key == key):
                    raise SlugTaken(request.slug, request.org, key)
            # The holder was decommissioned (or rolled back) in between: try again.

    def get(self, slug: str) -> TenantRecord:
        """The live tenant with this slug, else the most recent one; raises NotFound."""
        query = (
            select(*TENANT_COLUMNS)
            .where(tenants.c.slug == slug)
            .order_by(
                tenants.c.live_slug.is_(None), tenants.c.created_at.desc(), tenants.c.tenant_id
            )
            .limit(1)
        )
        with self._db.read() as conn:
            row = conn.execute(query).first()
        if row is None:
            raise NotFound(f"no tenant with slug {slug!r}")
        return tenant_record(row)

    def get_by_id(self, tenant_id: str) -> TenantRecord:
        with self._db.read() as conn:
            return fetch_tenant(conn, tenant_id)

    def for_request(self, request_id: str) -> TenantRecord | None:
        """The tenant a request created, if Validate got that far."""
        with self._db.read() as conn:
            return find_tenant(conn, tenants.c.request_id == canonical_id(request_id))

    def all(self, state: str | None = None) -> list[TenantRecord]:
        """Every tenant (or those in `state`), oldest first."""
        query = select(*TENANT_COLUMNS).order_by(tenants.c.created_at, tenants.c.tenant_id)
        if state is not None:
            query = query.where(tenants.c.state == TenantState(state).value)
        with self._db.read() as conn:
            return [tenant_record(row) for row in conn.execute(query)]

    def load_by_host(self, hosts: Sequence[str]) -> dict[str, int]:
        """How many tenants each of `hosts` holds: its tenants not decommissioned, and the
        requests placed on it still waiting for their tenant (a burst is placed before any of
        its tenants exists). One grouped read of each table."""
        load = dict.fromkeys(hosts, 0)
        live = select(tenants.c.worker_host, func.count()).where(
            tenants.c.live_slug.is_not(None), tenants.c.worker_host.in_(hosts)
        )
        waiting = select(requests.c.worker_host, func.count()).where(
            requests.c.tenant_id.is_(None),
            requests.c.state != RequestState.REJECTED.value,
            requests.c.worker_host.in_(hosts),
        )
        with self._db.read() as conn:
            for query, host in ((live, tenants.c.worker_host), (waiting, requests.c.worker_host)):
                for name, count in conn.execute(query.group_by(host)):
                    load[str(name)] += int(count)
        return load

    def census(self) -> list[tuple[str, str, int, datetime]]:
        """(state, plan, how many, the oldest one's creation) over every tenant, in one grouped
        read: what the metrics say of the tenants at each scrape."""
        query = select(
            tenants.c.state, tenants.c.plan, func.count(), func.min(tenants.c.created_at)
        ).group_by(tenants.c.state, tenants.c.plan)
        with self._db.read() as conn:
            return [(str(s), str(p), int(n), oldest) for s, p, n, oldest in conn.execute(query)]

    def transition(
        self,
        tenant_id: str,
        target: str,
        *,
        failed_step: str | None = None,
        failure_reason: str | None = None,
    ) -> TenantRecord:
        """Move the tenant to `target` atomically (CAS on the current state). Already in
        `target`: no-op. Invalid transition: InvalidTransition. Leaving `failed` clears
        failed_step/failure_reason; reaching decommissioned frees the slug and the key."""
        target = TenantState(target).value  # plain str for every driver; unknown: ValueError
        while True:
            with self._db.write() as conn:
                current = fetch_tenant(conn, tenant_id)
                if current.state == target:
                    return current
                check_tenant_transition(current.state, target)
                values: dict[str, Any] = {"state": target, "updated_at": now()}
                if target == TenantState.FAILED:
                    values.update(failed_step=failed_step, failure_reason=failure_reason)
                elif current.state == TenantState.FAILED:
                    values.update(failed_step=None, failure_reason=None)
                if target == TenantState.DECOMMISSIONED:
                    values.update(live_slug=None, live_key=None)
                key = tenants.c.tenant_id == tenant_id
                if compare_and_set(conn, tenants, key, values, state=current.state):
                    return fetch_tenant(conn, tenant_id)

    def record_run(self, tenant_id: str, run_id: str) -> None:
        """Remember the tenant's latest run (last_run_id)."""
        values = {"last_run_id": run_id, "updated_at": now()}
        with self._db.write() as conn:
            if not compare_and_set(conn, tenants, tenants.c.tenant_id == tenant_id, values):
                raise NotFound(f"no tenant with id {tenant_id!r}")

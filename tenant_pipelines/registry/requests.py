"""Tenant requests: recorded once per id, launched once (pending -> launched), owned by exactly
one provisioning run chain, rejected at most once. Every change is a compare-and-set."""

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from tenant_pipelines.domain.errors import RequestConflict, RequestIdTaken, SlugInUse
from tenant_pipelines.domain.plans import Role
from tenant_pipelines.domain.records import RequestRecord
from tenant_pipelines.domain.states import RequestState, check_request_transition
from tenant_pipelines.registry.engine import Database
from tenant_pipelines.registry.names import WAITING, Taken, lock_names, name_holder
from tenant_pipelines.registry.queries import (
    canonical_id,
    compare_and_set,
    fetch_request,
    insert_if_absent,
    now,
    request_record,
)
from tenant_pipelines.registry.schema import requests

if TYPE_CHECKING:  # its models (and email validation) load only where requests are parsed
    from tenant_pipelines.domain.request import TenantRequest

RETRY_MARKER = "retrying:"
_REQUEST_CONTENT = ("slug", "org", "plan", "admin_email", "subject", "role")


def retry_marker(root_run_id: str) -> str:
    """A request's run_id while a retry re-executes the run chain `root_run_id`."""
    return f"{RETRY_MARKER}{root_run_id}"


def _new_row(request: "TenantRequest", worker_host: str | None) -> dict[str, Any]:
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
        "worker_host": worker_host,
    }


def _same_caller(record: RequestRecord, values: dict[str, Any]) -> bool:
    """Whether a request id comes back from the caller who submitted it: the same subject and
    role and, for a role bound to one org, the same org (a subject's name is not unique across
    orgs; a platform-admin's is its own everywhere)."""
    same = record.subject == values["subject"] and record.role == values["role"]
    return same and (record.role == Role.PLATFORM_ADMIN or record.org == values["org"])


def _in_use(request: "TenantRequest", taken: Taken) -> SlugInUse:
    if taken.key is None:
        return SlugInUse(request.slug, taken.holder)
    return SlugInUse(request.slug, taken.holder, org=request.org, taken_key=taken.key)


class RequestStore:
    """The requests table: `registry.requests`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def submit(
        self,
        request: "TenantRequest",
        *,
        exclusive_slug: bool = False,
        worker_host: str | None = None,
    ) -> tuple[RequestRecord, bool]:
        """Record a pending request; (record, created). The same id again from the same caller
        returns the existing record with created=False, or raises RequestConflict naming the
        fields that differ; the id of another caller's request raises RequestIdTaken, which
        says nothing of that request.

        exclusive_slug (submission): a new request whose slug, or whose tenant key under any
        split, a live tenant or another request in flight holds raises SlugInUse and records
        nothing. The check and the insert are one transaction serialized per slug and per key;
        Validate's reservation still decides any other path.

        worker_host: the host its tenant is placed on (`service.placement`); a repeat keeps the
        first one's.
        """
        values = _new_row(request, worker_host)
        with self._db.write() as conn:
            if exclusive_slug:
                lock_names(conn, request.slug, request.org)
            created = insert_if_absent(conn, requests, values)
            mine = values["request_id"]
            taken = None
            if created and exclusive_slug:
                taken = name_holder(conn, request.slug, request.org, mine)
            if taken is not None:
                raise _in_use(request, taken)  # rolls the insert back
            record = fetch_request(conn, values["request_id"])
        if not _same_caller(record, values):
            raise RequestIdTaken()
        differing = [f for f in _REQUEST_CONTENT if getattr(record, f) != values[f]]
        if differing:
            raise RequestConflict(
                f"request {record.request_id} was already submitted with another "
                f"{', '.join(differing)}"
            )
        return record, created

    def get(self, request_id: str) -> RequestRecord:
        """Raises NotFound."""
        with self._db.read() as conn:
            return fetch_request(conn, canonical_id(request_id))

    def to_launch(self, limit: int) -> list[RequestRecord]:
        """Pending requests, oldest first."""
        query = (
            select(requests)
            .where(requests.c.state == RequestState.PENDING.value)
            .order_by(requests.c.created_at, requests.c.request_id)
            .limit(limit)
        )
        with self._db.read() as conn:
            return [request_record(row) for row in conn.execute(query)]

    def in_progress(self) -> list[RequestRecord]:
        """Pending or launched requests that have no tenant yet (Validate has not run)."""
        query = (
            select(requests)
            .where(requests.c.state.in_(WAITING), requests.c.tenant_id.is_(None))
            .order_by(requests.c.created_at, requests.c.request_id)
        )
        with self._db.read() as conn:
            return [request_record(row) for row in conn.execute(query)]

    def unclaimed_launches(self, older_than: datetime, limit: int) -> list[RequestRecord]:
        """Launched requests no run has claimed since `older_than`: a launcher may have died
        between winning the launch and creating the run."""
        query = (
            select(requests)
            .where(
                requests.c.state == RequestState.LAUNCHED.value,
                requests.c.run_id.is_(None),
                requests.c.updated_at < older_than,
            )
            .order_by(requests.c.updated_at)
            .limit(limit)
        )
        with self._db.read() as conn:
            return [request_record(row) for row in conn.execute(query)]

    def latest_for_slug(self, slug: str) -> RequestRecord | None:
        query = (
            select(requests)
            .where(requests.c.slug == slug)
            .order_by(requests.c.created_at.desc())
            .limit(1)
        )
        with self._db.read() as conn:
            row = conn.execute(query).first()
        return None if row is None else request_record(row)

    def mark_launched(self, request_id: str) -> bool:
        """Compare-and-set pending -> launched; False if it was not pending."""
        request_id = canonical_id(request_id)
        values = {"state": RequestState.LAUNCHED.value, "updated_at": now()}
        with self._db.write() as conn:
            key = requests.c.request_id == request_id
            pending = RequestState.PENDING.value
            changed = compare_and_set(conn, requests, key, values, state=pending)
            if not changed:
                fetch_request(conn, request_id)  # NotFound rather than a silent False
        return changed

    def claim(self, request_id: str, run_id: str, root_run_id: str | None = None) -> bool:
        """One request owns exactly one provisioning run: set run_id if unset (CAS). True if
        this run (or the root run of its re-execution chain) owns the request."""
        request_id = canonical_id(request_id)
        # The chain is named by its root, so every later re-execution of it still matches.
        claimant = root_run_id or run_id
        with self._db.write() as conn:
            # Unowned, or handed to this chain by a retry (reopen).
            free = requests.c.run_id.is_(None) | (requests.c.run_id == retry_marker(claimant))
            key = (requests.c.request_id == request_id) & free
            compare_and_set(conn, requests, key, {"run_id": claimant, "updated_at": now()})
            owner = fetch_request(conn, request_id).run_id
        return owner in {run_id, root_run_id} - {None}

    def reopen(self, request_id: str, owner: str | None, root_run_id: str) -> bool:
        """Compare-and-set: hand the request, still without a tenant, from `owner` (its failed
        run, or a retry marker gone stale) to the re-execution of `root_run_id`, marked as being
        retried until that run claims it in Validate. False when another caller got there first:
        of two retries at once, one is refused."""
        request_id = canonical_id(request_id)
        owned = requests.c.run_id.is_(None) if owner is None else requests.c.run_id == owner
        key = (
            (requests.c.request_id == request_id)
            & owned
            & requests.c.tenant_id.is_(None)
            & (requests.c.state == RequestState.LAUNCHED.value)
        )
        values = {"run_id": retry_marker(root_run_id), "updated_at": now()}
        with self._db.write() as conn:
            return compare_and_set(conn, requests, key, values)

    def reject(self, request_id: str, reason: str) -> RequestRecord:
        """Idempotent: a request already rejected keeps its first reason."""
        request_id = canonical_id(request_id)
        target = RequestState.REJECTED.value
        while True:
            with self._db.write() as conn:
                current = fetch_request(conn, request_id)
                if current.state == target:
                    return current
                check_request_transition(current.state, target)
                values = {"state": target, "reason": reason, "updated_at": now()}
                key = requests.c.request_id == request_id
                if compare_and_set(conn, requests, key, values, state=current.state):
                    return fetch_request(conn, request_id)

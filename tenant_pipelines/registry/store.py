"""The tenant registry: the control-plane database (tenants, requests, resource ledger).

SQLAlchemy Core over SQLite (default) or PostgreSQL. The schema belongs to Alembic migrations
(`registry/migrations`); `TenantRegistry.open(url)` upgrades to head before use.
Every state change is a compare-and-set in SQL; every uniqueness rule is a database constraint.
"""

import json
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, delete, insert, select

from tenant_pipelines.domain.access import Caller
from tenant_pipelines.domain.errors import (
    NotFound,
    OperationInFlight,
    RequestConflict,
    RequestIdTaken,
    SlugInUse,
    SlugTaken,
)
from tenant_pipelines.domain.plans import Role
from tenant_pipelines.domain.records import (
    CompensationRecord,
    LedgerEntry,
    OperationRecord,
    RequestRecord,
    TenantRecord,
)
from tenant_pipelines.domain.states import (
    SETTLED_LEDGER_STATES,
    LedgerState,
    RequestState,
    TenantState,
    check_request_transition,
    check_tenant_transition,
)
from tenant_pipelines.domain.tenant import tenant_key
from tenant_pipelines.domain.tokens import TokenGrant, TokenRecord
from tenant_pipelines.registry import queries as q
from tenant_pipelines.registry import sessions, tokens
from tenant_pipelines.registry.engine import READ_ONLY_OPTION, make_engine, store_errors
from tenant_pipelines.registry.migrate import ensure_upgraded
from tenant_pipelines.registry.queries import OPS as O
from tenant_pipelines.registry.queries import C, L, R, T

if TYPE_CHECKING:  # its models (and email validation) load only where requests are parsed
    from tenant_pipelines.domain.request import TenantRequest

RETRY_MARKER = "retrying:"
_REQUEST_CONTENT = ("slug", "org", "plan", "admin_email", "subject", "role")


def _is_new_allocation(entry: LedgerEntry | None, state: str) -> bool:
    """A first entry, or a settled one coming back to life, sorts after every other entry."""
    if entry is None:
        return True
    return entry.state in SETTLED_LEDGER_STATES and state in (
        LedgerState.ALLOCATING,
        LedgerState.ALLOCATED,
    )


def _required(entry: LedgerEntry | None) -> LedgerEntry:
    assert entry is not None, "the entry was written in this transaction"
    return entry


def retry_marker(root_run_id: str) -> str:
    """A request's run_id while a retry re-executes the run chain `root_run_id`."""
    return f"{RETRY_MARKER}{root_run_id}"


def _same_caller(record: RequestRecord, values: dict[str, Any]) -> bool:
    """Whether a request id comes back from the caller who submitted it: the same subject and
    role and, for a role bound to one org, the same org (a subject's name is not unique across
    orgs; a platform-admin's is its own everywhere)."""
    same = record.subject == values["subject"] and record.role == values["role"]
    return same and (record.role == Role.PLATFORM_ADMIN or record.org == values["org"])


def _in_use(request: "TenantRequest", taken: q.Taken) -> SlugInUse:
    if taken.key is None:
        return SlugInUse(request.slug, taken.holder)
    return SlugInUse(request.slug, taken.holder, org=request.org, taken_key=taken.key)


def _required_op(operation: OperationRecord | None) -> OperationRecord:
    if operation is None:
        raise NotFound("the operation claim was released in between")
    return operation


_SHARED: dict[str, "TenantRegistry"] = {}
_SHARED_LOCK = threading.Lock()


class TenantRegistry:
    """All reads and writes of the control-plane database. Thread- and process-safe."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @classmethod
    def shared(cls, url: str) -> "TenantRegistry":
        """One migrated registry (and connection pool) per database URL per process."""
        with _SHARED_LOCK:
            if url not in _SHARED:
                _SHARED[url] = cls.open(url)
            return _SHARED[url]

    @classmethod
    def open(cls, url: str) -> "TenantRegistry":
        """Connect (postgresql:// is mapped to psycopg2) and upgrade the schema to head."""
        ensure_upgraded(url)
        return cls(make_engine(url))

    def close(self) -> None:
        self._engine.dispose()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with store_errors(self._engine.url), self._engine.begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with store_errors(self._engine.url), self._engine.connect() as conn:
            conn.execution_options(**{READ_ONLY_OPTION: True})
            with conn.begin():
                yield conn

    # requests -----------------------------------------------------------------------------
    def submit_request(
        self, request: "TenantRequest", *, exclusive_slug: bool = False
    ) -> tuple[RequestRecord, bool]:
        """Record a pending request; (record, created). The same id again from the same caller
        returns the existing record with created=False, or raises RequestConflict naming the
        fields that differ; the id of another caller's request raises RequestIdTaken, which
        says nothing of that request.

        exclusive_slug (submission): a new request whose slug, or whose tenant key under any
        split, a live tenant or another request in flight holds raises SlugInUse and records
        nothing. The check and the insert are one transaction serialized per slug and per key;
        Validate's reservation still decides any other path.
        """
        values = q.new_request_row(request)
        with self._write() as conn:
            if exclusive_slug:
                q.lock_names(conn, request.slug, request.org)
            created = q.insert_if_absent(conn, R, values)
            mine = values["request_id"]
            taken = None
            if created and exclusive_slug:
                taken = q.name_holder(conn, request.slug, request.org, mine)
            if taken is not None:
                raise _in_use(request, taken)  # rolls the insert back
            record = q.fetch_request(conn, values["request_id"])
        if not _same_caller(record, values):
            raise RequestIdTaken()
        differing = [f for f in _REQUEST_CONTENT if getattr(record, f) != values[f]]
        if differing:
            raise RequestConflict(
                f"request {record.request_id} was already submitted with another "
                f"{', '.join(differing)}"
            )
        return record, created

    def get_request(self, request_id: str) -> RequestRecord:
        """Raises NotFound."""
        with self._read() as conn:
            return q.fetch_request(conn, q.canonical_id(request_id))

    def requests_to_launch(self, limit: int) -> list[RequestRecord]:
        """Pending requests, oldest first."""
        with self._read() as conn:
            return q.pending_requests(conn, limit)

    def requests_in_progress(self) -> list[RequestRecord]:
        """Pending or launched requests that have no tenant yet (Validate has not run)."""
        waiting = [RequestState.PENDING.value, RequestState.LAUNCHED.value]
        query = (
            select(R)
            .where(R.c.state.in_(waiting), R.c.tenant_id.is_(None))
            .order_by(R.c.created_at, R.c.request_id)
        )
        with self._read() as conn:
            return [q.request_record(row) for row in conn.execute(query)]

    def unclaimed_launches(self, older_than: datetime, limit: int) -> list[RequestRecord]:
        """Launched requests no run has claimed since `older_than`: a launcher may have died
        between winning the launch and creating the run."""
        query = (
            select(R)
            .where(
                R.c.state == RequestState.LAUNCHED.value,
                R.c.run_id.is_(None),
                R.c.updated_at < older_than,
            )
            .order_by(R.c.updated_at)
            .limit(limit)
        )
        with self._read() as conn:
            return [q.request_record(row) for row in conn.execute(query)]

    def mark_launched(self, request_id: str) -> bool:
        """Compare-and-set pending -> launched; False if it was not pending."""
        request_id = q.canonical_id(request_id)
        values = {"state": RequestState.LAUNCHED.value, "updated_at": q.now()}
        with self._write() as conn:
            key = R.c.request_id == request_id
            changed = q.compare_and_set(conn, R, key, values, state=RequestState.PENDING.value)
            if not changed:
                q.fetch_request(conn, request_id)  # NotFound rather than a silent False
        return changed

    def claim_request(self, request_id: str, run_id: str, root_run_id: str | None = None) -> bool:
        """One request owns exactly one provisioning run: set run_id if unset (CAS). True if
        this run (or the root run of its re-execution chain) owns the request."""
        request_id = q.canonical_id(request_id)
        # The chain is named by its root, so every later re-execution of it still matches.
        claimant = root_run_id or run_id
        with self._write() as conn:
            # Unowned, or handed to this chain by a retry (reopen_request).
            free = R.c.run_id.is_(None) | (R.c.run_id == retry_marker(claimant))
            key = (R.c.request_id == request_id) & free
            q.compare_and_set(conn, R, key, {"run_id": claimant, "updated_at": q.now()})
            owner = q.fetch_request(conn, request_id).run_id
        return owner in {run_id, root_run_id} - {None}

    def reopen_request(self, request_id: str, owner: str | None, root_run_id: str) -> bool:
        """Compare-and-set: hand the request, still without a tenant, from `owner` (its failed
        run, or a retry marker gone stale) to the re-execution of `root_run_id`, marked as being
        retried until that run claims it in Validate. False when another caller got there first:
        of two retries at once, one is refused."""
        request_id = q.canonical_id(request_id)
        owned = R.c.run_id.is_(None) if owner is None else R.c.run_id == owner
        key = (
            (R.c.request_id == request_id)
            & owned
            & R.c.tenant_id.is_(None)
            & (R.c.state == RequestState.LAUNCHED.value)
        )
        values = {"run_id": retry_marker(root_run_id), "updated_at": q.now()}
        with self._write() as conn:
            return q.compare_and_set(conn, R, key, values)

    def reject_request(self, request_id: str, reason: str) -> RequestRecord:
        """Idempotent: a request already rejected keeps its first reason."""
        request_id = q.canonical_id(request_id)
        target = RequestState.REJECTED.value
        while True:
            with self._write() as conn:
                current = q.fetch_request(conn, request_id)
                if current.state == target:
                    return current
                check_request_transition(current.state, target)
                values = {"state": target, "reason": reason, "updated_at": q.now()}
                key = R.c.request_id == request_id
                if q.compare_and_set(conn, R, key, values, state=current.state):
                    return q.fetch_request(conn, request_id)

    # tenants ------------------------------------------------------------------------------
    def reserve_tenant(self, request: RequestRecord) -> TenantRecord:
        """Insert the tenant (state provisioning) for this request; the slug and the tenant key
        `<slug>-<org>` are reserved by unique constraints among tenants not decommissioned.
        Idempotent for the same request. Raises SlugTaken if another live tenant holds the slug
        or the key (saying nothing of that tenant: the refused request's org reads it)."""
        mine = T.c.request_id == request.request_id
        while True:
            with self._write() as conn:
                if existing := q.find_tenant(conn, mine):
                    return existing
                row = q.new_tenant_row(request)
                if q.insert_if_absent(conn, T, row):
                    link = {"tenant_id": row["tenant_id"], "updated_at": row["created_at"]}
                    q.compare_and_set(conn, R, R.c.request_id == request.request_id, link)
                    return q.fetch_tenant(conn, row["tenant_id"])
                if existing := q.find_tenant(conn, mine):
                    return existing  # the same request, reserved concurrently
                if q.find_tenant(conn, T.c.live_slug == request.slug):
                    raise SlugTaken(request.slug)
                key = tenant_key(request.slug, request.org)
                if q.find_tenant(conn, T.c.live_key == key):
                    raise SlugTaken(request.slug, request.org, key)
            # The holder was decommissioned (or rolled back) in between: try again.

    def get_tenant(self, slug: str) -> TenantRecord:
        """The live tenant with this slug, else the most recent one; raises NotFound."""
        with self._read() as conn:
            tenant = q.tenant_by_slug(conn, slug)
        if tenant is None:
            raise NotFound(f"no tenant with slug {slug!r}")
        return tenant

    def find_tenant_for_request(self, request_id: str) -> TenantRecord | None:
        """The tenant a request created, if Validate got that far."""
        with self._read() as conn:
            return q.find_tenant(conn, T.c.request_id == q.canonical_id(request_id))

    def latest_request_for_slug(self, slug: str) -> RequestRecord | None:
        query = select(R).where(R.c.slug == slug).order_by(R.c.created_at.desc()).limit(1)
        with self._read() as conn:
            row = conn.execute(query).first()
        return None if row is None else q.request_record(row)

    def get_tenant_by_id(self, tenant_id: str) -> TenantRecord:
        with self._read() as conn:
            return q.fetch_tenant(conn, tenant_id)

    def list_tenants(self, state: str | None = None) -> list[TenantRecord]:
        query = select(*q.TENANT_COLUMNS).order_by(T.c.created_at, T.c.tenant_id)
        if state is not None:
            query = query.where(T.c.state == TenantState(state).value)
        with self._read() as conn:
            return [q.tenant_record(row) for row in conn.execute(query)]

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
            with self._write() as conn:
                current = q.fetch_tenant(conn, tenant_id)
                if current.state == target:
                    return current
                check_tenant_transition(current.state, target)
                values: dict[str, Any] = {"state": target, "updated_at": q.now()}
                if target == TenantState.FAILED:
                    values.update(failed_step=failed_step, failure_reason=failure_reason)
                elif current.state == TenantState.FAILED:
                    values.update(failed_step=None, failure_reason=None)
                if target == TenantState.DECOMMISSIONED:
                    values.update(live_slug=None, live_key=None)
                key = T.c.tenant_id == tenant_id
                if q.compare_and_set(conn, T, key, values, state=current.state):
                    return q.fetch_tenant(conn, tenant_id)

    def record_run(self, tenant_id: str, run_id: str) -> None:
        """Remember the tenant's latest run (last_run_id)."""
        values = {"last_run_id": run_id, "updated_at": q.now()}
        with self._write() as conn:
            if not q.compare_and_set(conn, T, T.c.tenant_id == tenant_id, values):
                raise NotFound(f"no tenant with id {tenant_id!r}")

    # ledger -------------------------------------------------------------------------------
    def ledger_set(
        self,
        tenant_id: str,
        kind: str,
        state: str,
        *,
        handle: dict[str, Any] | None = None,
        run_id: str | None = None,
    ) -> LedgerEntry:
        """Upsert the (tenant, kind) entry. Entering allocating from absent or released takes a
        new, higher seq (allocation order). handle=None keeps the stored handle."""
        if state not in set(LedgerState):
            known = ", ".join(LedgerState)
            raise ValueError(f"ledger state {state!r} is not one of {known}")
        state = LedgerState(state).value  # a plain str for every driver
        with self._write() as conn:
            # The tenant's row lock serializes its allocations, so seqs never collide.
            q.fetch_tenant(conn, tenant_id, for_update=True)
            entry = q.find_ledger_entry(conn, tenant_id, kind)
            values: dict[str, Any] = {"state": state, "updated_at": q.now()}
            if handle is not None:
                values["handle"] = json.dumps(handle, sort_keys=True)
            if run_id is not None:
                values["run_id"] = run_id
            if _is_new_allocation(entry, state):
                values["seq"] = q.next_seq(conn, tenant_id)
            if entry is None:
                values.setdefault("handle", "{}")
                conn.execute(insert(L).values(tenant_id=tenant_id, kind=kind, **values))
            else:
                key = (L.c.tenant_id == tenant_id) & (L.c.kind == kind)
                q.compare_and_set(conn, L, key, values)
            return _required(q.find_ledger_entry(conn, tenant_id, kind))

    def ledger_get(self, tenant_id: str, kind: str) -> LedgerEntry | None:
        with self._read() as conn:
            return q.find_ledger_entry(conn, tenant_id, kind)

    def ledger(self, tenant_id: str) -> list[LedgerEntry]:
        """The tenant's entries in allocation order (seq ascending)."""
        query = select(L).where(L.c.tenant_id == tenant_id).order_by(L.c.seq, L.c.kind)
        with self._read() as conn:
            return [q.ledger_entry(row) for row in conn.execute(query)]

    def live_ledger(self) -> list[tuple[TenantRecord, LedgerEntry]]:
        """Every entry in allocating/allocated/releasing, across tenants (leak checks)."""
        with self._read() as conn:
            return q.live_ledger(conn)

    # compensations ------------------------------------------------------------------------
    def claim_compensation(self, failed_run_id: str, tenant_id: str) -> bool:
        """Exactly one compensation per failed run: True for the first caller only."""
        values = {"failed_run_id": failed_run_id, "tenant_id": tenant_id, "created_at": q.now()}
        with self._write() as conn:
            return q.insert_if_absent(conn, C, values)

    def set_compensation_run(self, failed_run_id: str, compensation_run_id: str) -> None:
        values = {"compensation_run_id": compensation_run_id}
        with self._write() as conn:
            if not q.compare_and_set(conn, C, C.c.failed_run_id == failed_run_id, values):
                raise NotFound(f"no compensation claimed for run {failed_run_id!r}")

    def get_compensation(self, failed_run_id: str) -> CompensationRecord | None:
        with self._read() as conn:
            row = conn.execute(select(C).where(C.c.failed_run_id == failed_run_id)).first()
        return None if row is None else q.compensation_record(row)

    def finish_compensation(self, failed_run_id: str) -> None:
        values = {"finished_at": q.now()}
        with self._write() as conn:
            if not q.compare_and_set(conn, C, C.c.failed_run_id == failed_run_id, values):
                raise NotFound(f"no compensation claimed for run {failed_run_id!r}")

    def unfinished_compensations(self, tenant_id: str) -> list[CompensationRecord]:
        """Compensations of this tenant claimed but not finished (a retry must wait for them);
        one given up is left for a person and no longer waited for."""
        query = select(C).where(
            C.c.tenant_id == tenant_id, C.c.finished_at.is_(None), C.c.gave_up_at.is_(None)
        )
        with self._read() as conn:
            return [q.compensation_record(row) for row in conn.execute(query)]

    def record_compensation_attempt(self, failed_run_id: str, attempts: int) -> bool:
        """Compare-and-set attempts -> attempts + 1 (a new compensation run is due); False if
        another caller counted it first or the compensation finished or was given up."""
        values = {"attempts": attempts + 1, "compensation_run_id": None}
        key = (
            (C.c.failed_run_id == failed_run_id)
            & (C.c.attempts == attempts)
            & C.c.finished_at.is_(None)
            & C.c.gave_up_at.is_(None)
        )
        with self._write() as conn:
            return q.compare_and_set(conn, C, key, values)

    def reopen_compensation(self, failed_run_id: str, attempts: int) -> None:
        """A person launches the compensation again: unfinished, not given up, counted as
        attempt `attempts` (so a failure is reported again rather than retried)."""
        values = {
            "finished_at": None,
            "gave_up_at": None,
            "attempts": attempts,
            "compensation_run_id": None,
        }
        with self._write() as conn:
            if not q.compare_and_set(conn, C, C.c.failed_run_id == failed_run_id, values):
                raise NotFound(f"no compensation claimed for run {failed_run_id!r}")

    def give_up_compensation(self, failed_run_id: str) -> bool:
        """Mark the compensation given up; True for the one caller that did (it reports it)."""
        key = (
            (C.c.failed_run_id == failed_run_id)
            & C.c.finished_at.is_(None)
            & C.c.gave_up_at.is_(None)
        )
        with self._write() as conn:
            return q.compare_and_set(conn, C, key, {"gave_up_at": q.now()})

    def compensations_in_progress(self, limit: int) -> list[CompensationRecord]:
        """Claimed compensations neither finished nor given up, oldest first."""
        query = (
            select(C)
            .where(C.c.finished_at.is_(None), C.c.gave_up_at.is_(None))
            .order_by(C.c.created_at)
            .limit(limit)
        )
        with self._read() as conn:
            return [q.compensation_record(row) for row in conn.execute(query)]

    # lifecycle operations -----------------------------------------------------------------
    def claim_operation(
        self,
        tenant_id: str,
        kind: str,
        holder: str,
        *,
        ended: Callable[[OperationRecord], bool],
        successor_of: str | None = None,
    ) -> OperationRecord:
        """Claim the tenant's one lifecycle operation (compare-and-set); the claim held.

        The same holder gets its claim back. A claim whose run has ended (`ended`: a stale
        claim, e.g. its worker was killed) or whose run the caller succeeds (`successor_of`: the
        compensation of a failed retry) is taken over. Anything else raises OperationInFlight.
        """
        values = {
            "tenant_id": tenant_id,
            "kind": kind,
            "holder": holder,
            "run_id": None,
            "claimed_at": q.now(),
        }
        while True:
            with self._write() as conn:
                if q.insert_if_absent(conn, O, values):
                    return _required_op(q.find_operation(conn, tenant_id))
                current = q.find_operation(conn, tenant_id)
            if current is None:
                continue  # released in between
            if current.holder == holder:
                return current
            succeeds = successor_of is not None and current.run_id == successor_of
            if not succeeds and not ended(current):
                slug = self.get_tenant_by_id(tenant_id).slug
                raise OperationInFlight(slug, current.kind, current.run_id)
            if self._replace_operation(current, values):
                return self._operation(tenant_id)

    def _replace_operation(self, current: OperationRecord, values: dict[str, Any]) -> bool:
        same_run = O.c.run_id.is_(None) if current.run_id is None else O.c.run_id == current.run_id
        key = (O.c.tenant_id == current.tenant_id) & (O.c.holder == current.holder) & same_run
        with self._write() as conn:
            return q.compare_and_set(conn, O, key, values)

    def _operation(self, tenant_id: str) -> OperationRecord:
        with self._read() as conn:
            return _required_op(q.find_operation(conn, tenant_id))

    def set_operation_run(self, tenant_id: str, holder: str, run_id: str) -> bool:
        """Name the run doing the holder's operation; False if the holder lost its claim."""
        key = (O.c.tenant_id == tenant_id) & (O.c.holder == holder)
        with self._write() as conn:
            return q.compare_and_set(conn, O, key, {"run_id": run_id})

    def release_operation(
        self, tenant_id: str, *, holder: str | None = None, run_id: str | None = None
    ) -> bool:
        """Release the claim if this holder (or this run) still has it; idempotent."""
        condition = O.c.tenant_id == tenant_id
        if holder is not None:
            condition &= O.c.holder == holder
        if run_id is not None:
            condition &= O.c.run_id == run_id
        with self._write() as conn:
            return bool(conn.execute(delete(O).where(condition)).rowcount)

    def get_operation(self, tenant_id: str) -> OperationRecord | None:
        with self._read() as conn:
            return q.find_operation(conn, tenant_id)

    def operations(self) -> list[OperationRecord]:
        """Every claim held, oldest first (the backstop releases those whose run ended)."""
        with self._read() as conn:
            rows = conn.execute(select(O).order_by(O.c.claimed_at))
            return [OperationRecord(**row._mapping) for row in rows]

    # API tokens ----------------------------------------------------------------------------
    def create_token(self, grant: TokenGrant) -> tuple[str, TokenRecord]:
        """A new token, to be shown once, and its record (the registry keeps only a hash)."""
        with self._write() as conn:
            return tokens.insert_token(conn, grant, q.now())

    def list_tokens(self) -> list[TokenRecord]:
        with self._read() as conn:
            return tokens.all_tokens(conn)

    def revoke_token(self, token_id: str) -> TokenRecord:
        """Raises NotFound; revoking twice is harmless. Ends the token's console sessions."""
        with self._write() as conn:
            record = tokens.revoke_token(conn, token_id, q.now())
            sessions.end_token_sessions(conn, token_id)
            return record

    def authenticate(self, token: str) -> Caller:
        """The caller a bearer token stands for; raises NotAuthenticated."""
        with self._read() as conn:
            return tokens.check_token(conn, token, q.now()).caller()

    def caller_for_token_id(self, token_id: str) -> Caller:
        """The caller of a console session, if its token is still usable."""
        with self._read() as conn:
            return tokens.usable_token(conn, token_id, q.now()).caller()

    def usable_token_ids(self, token_ids: Iterable[str]) -> set[str]:
        """Which of these tokens may still be used: one query for every open event stream."""
        with self._read() as conn:
            return sessions.usable_token_ids(conn, token_ids, q.now())

    # console sessions (`registry.sessions`) -----------------------------------------------
    def load_session(self, session_id: str) -> sessions.ConsoleSession | None:
        with self._read() as conn:
            return sessions.load_session(conn, session_id, q.now())

    def start_session(
        self,
        session_id: str,
        data: Mapping[str, Any],
        token_id: str | None,
        lifetime: timedelta,
        replaces: str | None = None,
    ) -> datetime:
        """Record a new session, ending `replaces`; when it expires."""
        with self._write() as conn:
            return sessions.start_session(
                conn, session_id, data, token_id, now=q.now(), lifetime=lifetime, replaces=replaces
            )

    def save_session(self, session_id: str, data: Mapping[str, Any]) -> bool:
        with self._write() as conn:
            return sessions.save_session(conn, session_id, data, q.now())

    def end_session(self, session_id: str) -> None:
        with self._write() as conn:
            sessions.end_session(conn, session_id)

    def purge_sessions(self, max_anonymous: int) -> int:
        with self._write() as conn:
            return sessions.purge_sessions(conn, q.now(), max_anonymous)

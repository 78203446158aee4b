"""The resource ledger: one entry per tenant and kind of resource, numbered in allocation order
(`seq`), so that compensation releases newest first. The tenant's row lock serializes its
allocations."""

import json
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Insert, Row, Update, func, insert, select, update

from tenant_pipelines.domain.records import LedgerEntry, TenantRecord
from tenant_pipelines.domain.states import LIVE_LEDGER_STATES, SETTLED_LEDGER_STATES, LedgerState
from tenant_pipelines.registry.engine import Database
from tenant_pipelines.registry.queries import (
    TENANT_COLUMNS,
    fetch_tenant,
    now,
    tenant_record,
)
from tenant_pipelines.registry.schema import ledger, tenants


def _entry(row: Row[Any]) -> LedgerEntry:
    fields = {c.name: row._mapping[c.name] for c in ledger.c}
    return LedgerEntry(**{**fields, "handle": json.loads(fields["handle"])})


def _find(conn: Connection, tenant_id: str, kind: str) -> LedgerEntry | None:
    query = select(ledger).where(ledger.c.tenant_id == tenant_id, ledger.c.kind == kind)
    row = conn.execute(query).first()
    return None if row is None else _entry(row)


def _next_seq(conn: Connection, tenant_id: str) -> int:
    """One more than any seq the tenant's ledger holds: the next allocation sorts last."""
    query = select(func.coalesce(func.max(ledger.c.seq), 0) + 1).where(
        ledger.c.tenant_id == tenant_id
    )
    return int(conn.execute(query).scalar_one())


def _is_new_allocation(entry: LedgerEntry | None, state: str) -> bool:
    """A first entry, or a settled one coming back to life, sorts after every other entry."""
    if entry is None:
        return True
    return entry.state in SETTLED_LEDGER_STATES and state in (
        LedgerState.ALLOCATING,
        LedgerState.ALLOCATED,
    )


class LedgerStore:
    """The ledger table: `registry.ledger`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def set(
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
        state = _checked_state(state)
        with self._db.write() as conn:
            # The tenant's row lock serializes its allocations, so seqs never collide.
            fetch_tenant(conn, tenant_id, for_update=True)
            entry = _find(conn, tenant_id, kind)
            return _write(conn, tenant_id, kind, entry, state, handle, run_id)

    def claim(
        self,
        tenant_id: str,
        kind: str,
        state: str,
        *,
        allowed: Callable[[LedgerEntry | None], bool],
        handle: dict[str, Any] | None = None,
        run_id: str | None = None,
    ) -> tuple[bool, LedgerEntry | None]:
        """`set`, only if `allowed(the entry as it is)`, in the same transaction: of two
        executions racing for one thing (an email), one is told it has it. Returns whether this
        one wrote, and the entry as it now is."""
        state = _checked_state(state)
        with self._db.write() as conn:
            fetch_tenant(conn, tenant_id, for_update=True)
            entry = _find(conn, tenant_id, kind)
            if not allowed(entry):
                return False, entry
            return True, _write(conn, tenant_id, kind, entry, state, handle, run_id)

    def get(self, tenant_id: str, kind: str) -> LedgerEntry | None:
        with self._db.read() as conn:
            return _find(conn, tenant_id, kind)

    def entries(self, tenant_id: str) -> list[LedgerEntry]:
        """The tenant's entries in allocation order (seq ascending)."""
        query = (
            select(ledger)
            .where(ledger.c.tenant_id == tenant_id)
            .order_by(ledger.c.seq, ledger.c.kind)
        )
        with self._db.read() as conn:
            return [_entry(row) for row in conn.execute(query)]

    def live(self) -> list[tuple[TenantRecord, LedgerEntry]]:
        """Every entry in allocating/allocated/releasing, across tenants (leak checks)."""
        query = (
            select(ledger, *[c.label(f"t_{c.name}") for c in TENANT_COLUMNS])
            .join(tenants, tenants.c.tenant_id == ledger.c.tenant_id)
            .where(ledger.c.state.in_([state.value for state in LIVE_LEDGER_STATES]))
            .order_by(tenants.c.created_at, tenants.c.tenant_id, ledger.c.seq)
        )
        with self._db.read() as conn:
            rows = conn.execute(query)
            return [(tenant_record(row, prefix="t_"), _entry(row)) for row in rows]


def _checked_state(state: str) -> str:
    if state not in set(LedgerState):
        known = ", ".join(LedgerState)
        raise ValueError(f"ledger state {state!r} is not one of {known}")
    return LedgerState(state).value  # a plain str for every driver


def _write(
    conn: Connection,
    tenant_id: str,
    kind: str,
    entry: LedgerEntry | None,
    state: str,
    handle: dict[str, Any] | None,
    run_id: str | None,
) -> LedgerEntry:
    """Write the entry, under the tenant's lock the caller holds."""
    values: dict[str, Any] = {"state": state, "updated_at": now()}
    if handle is not None:
        values["handle"] = json.dumps(handle, sort_keys=True)
    if run_id is not None:
        values["run_id"] = run_id
    if _is_new_allocation(entry, state):
        values["seq"] = _next_seq(conn, tenant_id)
    write: Insert | Update
    if entry is None:
        values.setdefault("handle", "{}")
        write = insert(ledger).values(tenant_id=tenant_id, kind=kind, **values)
    else:
        key = (ledger.c.tenant_id == tenant_id) & (ledger.c.kind == kind)
        write = update(ledger).where(key).values(values)
    # The row as written, in the same round trip (the tenant's lock keeps it ours).
    return _entry(conn.execute(write.returning(*ledger.c)).one())

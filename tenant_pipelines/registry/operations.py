"""Operation claims: one lifecycle operation (retry, decommission, compensation) per tenant at a
time. The table's primary key is the claim; taking over a stale one is a compare-and-set."""

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, delete, select

from tenant_pipelines.domain.errors import NotFound, OperationInFlight
from tenant_pipelines.domain.records import OperationRecord
from tenant_pipelines.registry.engine import Database
from tenant_pipelines.registry.queries import compare_and_set, fetch_tenant, insert_if_absent, now
from tenant_pipelines.registry.schema import operations


def _find(conn: Connection, tenant_id: str) -> OperationRecord | None:
    row = conn.execute(select(operations).where(operations.c.tenant_id == tenant_id)).first()
    return None if row is None else OperationRecord(**row._mapping)


def _required(operation: OperationRecord | None) -> OperationRecord:
    if operation is None:
        raise NotFound("the operation claim was released in between")
    return operation


class OperationStore:
    """The operations table: `registry.operations`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def claim(
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
            "claimed_at": now(),
        }
        while True:
            with self._db.write() as conn:
                if insert_if_absent(conn, operations, values):
                    return _required(_find(conn, tenant_id))
                current = _find(conn, tenant_id)
            if current is None:
                continue  # released in between
            if current.holder == holder:
                return current
            succeeds = successor_of is not None and current.run_id == successor_of
            if not succeeds and not ended(current):
                raise OperationInFlight(self._slug(tenant_id), current.kind, current.run_id)
            if self._replace(current, values):
                return _required(self.get(tenant_id))

    def _slug(self, tenant_id: str) -> str:
        with self._db.read() as conn:
            return fetch_tenant(conn, tenant_id).slug

    def _replace(self, current: OperationRecord, values: dict[str, Any]) -> bool:
        run = operations.c.run_id
        same_run = run.is_(None) if current.run_id is None else run == current.run_id
        key = (
            (operations.c.tenant_id == current.tenant_id)
            & (operations.c.holder == current.holder)
            & same_run
        )
        with self._db.write() as conn:
            return compare_and_set(conn, operations, key, values)

    def set_run(self, tenant_id: str, holder: str, run_id: str) -> bool:
        """Name the run doing the holder's operation; False if the holder lost its claim."""
        key = (operations.c.tenant_id == tenant_id) & (operations.c.holder == holder)
        with self._db.write() as conn:
            return compare_and_set(conn, operations, key, {"run_id": run_id})

    def release(
        self, tenant_id: str, *, holder: str | None = None, run_id: str | None = None
    ) -> bool:
        """Release the claim if this holder (or this run) still has it; idempotent."""
        condition = operations.c.tenant_id == tenant_id
        if holder is not None:
            condition &= operations.c.holder == holder
        if run_id is not None:
            condition &= operations.c.run_id == run_id
        with self._db.write() as conn:
            return bool(conn.execute(delete(operations).where(condition)).rowcount)

    def get(self, tenant_id: str) -> OperationRecord | None:
        with self._db.read() as conn:
            return _find(conn, tenant_id)

    def all(self) -> list[OperationRecord]:
        """Every claim held, oldest first (the backstop releases those whose run ended)."""
        with self._db.read() as conn:
            rows = conn.execute(select(operations).order_by(operations.c.claimed_at))
            return [OperationRecord(**row._mapping) for row in rows]

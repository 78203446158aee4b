"""Compensation claims: exactly one per failed run, counted attempts, finished or given up.
Whoever wins a claim or counts an attempt does so by insert-if-absent or compare-and-set."""

from typing import Any

from sqlalchemy import select

from tenant_pipelines.domain.errors import NotFound
from tenant_pipelines.domain.records import CompensationRecord
from tenant_pipelines.registry.engine import Database
from tenant_pipelines.registry.queries import compare_and_set, insert_if_absent, now
from tenant_pipelines.registry.schema import compensations

_UNSETTLED = compensations.c.finished_at.is_(None) & compensations.c.gave_up_at.is_(None)


class CompensationStore:
    """The compensations table: `registry.compensations`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def claim(self, failed_run_id: str, tenant_id: str) -> bool:
        """Exactly one compensation per failed run: True for the first caller only."""
        values = {"failed_run_id": failed_run_id, "tenant_id": tenant_id, "created_at": now()}
        with self._db.write() as conn:
            return insert_if_absent(conn, compensations, values)

    def get(self, failed_run_id: str) -> CompensationRecord | None:
        query = select(compensations).where(compensations.c.failed_run_id == failed_run_id)
        with self._db.read() as conn:
            row = conn.execute(query).first()
        return None if row is None else CompensationRecord(**row._mapping)

    def set_run(self, failed_run_id: str, compensation_run_id: str) -> None:
        self._update(failed_run_id, {"compensation_run_id": compensation_run_id})

    def finish(self, failed_run_id: str) -> None:
        self._update(failed_run_id, {"finished_at": now()})

    def reopen(self, failed_run_id: str, attempts: int) -> None:
        """A person launches the compensation again: unfinished, not given up, counted as
        attempt `attempts` (so a failure is reported again rather than retried)."""
        values = {
            "finished_at": None,
            "gave_up_at": None,
            "attempts": attempts,
            "compensation_run_id": None,
        }
        self._update(failed_run_id, values)

    def _update(self, failed_run_id: str, values: dict[str, Any]) -> None:
        key = compensations.c.failed_run_id == failed_run_id
        with self._db.write() as conn:
            if not compare_and_set(conn, compensations, key, values):
                raise NotFound(f"no compensation claimed for run {failed_run_id!r}")

    def unfinished(self, tenant_id: str) -> list[CompensationRecord]:
        """Compensations of this tenant claimed but not finished (a retry must wait for them);
        one given up is left for a person and no longer waited for."""
        query = select(compensations).where(compensations.c.tenant_id == tenant_id, _UNSETTLED)
        with self._db.read() as conn:
            return [CompensationRecord(**row._mapping) for row in conn.execute(query)]

    def record_attempt(self, failed_run_id: str, attempts: int) -> bool:
        """Compare-and-set attempts -> attempts + 1 (a new compensation run is due); False if
        another caller counted it first or the compensation finished or was given up."""
        values = {"attempts": attempts + 1, "compensation_run_id": None}
        key = (
            (compensations.c.failed_run_id == failed_run_id)
            & (compensations.c.attempts == attempts)
            & _UNSETTLED
        )
        with self._db.write() as conn:
            return compare_and_set(conn, compensations, key, values)

    def give_up(self, failed_run_id: str) -> bool:
        """Mark the compensation given up; True for the one caller that did (it reports it)."""
        key = (compensations.c.failed_run_id == failed_run_id) & _UNSETTLED
        with self._db.write() as conn:
            return compare_and_set(conn, compensations, key, {"gave_up_at": now()})

    def in_progress(self, limit: int) -> list[CompensationRecord]:
        """Claimed compensations neither finished nor given up, oldest first."""
        query = (
            select(compensations)
            .where(_UNSETTLED)
            .order_by(compensations.c.created_at)
            .limit(limit)
        )
        with self._db.read() as conn:
            return [CompensationRecord(**row._mapping) for row in conn.execute(query)]

"""Batches (`domain.batches`) as the registry keeps them: one row each, its items as JSON."""

import json
from typing import Any

from sqlalchemy import Row, insert, select, update

from tenant_pipelines.domain.batches import BatchItem, BatchRecord, Selection
from tenant_pipelines.domain.errors import NotFound
from tenant_pipelines.registry.engine import Database
from tenant_pipelines.registry.queries import now
from tenant_pipelines.registry.schema import batches


class BatchStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def create(self, record: BatchRecord, owner: str) -> None:
        """`owner`: who may read it besides platform-admins (`service.batches.owner_of`)."""
        with self._db.write() as conn:
            conn.execute(
                insert(batches).values(
                    batch_id=record.batch_id,
                    owner=owner,
                    action=record.action.value,
                    requested_by=record.requested_by,
                    selection=record.selection.model_dump_json(exclude_none=True),
                    items=_items_json(record.items),
                    created_at=record.created_at,
                )
            )

    def record_items(self, batch_id: str, items: list[BatchItem], finished: bool) -> None:
        """The outcomes so far; `finished`: the batch has acted on every item."""
        values: dict[str, object] = {"items": _items_json(items)}
        if finished:
            values["finished_at"] = now()
        with self._db.write() as conn:
            conn.execute(update(batches).where(batches.c.batch_id == batch_id).values(**values))

    def get(self, batch_id: str) -> BatchRecord:
        return self.get_with_owner(batch_id)[0]

    def get_with_owner(self, batch_id: str) -> tuple[BatchRecord, str]:
        with self._db.read() as conn:
            row = conn.execute(select(batches).where(batches.c.batch_id == batch_id)).first()
        if row is None:
            raise NotFound(f"no batch {batch_id!r}")
        return _record(row), str(row.owner)


def _record(row: Row[Any]) -> BatchRecord:
    return BatchRecord(
        batch_id=row.batch_id,
        action=row.action,
        requested_by=row.requested_by,
        selection=Selection.model_validate_json(row.selection),
        items=[BatchItem.model_validate(item) for item in json.loads(row.items)],
        created_at=row.created_at,
        finished_at=row.finished_at,
    )


def _items_json(items: list[BatchItem]) -> str:
    return json.dumps([item.model_dump(mode="json") for item in items])

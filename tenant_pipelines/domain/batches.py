"""Bulk retry and decommission: which tenants a batch acts on, and what became of each.

A batch names its tenants by a filter (state, plan, org, slug prefix, created after) or by a
list of slugs. Which tenants it acts on is fixed when it starts (a snapshot: tenants that match
later are not added), and each one's outcome is recorded as the batch goes: `done` with the run
it launched, `skipped` when another operation holds the tenant (the outcome names it), `refused`
with the reason (its state, the caller's role, or a slug the caller cannot see, which reads as
an unknown one).
"""

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tenant_pipelines.domain.states import TenantState

MAX_SLUGS = 1_000  # a list longer than this is a filter's job


class BatchAction(StrEnum):
    RETRY = "retry"
    DECOMMISSION = "decommission"


class ItemOutcome(StrEnum):
    PENDING = "pending"
    DONE = "done"
    SKIPPED = "skipped"  # another operation is in flight on the tenant: not a failure
    REFUSED = "refused"


class TenantFilter(BaseModel):
    """Tenants by attribute; every field given must match (none given: every tenant)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    state: TenantState | None = None
    plan: str | None = Field(default=None, max_length=40)
    org: str | None = Field(default=None, max_length=63)
    slug_prefix: str | None = Field(default=None, max_length=63, pattern=r"^[a-z0-9-]*$")
    created_after: datetime | None = None

    def admits(self, *, slug: str, org: str, plan: str, created_at: datetime) -> bool:
        """Whether a tenant with these attributes matches every field but the state (which
        the listing asks the registry for)."""
        return (
            (self.plan is None or plan == self.plan)
            and (self.org is None or org == self.org)
            and slug.startswith(self.slug_prefix or "")
            and (self.created_after is None or created_at > self.created_after)
        )

    @model_validator(mode="after")
    def _aware(self) -> Self:
        if self.created_after is not None and self.created_after.tzinfo is None:
            raise ValueError("created_after needs a timezone (e.g. 2026-12-07T10:00:00Z)")
        return self


class Selection(BaseModel):
    """Which tenants: a filter or slugs, exactly one of the two."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    filter: TenantFilter | None = None
    slugs: list[str] | None = Field(default=None, min_length=1, max_length=MAX_SLUGS)

    @model_validator(mode="after")
    def _one_of(self) -> Self:
        if (self.filter is None) == (self.slugs is None):
            raise ValueError("give either 'filter' or 'slugs', not both and not neither")
        return self


class BatchItem(BaseModel):
    slug: str
    outcome: ItemOutcome = ItemOutcome.PENDING
    detail: str | None = None  # the reason, or the operation in flight
    run_id: str | None = None


class BatchRecord(BaseModel):
    batch_id: str
    action: BatchAction
    requested_by: str  # the caller's subject (a token's, or `operator:<login>`)
    selection: Selection
    created_at: datetime
    finished_at: datetime | None = None
    items: list[BatchItem]

    @property
    def finished(self) -> bool:
        return self.finished_at is not None


def new_batch_id() -> str:
    return uuid.uuid4().hex

"""What a backend made for one tenant, as the resource ledger records it."""

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from tenant_pipelines.domain.errors import OwnedByAnotherTenant


class ResourceKind(StrEnum):
    """The ledger kinds of the tenant backends, in the order allocation creates them."""

    STORAGE = "storage"
    IDENTITY = "identity"
    ROUTE = "route"
    WORKLOAD = "workload"


@dataclass(frozen=True)
class Handle:
    """What a backend created for one tenant, as recorded in the ledger."""

    kind: str
    tenant_key: str
    name: str  # the backend's own name for it: a path, a host, a schema
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "tenant_key": self.tenant_key,
            "name": self.name,
            "details": dict(self.details),
        }


def may_act_on(made_for: str | None, tenant_id: str | None) -> bool:
    """Whether a resource recorded as made for `made_for` may be acted on for `tenant_id`.

    `made_for` None: made before backends recorded it (the first tenant to ensure it claims it).
    `tenant_id` None: the operator's own cleanup (inventory), which names keys only.
    """
    return made_for is None or tenant_id is None or made_for == tenant_id


def check_made_for(made_for: str | None, tenant_id: str, kind: str, name: str, key: str) -> None:
    """`ensure` refuses what was made for another tenant id, before it changes anything."""
    if not may_act_on(made_for, tenant_id):
        raise OwnedByAnotherTenant(kind, name, key)

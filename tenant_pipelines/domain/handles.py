"""What a backend made for one tenant, as the resource ledger records it."""

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


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

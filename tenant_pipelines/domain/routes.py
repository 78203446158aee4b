"""A tenant's route at the edge: whether its host is served, and where its workload is.

One per tenant host: closed when Allocate makes it (the edge answers 503), open once the tenant
is active, gone at release (404). Kept in the edge's own table on one host
(`resources.route_table`), in the registry's database on a platform with several hosts
(`registry.routes`), where the worker host that runs the tenant's workload is recorded with it.
"""

from dataclasses import dataclass
from typing import Protocol

CLOSED = "closed"
OPEN = "open"
ROUTE_STATES = (CLOSED, OPEN)


@dataclass(frozen=True)
class Route:
    """One route, as the edge sees it."""

    host: str
    tenant_key: str
    state: str
    updated_at: str
    tenant_id: str | None = None  # whom it was made for: read by the traffic boundary
    worker_host: str | None = None  # the host its workload is on; None: the edge's own host

    @property
    def is_open(self) -> bool:
        return self.state == OPEN


class RouteSource(Protocol):
    """Where the edge reads routes from: its own table, or the registry's."""

    def route_of(self, tenant_key: str) -> Route | None: ...

    def lookup(self, host: str) -> Route | None:
        """The route of a host (lowercase, without port), or None."""
        ...

    def all_routes(self) -> list[Route]: ...

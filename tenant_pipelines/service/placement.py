"""Placement: the host a new tenant's runs and workload will live on, chosen when its request
is recorded and kept in the registry with it (`worker_host`), so that every later run of the
tenant can be held to that host.

The least loaded of the hosts offered wins: the fewest tenants not decommissioned plus requests
placed there still waiting for their tenant; a tie goes to the first host named. One host, the
embedded default's, is chosen without a query.
"""

from collections.abc import Sequence

from tenant_pipelines.registry.store import TenantRegistry


def place(registry: TenantRegistry, hosts: Sequence[str]) -> str | None:
    """The host for a new request; None when no host is offered (the tenant is not placed)."""
    if len(hosts) <= 1:
        return hosts[0] if hosts else None
    load = registry.tenants.load_by_host(hosts)
    return min(hosts, key=lambda host: load[host])

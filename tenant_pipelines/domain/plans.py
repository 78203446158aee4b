"""The plan catalog: data, not code paths.

Each plan sizes the tenant's resources and bounds how long provisioning may take. Larger plans get
more room and therefore longer timeouts and a larger retry budget.
"""

from dataclasses import dataclass
from enum import StrEnum

from tenant_pipelines.domain.errors import BusinessRefusal


@dataclass(frozen=True)
class Plan:
    name: str
    storage_quota_mb: int
    identity_max_users: int
    workload_memory_mb: int  # the workload's heap and stacks (RLIMIT_DATA, set by the deployer)
    readiness_timeout_s: float  # deploy: the workload must pass its readiness check by then
    backend_timeout_s: float  # any other backend call; a hung call fails then and is retried
    retry_budget: int  # retries of a phase before the tenant fails and is compensated
    max_runtime_s: int  # a whole run (dagster/max_runtime): nothing hangs forever
    # Runs tagged with this plan in progress at once (the run queue's tag limit); None = only the
    # global limit. Override with TENANT_<PLAN>_CONCURRENCY (see tenant_pipelines.settings).
    run_concurrency: int | None = None
    # The CPU priority (Linux nice value) of the tenant's processes on the control-plane host, its
    # runs and its workload: when the CPU is contended, larger plans go first. Nothing starves: a
    # process at nice 10 still gets about a tenth of the share of one at 0.
    cpu_nice: int = 0


# fmt: off
PLANS: dict[str, Plan] = {
    plan.name: plan
    for plan in (
        Plan("free", storage_quota_mb=100, identity_max_users=50, workload_memory_mb=64,
             readiness_timeout_s=10, backend_timeout_s=10, retry_budget=2, max_runtime_s=300,
             run_concurrency=3, cpu_nice=10),
        Plan("team", storage_quota_mb=1_000, identity_max_users=1_000, workload_memory_mb=128,
             readiness_timeout_s=20, backend_timeout_s=15, retry_budget=3, max_runtime_s=600,
             run_concurrency=4, cpu_nice=5),
        Plan("enterprise", storage_quota_mb=10_000, identity_max_users=100_000,
             workload_memory_mb=512, readiness_timeout_s=30, backend_timeout_s=20,
             retry_budget=4, max_runtime_s=900),
    )
}
# fmt: on


class Role(StrEnum):
    """Who a caller is to the control plane."""

    PLATFORM_ADMIN = "platform-admin"
    ORG_ADMIN = "org-admin"
    VIEWER = "viewer"
    METRICS = "metrics"  # reads /metrics (a Prometheus server's token), nothing else


# Which plans each caller role may provision.
ROLE_PLANS: dict[str, frozenset[str]] = {
    Role.PLATFORM_ADMIN: frozenset(PLANS),
    Role.ORG_ADMIN: frozenset({"free", "team"}),
    Role.VIEWER: frozenset(),
    Role.METRICS: frozenset(),
}


def get_plan(name: str) -> Plan:
    try:
        return PLANS[name]
    except KeyError:
        known = ", ".join(PLANS)
        raise BusinessRefusal(f"plan {name!r} does not exist (known plans: {known})") from None


def check_role_admits(role: str, plan: str) -> None:
    """Refuse a caller whose role may not provision `plan`."""
    allowed = ROLE_PLANS.get(role)
    if allowed is None:
        raise BusinessRefusal(f"role {role!r} is unknown (known roles: {', '.join(ROLE_PLANS)})")
    if plan not in allowed:
        raise BusinessRefusal(f"role {role!r} may not provision plan {plan!r}")

"""The plan catalog: data, not code paths.

Each plan sizes the tenant's resources and bounds how long provisioning may take. Larger plans get
more room and therefore longer timeouts and a larger retry budget.
"""

from dataclasses import dataclass

from tenant_pipelines.errors import BusinessRefusal


@dataclass(frozen=True)
class Plan:
    name: str
    storage_quota_mb: int
    identity_max_users: int
    workload_memory_mb: int
    readiness_timeout_s: float
    retry_budget: int
    retry_delay_s: float
    max_runtime_s: int


PLANS: dict[str, Plan] = {
    plan.name: plan
    for plan in (
        Plan(
            "free",
            100,
            50,
            64,
            readiness_timeout_s=10,
            retry_budget=2,
            retry_delay_s=0.5,
            max_runtime_s=300,
        ),
        Plan(
            "team",
            1_000,
            1_000,
            128,
            readiness_timeout_s=20,
            retry_budget=3,
            retry_delay_s=0.5,
            max_runtime_s=600,
        ),
        Plan(
            "enterprise",
            10_000,
            100_000,
            512,
            readiness_timeout_s=30,
            retry_budget=4,
            retry_delay_s=1.0,
            max_runtime_s=900,
        ),
    )
}

# Which plans each caller role may provision.
ROLE_PLANS: dict[str, frozenset[str]] = {
    "platform-admin": frozenset(PLANS),
    "org-admin": frozenset({"free", "team"}),
    "viewer": frozenset(),
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

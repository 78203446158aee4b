"""The plan catalog and who may provision what (docs/contracts.md)."""

import pytest

from tenant_pipelines.domain.errors import BusinessRefusal, PermanentError
from tenant_pipelines.domain.plans import PLANS, ROLE_PLANS, check_role_admits, get_plan

pytestmark = pytest.mark.unit

BY_SIZE = ("free", "team", "enterprise")
# The role rules as docs/contracts.md writes them, independent of the implementation's table.
ADMITS = {
    "platform-admin": {"free", "team", "enterprise"},
    "org-admin": {"free", "team"},
    "viewer": set(),
    "metrics": set(),
}


def test_the_catalog_is_the_three_plans() -> None:
    assert set(PLANS) == set(BY_SIZE)
    assert all(get_plan(name).name == name for name in BY_SIZE)


@pytest.mark.parametrize(
    "attribute",
    [
        "storage_quota_mb",
        "identity_max_users",
        "workload_memory_mb",
        "readiness_timeout_s",
        "retry_budget",
        "max_runtime_s",
    ],
)
def test_larger_plans_get_more_room_and_more_time(attribute: str) -> None:
    values = [getattr(PLANS[name], attribute) for name in BY_SIZE]
    assert all(value > 0 for value in values)
    assert values == sorted(values) and len(set(values)) == len(values)


def test_larger_plans_go_first_for_the_cpu_and_none_is_starved() -> None:
    niceness = [PLANS[name].cpu_nice for name in BY_SIZE]
    assert niceness == sorted(niceness, reverse=True) and len(set(niceness)) == len(niceness)
    assert all(0 <= value <= 10 for value in niceness)  # at 10 a process keeps ~1/10 a share


@pytest.mark.parametrize("name", ["gold", "Team", "", "free "])
def test_an_unknown_plan_is_a_permanent_business_refusal(name: str) -> None:
    with pytest.raises(BusinessRefusal, match="does not exist") as caught:
        get_plan(name)
    assert isinstance(caught.value, PermanentError)
    assert repr(name) in str(caught.value) and "free, team, enterprise" in str(caught.value)


@pytest.mark.parametrize("role", sorted(ADMITS))
@pytest.mark.parametrize("plan", BY_SIZE)
def test_role_rules(role: str, plan: str) -> None:
    if plan in ADMITS[role]:
        check_role_admits(role, plan)
    else:
        with pytest.raises(BusinessRefusal, match=f"role '{role}' may not provision plan '{plan}'"):
            check_role_admits(role, plan)


@pytest.mark.parametrize("role", ["root", "Platform-Admin", ""])
def test_an_unknown_role_is_refused(role: str) -> None:
    with pytest.raises(BusinessRefusal, match="is unknown"):
        check_role_admits(role, "free")


def test_the_role_table_names_only_catalog_plans() -> None:
    assert set(ROLE_PLANS) == set(ADMITS)
    assert all(plans <= set(PLANS) for plans in ROLE_PLANS.values())

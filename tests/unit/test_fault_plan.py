"""The fault plan's format: what parses, what is refused and how, which calls a rule matches."""

import json

import pytest

from resources.fault_plan import FaultPlan, FaultRule, parse_fault_plan
from tenant_pipelines.domain.errors import (
    FaultPlanError,
    InjectedFault,
    PermanentError,
    PermanentInjectedFault,
)

pytestmark = pytest.mark.unit


def plan(*rules: object) -> FaultPlan:
    return parse_fault_plan(json.dumps(list(rules)))


def refusal(text: str) -> str:
    with pytest.raises(FaultPlanError) as caught:
        parse_fault_plan(text, "plan.json")
    return str(caught.value)


def test_a_full_plan_parses_with_defaults() -> None:
    parsed = plan(
        {"phase": "allocate", "mode": "transient"},
        {"phase": "deploy", "tenant": "acme*", "mode": "hang", "times": 3},
        {"phase": "mark_active", "tenant": "beta", "mode": "permanent", "times": 7},
        {"phase": "send_welcome_emails", "mode": "permanent"},
    )
    first, hang, permanent, mail = parsed.root
    assert (first.tenant, first.times, first.limit) == ("*", None, 1)
    assert (hang.tenant, hang.limit) == ("acme*", 3)
    assert permanent.mode == "permanent"
    assert mail.phase == "send_welcome_emails"


def test_an_empty_list_is_a_plan_without_faults() -> None:
    assert plan().matching("allocate", "acme") == []


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ([{"mode": "transient"}], "rule 0, field 'phase': Field required"),
        (
            [{"phase": "allocate", "mode": "transient"}, {"phase": "validate", "mode": "hang"}],
            "rule 1, field 'phase': Input should be 'allocate', 'deploy', 'mark_active'",
        ),
        ([{"phase": "deploy", "mode": "flaky"}], "rule 0, field 'mode': Input should be"),
        (
            [{"phase": "deploy", "mode": "hang", "tennant": "acme"}],
            "rule 0, field 'tennant': Extra inputs are not permitted",
        ),
        (
            [{"phase": "deploy", "mode": "hang", "times": 0}],
            "rule 0, field 'times': Input should be greater than or equal to 1",
        ),
        (
            [{"phase": "deploy", "mode": "hang", "times": "2"}],
            "rule 0, field 'times': Input should be a valid integer",
        ),
        ([{"phase": "deploy", "mode": "hang", "tenant": ""}], "rule 0, field 'tenant'"),
        (["allocate"], "rule 0: Input should be a valid dictionary"),
    ],
)
def test_a_bad_rule_is_refused_naming_its_index_and_field(
    rules: list[object], expected: str
) -> None:
    message = refusal(json.dumps(rules))
    assert message.startswith("plan.json: ")
    assert expected in message


def test_every_bad_field_is_named() -> None:
    message = refusal(json.dumps([{"phase": "x", "mode": "y"}]))
    assert "rule 0, field 'phase'" in message
    assert "rule 0, field 'mode'" in message


def test_a_plan_that_is_not_a_list_is_refused() -> None:
    assert "must be a JSON list of rules, not dict" in refusal('{"phase": "allocate"}')


def test_a_plan_that_is_not_json_is_refused() -> None:
    assert "plan.json: not valid JSON" in refusal('[{"phase": "allocate",')
    assert "not valid JSON" in refusal("")


@pytest.mark.parametrize(
    ("glob", "slug", "hit"),
    [
        ("*", "acme", True),
        ("acme", "acme", True),
        ("acme", "acme2", False),
        ("acme*", "acme-labs", True),
        ("acme*", "beta", False),
        ("?cme", "acme", True),
        ("[ab]eta", "beta", True),
        ("[ab]eta", "zeta", False),
        ("ACME", "acme", False),
    ],
)
def test_rules_match_the_slug_by_glob(glob: str, slug: str, hit: bool) -> None:
    rule = FaultRule(phase="deploy", tenant=glob, mode="permanent")
    assert rule.matches("deploy", slug) is hit


def test_rules_match_only_their_own_phase() -> None:
    rule = FaultRule(phase="deploy", mode="permanent")
    assert not rule.matches("allocate", "acme")
    assert not rule.matches("mark_active", "acme")


def test_matching_keeps_the_rules_index_and_order() -> None:
    parsed = plan(
        {"phase": "deploy", "tenant": "beta", "mode": "permanent"},
        {"phase": "deploy", "tenant": "a*", "mode": "transient", "times": 2},
        {"phase": "allocate", "mode": "hang"},
        {"phase": "deploy", "mode": "hang"},
    )
    assert [i for i, _ in parsed.matching("deploy", "acme")] == [1, 3]
    assert [i for i, _ in parsed.matching("deploy", "beta")] == [0, 3]


def test_error_kinds_say_whether_a_retry_can_help() -> None:
    assert issubclass(FaultPlanError, PermanentError)
    assert issubclass(PermanentInjectedFault, PermanentError)
    assert not issubclass(InjectedFault, PermanentError)

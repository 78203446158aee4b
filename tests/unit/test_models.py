"""The submitted request's form rules (docs/contracts.md), checked against the rules as written.

`follows_name_rules` restates the rules independently of the implementation so that generated
input is judged by the spec, not by the code under test.
"""

import re
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tenant_pipelines.domain.request import (
    MAX_HOST_LABEL,
    RESERVED_WORDS,
    TenantRequest,
    describe_validation_error,
)
from tenant_pipelines.domain.tenant import TenantSpec

pytestmark = pytest.mark.unit

NAME_FIELDS = ("slug", "org")
DESIGN_RESERVED = ("admin", "api", "www", "console", "auth", "status", "internal")


def follows_name_rules(value: str) -> bool:
    return (
        3 <= len(value) <= 30
        and re.fullmatch(r"[a-z][a-z0-9-]*[a-z0-9]", value) is not None
        and "--" not in value
        and value not in RESERVED_WORDS
    )


def payload(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "slug": "acme",
        "org": "corp",
        "plan": "team",
        "admin_email": "admin@corp.example.com",
        "requested_by": {"subject": "alice", "role": "org-admin"},
    }
    data.update(overrides)
    return data


def refusal(data: dict[str, Any]) -> tuple[ValidationError, str]:
    with pytest.raises(ValidationError) as caught:
        TenantRequest.parse(data)
    return caught.value, describe_validation_error(caught.value)


def assert_refused_naming(data: dict[str, Any], field: str, fragment: str = "") -> None:
    error, message = refusal(data)
    assert {".".join(map(str, e["loc"])) for e in error.errors()} == {field}
    assert message.startswith("invalid request: ") and f"{field}: " in message
    assert fragment in message


valid_names = st.from_regex(r"[a-z][a-z0-9-]{1,28}[a-z0-9]", fullmatch=True).filter(
    follows_name_rules
)
# Arbitrary text, plus text close to valid names so that near misses get explored too.
candidate_names = st.one_of(
    valid_names,
    st.text(max_size=34),
    st.from_regex(r"[a-z0-9_.-]{0,34}", fullmatch=True),
    valid_names.map(str.upper),
    st.sampled_from(sorted(RESERVED_WORDS)),
)
emails = st.builds(
    "{}@{}.{}".format,
    st.from_regex(r"[a-z0-9]{1,10}([._+-][a-z0-9]{1,10}){0,2}", fullmatch=True),
    st.from_regex(r"[a-z][a-z0-9-]{0,12}[a-z0-9]", fullmatch=True).filter(lambda d: "--" not in d),
    st.sampled_from(["com", "org", "net", "io", "dev"]),
)


@given(slug=valid_names, org=valid_names, email=emails)
def test_valid_parts_are_accepted(slug: str, org: str, email: str) -> None:
    request = TenantRequest.parse(payload(slug=slug, org=org, admin_email=email))
    assert (request.slug, request.org, request.admin_email) == (slug, org, email)
    assert len(f"{slug}-{org}") <= MAX_HOST_LABEL


@settings(suppress_health_check=[HealthCheck.filter_too_much])
@given(field=st.sampled_from(NAME_FIELDS), value=candidate_names)
def test_names_are_judged_by_the_written_rules(field: str, value: str) -> None:
    # A trailing newline is covered by its own (currently failing) test below.
    if value.endswith("\n"):
        return
    data = payload(**{field: value})
    if follows_name_rules(value):
        assert getattr(TenantRequest.parse(data), field) == value
    else:
        assert_refused_naming(data, field)


@pytest.mark.parametrize("field", NAME_FIELDS)
@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("ab", "3 to 30"),
        ("a" * 31, "3 to 30"),
        ("Acme", "lowercase"),
        ("1acme", "start with a letter"),
        ("-acme", "start with a letter"),
        ("acme-", "end with a letter or digit"),
        ("ac_me", "lowercase letters, digits and '-'"),
        ("ac.me", "lowercase letters, digits and '-'"),
        ("ac me", "lowercase letters, digits and '-'"),
        ("ac--me", "'--'"),
    ],
)
def test_each_name_rule_is_refused_with_its_message(field: str, value: str, fragment: str) -> None:
    assert_refused_naming(payload(**{field: value}), field, fragment)


@pytest.mark.parametrize("field", NAME_FIELDS)
@pytest.mark.parametrize("word", sorted(set(DESIGN_RESERVED) | RESERVED_WORDS))
def test_reserved_words_are_refused(field: str, word: str) -> None:
    assert_refused_naming(payload(**{field: word}), field, "reserved word")


@pytest.mark.parametrize("field", NAME_FIELDS)
def test_a_trailing_newline_is_refused(field: str) -> None:
    assert_refused_naming(payload(**{field: "acme\n"}), field)


def test_host_label_limit_is_enforced_and_implied_by_the_part_limits() -> None:
    # Two 30-character parts and a '-' make 61: valid parts can never exceed 63 ...
    longest = TenantRequest.parse(payload(slug="s" * 30, org="o" * 30))
    assert len(f"{longest.slug}-{longest.org}") == 61 <= MAX_HOST_LABEL == 63
    # ... so the model-level rule is exercised directly, on an instance built without validation.
    too_long = TenantRequest.model_construct(**payload(slug="s" * 32, org="o" * 31))
    with pytest.raises(ValueError, match="at most 63"):
        too_long._host_label_fits()


@pytest.mark.parametrize(
    "email",
    ["", "admin", "admin@", "@corp.example.com", "a@@corp.example.com", "ad min@corp.com", "a@b"],
)
def test_bad_emails_are_refused(email: str) -> None:
    assert_refused_naming(payload(admin_email=email), "admin_email")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (payload(colour="blue"), "colour"),
        (
            payload(requested_by={"subject": "a", "role": "viewer", "team": "x"}),
            "requested_by.team",
        ),
        (payload(requested_by={"role": "viewer"}), "requested_by.subject"),
        (payload(requested_by={"subject": "a", "role": "Root User"}), "requested_by.role"),
        (payload(plan="Gold Plan"), "plan"),
        ({k: v for k, v in payload().items() if k != "org"}, "org"),
    ],
)
def test_unknown_and_missing_fields_are_refused(data: dict[str, Any], field: str) -> None:
    assert_refused_naming(data, field)


# The plan catalog as written (docs/contracts.md), not read from the implementation.
CATALOG = ("free", "team", "enterprise")


@pytest.mark.parametrize("plan", CATALOG)
def test_each_plan_of_the_catalog_is_accepted(plan: str) -> None:
    assert TenantRequest.parse(payload(plan=plan)).plan == plan


@pytest.mark.parametrize(
    ("plan", "rule"),
    [
        ("gold", "'gold' is not a plan (known: free, team, enterprise)"),
        ("teams", "'teams' is not a plan (known: free, team, enterprise)"),
        ("Team", "must be a lowercase word"),  # the form's rule first: it says what is wrong
        ("", "must be a lowercase word"),
    ],
)
def test_a_plan_outside_the_catalog_is_refused_naming_the_known_plans(plan: str, rule: str) -> None:
    _, message = refusal(payload(plan=plan))
    assert message.startswith(f"invalid request: plan: {rule}")


def test_the_schema_advertises_the_catalog() -> None:
    assert TenantRequest.model_json_schema()["properties"]["plan"]["enum"] == list(CATALOG)


@pytest.mark.parametrize("bad", ["not-a-uuid", "1234", "g" * 32, ""])
def test_a_bad_request_id_is_refused(bad: str) -> None:
    assert_refused_naming(payload(request_id=bad), "request_id")


def test_request_id_is_parsed_or_generated() -> None:
    given_id = uuid.uuid4()
    assert TenantRequest.parse(payload(request_id=str(given_id))).request_id == given_id
    first, second = TenantRequest.parse(payload()), TenantRequest.parse(payload())
    assert first.request_id != second.request_id


def test_strict_construction_refuses_wrong_types() -> None:
    with pytest.raises(ValidationError) as caught:
        TenantRequest.model_validate(payload(slug=12345))
    assert "slug: " in describe_validation_error(caught.value)


def test_the_spec_gives_every_backend_the_same_name() -> None:
    request = TenantRequest.parse(payload())
    spec = TenantSpec(
        tenant_id="t",
        request_id=str(request.request_id),
        slug=request.slug,
        org=request.org,
        plan=request.plan,
        admin_email=str(request.admin_email),
    )
    assert spec.key == "acme-corp"
    assert spec.url("localhost") == "https://acme-corp.localhost"

"""Who may do what, and what a token grant must say (docs/contracts.md)."""

import pytest
from pydantic import ValidationError

from tenant_pipelines.domain.access import (
    Action,
    Caller,
    Forbidden,
    authorize,
    authorize_metrics,
    check_visible,
)
from tenant_pipelines.domain.errors import NotFound
from tenant_pipelines.domain.plans import Role
from tenant_pipelines.domain.tokens import TokenGrant, split_token

pytestmark = pytest.mark.unit

ADMIN = Caller("ada", Role.PLATFORM_ADMIN, None, "t1")
ORG_ADMIN = Caller("bob", Role.ORG_ADMIN, "widgets", "t2")
VIEWER = Caller("eve", Role.VIEWER, "widgets", "t3")


@pytest.mark.parametrize("action", list(Action))
@pytest.mark.parametrize("org", ["widgets", "gadgets"])
def test_a_platform_admin_may_do_everything_everywhere(action: Action, org: str) -> None:
    authorize(ADMIN, action, org, "enterprise" if action == Action.SUBMIT else None)


@pytest.mark.parametrize("action", list(Action))
def test_an_org_admin_acts_in_its_own_org_only(action: Action) -> None:
    authorize(ORG_ADMIN, action, "widgets")
    with pytest.raises(Forbidden, match="org 'widgets' cannot act on org 'gadgets'"):
        authorize(ORG_ADMIN, action, "gadgets")


@pytest.mark.parametrize(
    ("plan", "allowed"), [("free", True), ("team", True), ("enterprise", False)]
)
def test_an_org_admin_provisions_free_and_team_only(plan: str, allowed: bool) -> None:
    if allowed:
        authorize(ORG_ADMIN, Action.SUBMIT, "widgets", plan)
    else:
        with pytest.raises(Forbidden, match="may not provision plan 'enterprise'"):
            authorize(ORG_ADMIN, Action.SUBMIT, "widgets", plan)


@pytest.mark.parametrize("action", [Action.SUBMIT, Action.RETRY, Action.DECOMMISSION])
def test_a_viewer_only_reads(action: Action) -> None:
    authorize(VIEWER, Action.READ, "widgets")
    with pytest.raises(Forbidden, match=f"viewer may not {action}"):
        authorize(VIEWER, action, "widgets")


def test_another_orgs_tenant_is_not_found_rather_than_forbidden() -> None:
    check_visible(VIEWER, "widgets", "acme")
    check_visible(ADMIN, "gadgets", "acme")
    with pytest.raises(NotFound, match="no tenant or request with slug 'acme'"):
        check_visible(VIEWER, "gadgets", "acme")


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"subject": "x", "role": "viewer"}, "needs --org"),
        ({"subject": "x", "role": "org-admin"}, "needs --org"),
        ({"subject": "x", "role": "platform-admin", "org": "widgets"}, "drop --org"),
        ({"subject": "x", "role": "root"}, "role"),
        ({"subject": "", "role": "platform-admin"}, "subject"),
        ({"subject": "x\n", "role": "platform-admin"}, "printable"),
        ({"subject": "x", "role": "viewer", "org": "Widgets"}, "org"),
        ({"subject": "x", "role": "platform-admin", "expires_in_days": 0}, "expires_in_days"),
        ({"subject": "x", "role": "platform-admin", "expires_in_days": 4000}, "expires_in_days"),
    ],
)
def test_a_malformed_grant_is_refused(fields: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        TokenGrant.parse(fields)


def test_a_grant_expires_after_90_days_unless_told() -> None:
    assert TokenGrant.parse({"subject": "x", "role": "platform-admin"}).expires_in_days == 90


@pytest.mark.parametrize(
    ("token", "parts"),
    [
        ("tp_abc123_s3cr_et", ("abc123", "s3cr_et")),
        ("tp_abc123", None),
        ("abc123_secret", None),
        ("tp__secret", None),
        ("tp_ab-c_secret", None),
        ("tp_abc123_", None),
    ],
)
def test_tokens_split_into_id_and_secret(token: str, parts: tuple[str, str] | None) -> None:
    assert split_token(token) == parts


METRICS = Caller(subject="prometheus", role=Role.METRICS, org=None, token_id="m")


@pytest.mark.parametrize("action", list(Action))
def test_a_metrics_token_acts_on_no_tenant_and_sees_none(action: Action) -> None:
    """Its token names no org, like a platform-admin's, yet it sees no org at all."""
    with pytest.raises(Forbidden, match=f"role metrics may not {action}"):
        authorize(METRICS, action, "widgets")
    with pytest.raises(NotFound):
        check_visible(METRICS, "widgets", "acme")


def test_only_a_platform_admin_or_a_metrics_token_reads_the_metrics() -> None:
    authorize_metrics(ADMIN)
    authorize_metrics(METRICS)
    for caller in (ORG_ADMIN, VIEWER):
        with pytest.raises(Forbidden, match="may not read the platform's metrics"):
            authorize_metrics(caller)

"""Bulk retry and decommission against a real `tenantctl up`: through the API (`/v1/batches`) and
`tenantctl retry|decommission` with a filter. A batch acts only on tenants its caller sees,
reports a tenant held by another operation as skipped (naming it), refuses with the reason, asks
for the count to be confirmed, and puts each outcome in the audit feed with its caller and
selection."""

from typing import Any

import pytest

from tests.stack_fixtures import StackOptions
from tests.stack_helpers import Stack, write_fault_plan
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

ORG, OTHER = "bulk", "elsewhere"


@pytest.fixture(scope="module")
def stack_options() -> StackOptions:
    return StackOptions(faults=True)


def deploy_fails(stack: Stack, glob: str | None, mode: str = "permanent") -> None:
    """Deploy fails (or hangs) for the slugs `glob` matches; None: nothing fails any more."""
    assert stack.fault_plan is not None
    rules = [] if glob is None else [{"phase": "deploy", "tenant": glob, "mode": mode}]
    write_fault_plan(stack.fault_plan, rules)


def submit(stack: Stack, token: str, slug: str, org: str = ORG) -> None:
    body = {"slug": slug, "org": org, "plan": "team", "admin_email": f"admin@{slug}.example.com"}
    answer = stack.api("POST", "/v1/tenants", token, body)
    assert answer.status_code == 202, answer.text


def failed_and_compensated(stack: Stack, token: str, slugs: list[str]) -> None:
    """Each tenant failed and its compensation finished (a retry waits for none)."""
    for slug in slugs:
        stack.wait_for_state(slug, {"failed"})

    def compensated() -> bool:
        events = stack.api(
            "GET", "/v1/events?type=tenant.provisioning.compensation_finished", token
        ).json()
        return set(slugs) <= {event["tenant"] for event in events}

    wait_until(compensated, 120, f"compensations of {slugs} never finished")


def finished_batch(stack: Stack, token: str, batch_id: str) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        batch = stack.api("GET", f"/v1/batches/{batch_id}", token).json()
        return batch if batch["finished_at"] else None

    return wait_until(finished, 120, f"batch {batch_id} never finished")


def outcomes(batch: dict[str, Any]) -> dict[str, str]:
    return {item["slug"]: item["outcome"] for item in batch["items"]}


def test_a_batch_retries_the_failed_tenants_its_caller_sees(stack: Stack) -> None:
    admin = stack.token("platform-admin")
    org_admin = stack.token("org-admin", ORG, subject="ops@bulk")
    failing = [f"bulk-bad-{i}" for i in range(1, 4)]
    deploy_fails(stack, "*-bad*")
    for slug in failing:
        submit(stack, org_admin, slug)
    submit(stack, admin, "other-bad", OTHER)
    failed_and_compensated(stack, admin, [*failing, "other-bad"])
    deploy_fails(stack, None)  # the outage ends

    body = {"action": "retry", "filter": {"state": "failed"}, "expect": 3}
    answer = stack.api("POST", "/v1/batches", org_admin, body)
    assert answer.status_code == 202, answer.text
    assert answer.json()["count"] == 3, "another org's failed tenant is not among them"
    batch = finished_batch(stack, org_admin, answer.json()["id"])
    assert outcomes(batch) == dict.fromkeys(failing, "done")
    assert all(item["run_id"] for item in batch["items"])
    for slug in failing:
        stack.wait_for_state(slug, {"active"})
    assert stack.api("GET", "/v1/tenants/other-bad", admin).json()["state"] == "failed"

    feed = stack.api("GET", "/v1/events?type=tenant.batch.*", org_admin).json()
    assert sorted(event["tenant"] for event in feed) == failing
    for event in feed:
        assert event["details"]["requested_by"] == "ops@bulk"
        assert event["details"]["selection"] == {"filter": {"state": "failed"}}
        assert event["details"]["outcome"] == "done"


def test_a_tenant_held_by_another_operation_is_skipped_and_the_rest_refused(
    stack: Stack,
) -> None:
    admin = stack.token("platform-admin")
    deploy_fails(stack, "held")
    submit(stack, admin, "held")
    failed_and_compensated(stack, admin, ["held"])
    # Its retry hangs at Deploy, holding the tenant's operation claim, until the rule goes.
    deploy_fails(stack, "held", "hang")
    assert stack.api("POST", "/v1/tenants/held/retry", admin).status_code == 202

    body = {"action": "retry", "slugs": ["held", "bulk-bad-1", "never-made"]}
    answer = stack.api("POST", "/v1/batches", admin, body)
    assert answer.status_code == 202, answer.text
    batch = finished_batch(stack, admin, answer.json()["id"])
    items = {item["slug"]: item for item in batch["items"]}
    assert outcomes(batch) == {
        "held": "skipped",
        "bulk-bad-1": "refused",
        "never-made": "refused",
    }
    assert "has a retry in flight" in items["held"]["detail"]
    assert "active" in items["bulk-bad-1"]["detail"]
    assert "no tenant or request with slug 'never-made'" in items["never-made"]["detail"]
    deploy_fails(stack, None)
    stack.wait_for_state("held", {"active"})


def test_a_batch_refuses_what_its_caller_may_not_do(stack: Stack) -> None:
    viewer = stack.token("viewer", ORG)
    org_admin = stack.token("org-admin", ORG, subject="ops@bulk")
    stranger = stack.token("org-admin", OTHER, subject="ops@elsewhere")
    retry_failed = {"action": "retry", "filter": {"state": "failed"}}

    answer = stack.api("POST", "/v1/batches", viewer, retry_failed)
    assert (answer.status_code, answer.json()["error"]) == (
        403,
        "role viewer may not retry tenants",
    )
    answer = stack.api("POST", "/v1/batches", stranger, {**retry_failed, "expect": 5})
    assert answer.status_code == 409
    assert (
        answer.json()["error"]
        == "1 tenant(s) match now, not the 5 confirmed; look again and confirm"
    )
    both = {**retry_failed, "slugs": ["held"]}
    assert stack.api("POST", "/v1/batches", org_admin, both).status_code == 422

    # Another org's tenant, named: refused as an unknown slug would be, never acted on.
    answer = stack.api(
        "POST", "/v1/batches", org_admin, {"action": "decommission", "slugs": ["other-bad"]}
    )
    batch = finished_batch(stack, org_admin, answer.json()["id"])
    [item] = batch["items"]
    assert item["outcome"] == "refused"
    assert item["detail"] == "no tenant or request with slug 'other-bad'"
    assert stack.api("GET", f"/v1/batches/{batch['batch_id']}", stranger).status_code == 404


def test_the_command_line_asks_for_the_count_then_acts_on_every_match(stack: Stack) -> None:
    failing = ["cli-bad-1", "cli-bad-2"]
    admin = stack.token("platform-admin")
    deploy_fails(stack, "cli-bad-*")
    for slug in failing:
        submit(stack, admin, slug, "cli")
    failed_and_compensated(stack, admin, failing)
    deploy_fails(stack, None)

    unconfirmed = stack.cli("retry", "--state", "failed", "--org", "cli", check=False)
    assert unconfirmed.returncode == 2
    assert "2 tenant(s) match: confirm with --yes 2" in unconfirmed.stderr
    wrong = stack.cli("retry", "--state", "failed", "--org", "cli", "--yes", "3", check=False)
    assert wrong.returncode == 3
    assert "2 tenant(s) match, not the 3 given with --yes" in wrong.stderr

    done = stack.cli("retry", "--state", "failed", "--org", "cli", "--yes", "2")
    assert "retry of 2 tenant(s)" in done.stdout
    for slug in failing:
        assert f"{slug}: done (run " in done.stdout
        stack.wait_for_state(slug, {"active"})

    refused = stack.cli("decommission", "--org", "cli", "--yes", "2", check=False)
    assert refused.returncode == 2
    assert "--all-matching" in refused.stderr
    gone = stack.cli("decommission", "--all-matching", "--org", "cli", "--yes", "2")
    assert gone.returncode == 0
    for slug in failing:
        stack.wait_for_state(slug, {"decommissioned"})

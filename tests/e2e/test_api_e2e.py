"""The HTTP API against the whole stack as `tenantctl up` starts it: submit to active, the
timeline and the live feed, one run per key under a burst, retry and decommission, the run tags
an operator sees in Dagster, and a schemathesis fuzz of /openapi.json (last: it acts freely)."""

import json
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
import requests
from dagster import RunsFilter

from tests.stack_fixtures import StackOptions
from tests.stack_helpers import Stack, write_fault_plan
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

ORG = "widgets"
POLL_S = 0.05


@pytest.fixture(scope="module")
def stack_options() -> StackOptions:
    return StackOptions(faults=True)


@pytest.fixture(scope="module")
def admin(stack: Stack) -> str:
    return stack.token("platform-admin", subject="ada")


@pytest.fixture(scope="module")
def org_admin(stack: Stack) -> str:
    return stack.token("org-admin", ORG, subject="bob")


def body(slug: str, plan: str = "team") -> dict[str, str]:
    return {"slug": slug, "org": ORG, "plan": plan, "admin_email": f"admin@{slug}.example.com"}


def wait_state(stack: Stack, token: str, slug: str, states: set[str]) -> dict:
    def reached() -> dict | None:
        detail = dict(stack.api("GET", f"/v1/tenants/{slug}", token).json())
        return detail if detail.get("state") in states else None

    return wait_until(reached, 120, f"{slug} never reached {states}", POLL_S)


def test_submit_to_active_with_its_timeline_its_live_feed_and_its_run_tags(
    stack: Stack, org_admin: str
) -> None:
    key = str(uuid.uuid4())
    answer = stack.api("POST", "/v1/tenants", org_admin, body("api-one"), {"Idempotency-Key": key})
    assert answer.status_code == 202, answer.text
    assert answer.json()["request_id"] == key and answer.json()["run_id"]
    feed: list[dict] = []  # the live stream, opened while the tenant is being provisioned
    follower = threading.Thread(target=follow, args=(stack, org_admin, "api-one", feed))
    follower.start()
    wait_state(stack, org_admin, "api-one", {"active", "failed"})
    # The state flips to active just before the run writes "Tenant activated" to the feed.
    detail = wait_timeline(stack, org_admin, "api-one", "Tenant activated")
    follower.join(30)

    assert (
        detail["state"] == "active"
        and detail["url"] == f"https://api-one-widgets.localhost:{stack.https_port}"
    )
    assert detail["timeline"][-1]["message"] == "Tenant activated"
    assert [e["step"] for e in detail["timeline"]][:2] == ["validate", "validate"]
    assert feed[0]["type"] == "tenant.provisioning.started"
    assert feed[-1]["type"] == "tenant.provisioning.completed"
    run = stack.instance().get_run_by_id(answer.json()["run_id"])
    assert run is not None
    assert {k: run.tags[k] for k in ("tenant", "org", "plan", "request_id", "requested_by")} == {
        "tenant": "api-one",
        "org": ORG,
        "plan": "team",
        "request_id": key,
        "requested_by": "bob",
    }
    assert org_admin not in json.dumps({**run.tags, "config": run.run_config})
    # What means nothing to an operator is under the prefix Dagster's UI hides.
    internal = [key for key in run.tags if "run-worker" in key]
    assert internal and all(key.startswith(".dagster/") for key in internal)


def wait_timeline(stack: Stack, token: str, slug: str, last: str) -> dict:
    def ended() -> dict | None:
        detail = dict(stack.api("GET", f"/v1/tenants/{slug}", token).json())
        return detail if detail["timeline"] and detail["timeline"][-1]["message"] == last else None

    return wait_until(ended, 30, f"{slug}'s timeline never ended with {last!r}", POLL_S)


def follow(stack: Stack, token: str, slug: str, feed: list[dict]) -> None:
    """Read the tenant's live feed until its provisioning completes (or 60 s pass)."""
    with requests.get(
        f"{stack.api_base}/v1/tenants/{slug}/events?type=tenant.provisioning.*",
        headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"},
        stream=True,
        timeout=60,
    ) as stream:
        assert stream.status_code == 200
        for line in stream.iter_lines(decode_unicode=True):
            if line.startswith("data: "):
                feed.append(json.loads(line.removeprefix("data: ")))
                if feed[-1]["type"] == "tenant.provisioning.completed":
                    return


def test_twenty_concurrent_submissions_with_one_key_give_one_run(stack: Stack, admin: str) -> None:
    key = str(uuid.uuid4())
    answers: list[requests.Response] = []
    threads = [
        threading.Thread(
            target=lambda: answers.append(
                stack.api("POST", "/v1/tenants", admin, body("api-burst"), {"Idempotency-Key": key})
            )
        )
        for _ in range(20)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(a.status_code for a in answers) == [202] * 20
    assert len({a.json()["run_id"] for a in answers} - {None}) == 1
    wait_state(stack, admin, "api-burst", {"active"})
    runs = stack.instance().get_runs(RunsFilter(tags={"request_id": key}))
    assert len(runs) == 1


def test_a_failed_tenant_is_retried_to_active_then_decommissioned(
    stack: Stack, org_admin: str
) -> None:
    assert stack.fault_plan is not None
    write_fault_plan(
        stack.fault_plan, [{"phase": "deploy", "tenant": "api-broken", "mode": "permanent"}]
    )
    assert stack.api("POST", "/v1/tenants", org_admin, body("api-broken")).status_code == 202
    failed = wait_state(stack, org_admin, "api-broken", {"failed", "active"})
    assert (failed["state"], failed["failed_step"]) == ("failed", "deploy")
    wait_compensated(stack, org_admin, "api-broken")
    timeline = stack.api("GET", "/v1/tenants/api-broken", org_admin).json()["timeline"]
    assert any(e["message"].startswith("Deploy workloads failed") for e in timeline)

    write_fault_plan(stack.fault_plan, [])
    retried = stack.api("POST", "/v1/tenants/api-broken/retry", org_admin)
    assert retried.status_code == 202, retried.text
    assert wait_state(stack, org_admin, "api-broken", {"active"})["failed_step"] is None
    retry_run = stack.instance().get_run_by_id(retried.json()["run_id"])
    assert retry_run is not None and retry_run.tags["requested_by"] == "bob"
    restarted = [
        e
        for e in stack.api("GET", "/v1/tenants/api-broken/events", org_admin).json()
        if e["type"] == "tenant.provisioning.started" and e["details"].get("retry")
    ]
    assert [e["details"]["requested_by"] for e in restarted] == ["bob"]
    again = stack.api("POST", "/v1/tenants/api-broken/retry", org_admin)
    assert again.status_code == 409 and "only a failed tenant" in again.json()["error"]

    decommissioned = stack.api("POST", "/v1/tenants/api-broken/decommission", org_admin)
    assert decommissioned.status_code == 202
    wait_state(stack, org_admin, "api-broken", {"decommissioned"})
    run = stack.instance().get_run_by_id(decommissioned.json()["run_id"])
    assert run is not None and run.tags["requested_by"] == "bob"
    gone = stack.api("POST", "/v1/tenants/api-broken/decommission", org_admin)
    assert gone.status_code == 409
    assert stack.cli("inventory", check=False).returncode == 0
    # The slug is free again.
    assert stack.api("POST", "/v1/tenants", org_admin, body("api-broken")).status_code == 202
    wait_state(stack, org_admin, "api-broken", {"active"})


def wait_compensated(stack: Stack, token: str, slug: str) -> None:
    def compensated() -> bool:
        feed = stack.api("GET", f"/v1/tenants/{slug}/events", token).json()
        return any(e["type"] == "tenant.provisioning.compensation_finished" for e in feed)

    wait_until(compensated, 60, f"{slug} was never compensated", 0.2)


def test_diagnosis_names_the_next_action(stack: Stack, org_admin: str) -> None:
    diagnosis = stack.api("GET", "/v1/tenants/api-one/diagnosis", org_admin)
    assert diagnosis.status_code == 200
    assert (diagnosis.json()["state"], diagnosis.json()["next_action"]) == ("active", "none")


def test_schemathesis_finds_no_server_error_and_every_answer_fits_its_schema(
    stack: Stack, tmp_path: Path
) -> None:
    token = stack.token("platform-admin", subject="fuzzer")
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{stack.api_base}/openapi.json",
            "--checks",
            "not_a_server_error,response_schema_conformance,status_code_conformance",
            "--header",
            f"Authorization: Bearer {token}",
            "--max-examples",
            "15",
            "--seed",
            "20261202",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:]
    assert "Server error" not in result.stdout

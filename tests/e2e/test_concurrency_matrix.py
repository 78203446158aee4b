"""One lifecycle operation per tenant, end to end under `tenantctl up` with the real daemon.

Each cell fires commands at one tenant at the same moment (separate `tenantctl` processes, or
threads on the HTTP API) and checks what a person would: one command wins, the others are
refused at once with the operation in flight (exit 3 / 409), and the tenant ends at rest with
no duplicate run, no email twice, nothing leaked. The last cell makes compensation itself fail.
Set TENANT_CONCURRENCY_REPORT=path to get the cells as JSON.

To keep the file short, the tenants that need to fail first are submitted together at the start
(`failing`), and the failing compensation retries in the background while the other cells run.
"""

import json
import os
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest
import requests

from tenant_pipelines.domain.request import TenantRequest
from tenant_pipelines.orchestration.runs import runs_for_request
from tenant_pipelines.registry.store import TenantRegistry
from tenant_pipelines.settings import Settings
from tests.e2e.matrix_helpers import runs_of, story
from tests.stack_fixtures import StackOptions
from tests.stack_helpers import REPO, TENANTCTL, Stack, processes_mentioning
from tests.stack_helpers import write_fault_plan as write_plan
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

ORG = "conc"
RETRIED = ("retry-three", "retry-decom")  # fail at deploy, then are retried
STUCK = "comp-stuck"  # fails at deploy, then its route will not release
# Rules that stay in the plan whatever a cell adds, until a cell lifts them.
BACKGROUND: dict[str, list[dict[str, object]]] = {
    **{slug: [{"phase": "deploy", "tenant": slug, "mode": "permanent"}] for slug in RETRIED},
    STUCK: [
        {"phase": "deploy", "tenant": STUCK, "mode": "permanent"},
        {"phase": "release", "tenant": f"{STUCK}-*", "mode": "permanent"},
    ],
}


@dataclass
class Cell:
    name: str
    end_state: str = ""
    seconds: float = 0.0
    operator_saw: list[str] = field(default_factory=list)


CELLS: list[Cell] = []


def nothing_left_then_report(stack: Stack) -> None:
    assert processes_mentioning(str(stack.data_dir)) == []
    report = os.environ.get("TENANT_CONCURRENCY_REPORT")
    if report:
        Path(report).write_text(json.dumps([asdict(c) for c in CELLS], indent=2))


@pytest.fixture(scope="module")
def stack_options() -> StackOptions:
    return StackOptions(faults=True, after_stop=nothing_left_then_report)


@pytest.fixture(scope="module")
def admin(stack: Stack) -> str:
    return stack.token("platform-admin")


def faults(stack: Stack, *rules: dict[str, object], lift: str | None = None) -> None:
    """The plan: these rules and the background ones (less those of `lift`, for good)."""
    assert stack.fault_plan is not None
    if lift is not None:
        BACKGROUND.pop(lift, None)
    background = [rule for kept in BACKGROUND.values() for rule in kept]
    write_plan(stack.fault_plan, [*rules, *background])


@pytest.fixture(scope="module")
def failing(stack: Stack) -> dict[str, float]:
    """Submit, at once, the tenants that must fail first; when each was submitted."""
    faults(stack)
    submitted = {}
    for slug in (*RETRIED, STUCK):
        submitted[slug] = time.monotonic()
        stack.cli(*request_args(slug))
    return submitted


def request_fields(slug: str) -> dict[str, object]:
    return {
        "slug": slug,
        "org": ORG,
        "plan": "team",
        "admin_email": f"admin@{slug}.example.com",
        "requested_by": {"subject": "conc", "role": "platform-admin"},
    }


def request_args(slug: str, request_id: str | None = None) -> list[str]:
    args = ["request", "--slug", slug, "--org", ORG, "--plan", "team"]
    args += ["--admin-email", f"admin@{slug}.example.com", "--caller", "conc"]
    args += ["--role", "platform-admin"]
    return args + (["--request-id", request_id] if request_id else [])


def at_once(stack: Stack, *commands: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """Start every `tenantctl` command before waiting for any; their results, in order."""
    started = [
        subprocess.Popen(
            [TENANTCTL, *argv],
            env=stack.env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv in commands
    ]
    results = []
    for argv, process in zip(commands, started, strict=True):
        out, err = process.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(argv, process.returncode, out, err))
    return results


def one_winner(results: list[subprocess.CompletedProcess[str]]) -> list[str]:
    """Exactly one command succeeded; every other was refused at once with exit 3 and one line
    naming why. The lines the operator saw."""
    assert sorted(r.returncode for r in results) == [0] + [3] * (len(results) - 1), results
    refusals = [r.stderr.strip() for r in results if r.returncode == 3]
    for line in refusals:
        assert "\n" not in line and line.startswith("tenantctl: tenant "), line
        assert " in flight " in line or "only a failed tenant" in line, line
    return refusals


def failed_and_compensated(stack: Stack, slug: str) -> None:
    """Wait until `slug` (submitted by `failing`) failed at deploy and its compensation finished;
    then deploy hangs once, so a retry's run is surely still in flight while rivals arrive
    (however slowly their processes start on a loaded machine) until the test lifts the fault."""
    assert stack.wait_for_state(slug, {"failed"})["failed_step"] == "deploy"
    wait_until(
        lambda: ("compensation_finished", "compensate") in story(stack, slug),
        60,
        f"{slug} was never compensated",
        0.5,
    )
    faults(stack, {"phase": "deploy", "tenant": slug, "mode": "hang"}, lift=slug)


def emails_sent(stack: Stack, slug: str) -> int:
    outbox = stack.data_dir / "outbox" / f"{slug}-{ORG}"
    return len(list(outbox.glob("*.eml"))) if outbox.exists() else 0


def completions(stack: Stack, slug: str) -> int:
    return story(stack, slug).count(("completed", "mark_active"))


def finish(stack: Stack, cell: Cell, slug: str, started: float, wanted: set[str]) -> dict:
    """Wait for the tenant at rest and no run of it in flight; the fault matrix's invariants."""
    status = stack.wait_for_state(slug, wanted)
    instance = stack.instance()
    wait_until(
        lambda: all(run.is_finished for run in runs_of_any(instance, slug)),
        60,
        f"{slug} still has runs in flight",
        0.3,
    )
    cell.end_state = status["state"]
    cell.seconds = round(time.monotonic() - started, 1)
    CELLS.append(cell)
    inventory = stack.cli("inventory", check=False)
    assert inventory.returncode == 0, inventory.stdout  # no orphan, no ghost, no duplicate
    if status["state"] == "active":
        assert emails_sent(stack, slug) == 3 and completions(stack, slug) == 1
    if status["state"] == "failed":
        assert ("compensation_finished", "compensate") in story(stack, slug)
    diagnosis = stack.cli_json("diagnose", slug)
    assert diagnosis["operation"] is None  # type: ignore[index]  # no claim left behind
    return status


def runs_of_any(instance: object, slug: str) -> list:
    jobs = ("provision_tenant", "compensate_tenant", "decommission_tenant")
    return [run for job in jobs for run in runs_of(instance, slug, job)]  # type: ignore[arg-type]


def test_three_retries_at_once_give_one_run_and_one_activation(
    stack: Stack, failing: dict[str, float]
) -> None:
    slug, cell = "retry-three", Cell("concurrent retry x3")
    failed_and_compensated(stack, slug)
    started = time.monotonic()

    results = at_once(stack, *[["retry", slug]] * 3)
    faults(stack)

    cell.operator_saw = one_winner(results)
    finish(stack, cell, slug, started, {"active"})
    assert len(runs_of(stack.instance(), slug, "provision_tenant")) == 2  # first run + one retry


def test_retry_and_decommission_at_once_do_not_both_run(
    stack: Stack, failing: dict[str, float]
) -> None:
    slug, cell = "retry-decom", Cell("retry + decommission")
    failed_and_compensated(stack, slug)
    started = time.monotonic()

    results = at_once(stack, ["retry", slug], ["decommission", slug])
    faults(stack)

    cell.operator_saw = one_winner(results)
    retried, decommissioned = (r.returncode == 0 for r in results)
    status = finish(stack, cell, slug, started, {"active", "decommissioned"})
    instance = stack.instance()
    if retried:
        assert status["state"] == "active"
        assert runs_of(instance, slug, "decommission_tenant") == []
    else:
        assert decommissioned and status["state"] == "decommissioned"
        assert len(runs_of(instance, slug, "provision_tenant")) == 1  # no retry ran
        assert emails_sent(stack, slug) == 0 and completions(stack, slug) == 0


def test_two_decommissions_at_once_give_one_run_and_the_api_says_409(
    stack: Stack, admin: str
) -> None:
    slug, cell = "decom-two", Cell("decommission x2")
    stack.cli(*request_args(slug))
    assert stack.wait_for_state(slug, {"active", "failed"})["state"] == "active"
    # The route's release hangs, so the winner's run is surely in flight for the API call.
    faults(stack, {"phase": "release", "tenant": f"{slug}-*", "mode": "hang"})
    started = time.monotonic()

    results = at_once(stack, ["decommission", slug], ["decommission", slug])
    cell.operator_saw = one_winner(results)
    via_api = stack.api("POST", f"/v1/tenants/{slug}/decommission", admin)
    retry = stack.cli("retry", slug, check=False)
    faults(stack)  # the hang ends: the decommission carries on

    assert via_api.status_code == 409, via_api.text
    assert via_api.json()["error"].startswith(f"tenant {slug} has a decommission in flight (run ")
    assert retry.returncode == 3 and "in flight" in retry.stderr
    cell.operator_saw += [f"API 409: {via_api.json()['error']}", retry.stderr.strip()]
    finish(stack, cell, slug, started, {"decommissioned"})
    assert len(runs_of(stack.instance(), slug, "decommission_tenant")) == 1


def test_twenty_requests_for_one_slug_launch_one_run(stack: Stack, admin: str) -> None:
    slug, cell = "same-slug", Cell("same slug x20, different request ids")
    body = {"slug": slug, "org": ORG, "plan": "team", "admin_email": "admin@same.example.com"}
    started = time.monotonic()

    def submit(_index: int) -> requests.Response:
        key = {"Idempotency-Key": str(uuid.uuid4())}
        return stack.api("POST", "/v1/tenants", admin, body, headers=key)

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(submit, range(20)))

    codes = sorted(a.status_code for a in answers)
    assert codes == [202] + [409] * 19, [a.text for a in answers]
    refusals = {a.json()["error"] for a in answers if a.status_code == 409}
    assert all(e.startswith(f"slug {slug} is taken by ") for e in refusals), refusals
    cell.operator_saw = sorted(refusals)[:1]
    finish(stack, cell, slug, started, {"active"})
    assert len(runs_of(stack.instance(), slug, "provision_tenant")) == 1
    refused = stack.cli(*request_args(slug), check=False)
    assert refused.returncode == 2 and refused.stderr.startswith(f"tenantctl: slug {slug} is taken")


def test_one_request_id_a_hundred_times_gives_one_run(stack: Stack, admin: str) -> None:
    slug, cell = "same-key", Cell("same request id x100")
    body = {"slug": slug, "org": ORG, "plan": "team", "admin_email": "admin@key.example.com"}
    key = {"Idempotency-Key": str(uuid.uuid4())}
    started = time.monotonic()

    with ThreadPoolExecutor(20) as pool:
        answers = list(
            pool.map(lambda _i: stack.api("POST", "/v1/tenants", admin, body, key), range(100))
        )

    assert [a.status_code for a in answers] == [202] * 100
    assert sum(a.json()["created"] for a in answers) == 1
    assert {a.json()["request_id"] for a in answers} == {key["Idempotency-Key"]}
    cell.operator_saw = ["202 x100, created: true once"]
    finish(stack, cell, slug, started, {"active"})
    assert len(runs_of(stack.instance(), slug, "provision_tenant")) == 1


def test_a_compensation_that_fails_is_retried_then_reported(
    stack: Stack, failing: dict[str, float]
) -> None:
    slug, cell = STUCK, Cell("compensation fails (route will not release)")
    started = failing[slug]
    assert stack.wait_for_state(slug, {"failed"})["state"] == "failed"
    wait_until(
        lambda: ("compensation_failed", "compensate") in story(stack, slug),
        150,
        lambda: str(story(stack, slug)),
        1,
    )
    reported = time.monotonic() - started
    [event] = stack.cli_json_lines(
        "audit", "--tenant", slug, "--type", "tenant.provisioning.compensation_failed"
    )
    assert event["details"]["attempts"] == 3
    assert [r["kind"] for r in event["details"]["unreleased"]] == ["route"]
    assert len(runs_of(stack.instance(), slug, "compensate_tenant")) == 3
    diagnosis = stack.cli_json("diagnose", slug)
    assert diagnosis["next_action"] == "compensate"  # type: ignore[index]
    assert "would not release: route" in diagnosis["why"]  # type: ignore[index]
    assert diagnosis["commands"] == [f"tenantctl compensate {slug} --wait"]  # type: ignore[index]
    text = stack.cli("diagnose", slug).stdout
    assert "gave up after 3 attempts" in text and f"$ tenantctl compensate {slug} --wait" in text

    faults(stack, lift=slug)  # the operator fixes the cause, then does what diagnose said
    stack.cli("compensate", slug, "--wait")
    cell.operator_saw = [diagnosis["why"]]  # type: ignore[index]
    status = finish(stack, cell, slug, started, {"failed"})
    assert status["state"] == "failed"
    assert stack.cli_json("diagnose", slug)["next_action"] == "retry"  # type: ignore[index]
    cell.operator_saw.append(f"reported after {reported:.0f} s")


def test_a_request_stuck_before_its_tenant_is_retried_once(stack: Stack) -> None:
    slug, cell = "stuck-request", Cell("request failed before its tenant existed, retry x2")
    registry = TenantRegistry.open(Settings.from_env(stack.env).db_url)
    try:
        record, _ = registry.requests.submit(TenantRequest.parse(request_fields(slug)))
        # A run that died in Validate had claimed it: the run the intake launches fails there.
        registry.requests.claim(record.request_id, "run-that-died")

        def launched_and_finished() -> bool:
            runs = runs_for_request(stack.instance(), record.request_id)
            return bool(runs) and all(run.is_finished for run in runs)

        wait_until(launched_and_finished, 60, "the intake never launched the request", 0.5)
        assert stack.cli_json("status", slug)["state"] == "request-launched"  # type: ignore
        started = time.monotonic()

        results = at_once(stack, ["retry", slug], ["retry", slug])

        cell.operator_saw = one_winner(results)
        finish(stack, cell, slug, started, {"active"})
        assert len(runs_for_request(stack.instance(), record.request_id)) == 2
    finally:
        registry.close()

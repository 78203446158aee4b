"""Failure semantics end to end under `tenantctl up` with the real daemon.

One stack for the module; each cell uses its own tenant, and the fault plan (re-read by the
platform at every call) targets only that tenant. Cells run in order and each ends with
`tenantctl inventory` clean. Set TENANT_MATRIX_REPORT=path to get the cells as JSON.
"""

import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import pytest
from dagster import DagsterRunStatus

from resources.fault_plan import FaultCounters
from tests.e2e.matrix_helpers import (
    Cell,
    kill_run_worker,
    retries_of,
    runs_of,
    story,
    wait_for_step_start,
)
from tests.stack_fixtures import StackOptions
from tests.stack_helpers import Stack, write_fault_plan
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

ORG = "matrix"
PHASES = ["validate", "allocate", "deploy", "mark_active", "send_welcome_emails"]
RELEASE_ORDER = {
    "allocate": ["route", "identity", "storage"],
    "deploy": ["workload", "route", "identity", "storage"],
    "mark_active": ["workload", "route", "identity", "storage"],
}
CELLS: list[Cell] = []


def write_report(stack: Stack) -> None:
    report = os.environ.get("TENANT_MATRIX_REPORT")
    if report:
        Path(report).write_text(json.dumps([asdict(c) for c in CELLS], indent=2))


@pytest.fixture(scope="module")
def stack_options() -> StackOptions:
    return StackOptions(faults=True, after_stop=write_report)


def faults(stack: Stack, *rules: dict[str, object]) -> None:
    assert stack.fault_plan is not None
    write_fault_plan(stack.fault_plan, list(rules))


def submit(stack: Stack, slug: str, plan: str = "team") -> None:
    stack.cli(
        "request",
        "--slug",
        slug,
        "--org",
        ORG,
        "--plan",
        plan,
        "--admin-email",
        f"admin@{slug}.example.com",
        "--caller",
        "matrix",
        "--role",
        "platform-admin",
    )


def rest_of_saga(phases: list[str]) -> list[tuple[str, str | None]]:
    events: list[tuple[str, str | None]] = []
    for phase in phases:
        events.append(("step_completed", phase))
        if phase == "mark_active":
            events.append(("completed", "mark_active"))
    return events


HAPPY = [("started", "validate"), *rest_of_saga(PHASES)]


def finish_cell(stack: Stack, cell: Cell, started: float) -> None:
    instance = stack.instance()
    cell.end_state = stack.cli_json("status", cell.slug)["state"]  # type: ignore[index]
    cell.compensations = len(runs_of(instance, cell.slug, "compensate_tenant"))
    cell.retries = retries_of(instance, cell.slug)
    cell.seconds = round(time.monotonic() - started, 1)
    CELLS.append(cell)
    assert stack.cli("inventory", check=False).returncode == 0, stack.cli(
        "inventory", check=False
    ).stdout


def hang_began(stack: Stack, phase: str, slug: str) -> bool:
    """Whether the plan's hang (its only rule) fired: it is counted before the call blocks."""
    assert stack.fault_plan is not None
    counters = FaultCounters(stack.fault_plan)
    return counters.read().get(counters.key(0, phase, slug), 0) > 0


def wait_for_compensation(stack: Stack, slug: str) -> None:
    wait_until(
        lambda: ("compensation_finished", "compensate") in story(stack, slug),
        60,
        f"{slug} was never compensated",
        0.5,
    )


@pytest.mark.parametrize("phase", ["allocate", "deploy", "mark_active"])
def test_transient_fault_recovers_within_the_budget(stack: Stack, phase: str) -> None:
    cell = Cell(f"{phase} transient", f"{phase.replace('_', '-')}-transient", phase, "transient")
    faults(stack, {"phase": phase, "tenant": cell.slug, "mode": "transient", "times": 1})
    started = time.monotonic()
    submit(stack, cell.slug)
    assert stack.wait_for_state(cell.slug, {"active", "failed"})["state"] == "active"
    finish_cell(stack, cell, started)
    assert cell.compensations == 0 and cell.retries >= 1
    assert story(stack, cell.slug) == HAPPY


@pytest.mark.parametrize("phase", ["allocate", "deploy", "mark_active"])
def test_permanent_fault_compensates_then_retry_ends_active(stack: Stack, phase: str) -> None:
    cell = Cell(f"{phase} permanent", f"{phase.replace('_', '-')}-permanent", phase, "permanent")
    faults(stack, {"phase": phase, "tenant": cell.slug, "mode": "permanent"})
    started = time.monotonic()
    submit(stack, cell.slug)
    failed = stack.wait_for_state(cell.slug, {"active", "failed"})
    assert failed["state"] == "failed" and failed["failed_step"] == phase
    wait_for_compensation(stack, cell.slug)
    released = [
        e["details"]["kind"]
        for e in stack.cli_json_lines(
            "audit", "--tenant", cell.slug, "--type", "tenant.provisioning.compensated"
        )
    ]
    assert released == RELEASE_ORDER[phase]
    assert stack.cli("inventory", check=False).returncode == 0
    diagnosis = stack.cli_json("diagnose", cell.slug)
    assert diagnosis["next_action"] == "retry"  # type: ignore[index]
    assert diagnosis["compensations"][0]["finished"]  # type: ignore[index]
    failed_run = diagnosis["runs"][-1]  # type: ignore[index]
    assert failed_run["failed_step"] == phase and "injected" in failed_run["error"]
    assert {e["kind"]: e["state"] for e in diagnosis["ledger"]} == dict.fromkeys(  # type: ignore
        RELEASE_ORDER[phase], "released"
    )

    faults(stack)
    if phase == "deploy":  # exactly what the UI's "Re-execute from failure" sends
        # As if the failed run had run on another host: nothing of it is on this host's disk
        # (its step logs; the ops hand each other nothing, so it wrote no outputs there).
        its_files = Path(stack.env["DAGSTER_HOME"]) / "storage" / failed["last_run_id"]
        assert (its_files / "compute_logs").is_dir()
        shutil.rmtree(its_files)
        stack.dagster_api().reexecute_from_failure(failed["last_run_id"])
        assert stack.wait_for_state(cell.slug, {"active"})["state"] == "active"
    else:
        stack.cli("retry", cell.slug, "--wait")
    finish_cell(stack, cell, started)
    assert cell.end_state == "active" and cell.compensations == 1
    i = PHASES.index(phase)
    assert story(stack, cell.slug) == [
        ("started", "validate"),
        *rest_of_saga(PHASES[:i]),
        ("failed", phase),
        *[("compensated", "compensate")] * len(released),
        ("compensation_finished", "compensate"),
        ("started", phase),
        *rest_of_saga(PHASES[i:]),
    ]


@pytest.mark.parametrize("phase", ["allocate", "deploy", "mark_active"])
def test_killed_worker_resumes_without_compensation(stack: Stack, phase: str) -> None:
    cell = Cell(f"{phase} worker killed", f"{phase.replace('_', '-')}-killed", phase, "killed")
    faults(stack, {"phase": phase, "tenant": cell.slug, "mode": "hang", "times": 1})
    started = time.monotonic()
    submit(stack, cell.slug)
    instance = stack.instance()
    run = wait_for_step_start(instance, cell.slug, phase)
    wait_until(lambda: hang_began(stack, phase, cell.slug), 30, f"{phase} never hung", 0.2)
    kill_run_worker(instance, run)
    assert stack.wait_for_state(cell.slug, {"active", "failed"})["state"] == "active"
    finish_cell(stack, cell, started)
    assert cell.compensations == 0
    i = PHASES.index(phase)
    assert story(stack, cell.slug) == [
        ("started", "validate"),
        *rest_of_saga(PHASES[:i]),
        ("resumed", phase),
        *rest_of_saga(PHASES[i:]),
    ]


def test_email_failure_leaves_the_tenant_active(stack: Stack) -> None:
    cell = Cell(
        "send_welcome_emails permanent", "emails-permanent", "send_welcome_emails", "permanent"
    )
    faults(stack, {"phase": "send_welcome_emails", "tenant": cell.slug, "mode": "permanent"})
    started = time.monotonic()
    submit(stack, cell.slug)
    assert stack.wait_for_state(cell.slug, {"active", "failed"})["state"] == "active"
    wait_until(
        lambda: story(stack, cell.slug) == HAPPY, 30, lambda: str(story(stack, cell.slug)), 0.5
    )
    finish_cell(stack, cell, started)
    assert cell.compensations == 0
    emails = stack.cli_json("emails", cell.slug)
    assert [e["status"] for e in emails] == ["failed"] * 3  # type: ignore[union-attr]
    failed = stack.cli_json_lines("audit", "--tenant", cell.slug, "--type", "tenant.email.*")
    assert [e["type"] for e in failed] == ["tenant.email.failed"] * 3


def test_compensation_run_twice_changes_nothing(stack: Stack) -> None:
    slug = "compensate-twice"
    faults(stack, {"phase": "deploy", "tenant": slug, "mode": "permanent"})
    submit(stack, slug)
    assert stack.wait_for_state(slug, {"failed"})["state"] == "failed"
    wait_for_compensation(stack, slug)
    before = stack.cli_json("diagnose", slug)
    instance = stack.instance()
    (first,) = runs_of(instance, slug, "compensate_tenant")
    again = stack.dagster_api().reexecute(first.run_id, "ALL_STEPS")
    wait_until(
        lambda: instance.get_run_by_id(again).status == DagsterRunStatus.SUCCESS,  # type: ignore
        60,
        f"run {again} did not succeed",
        0.5,
    )
    after = stack.cli_json("diagnose", slug)
    assert after["ledger"] == before["ledger"] and after["state"] == "failed"  # type: ignore
    compensated = stack.cli_json_lines("audit", "--tenant", slug, "--type", "*.compensated")
    assert len(compensated) == 4  # the second run found nothing left to release
    assert stack.cli("inventory", check=False).returncode == 0


def test_canceled_run_is_compensated_and_retried(stack: Stack) -> None:
    slug = "canceled-run"
    faults(stack, {"phase": "deploy", "tenant": slug, "mode": "hang", "times": 1})
    submit(stack, slug)
    instance = stack.instance()
    run = wait_for_step_start(instance, slug, "deploy")
    refused = stack.cli("decommission", slug, check=False)
    assert refused.returncode == 3 and "is provisioning" in refused.stderr
    assert stack.cli_json("diagnose", slug)["next_action"] == "wait"  # type: ignore[index]
    stack.graphql_client().terminate_run(run.run_id)
    assert stack.wait_for_state(slug, {"failed"})["state"] == "failed"
    wait_for_compensation(stack, slug)
    ended = instance.get_run_by_id(run.run_id)
    assert ended is not None and ended.status in (
        DagsterRunStatus.CANCELED,
        DagsterRunStatus.FAILURE,
    )
    assert stack.cli_json("status", slug)["failure_reason"] == "the run was terminated"  # type: ignore
    stack.cli("retry", slug, "--wait")
    assert stack.cli_json("status", slug)["state"] == "active"  # type: ignore[index]
    assert stack.cli("inventory", check=False).returncode == 0


def test_hung_phase_fails_at_the_plan_timeout_then_compensates(stack: Stack) -> None:
    slug = "hung-deploy"
    faults(stack, {"phase": "deploy", "tenant": slug, "mode": "hang", "times": 99})
    submit(stack, slug, plan="free")
    failed = stack.wait_for_state(slug, {"active", "failed"}, timeout_s=180)
    assert failed["state"] == "failed" and failed["failed_step"] == "deploy"
    assert "did not finish within 15 s" in failed["failure_reason"]
    assert retries_of(stack.instance(), slug) == 2  # the free plan's budget
    wait_for_compensation(stack, slug)
    faults(stack)
    assert stack.cli("inventory", check=False).returncode == 0


def test_decommission_frees_the_slug_for_a_new_request(stack: Stack) -> None:
    slug = "allocate-transient"  # active since the first cell
    refused = stack.cli("decommission", "nobody-here", check=False)
    assert refused.returncode == 1 and "nobody-here" in refused.stderr
    stack.cli("decommission", slug, "--wait")
    assert stack.cli_json("status", slug)["state"] == "decommissioned"  # type: ignore[index]
    events = stack.cli_json_lines("audit", "--tenant", slug, "--type", "tenant.decommission.*")
    assert events[0]["type"] == "tenant.decommission.started"
    assert events[-1]["type"] == "tenant.decommission.completed"
    assert stack.cli("inventory", check=False).returncode == 0
    submit(stack, slug)
    assert stack.wait_for_state(slug, {"active", "failed"})["state"] == "active"


def test_platform_restart_resumes_the_interrupted_run(stack: Stack) -> None:
    slug = "restart-resume"
    faults(stack, {"phase": "deploy", "tenant": slug, "mode": "hang", "times": 1})
    submit(stack, slug)
    wait_for_step_start(stack.instance(), slug, "deploy")
    assert stack.stop() == 0
    restarted = time.monotonic()
    stack.start()
    assert stack.wait_for_state(slug, {"active", "failed"}, timeout_s=90)["state"] == "active"
    assert time.monotonic() - restarted < 60 + 30
    assert ("resumed", "deploy") in story(stack, slug)
    assert runs_of(stack.instance(), slug, "compensate_tenant") == []
    # Workloads of tenants that were active before the stop are serving again.
    assert stack.cli_json("status", "deploy-transient")["state"] == "active"  # type: ignore
    assert stack.cli("inventory", check=False).returncode == 0

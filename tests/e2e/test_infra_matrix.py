"""Broken infrastructure under the whole stack, as a user starts it: PostgreSQL restarted in the
middle of a deploy, and the data directory's disk full. Each cell prints one row of the matrix
(end state, seconds to recover, what the operator saw); the assertions hold the bounds."""

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import fresh_pg_database
from tests.disk_helpers import fill, small_disk
from tests.e2e.matrix_helpers import story, wait_for_step_start
from tests.stack_helpers import Stack, gateway_pid, local_stack, write_fault_plan
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

ORG = "widgets"
EDGE_BACK_S = 5.0
PG_BACK_TIMEOUT_S = 60
GRAPHQL_HEALTHY_WITHIN_S = 10.0  # "within a few seconds" of PostgreSQL being back
HEALTHY_IN_A_ROW = 8  # answers without error, one after the other, that count as recovered
RECOVERY_TIMEOUT_S = 180
RUNS_QUERY = {"query": "{ runsOrError(limit: 5) { __typename ... on Runs { results { runId } } } }"}


def submit(stack: Stack, slug: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return stack.cli(
        *("request", "--slug", slug, "--org", ORG, "--plan", "team"),
        *("--admin-email", f"admin@{slug}.example.com", "--caller", "ops", "--role", "org-admin"),
        check=check,
    )


def row(cell: str, end_state: str, seconds: float, saw: str) -> None:
    print(f"\n| {cell} | {end_state} | {seconds:.1f} | {saw} |")


# PostgreSQL restarted mid-deploy ------------------------------------------------------------
def pg_cluster() -> str:
    return sorted(p.name for p in Path("/etc/postgresql").iterdir())[-1]


def pg_ready() -> bool:
    result = subprocess.run(
        ["pg_isready", "-h", "127.0.0.1", "-p", "5432", "-t", "1"], capture_output=True
    )
    return result.returncode == 0


def restart_postgres() -> float:
    """Restart the shared server (briefly: other suites use it); the monotonic time it is back."""
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", pg_cluster(), "main", "restart"],
        check=True,
        capture_output=True,
        timeout=PG_BACK_TIMEOUT_S,
    )
    deadline = time.monotonic() + PG_BACK_TIMEOUT_S
    while not pg_ready():
        assert time.monotonic() < deadline, "PostgreSQL did not come back"
        time.sleep(0.1)
    return time.monotonic()


def ensure_postgres_up() -> None:
    if not pg_ready():
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", pg_cluster(), "main", "start"],
            capture_output=True,
            timeout=PG_BACK_TIMEOUT_S,
        )


def graphql_status(stack: Stack) -> int:
    """The Dagster UI's answer (through the door) to a query that reads the run storage: 200
    only without errors."""
    try:
        answer = requests.post(
            stack.dagster_graphql_url,
            json=RUNS_QUERY,
            headers={"Authorization": f"Bearer {stack.admin_token()}"},
            timeout=10,
        )
    except requests.RequestException:
        return 0
    if answer.status_code == 200 and "errors" in answer.json():
        return 299  # an answer, but an error in it
    return answer.status_code


def seconds_until_graphql_healthy(stack: Stack, since: float) -> tuple[float, list[int]]:
    """Seconds from `since` until HEALTHY_IN_A_ROW answers in a row were clean; every answer."""
    seen: list[int] = []
    healthy_from: float | None = None
    deadline = since + 90
    while time.monotonic() < deadline:
        asked = time.monotonic()
        status = graphql_status(stack)
        seen.append(status)
        if status != 200:
            healthy_from = None
        elif healthy_from is None:
            healthy_from = asked
        if seen[-HEALTHY_IN_A_ROW:] == [200] * HEALTHY_IN_A_ROW and healthy_from is not None:
            return healthy_from - since, seen
        time.sleep(0.25)
    raise AssertionError(f"GraphQL never answered cleanly again: {seen}")


@pytest.fixture
def pg_stack(pg_admin_url: str, tmp_path: Path) -> Iterator[Stack]:
    """The stack with its Dagster instance and registry on one PostgreSQL database."""
    plan = tmp_path / "faults.json"
    write_fault_plan(plan, [])
    with fresh_pg_database(pg_admin_url, "infra") as url:
        env = {"DAGSTER_PG_URL": url, "TENANT_DB_URL": url, "TENANT_FAULT_PLAN": str(plan)}
        with pytest.MonkeyPatch.context() as patch, local_stack(tmp_path, **env) as stack:
            patch.setenv("DAGSTER_PG_URL", url)  # this process reads the instance too
            stack.fault_plan = plan
            try:
                stack.start()
                yield stack
                assert stack.stop() == 0
            finally:
                ensure_postgres_up()


def test_postgres_restarted_mid_deploy(pg_stack: Stack) -> None:
    stack, slug = pg_stack, "pgrestart"
    assert stack.fault_plan is not None
    write_fault_plan(stack.fault_plan, [{"phase": "deploy", "tenant": slug, "mode": "hang"}])
    submit(stack, slug)
    instance = stack.instance()
    try:
        wait_for_step_start(instance, slug, "deploy")
    finally:
        instance.dispose()
    assert graphql_status(stack) == 200

    back = restart_postgres()
    write_fault_plan(stack.fault_plan, [])  # the deploy carries on
    healthy_after, seen = seconds_until_graphql_healthy(stack, back)
    final = stack.wait_for_state(slug, {"active", "failed"}, timeout_s=RECOVERY_TIMEOUT_S)
    ended_after = time.monotonic() - back
    errors = [s for s in seen if s != 200]
    row(
        "PostgreSQL restarted mid-deploy",
        final["state"],
        ended_after,
        f"GraphQL clean {healthy_after:.1f} s after PostgreSQL was back"
        f" ({len(errors)} failed answers: {sorted(set(errors))}); status {final['state']}",
    )
    assert healthy_after <= GRAPHQL_HEALTHY_WITHIN_S, seen
    # Held connections are pinged before use (runtime/pg_storage.py): not one 500 once it is back.
    assert 500 not in seen, seen
    if final["state"] == "failed":  # acceptable only when compensated
        assert any(event == "compensated" for event, _ in story(stack, slug))
    # The platform works on after the restart: a new tenant goes all the way.
    submit(stack, "afterpg")
    assert stack.wait_for_state("afterpg", {"active"}, timeout_s=RECOVERY_TIMEOUT_S)


# The data directory's disk full --------------------------------------------------------------
@pytest.fixture
def stack_on_small_disk(tmp_path: Path) -> Iterator[Stack]:
    """The embedded default with its data directory on a 64 MB tmpfs (Dagster's home is not)."""
    with small_disk(tmp_path / "data", 64), local_stack(tmp_path) as stack:
        stack.start()
        try:
            yield stack
        finally:
            if stack.process is not None:
                stack.stop()


def edge_serves(stack: Stack, host: str) -> bool:
    try:
        return stack.edge_get(host, "/healthz").status == 200
    except OSError:
        return False


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) <= 1, result.stderr
    return lines[0] if lines else ""


def test_data_directory_disk_full(stack_on_small_disk: Stack) -> None:
    stack = stack_on_small_disk
    submit(stack, "before")
    stack.wait_for_state("before", {"active"})
    host = f"before-{ORG}.localhost"
    assert stack.edge_get(host, "/healthz").status == 200  # served: its certificate is issued
    filler = fill(stack.data_dir)

    refused = submit(stack, "duringfull", check=False)
    saw = one_line(refused)
    if refused.returncode == 0:  # recorded after all: its failure must become visible
        status = stack.wait_for_state("duringfull", {"active", "failed", "request-launched"})
        deadline = time.monotonic() + RECOVERY_TIMEOUT_S
        while status["state"] == "request-launched" and not status.get("failure_reason"):
            assert time.monotonic() < deadline, status
            time.sleep(1)
            status = json.loads(stack.cli("status", "duringfull", "--json").stdout)
        saw = f"status: {status['state']} {status.get('failure_reason')}"
    else:
        assert refused.returncode == 1
        assert "disk is full" in saw or "No space left" in saw, saw
    for args in (["list", "--json"], ["inventory"], ["status", "before"], ["diagnose", "before"]):
        one_line(stack.cli(*args, check=False))
    # Active tenants are still served, by a gateway killed meanwhile too (it starts again on the
    # configuration it last wrote, and the certificates it has).
    assert stack.edge_get(host, "/healthz").status == 200
    os.kill(gateway_pid(stack.data_dir), signal.SIGKILL)
    killed = time.monotonic()
    wait_until(lambda: edge_serves(stack, host), EDGE_BACK_S, "the edge is not back", 0.05)
    row("edge killed, disk full", "served", time.monotonic() - killed, "active tenant served")

    freed = time.monotonic()
    filler.unlink()
    submit(stack, "afterfull")
    final = stack.wait_for_state("afterfull", {"active"}, timeout_s=RECOVERY_TIMEOUT_S)
    recovered = time.monotonic() - freed
    row("data directory disk full", final["state"], recovered, saw)
    assert stack.process is not None and stack.process.poll() is None, "the stack died"

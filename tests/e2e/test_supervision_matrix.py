"""Supervision end to end: a real `tenantctl up`, its children killed one at a time.

One stack for the module, created with `up --init` on a new data directory; cells run in order,
each with its own tenant, and each ends with `tenantctl inventory` clean, one daemon, every tenant
active and served through the edge. Set TENANT_SUPERVISION_REPORT=path to get the cells as JSON.
"""

import functools
import json
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
import requests

from resources.deployer import read_endpoint
from tenant_pipelines.localstack import leftovers
from tenant_pipelines.support import procs
from tenant_pipelines.support.unix_http import UnixHTTPConnection
from tests.edge_client import exchange
from tests.stack_fixtures import StackOptions
from tests.stack_helpers import REPO, TENANTCTL, Stack, free_port
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

ORG = "super"
EDGE_BACK_S = 5.0  # the bound
CHILD_MARKS = {
    "edge": "caddy run --config",
    "daemon": "dagster-daemon run",
    "api": "-m tenant_pipelines.api",
}


@dataclass
class Row:
    cell: str
    end_state: str
    seconds: float
    operator_saw: str


ROWS: list[Row] = []


def nothing_left_then_report(stack: Stack) -> None:
    assert platform_pids(stack) == [] and workloads(stack) == {}
    report = os.environ.get("TENANT_SUPERVISION_REPORT")
    if report:
        Path(report).write_text(json.dumps([asdict(r) for r in ROWS], indent=2))


@pytest.fixture(scope="module")
def stack_options() -> StackOptions:
    """`up --init` on a data directory that does not exist yet."""
    return StackOptions(init=True, after_stop=nothing_left_then_report)


def platform_pids(stack: Stack) -> list[int]:
    return leftovers.marked(str(stack.data_dir.resolve()))


def child_pids(stack: Stack, name: str) -> list[int]:
    return [p for p in platform_pids(stack) if CHILD_MARKS[name] in (procs.command_line(p) or "")]


def replaced(stack: Stack, name: str, old: int) -> bool:
    """Whether a new process runs as child `name` in place of `old`."""
    return child_pids(stack, name) not in ([], [old])


def the_child(stack: Stack, name: str) -> int:
    (pid,) = child_pids(stack, name)
    return pid


def workloads(stack: Stack) -> dict[str, list[int]]:
    """Tenant key -> PIDs of its workload processes (one, or it is duplicated)."""
    found: dict[str, list[int]] = {}
    state_dir = str(stack.data_dir.resolve() / "workloads")
    for pid in procs.pids():
        args = procs.argv(pid) or []
        if "resources.workload_server" in args and any(state_dir in a for a in args):
            found.setdefault(args[args.index("--tenant-key") + 1], []).append(pid)
    return found


def served(stack: Stack, slug: str) -> bool:
    try:
        answer = stack.edge_get(f"{slug}-{ORG}.localhost", "/.well-known/openid-configuration")
    except OSError:
        return False
    return answer.status == 200 and f"{slug}-{ORG}".encode() in answer.body


def submit(stack: Stack, slug: str) -> None:
    stack.cli(
        *("request", "--slug", slug, "--org", ORG, "--plan", "team"),
        *("--admin-email", f"admin@{slug}.example.com", "--caller", "drill"),
        *("--role", "platform-admin"),
    )


def provision(stack: Stack, slug: str) -> None:
    submit(stack, slug)
    assert stack.wait_for_state(slug, {"active", "failed"})["state"] == "active"


def assert_platform_whole(stack: Stack) -> None:
    """One of each child, every tenant active, served and with one workload; inventory clean."""
    for name in CHILD_MARKS:
        assert len(child_pids(stack, name)) == 1, f"{name}: {child_pids(stack, name)}"
    tenants = stack.cli_json("list")
    assert isinstance(tenants, list) and tenants
    assert {t["state"] for t in tenants} == {"active"}, tenants
    for tenant in tenants:
        assert served(stack, tenant["slug"]), tenant["slug"]
    assert all(len(pids) == 1 for pids in workloads(stack).values()), workloads(stack)
    inventory = stack.cli("inventory", check=False)
    assert inventory.returncode == 0, inventory.stdout


def test_a_second_up_is_refused_at_once(stack: Stack) -> None:
    assert stack.process is not None
    started = time.monotonic()
    second = subprocess.run(
        [TENANTCTL, "up", "--edge-port", str(free_port()), "--api-port", str(free_port())],
        env=stack.env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    seconds = round(time.monotonic() - started, 1)
    assert second.returncode == 1 and seconds < 15
    assert second.stderr.count("\n") == 1
    ports = f"ports edge {stack.edge_port}, https {stack.https_port}, api {stack.api_port}"
    assert f"(pid {stack.process.pid}; {ports})" in second.stderr
    assert len(child_pids(stack, "daemon")) == 1
    ROWS.append(Row("second up on the data dir", "refused, exit 1", seconds, second.stderr.strip()))


def test_a_killed_edge_is_back_and_serving_within_5_s(stack: Stack) -> None:
    provision(stack, "edge-kill")
    key = f"edge-kill-{ORG}"
    edge = the_child(stack, "edge")
    os.kill(edge, signal.SIGKILL)
    killed = time.monotonic()
    path = read_endpoint(stack.data_dir.resolve(), key)  # the workload serves on meanwhile
    assert path is not None
    assert exchange(UnixHTTPConnection(path, 5), "/healthz").status == 200
    wait_until(lambda: served(stack, "edge-kill"), EDGE_BACK_S, "the edge is not back", 0.05)
    seconds = round(time.monotonic() - killed, 2)
    said = stack.wait_said("edge exited")
    assert said.strip() == "edge exited with status -9; restarting it in 0.0 s (restart 1)"
    assert the_child(stack, "edge") != edge
    assert_platform_whole(stack)
    ROWS.append(Row("edge killed (SIGKILL)", "active, served", seconds, said.strip()))


def test_a_killed_daemon_is_restarted_and_a_request_meanwhile_becomes_active(
    stack: Stack,
) -> None:
    daemon = the_child(stack, "daemon")
    os.kill(daemon, signal.SIGKILL)
    killed = time.monotonic()
    submit(stack, "daemon-kill")
    assert stack.wait_for_state("daemon-kill", {"active", "failed"})["state"] == "active"
    seconds = round(time.monotonic() - killed, 1)
    said = stack.wait_said("daemon exited")
    assert said.strip() == "daemon exited with status -9; restarting it in 0.0 s (restart 1)"
    assert the_child(stack, "daemon") != daemon
    assert_platform_whole(stack)
    ROWS.append(Row("daemon killed (SIGKILL)", "active", seconds, said.strip()))


def test_a_killed_api_server_is_restarted_and_answers_again(stack: Stack) -> None:
    """The API server serves the API, the console and the Dagster UI: all answer again."""
    name = "api"
    ui = (f"{stack.api_base}/dagster/server_info", stack.admin_token())
    child = the_child(stack, name)
    os.kill(child, signal.SIGKILL)
    killed = time.monotonic()
    wait_until(
        lambda: answers(f"{stack.api_base}/healthz") and answers(*ui),
        90,
        "the API server and the Dagster UI do not answer",
        0.2,
    )
    seconds = round(time.monotonic() - killed, 1)
    said = stack.wait_said(f"{name} exited")
    assert said.strip() == f"{name} exited with status -9; restarting it in 0.0 s (restart 1)"
    assert the_child(stack, name) != child
    assert_platform_whole(stack)
    ROWS.append(Row(f"{name} killed (SIGKILL)", "answers again", seconds, said.strip()))


def answers(url: str, token: str | None = None) -> bool:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        return requests.get(url, headers=headers, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_up_killed_then_started_again_leaves_no_orphan_and_no_second_daemon(
    stack: Stack,
) -> None:
    assert stack.process is not None
    before = set(platform_pids(stack))
    serving = workloads(stack)
    stack.process.send_signal(signal.SIGKILL)
    stack.process.wait()
    stack.process = None
    killed = time.monotonic()
    # Its children die with it; tenant workloads run on for the next `up` to adopt.
    wait_until(
        lambda: not any(child_pids(stack, name) for name in CHILD_MARKS),
        10,
        "children outlived up",
        0.05,
    )
    assert workloads(stack) == serving
    down = stack.cli(
        "request",
        "--slug",
        "while-down",
        "--org",
        ORG,
        "--plan",
        "team",
        "--admin-email",
        "a@while-down.example.com",
        "--caller",
        "drill",
        "--role",
        "platform-admin",
        check=False,
    )
    assert down.returncode == 0, down.stderr  # recorded; launched once the platform is back
    stack.start()
    wait_until(
        lambda: served(stack, "edge-kill") and served(stack, "daemon-kill"),
        30,
        "the tenants are not served",
        0.05,
    )
    seconds = round(time.monotonic() - killed, 1)
    assert stack.wait_for_state("while-down", {"active", "failed"})["state"] == "active"
    assert not before & set(platform_pids(stack)), "a process of the killed up survived"
    after = workloads(stack)
    assert {key: after[key] for key in serving} == serving, "adopted, not started twice"
    assert_platform_whole(stack)
    saw = [line.strip() for line in stack.said if "previous tenantctl up" in line]
    ROWS.append(
        Row("up killed (SIGKILL), up again", "active, served", seconds, "; ".join(saw) or "-")
    )


def test_an_edge_that_keeps_dying_stops_the_platform_with_the_reason(stack: Stack) -> None:
    """Five exits within a minute: a fault to report, not to hide behind restarts."""
    assert stack.process is not None
    started = time.monotonic()
    for kill in range(5):
        edge = the_child(stack, "edge")
        os.kill(edge, signal.SIGKILL)
        if kill < 4:  # restarted after its backoff (0, 0.5, 1, 2 s), and serving again
            wait_until(functools.partial(replaced, stack, "edge", edge), 30, "no new edge", 0.1)
            wait_until(lambda: served(stack, "edge-kill"), 30, "the edge is not back", 0.05)
    assert stack.process.wait(timeout=60) == 1
    seconds = round(time.monotonic() - started, 1)
    said = stack.wait_said("tenantctl: edge exited 5 times")
    assert said.strip() == (
        "tenantctl: edge exited 5 times within 60 s (last status -9); stopping the platform;"
        f" see {stack.data_dir.resolve() / 'logs' / 'edge.log'}"
    )
    assert [line for line in stack.said if "restarting it" in line][-1].endswith("(restart 4)\n")
    stack.process = None
    assert platform_pids(stack) == [] and workloads(stack) == {}
    ROWS.append(Row("edge crash loop (5 kills)", "platform stopped, exit 1", seconds, said.strip()))

"""`tenantctl` as a user runs it: a real process, real registry and instance, no stack."""

import json
import os
import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from dagster import DagsterInstance

from tenant_pipelines.cli.commands import FOLLOW_POLL_S
from tenant_pipelines.domain.events import make_event
from tenant_pipelines.localstack import platform_lock
from tenant_pipelines.localstack.stack_file import stack_file
from tenant_pipelines.orchestration.feed import to_observation
from tenant_pipelines.orchestration.instance import open_instance
from tenant_pipelines.settings import Settings
from tenant_pipelines.support.operator_key import operator_key_file
from tests.api_helpers import ApiServer, api_server, platform_env
from tests.pg_helpers import backend_pids, statements_started
from tests.platform_fixtures import LocalPlatform
from tests.stack_helpers import REPO, TENANTCTL, free_port
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

VALID = [
    "--slug",
    "acme",
    "--org",
    "widgets",
    "--plan",
    "team",
    "--admin-email",
    "admin@acme.example.com",
    "--caller",
    "alice",
    "--role",
    "org-admin",
]


def tenantctl(local: LocalPlatform, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "TENANT_DATA_DIR": str(local.settings.data_dir),
        "DAGSTER_HOME": str(local.settings.dagster_home),
    }
    return subprocess.run(
        [TENANTCTL, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )


@contextmanager
def running_platform(local: LocalPlatform, api_port: int) -> Iterator[None]:
    """What the command line takes for a running `tenantctl up`: its lock held (here by the
    test) and its stack file naming the API server's port."""
    settings = local.settings
    locks = platform_lock.hold(settings.data_dir, settings.dagster_home, {"api": api_port})
    stack = {"pid": os.getpid(), "edge_port": 0, "api_port": api_port}
    stack_file(settings).write_text(json.dumps(stack))
    try:
        yield
    finally:
        stack_file(settings).unlink()
        for fd in locks:
            os.close(fd)


@contextmanager
def platform_api_server(local: LocalPlatform) -> Iterator[ApiServer]:
    """The API server of a running platform on `local`'s data directory (it launches nothing:
    no workspace, no Dagster UI), as `request`, `status` and `list` find it."""
    settings = local.settings
    env = platform_env(settings.data_dir, settings.dagster_home)
    with (
        api_server(env, settings.data_dir.parent / "api.log") as server,
        running_platform(local, int(server.base.rsplit(":", 1)[1])),
    ):
        yield server


def answered_by(server: ApiServer, *calls: str) -> bool:
    """Whether the server's access log has each of `calls` ("POST /local/requests")."""
    log = server.log.read_text()
    return all(f'"{call} HTTP/1.1"' in log for call in calls)


@pytest.fixture(params=["registry", "api server"])
def through(request: pytest.FixtureRequest, local_platform: LocalPlatform) -> Iterator[str]:
    """The same command, answered from the registry (no platform running) and by the running
    platform's API server."""
    if request.param == "registry":
        yield "registry"
        return
    with platform_api_server(local_platform) as server:
        yield "api server"
        assert answered_by(server, "POST /local/requests")


def provision(local: LocalPlatform) -> str:
    """Provision `acme` through Dagster on the persistent instance; the run id."""
    run_id, success, _ = local.provision(local.submit().request_id)
    assert success
    return run_id


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--slug", "Acme", "slug: must be lowercase letters"),
        ("--slug", "admin", "slug: 'admin' is a reserved word"),
        ("--org", "a--b", "org: must not contain '--'"),
        ("--admin-email", "not-an-email", "admin_email: value is not a valid email address"),
        ("--plan", "Gold!", "plan: must be a lowercase word"),
        ("--plan", "gold", "plan: 'gold' is not a plan (known: free, team, enterprise)"),
        ("--role", "intern", "requested_by.role: role 'intern' is unknown"),
    ],
)
def test_malformed_input_exits_2_naming_the_field_and_records_nothing(
    local_platform: LocalPlatform, through: str, flag: str, value: str, message: str
) -> None:
    args = list(VALID)
    args[args.index(flag) + 1] = value
    result = tenantctl(local_platform, "request", *args)
    assert result.returncode == 2
    assert result.stderr.startswith("tenantctl: invalid request: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert local_platform.registry.requests.to_launch(10) == []


def test_request_is_idempotent_by_request_id_and_conflicts_are_refused(
    local_platform: LocalPlatform, through: str
) -> None:
    request_id = str(uuid.uuid4())
    first = json.loads(
        tenantctl(local_platform, "request", *VALID, "--request-id", request_id, "--json").stdout
    )
    again = json.loads(
        tenantctl(local_platform, "request", *VALID, "--request-id", request_id, "--json").stdout
    )
    assert first["request_id"] == again["request_id"] == request_id
    assert (first["created"], again["created"]) == (True, False)
    assert first["state"] == "pending" and first["run_id"] is None  # nothing here launches
    other = list(VALID)
    other[other.index("--plan") + 1] = "free"
    conflict = tenantctl(local_platform, "request", *other, "--request-id", request_id)
    assert conflict.returncode == 2 and "already submitted with another plan" in conflict.stderr
    status = json.loads(tenantctl(local_platform, "status", "acme", "--json").stdout)
    assert status["state"] == "request-pending" and status["request_id"] == request_id
    rival = list(VALID)
    rival[rival.index("--org") + 1] = "rivals"
    taken = tenantctl(local_platform, "request", *rival)
    assert taken.returncode == 2
    assert (
        taken.stderr == f"tenantctl: slug acme is taken by request {request_id}, in flight; "
        "choose another slug\n"
    )
    assert len(local_platform.registry.requests.in_progress()) == 1


def test_status_list_and_audit_of_a_provisioned_tenant(local_platform: LocalPlatform) -> None:
    local = local_platform
    run_id = provision(local)

    status = json.loads(tenantctl(local, "status", "acme", "--json").stdout)
    assert {k: status[k] for k in ("slug", "org", "plan", "state", "url", "last_run_id")} == {
        "slug": "acme",
        "org": "widgets",
        "plan": "team",
        "state": "active",
        "url": "https://acme-widgets.localhost:8443",  # the edge's default HTTPS port
        "last_run_id": run_id,
    }
    listed = json.loads(tenantctl(local, "list", "--state", "active", "--json").stdout)
    assert [row["slug"] for row in listed] == ["acme"]
    assert json.loads(tenantctl(local, "list", "--state", "failed", "--json").stdout) == []

    lines = tenantctl(
        local, "audit", "--tenant", "acme", "--type", "*.step_completed", "--json"
    ).stdout.splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["step"] for e in events] == [
        "validate",
        "allocate",
        "deploy",
        "mark_active",
        "send_welcome_emails",
    ]
    assert set(events[0]) == {
        "type",
        "tenant",
        "org",
        "run_id",
        "step",
        "step_name",
        "at",
        "details",
    }
    emails = json.loads(tenantctl(local, "emails", "acme", "--json").stdout)
    assert [(e["kind"], e["status"]) for e in emails] == [
        ("welcome", "sent"),
        ("console", "sent"),
        ("onboarding", "sent"),
    ]

    missing = tenantctl(local, "status", "nobody")
    assert missing.returncode == 1 and "nobody" in missing.stderr


def test_status_and_list_through_the_api_server_say_what_the_registry_says(
    local_platform: LocalPlatform,
) -> None:
    local = local_platform
    provision(local)
    assert tenantctl(local, "request", *VALID, "--slug", "waiting").returncode == 0
    asked = [
        ("status", "acme", "--json"),
        ("status", "waiting", "--json"),
        ("status", "acme"),
        ("list", "--json"),
        ("list", "--state", "active"),
        ("list", "--state", "failed"),
        ("status", "nobody", "--json"),
    ]
    direct = [tenantctl(local, *args) for args in asked]
    with platform_api_server(local) as server:
        served = [tenantctl(local, *args) for args in asked]
        # Access lines name the path without its query string (`--state` travels in it).
        assert answered_by(server, "GET /local/tenants/acme", "GET /local/tenants")
    said = [(r.returncode, r.stdout, r.stderr) for r in direct]
    assert [(r.returncode, r.stdout, r.stderr) for r in served] == said
    assert said[1][0] == 0 and json.loads(said[1][1])["state"] == "request-pending"
    assert said[-1][0] == 1 and "nobody" in said[-1][2]


def test_a_running_platform_whose_api_server_does_not_answer_is_worked_around(
    local_platform: LocalPlatform,
) -> None:
    """The stack file names a port nobody listens on (the API server is being restarted): the
    commands use the registry; the request waits for the intake sensor."""
    local = local_platform
    operator_key_file(local.settings.data_dir).write_text("a key")
    with running_platform(local, free_port()):
        request = tenantctl(local, "request", *VALID, "--json")
        status = tenantctl(local, "status", "acme", "--json")
    assert request.returncode == 0, request.stderr
    assert json.loads(request.stdout)["state"] == "pending"
    assert json.loads(status.stdout)["state"] == "request-pending"
    assert len(local.registry.requests.in_progress()) == 1


def test_a_request_sent_twice_after_no_answer_is_recorded_once(
    local_platform: LocalPlatform,
) -> None:
    """The id is chosen by the command: sent again, the same request is found, not doubled."""
    local = local_platform
    first = json.loads(tenantctl(local, "request", *VALID, "--json").stdout)
    request_id = first["request_id"]
    with platform_api_server(local):
        again = tenantctl(local, "request", *VALID, "--request-id", request_id, "--json")
    assert json.loads(again.stdout)["created"] is False
    assert [r.request_id for r in local.registry.requests.in_progress()] == [request_id]


def interruptible() -> None:
    """In the child before exec: Ctrl-C's signal at its default, as in a terminal. A process
    started in the background by a non-interactive shell (as CI may start the tests) has SIGINT
    ignored, and a child inherits that: Ctrl-C could not reach the follower."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def between_polls(pid: int) -> bool:
    """Whether the process sleeps in `time.sleep` (its poll interval), read from /proc."""
    return Path(f"/proc/{pid}/wchan").read_text() in ("hrtimer_nanosleep", "do_nanosleep")


def wait_for_a_statement(url: str, name: str) -> None:
    """Until a connection of process `name` starts a new statement (or a new one appears)."""
    seen = statements_started(url, name)
    changed = lambda: statements_started(url, name) != seen  # noqa: E731
    wait_until(changed, 20 * FOLLOW_POLL_S, "nothing polled")


def test_audit_follow_prints_events_as_they_arrive(local_platform: LocalPlatform) -> None:
    local = local_platform
    env = {
        **os.environ,
        "TENANT_DATA_DIR": str(local.settings.data_dir),
        "DAGSTER_HOME": str(local.settings.dagster_home),
    }
    follower = subprocess.Popen(
        [TENANTCTL, "audit", "--follow", "--json"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=interruptible,
    )
    try:
        wait_until(lambda: between_polls(follower.pid), 60, "the follower never polled the feed")
        provision(local)  # events that arrive while it follows an empty feed
        assert follower.stdout is not None
        first = json.loads(follower.stdout.readline())
        assert (first["type"], first["tenant"]) == ("tenant.provisioning.started", "acme")
    finally:
        follower.send_signal(signal.SIGINT)
        assert follower.wait(timeout=30) == 0


FOLLOWER = "tenantctl-audit-follow"  # the follower's connections name themselves so


@pytest.mark.postgres
def test_audit_follow_on_postgresql_holds_one_connection(
    tmp_path: Path, pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        **os.environ,
        "TENANT_DATA_DIR": str(tmp_path / "data"),
        "DAGSTER_HOME": str(tmp_path / "data" / "dagster"),
        "DAGSTER_PG_URL": pg_database,
        "PGAPPNAME": FOLLOWER,  # the writer below, in this process, keeps connections too
    }
    monkeypatch.setenv("DAGSTER_PG_URL", pg_database)  # dagster.yaml reads it from there
    settings = Settings.from_env(env)
    instance = open_instance(settings.dagster_home, settings)

    def emit(writer: DagsterInstance, step: str) -> None:
        done = make_event(
            "tenant.provisioning.step_completed", tenant="acme", org="o", run_id="r", step=step
        )
        writer.report_runless_asset_event(to_observation(done))

    try:
        emit(instance, "validate")
        follower = subprocess.Popen(
            [TENANTCTL, "audit", "--follow", "--json", "--tenant", "acme"],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=interruptible,
        )
        try:
            assert follower.stdout is not None
            assert json.loads(follower.stdout.readline())["step"] == "validate"
            held = []
            for _ in range(3):  # after a poll, where a connection per statement would be gone
                wait_for_a_statement(pg_database, FOLLOWER)
                held.append(backend_pids(pg_database, FOLLOWER))
            emit(instance, "allocate")
            assert json.loads(follower.stdout.readline())["step"] == "allocate"
        finally:
            follower.send_signal(signal.SIGINT)
            assert follower.wait(timeout=30) == 0
        assert len(held[0]) == 1 and held == [held[0]] * 3, f"follower's connections: {held}"
    finally:
        instance.dispose()


@pytest.mark.parametrize("flag", ["--edge-port", "--https-port", "--api-port"])
def test_up_refuses_a_taken_port(local_platform: LocalPlatform, flag: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = {"--edge-port": "0", "--https-port": "0", "--api-port": "0", flag: str(port)}
        result = tenantctl(local_platform, "up", *[a for pair in ports.items() for a in pair])
    assert result.returncode == 1
    assert f"port {port} is already in use; choose another with {flag}" in result.stderr

"""`tenantctl` as a user runs it: a real process, real registry and instance, no stack."""

import json
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from dagster import DagsterInstance

from tenant_pipelines.cli.commands import FOLLOW_POLL_S
from tenant_pipelines.domain.events import make_event
from tenant_pipelines.orchestration.feed import to_observation
from tenant_pipelines.orchestration.instance import open_instance
from tenant_pipelines.settings import Settings
from tests.pg_helpers import backend_pids
from tests.platform_fixtures import LocalPlatform
from tests.stack_helpers import REPO, TENANTCTL

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
        ("--role", "intern", "requested_by.role: role 'intern' is unknown"),
    ],
)
def test_malformed_input_exits_2_naming_the_field_and_records_nothing(
    local_platform: LocalPlatform, flag: str, value: str, message: str
) -> None:
    args = list(VALID)
    args[args.index(flag) + 1] = value
    result = tenantctl(local_platform, "request", *args)
    assert result.returncode == 2
    assert result.stderr.startswith("tenantctl: invalid request: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert local_platform.registry.requests_to_launch(10) == []


def test_request_is_idempotent_by_request_id_and_conflicts_are_refused(
    local_platform: LocalPlatform,
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
    assert first["state"] == "pending" and first["run_id"] is None  # no platform running
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
    assert len(local_platform.registry.requests_in_progress()) == 1


def test_status_list_and_audit_of_a_provisioned_tenant(local_platform: LocalPlatform) -> None:
    local = local_platform
    run_id = provision(local)

    status = json.loads(tenantctl(local, "status", "acme", "--json").stdout)
    assert {k: status[k] for k in ("slug", "org", "plan", "state", "url", "last_run_id")} == {
        "slug": "acme",
        "org": "widgets",
        "plan": "team",
        "state": "active",
        "url": "https://acme-widgets.localhost",
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


def interruptible() -> None:
    """In the child before exec: Ctrl-C's signal at its default, as in a terminal. A process
    started in the background by a non-interactive shell (as CI may start the tests) has SIGINT
    ignored, and a child inherits that: Ctrl-C could not reach the follower."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


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
        time.sleep(2)  # following an empty feed
        provision(local)
        assert follower.stdout is not None
        first = json.loads(follower.stdout.readline())
        assert (first["type"], first["tenant"]) == ("tenant.provisioning.started", "acme")
    finally:
        follower.send_signal(signal.SIGINT)
        assert follower.wait(timeout=30) == 0


@pytest.mark.postgres
def test_audit_follow_on_postgresql_holds_one_connection(
    tmp_path: Path, pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        **os.environ,
        "TENANT_DATA_DIR": str(tmp_path / "data"),
        "DAGSTER_HOME": str(tmp_path / "data" / "dagster"),
        "DAGSTER_PG_URL": pg_database,
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
            for _ in range(3):  # between polls, where a connection per statement would be gone
                held.append(backend_pids(pg_database))
                time.sleep(2 * FOLLOW_POLL_S)
            emit(instance, "allocate")
            assert json.loads(follower.stdout.readline())["step"] == "allocate"
        finally:
            follower.send_signal(signal.SIGINT)
            assert follower.wait(timeout=30) == 0
        assert len(held[0]) == 1 and held == [held[0]] * 3, f"follower's connections: {held}"
    finally:
        instance.dispose()


@pytest.mark.parametrize("flag", ["--dagster-port", "--edge-port", "--api-port"])
def test_up_refuses_a_taken_port(local_platform: LocalPlatform, flag: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = {"--dagster-port": "0", "--edge-port": "0", "--api-port": "0", flag: str(port)}
        result = tenantctl(local_platform, "up", *[a for pair in ports.items() for a in pair])
    assert result.returncode == 1
    assert f"port {port} is already in use; choose another with {flag}" in result.stderr

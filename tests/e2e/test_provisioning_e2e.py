"""The whole local stack as a user starts it: request to a tenant serving traffic."""

import json
import urllib.request
import uuid
from pathlib import Path

import pytest
from dagster import RunsFilter

from tests.stack_helpers import local_stack, processes_mentioning

pytestmark = pytest.mark.e2e

PHASES = ["validate", "allocate", "deploy", "mark_active", "send_welcome_emails"]


def edge_get(port: int, host: str, path: str) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_request_to_active_tenant_serving_traffic(tmp_path: Path) -> None:
    with local_stack(tmp_path) as stack:
        stack.start()
        host = "acme-widgets.localhost"
        assert edge_get(stack.edge_port, host, "/healthz")[0] == 404  # unknown host

        submit = [
            "request",
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
            "--request-id",
            str(uuid.uuid4()),
        ]
        first = stack.cli_json(*submit)
        again = stack.cli_json(*submit)  # the same request submitted twice
        request_id = first["request_id"]  # type: ignore[index]
        # launched through the API server at once, which answers before the run exists
        assert first["created"] and first["state"] == "launched"  # type: ignore[index]
        assert again["request_id"] == request_id and not again["created"]  # type: ignore
        status = stack.wait_for_state("acme", {"active", "failed"})
        assert status["state"] == "active", status
        assert status["url"] == "https://acme-widgets.localhost"
        assert status["request_id"] == request_id

        code, body = edge_get(stack.edge_port, host, "/.well-known/openid-configuration")
        assert code == 200
        assert json.loads(body)["issuer"] == "https://acme-widgets.localhost"

        events = [
            json.loads(line)
            for line in stack.cli("audit", "--tenant", "acme", "--json").stdout.splitlines()
        ]
        provisioning = [e for e in events if e["type"].startswith("tenant.provisioning.")]
        steps = [(e["type"].rsplit(".", 1)[1], e["step"]) for e in provisioning]
        assert steps == [
            ("started", "validate"),
            *[("step_completed", phase) for phase in PHASES[:4]],
            ("completed", "mark_active"),
            ("step_completed", "send_welcome_emails"),
        ]
        assert {e["run_id"] for e in provisioning} == {status["last_run_id"]}
        runs = stack.instance().get_runs(RunsFilter(tags={"tenant": "acme"}))
        assert [run.run_id for run in runs] == [status["last_run_id"]]  # exactly one run
        emails_sent = [e for e in events if e["type"] == "tenant.email.sent"]
        assert len(emails_sent) == 3
        assert len(list((stack.data_dir / "outbox").rglob("*.eml"))) == 3

        assert len(processes_mentioning("workload_server", str(stack.data_dir))) == 1
        assert stack.stop() == 0
        assert processes_mentioning(str(stack.data_dir)) == []

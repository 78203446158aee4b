"""The whole local stack as a user starts it: request to a tenant serving traffic."""

import json
import ssl
import subprocess
import uuid
from pathlib import Path

import pytest
from dagster import RunsFilter

from tests.edge_client import http_get
from tests.stack_helpers import local_stack, processes_mentioning

pytestmark = pytest.mark.e2e

PHASES = ["validate", "allocate", "deploy", "mark_active", "send_welcome_emails"]


def test_request_to_active_tenant_serving_traffic(tmp_path: Path) -> None:
    with local_stack(tmp_path) as stack:
        stack.start()
        host = "acme-widgets.localhost"
        assert http_get(stack.edge_port, host, "/healthz").status == 404  # unknown host
        with pytest.raises(ssl.SSLError):  # and no certificate for it
            stack.edge_get(host, "/healthz")

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
        address = f"https://acme-widgets.localhost:{stack.https_port}"
        assert status["url"] == address
        assert status["request_id"] == request_id

        served = stack.edge_get(host, "/.well-known/openid-configuration")
        assert served.status == 200
        assert served.json()["issuer"] == address  # the address that answers, port included
        # The README's curl, as written there (curl sends *.localhost to the loopback).
        ca = stack.data_dir / "edge" / "caddy" / "pki" / "authorities" / "local" / "root.crt"
        curl = subprocess.run(
            ["curl", "-sS", "--cacert", str(ca), f"{address}/.well-known/openid-configuration"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert curl.returncode == 0, curl.stderr
        assert json.loads(curl.stdout)["issuer"] == address
        plain = http_get(stack.edge_port, host, "/.well-known/openid-configuration?x=1")
        assert (plain.status, plain.headers["location"]) == (
            308,
            f"{address}/.well-known/openid-configuration?x=1",
        )

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

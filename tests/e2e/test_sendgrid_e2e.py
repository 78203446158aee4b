"""Welcome emails through SendGrid under `tenantctl up`: the real client against a local v3 API."""

import json
import uuid
from pathlib import Path

import pytest
from dagster import DagsterInstance

from tests.fake_sendgrid import FakeSendGrid, rate_limited
from tests.stack_helpers import Stack, local_stack
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e


def test_three_emails_go_through_sendgrid_once_and_the_key_stays_secret(tmp_path: Path) -> None:
    api_key = f"SG.{uuid.uuid4().hex}"
    with (
        FakeSendGrid(api_key) as sendgrid,
        local_stack(
            tmp_path,
            SENDGRID_API_KEY=api_key,
            SENDGRID_FROM="Onboarding <onboarding@platform.example.com>",
            SENDGRID_API_HOST=sendgrid.url,
        ) as stack,
    ):
        sendgrid.script(rate_limited("1"))  # the first call is throttled, then accepted
        stack.start()
        stack.cli(
            "request",
            "--slug",
            "mailco",
            "--org",
            "acme",
            "--plan",
            "free",
            "--admin-email",
            "first.admin@acme.example.com",
            "--caller",
            "alice",
            "--role",
            "org-admin",
        )
        assert stack.wait_for_state("mailco", {"active", "failed"})["state"] == "active"
        emails = wait_for_emails(stack)
        assert [(e["kind"], e["status"]) for e in emails] == [
            ("welcome", "sent"),
            ("console", "sent"),
            ("onboarding", "sent"),
        ]
        assert all(e["provider_id"] for e in emails)
        delivered = sendgrid.delivered
        assert len(delivered) == 3
        kinds = sorted(r.body["custom_args"]["email_kind"] for r in delivered)
        assert kinds == ["console", "onboarding", "welcome"]
        assert {r.body["personalizations"][0]["to"][0]["email"] for r in delivered} == {
            "first.admin@acme.example.com"
        }
        assert not (stack.data_dir / "outbox").exists()
        assert stack.stop() == 0

    # The key is nowhere the platform writes: Dagster's event log and run storage, the
    # registry, the logs of every process.
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert api_key.encode() not in path.read_bytes(), path
    instance = DagsterInstance.from_config(str(tmp_path / "dagster"))
    runs = instance.get_runs()
    assert runs and all(api_key not in json.dumps(run.run_config) for run in runs)


def wait_for_emails(stack: Stack) -> list[dict]:
    def all_tried() -> list[dict] | None:
        emails = stack.cli_json("emails", "mailco")
        return emails if all(e["status"] != "not_sent" for e in emails) else None  # type: ignore

    return wait_until(all_tried, 60, "the welcome emails were never all tried", 0.5)

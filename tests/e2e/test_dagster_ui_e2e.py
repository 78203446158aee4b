"""The Dagster UI through the platform's door, in a real browser (Playwright driving Debian's
Chromium): a platform-admin logs in to the console, opens a compensated run in the UI under the
API server's origin, and "Re-execute from failure" brings the tenant to active; the new run is
the session's subject's. The UI's live run view (a websocket through the door) follows it."""

import re

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.e2e.test_console_e2e import WAIT_MS
from tests.stack_fixtures import StackOptions
from tests.stack_helpers import Stack, write_fault_plan
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

SLUG = "ui-retry"


@pytest.fixture(scope="module")
def stack_options() -> StackOptions:
    return StackOptions(faults=True)


def compensated_failure(stack: Stack) -> str:
    """A tenant failed at deploy and compensated; its failed run's id."""
    assert stack.fault_plan is not None
    write_fault_plan(stack.fault_plan, [{"phase": "deploy", "tenant": SLUG, "mode": "permanent"}])
    body = {"slug": SLUG, "org": "widgets", "plan": "team", "admin_email": "a@ui.example.com"}
    assert stack.api("POST", "/v1/tenants", stack.admin_token(), body).status_code == 202
    failed = stack.wait_for_state(SLUG, {"failed"})
    finished = ("audit", "--tenant", SLUG, "--type", "*.compensation_finished")
    wait_until(lambda: stack.cli_json_lines(*finished), 90, "not compensated", 0.5)
    write_fault_plan(stack.fault_plan, [])
    return str(failed["last_run_id"])


def log_in_through_the_door(page: Page, stack: Stack, path: str, token: str) -> None:
    """Opening a UI page without a session leads to the console's login, then back."""
    page.goto(f"{stack.api_base}{path}")
    expect(page).to_have_url(re.compile(r"/console/login\?next="))
    page.fill("#token", token)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{stack.api_base}{path}")


def test_re_execute_from_failure_in_the_ui_brings_the_tenant_to_active(
    stack: Stack, browser: Browser
) -> None:
    failed_run = compensated_failure(stack)
    token = stack.token("platform-admin", subject="uma")
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    log_in_through_the_door(page, stack, f"/dagster/runs/{failed_run}", token)
    skip = page.get_by_role("button", name="Skip")  # Dagster's first-visit community dialog
    skip.click(timeout=WAIT_MS)
    expect(page.get_by_text("Failure").first).to_be_visible(timeout=WAIT_MS)
    reexecute_all = page.get_by_role("button", name=re.compile("Re-execute all"))
    page.locator("button:right-of(:text('Re-execute all'))").first.click()
    page.get_by_role("menuitem", name="From failure").click()
    # The UI moves to the new run's page and follows it live through the door's websocket.
    expect(page).not_to_have_url(re.compile(f"/runs/{failed_run}$"), timeout=WAIT_MS)
    new_run = page.url.rsplit("/runs/", 1)[1].split("?")[0]
    expect(page.get_by_text("Success").first).to_be_visible(timeout=WAIT_MS)
    expect(reexecute_all).to_be_visible()
    assert stack.wait_for_state(SLUG, {"active"})["state"] == "active"
    instance = stack.instance()
    try:
        run = instance.get_run_by_id(new_run)
        assert run is not None and run.parent_run_id == failed_run
        assert run.tags["requested_by"] == "uma"  # the session's subject, not the parent's tag
    finally:
        instance.dispose()
    context.close()

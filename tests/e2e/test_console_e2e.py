"""The tenant console in a real browser (Playwright driving Debian's Chromium) against the whole
stack: log in, submit, watch the timeline fill in live, open the admin console, fail and retry,
decommission, and what another org or a viewer is shown. The words checked are the contract
(docs/contracts.md). Every test fails on a Content-Security-Policy violation in any page it
opened (an inline script or style added later). Set TENANT_CONSOLE_SCREENSHOTS=DIR to keep the
screenshots."""

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Request,
    expect,
)

from tests.stack_fixtures import StackOptions
from tests.stack_helpers import Stack, write_fault_plan

pytestmark = pytest.mark.e2e

ORG = "widgets"
WAIT_MS = 90_000
# Chromium logs each violation to the console; the event also names the directive.
CSP_REPORTER = """document.addEventListener("securitypolicyviolation", (event) =>
  console.error(`CSP violation on ${document.location.href}: ${event.violatedDirective}`));"""
csp_violations: list[str] = []


def new_context(browser: Browser, **options: object) -> BrowserContext:
    """A browser context whose pages report every Content-Security-Policy violation."""
    context = browser.new_context(**options)  # type: ignore[arg-type]
    context.add_init_script(CSP_REPORTER)
    context.on("console", _note_violation)
    return context


def _note_violation(message: ConsoleMessage) -> None:
    if message.type == "error" and (
        "Content Security Policy" in message.text or message.text.startswith("CSP violation")
    ):
        csp_violations.append(f"{message.location.get('url')}: {message.text}")


@pytest.fixture(autouse=True)
def no_csp_violation() -> Iterator[None]:
    csp_violations.clear()
    yield
    assert not csp_violations, "\n".join(csp_violations)


@pytest.fixture(scope="module")
def stack_options() -> StackOptions:
    return StackOptions(faults=True)


@pytest.fixture(scope="module")
def tokens(stack: Stack) -> dict[str, str]:
    return {
        "org-admin": stack.token("org-admin", ORG, subject="carol"),
        "viewer": stack.token("viewer", ORG, subject="vic"),
        "other-org-admin": stack.token("org-admin", "gadgets", subject="mallory"),
    }


def logged_in(browser: Browser, stack: Stack, token: str, **options: object) -> BrowserContext:
    context = new_context(browser, **options)
    page = context.new_page()
    page.goto(f"{stack.api_base}/console/tenants")
    expect(page).to_have_url(re.compile(r"/console/login$"))  # no session yet
    page.fill("#token", token)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/console/tenants$"))
    page.close()
    return context


def submit(page: Page, stack: Stack, slug: str) -> None:
    page.goto(f"{stack.api_base}/console/tenants/new")
    page.fill("#slug", slug)
    page.fill("#admin_email", f"admin@{slug}.example.com")
    page.select_option("#plan", "team")
    page.get_by_role("button", name="Submit").click()
    expect(page).to_have_url(re.compile(f"/console/tenants/{slug}$"))


def timeline(page: Page) -> list[str]:
    return [text.split(" ", 1)[1] for text in page.locator("#timeline li").all_inner_texts()]


def shot(page: Page, name: str, tmp_path: Path) -> None:
    target = Path(os.environ.get("TENANT_CONSOLE_SCREENSHOTS") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=target / f"{name}.png", full_page=True)


def test_log_in_submit_and_watch_the_timeline_fill_in_until_active(
    stack: Stack, browser: Browser, tokens: dict[str, str], tmp_path: Path
) -> None:
    assert stack.fault_plan is not None
    # Deploy waits until this test lets it go, so the page is seen while provisioning.
    write_fault_plan(stack.fault_plan, [{"phase": "deploy", "tenant": "acme", "mode": "hang"}])
    context = logged_in(browser, stack, tokens["org-admin"])
    cookie = next(c for c in context.cookies() if c["name"] == "tp_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    page = context.new_page()

    page.goto(f"{stack.api_base}/console/tenants/new")
    expect(page.locator("#org")).to_have_value(ORG)
    page.fill("#slug", "Ab")
    page.fill("#admin_email", "not an email")
    page.get_by_role("button", name="Submit").click()
    expect(page.locator("#slug-error")).to_contain_text("3 to 30 characters")
    expect(page.locator("#admin_email-error")).to_contain_text("email")
    submit(page, stack, "acme")

    expect(page.locator("#state-badge")).to_have_text("Provisioning")
    expect(page.locator("#polling")).to_have_text("Polling...")
    expect(page.locator("#timeline li").nth(2)).to_contain_text(
        "Allocate resources completed", timeout=WAIT_MS
    )
    provisioning = timeline(page)
    assert provisioning == [
        "Provisioning started (plan team)",
        "Validate request completed",
        "Allocate resources completed",
    ]
    expect(page.locator("#state-badge")).to_have_text("Provisioning")
    shot(page, "provisioning", tmp_path)

    write_fault_plan(stack.fault_plan, [])  # deploy carries on
    expect(page.locator("#state-badge")).to_have_text("Active", timeout=WAIT_MS)
    expect(page.locator("#polling")).to_have_count(0, timeout=WAIT_MS)
    final = timeline(page)
    assert final == [
        *provisioning,
        "Deploy workloads completed",
        "Mark tenant active completed",
        "Tenant activated",
    ]
    times = page.locator("#timeline time").evaluate_all("els => els.map(e => e.dateTime)")
    assert times == sorted(times) and len(times) == len(final)
    hrefs = page.locator("#timeline a").evaluate_all("els => els.map(e => e.href)")
    assert len(hrefs) == len(final)
    assert all(h.startswith(f"{stack.api_base}/dagster/runs/") for h in hrefs)
    shot(page, "active", tmp_path)

    link = page.get_by_role("link", name="Open Admin Console")
    address = f"https://acme-widgets.localhost:{stack.https_port}/admin"
    assert link.get_attribute("href") == address  # the address that answers, over HTTPS
    with context.expect_page() as opened:
        link.click()
    admin = opened.value
    # The tenant's console asks for its admin (tests/e2e/test_tenant_admin_e2e.py signs in).
    expect(admin).to_have_url(re.compile(r"acme-widgets\.localhost:\d+/admin/sign-in$"))
    expect(admin.locator("h1")).to_have_text(
        "Sign in to the admin console of acme-widgets", timeout=WAIT_MS
    )
    context.close()


def test_a_failing_tenant_names_its_step_and_retry_brings_it_to_active(
    stack: Stack, browser: Browser, tokens: dict[str, str], tmp_path: Path
) -> None:
    assert stack.fault_plan is not None
    write_fault_plan(
        stack.fault_plan, [{"phase": "deploy", "tenant": "broken", "mode": "permanent"}]
    )
    context = logged_in(browser, stack, tokens["org-admin"])
    page = context.new_page()
    submit(page, stack, "broken")

    expect(page.locator("#state-badge")).to_have_text("Failed", timeout=WAIT_MS)
    expect(page.locator("#failed-step")).to_have_text("Deploy workloads")
    expect(page.locator("#polling")).to_have_count(0, timeout=WAIT_MS)  # compensation done
    assert "Deploy workloads failed: PermanentInjectedFault" in " ".join(timeline(page))
    assert any(line.startswith("Compensation released") for line in timeline(page))
    expect(page.locator("#retry")).to_be_visible()
    expect(page.locator("#decommission")).to_be_visible()
    shot(page, "failed", tmp_path)

    write_fault_plan(stack.fault_plan, [])
    page.click("#retry")
    expect(page.locator(".flash")).to_contain_text("Retry launched")
    expect(page.locator("#state-badge")).to_have_text("Active", timeout=WAIT_MS)
    expect(page.locator("#timeline li").last).to_contain_text("Tenant activated", timeout=WAIT_MS)
    assert "Retry started from Deploy workloads" in " ".join(timeline(page))
    expect(page.locator("#retry")).to_have_count(0)
    context.close()


def test_decommission_asks_first_then_frees_the_slug(
    stack: Stack, browser: Browser, tokens: dict[str, str]
) -> None:
    context = logged_in(browser, stack, tokens["org-admin"])
    page = context.new_page()
    page.goto(f"{stack.api_base}/console/tenants/broken")
    expect(page.locator("#state-badge")).to_have_text("Active", timeout=WAIT_MS)

    # A "no" does nothing: the page's submit handler cancels the form while the dialog is
    # answered, so once the page has run its script after the click, no request left it.
    posted: list[str] = []

    def note(request: Request) -> None:
        if request.method == "POST":
            posted.append(request.url)

    page.on("request", note)
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click("#decommission")
    page.evaluate("() => new Promise((done) => setTimeout(done, 0))")
    page.remove_listener("request", note)
    assert posted == []
    expect(page.locator("#state-badge")).to_have_text("Active")

    asked: list[str] = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    page.click("#decommission")
    expect(page.locator(".flash")).to_contain_text("Decommission launched")
    assert "frees" in asked[0] or "freed" in asked[0]
    expect(page.locator("#state-badge")).to_have_text("Decommissioned", timeout=WAIT_MS)

    submit(page, stack, "broken")  # the slug is free again
    expect(page.locator("#state-badge")).to_have_text(
        re.compile("Provisioning|Active"), timeout=WAIT_MS
    )
    context.close()


def test_another_orgs_admin_sees_neither_the_tenant_nor_its_buttons(
    stack: Stack, browser: Browser, tokens: dict[str, str]
) -> None:
    context = logged_in(browser, stack, tokens["other-org-admin"])
    page = context.new_page()
    page.goto(f"{stack.api_base}/console/tenants")
    expect(page.locator("h1")).to_have_text("Tenants")
    assert page.locator("tr[data-slug=acme]").count() == 0

    answer = page.goto(f"{stack.api_base}/console/tenants/acme")
    assert answer is not None and answer.status == 404
    expect(page.locator("#state-badge")).to_have_count(0)
    expect(page.locator("#retry, #decommission")).to_have_count(0)
    refused = context.request.post(
        f"{stack.api_base}/console/tenants/acme/decommission", form={"csrf_token": "x"}
    )
    assert refused.status == 403  # and without the session's CSRF token, nothing happens
    context.close()


def test_a_viewer_reads_but_gets_no_buttons(
    stack: Stack, browser: Browser, tokens: dict[str, str]
) -> None:
    context = logged_in(browser, stack, tokens["viewer"])
    page = context.new_page()
    page.goto(f"{stack.api_base}/console/tenants/acme")
    expect(page.locator("#state-badge")).to_have_text("Active")
    expect(page.locator("#retry, #decommission")).to_have_count(0)
    expect(page.get_by_role("link", name="New tenant")).to_have_count(0)
    context.close()


def test_choosing_a_state_filters_the_list_at_once(
    stack: Stack, browser: Browser, tokens: dict[str, str]
) -> None:
    context = logged_in(browser, stack, tokens["org-admin"])
    page = context.new_page()
    page.goto(f"{stack.api_base}/console/tenants")
    page.select_option("#state", "active")  # the script submits the filter; no button press
    expect(page).to_have_url(re.compile(r"/console/tenants\?state=active$"))
    states = page.locator("table.tenants td[data-label=State]").all_inner_texts()
    assert states and all(state == "Active" for state in states)
    context.close()


def test_the_audit_feed_filters_by_type_glob(
    stack: Stack, browser: Browser, tokens: dict[str, str]
) -> None:
    context = logged_in(browser, stack, tokens["org-admin"])
    page = context.new_page()
    page.goto(f"{stack.api_base}/console/events")
    page.fill("#type", "tenant.provisioning.*")
    page.get_by_role("button", name="Filter").click()
    types = page.locator("table.events td[data-label=Type]").all_inner_texts()
    assert types and all(t.startswith("tenant.provisioning.") for t in types)
    assert "tenant.provisioning.completed" in types
    page.fill("#type", "tenant.email.*")
    page.get_by_role("button", name="Filter").click()
    types = page.locator("table.events td[data-label=Type]").all_inner_texts()
    assert types and all(t.startswith("tenant.email.") for t in types)
    context.close()


def test_a_bad_token_is_refused_at_login(stack: Stack, browser: Browser) -> None:
    context = new_context(browser)
    page = context.new_page()
    page.goto(f"{stack.api_base}/console/login")
    page.fill("#token", "tp_0000_not-a-token")
    with page.expect_response(lambda r: r.url.endswith("/console/login")) as answered:
        page.get_by_role("button", name="Log in").click()
    assert answered.value.status == 401
    expect(page.locator("#token-error")).to_contain_text("unknown, expired or revoked")
    context.close()


@pytest.mark.parametrize("path", ["/console/tenants", "/console/tenants/acme", "/console/events"])
def test_pages_fit_a_phone_screen(
    stack: Stack, browser: Browser, tokens: dict[str, str], path: str
) -> None:
    context = logged_in(browser, stack, tokens["org-admin"], viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.goto(stack.api_base + path)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{path} scrolls sideways by {overflow}px on a 390px screen"
    context.close()

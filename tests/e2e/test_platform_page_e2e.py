"""The console's platform page in a real browser (Playwright driving Debian's Chromium) against the
whole stack: tenants provisioned through the API (three to active, one failed at deploy by the
fault plan, one held at deploy past its plan's budget), then a platform-admin reads their counts,
the last hour's submit-to-active and failures, and the stuck list, in SVG charts and in text; an
org-admin and a viewer are refused, and a browser without a session is sent to log in.

The screenshot is kept outside the repository (the test's tmp_path) and copied to
SCREENSHOT_COPY."""

import re
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import update

from tenant_pipelines.api.charts import BAR_AREA, seconds_text
from tenant_pipelines.registry.schema import tenants
from tenant_pipelines.registry.store import TenantRegistry
from tenant_pipelines.settings import Settings
from tenant_pipelines.support.percentiles import nearest_rank
from tests.e2e.test_console_e2e import WAIT_MS, csp_violations, logged_in, new_context
from tests.stack_fixtures import StackOptions
from tests.stack_helpers import Stack, write_fault_plan

pytestmark = pytest.mark.e2e

ORG = "widgets"
ACTIVE = {"plat-team-a": "team", "plat-team-b": "team", "plat-free": "free"}
BROKEN = "plat-broken"  # fails at deploy (the fault plan), team
SLOW = "plat-slow"  # enterprise (budget 900 s): held at deploy, its creation back-dated
SCREENSHOT_COPY = Path("/tmp/tenant-pipelines-platform.png")
BROKEN_RULE: dict[str, object] = {"phase": "deploy", "tenant": BROKEN, "mode": "permanent"}
# Each of the slow tenant's first four deploy attempts hangs until its timeout (30 s + margin):
# time enough to read the page, and it reaches active by itself if the test stops midway.
SLOW_RULE: dict[str, object] = {"phase": "deploy", "tenant": SLOW, "mode": "hang", "times": 4}


@pytest.fixture(autouse=True)
def no_csp_violation() -> Iterator[None]:
    """As in the console's tests: no page opened may break the Content-Security-Policy."""
    csp_violations.clear()
    yield
    assert not csp_violations, "\n".join(csp_violations)


@pytest.fixture(scope="module")
def stack_options() -> StackOptions:
    return StackOptions(faults=True)


@pytest.fixture(scope="module")
def stack_registry(stack: Stack) -> Iterator[TenantRegistry]:
    """The stack's own registry, to read what the page should say and to back-date."""
    opened = TenantRegistry.open(Settings.from_env(stack.env).db_url)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def provisioned(stack: Stack, stack_registry: TenantRegistry) -> Iterator[None]:
    """Three tenants active, one failed at deploy, and SLOW provisioning for longer than its
    plan's budget (its creation moved back 1000 s) while the module's tests run."""
    assert stack.fault_plan is not None
    write_fault_plan(stack.fault_plan, [BROKEN_RULE, SLOW_RULE])
    admin = stack.admin_token()
    for slug, plan in [*ACTIVE.items(), (BROKEN, "team")]:
        submitted = stack.api("POST", "/v1/tenants", admin, body(slug, plan))
        assert submitted.status_code == 202, submitted.text
    for slug in ACTIVE:
        assert stack.wait_for_state(slug, {"active", "failed"}, 180)["state"] == "active"
    assert stack.wait_for_state(BROKEN, {"active", "failed"}, 180)["state"] == "failed"

    submitted = stack.api("POST", "/v1/tenants", admin, body(SLOW, "enterprise"))
    assert submitted.status_code == 202, submitted.text
    stack.wait_for_state(SLOW, {"provisioning"}, 120)  # reserved: the tenant's row exists
    created = stack_registry.tenants.get(SLOW).created_at
    with stack_registry.db.write() as conn:  # as if it had been submitted 1000 s ago
        mine = tenants.c.slug == SLOW
        conn.execute(
            update(tenants).where(mine).values(created_at=created - timedelta(seconds=1000))
        )
    yield
    write_fault_plan(stack.fault_plan, [])  # SLOW's deploy carries on
    assert stack.wait_for_state(SLOW, {"active", "failed"}, 180)["state"] == "active"


def body(slug: str, plan: str) -> dict[str, str]:
    return {"slug": slug, "org": ORG, "plan": plan, "admin_email": f"admin@{slug}.example.com"}


def expected_latencies(registry: TenantRegistry) -> dict[str, tuple[int, str, str]]:
    """(activations, p50, p95) by plan, from the tenants' and requests' own records."""
    seconds: dict[str, list[float]] = {}
    for tenant in registry.tenants.all("active"):
        submitted = registry.requests.get(tenant.request_id).created_at
        seconds.setdefault(tenant.plan, []).append((tenant.updated_at - submitted).total_seconds())
    return {
        plan: (len(values), percentile_text(values, 50), percentile_text(values, 95))
        for plan, values in seconds.items()
    }


def percentile_text(values: list[float], percent: float) -> str:
    return seconds_text(nearest_rank(values, percent))


def open_platform(browser: Browser, stack: Stack, token: str, **options: object) -> Page:
    context = logged_in(browser, stack, token, **options)
    page = context.new_page()
    page.goto(f"{stack.api_base}/console/tenants")
    page.get_by_role("link", name="Platform").click()
    expect(page).to_have_url(f"{stack.api_base}/console/platform")
    return page


def value_of(page: Page, chart: str, label: str) -> str:
    return page.locator(f'#{chart} g[data-label="{label}"] text.value').text_content() or ""


def test_a_platform_admin_reads_the_real_counts_in_charts_and_text(
    stack: Stack,
    browser: Browser,
    stack_registry: TenantRegistry,
    provisioned: None,
    tmp_path: Path,
) -> None:
    page = open_platform(browser, stack, stack.token("platform-admin", subject="ada"))
    expect(page.locator("h1")).to_have_text("Platform")

    # Tenants by state: an accessible SVG chart whose bars scale to the largest count (active).
    states = page.get_by_role("img", name="Tenants by state")
    expect(states).to_be_visible()
    expect(page.locator("#chart-states > title")).to_have_text("Tenants by state")
    counts = {"provisioning": 1, "active": 3, "failed": 1, "decommissioning": 0}
    counts["decommissioned"] = 0
    for state, count in counts.items():
        assert value_of(page, "chart-states", state) == str(count), state
        cell = page.locator(f'#states-numbers tr[data-state="{state}"] td[data-label="Tenants"]')
        expect(cell).to_have_text(str(count))
    active_bar = page.locator("#chart-states rect.bar-active")
    assert float(active_bar.get_attribute("width") or 0) == BAR_AREA
    assert float(page.locator("#chart-states rect.bar-failed").get_attribute("width") or 0) == 70
    drawn = active_bar.bounding_box()
    assert drawn is not None and drawn["width"] > 100  # drawn by the browser, not only written
    assert "active: 3" in (page.locator("#chart-states desc").text_content() or "")

    # Submit to active in the last hour: the registry's own records give the same numbers.
    expect(page.get_by_role("img", name=re.compile("^Submit to active"))).to_be_visible()
    expected = expected_latencies(stack_registry)
    assert {plan: count for plan, (count, _, _) in expected.items()} == {"team": 2, "free": 1}
    for plan, (count, p50, p95) in expected.items():
        row = page.locator(f'#latency-numbers tr[data-plan="{plan}"]')
        expect(row.locator('td[data-label="Activations"]')).to_have_text(str(count))
        expect(row.locator('td[data-label="p50"]')).to_have_text(p50)
        expect(row.locator('td[data-label="p95"]')).to_have_text(p95)
        assert value_of(page, "chart-latency", f"{plan} p50") == p50
        assert value_of(page, "chart-latency", f"{plan} p95") == p95
    expect(page.locator('#latency-numbers tr[data-plan="enterprise"]')).to_contain_text(
        "no activations"
    )
    assert value_of(page, "chart-latency", "enterprise") == "no activations"
    expect(page.locator('#chart-latency g[data-label="enterprise"] rect')).to_have_count(0)

    # Failures by phase in the last hour: the fault plan's one, at deploy.
    expect(page.get_by_role("img", name="Failures by phase in the last hour")).to_be_visible()
    assert value_of(page, "chart-failures", "Deploy workloads") == "1"
    failed = page.locator('#failures-numbers tr[data-step="deploy"] td[data-label="Failed"]')
    expect(failed).to_have_text("1")

    # Stuck: the enterprise tenant held at deploy past its 900 s budget, linked to its page.
    stuck = page.locator(f'#stuck tr[data-slug="{SLOW}"]')
    expect(stuck).to_have_count(1)
    expect(page.locator("#stuck tbody tr")).to_have_count(1)
    expect(stuck.locator('td[data-label="State"]')).to_have_text("provisioning")
    expect(stuck.locator('td[data-label="Plan"]')).to_have_text("enterprise")
    expect(stuck.locator('td[data-label="Org"]')).to_have_text(ORG)
    expect(stuck.locator('td[data-label="Budget"]')).to_have_text("15 min 00 s")
    expect(stuck.locator('td[data-label="For"]')).to_have_text(re.compile(r"^1[67] min \d\d s$"))

    shot = tmp_path / "platform.png"
    page.screenshot(path=shot, full_page=True)
    shutil.copyfile(shot, SCREENSHOT_COPY)
    print(f"\nplatform page screenshot: {shot} (copied to {SCREENSHOT_COPY})")

    stuck.get_by_role("link", name=SLOW).click()
    expect(page).to_have_url(f"{stack.api_base}/console/tenants/{SLOW}")
    expect(page.locator("#state-badge")).to_have_text("Provisioning", timeout=WAIT_MS)
    page.context.close()


@pytest.mark.parametrize("role", ["org-admin", "viewer"])
def test_anyone_but_a_platform_admin_is_refused_with_403(
    stack: Stack, browser: Browser, role: str
) -> None:
    context = logged_in(browser, stack, stack.token(role, ORG, subject=f"{role}-p"))
    page = context.new_page()
    page.goto(f"{stack.api_base}/console/tenants")
    expect(page.get_by_role("link", name="Audit feed")).to_be_visible()
    expect(page.get_by_role("link", name="Platform")).to_have_count(0)  # not in their menu
    answer = page.goto(f"{stack.api_base}/console/platform")
    assert answer is not None and answer.status == 403
    expect(page.locator(".error")).to_have_text(
        f"role {role} may not open the platform page (it shows every org)"
    )
    expect(page.locator("svg.chart")).to_have_count(0)
    expect(page.get_by_text(SLOW)).to_have_count(0)
    context.close()


def test_a_browser_without_a_session_is_sent_to_log_in(stack: Stack, browser: Browser) -> None:
    context = new_context(browser)
    page = context.new_page()
    page.goto(f"{stack.api_base}/console/platform")
    expect(page).to_have_url(re.compile(r"/console/login$"))
    context.close()


def test_the_platform_page_fits_a_phone_screen(
    stack: Stack, browser: Browser, provisioned: None
) -> None:
    token = stack.token("platform-admin", subject="ada-phone")
    page = open_platform(browser, stack, token, viewport={"width": 390, "height": 844})
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the platform page scrolls sideways by {overflow}px on a 390px screen"
    page.context.close()

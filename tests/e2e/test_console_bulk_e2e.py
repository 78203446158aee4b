"""The console's search and bulk actions in a real browser (Playwright driving Debian's Chromium)
against the whole stack: the tenant list filtered by slug prefix, state and creation time; a
bulk retry of every failed tenant and a bulk decommission of two checked ones, each confirmed by
typing its count (a wrong number does nothing), then followed on the batch's page until each
tenant's outcome is in; a selection that changed since it was confirmed is not acted on; a viewer
gets no bulk controls, and its forged form is refused. As in the console's other tests, any
Content-Security-Policy violation fails the test.

The tests share one population (made once) and run in file order: the search sees the failed
tenants before the bulk retry makes them active.
"""

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import APIResponse, Browser, BrowserContext, Page, expect

from tests.e2e.test_batches_e2e import deploy_fails, failed_and_compensated, submit
from tests.e2e.test_console_e2e import WAIT_MS, csp_violations, logged_in, shot
from tests.stack_fixtures import StackOptions
from tests.stack_helpers import Stack

pytestmark = pytest.mark.e2e

ORG, OTHER = "bulky", "faraway"
FAILING = ["retry-1", "retry-2", "retry-3"]  # fail at deploy, then the fault is cleared
ELSEWHERE = "retry-far"  # fails too, in another org: never among the org-admin's
GOING = ["gone-1", "gone-2"]  # active, then decommissioned with two checkboxes
KEPT = "keep-1"  # active, and left alone by every batch


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
def tokens(stack: Stack) -> dict[str, str]:
    return {
        "org-admin": stack.token("org-admin", ORG, subject="olga"),
        "viewer": stack.token("viewer", ORG, subject="vera"),
        "platform-admin": stack.admin_token(),
    }


@pytest.fixture(scope="module")
def population(stack: Stack, tokens: dict[str, str]) -> None:
    """Three of the org's tenants and one of another org's failed at deploy (compensated), three
    active, and the fault cleared: the outage is over and the failed ones can be retried."""
    admin, org_admin = tokens["platform-admin"], tokens["org-admin"]
    deploy_fails(stack, "retry-*")
    for slug in [*FAILING, *GOING, KEPT]:
        submit(stack, org_admin, slug, ORG)
    submit(stack, admin, ELSEWHERE, OTHER)
    for slug in [*GOING, KEPT]:
        stack.wait_for_state(slug, {"active"}, 180)
    failed_and_compensated(stack, admin, [*FAILING, ELSEWHERE])
    deploy_fails(stack, None)


def listed(page: Page) -> list[str]:
    return page.locator("table.tenants tbody tr").evaluate_all(
        "rows => rows.map(row => row.dataset.slug)"
    )


def expect_listed(page: Page, slugs: list[str]) -> None:
    """The list shows exactly `slugs` (once the page that shows them has loaded)."""
    expect(page.locator("table.tenants tbody tr")).to_have_count(len(slugs))
    assert sorted(listed(page)) == sorted(slugs)


def batch_feed(stack: Stack, token: str) -> list[dict]:
    """The org's `tenant.batch.acted` events: one per tenant a batch acted on."""
    answer = stack.api("GET", "/v1/events?type=tenant.batch.*", token)
    assert answer.status_code == 200, answer.text
    return list(answer.json())


def fits_a_phone(page: Page) -> None:
    """The page, as it is, scrolls no wider than a 390 px screen."""
    size = page.viewport_size
    page.set_viewport_size({"width": 390, "height": 844})
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{page.url} scrolls sideways by {overflow}px on a 390px screen"
    if size is not None:
        page.set_viewport_size(size)


def go_ahead(page: Page, typed: str) -> None:
    page.fill("#count", typed)
    page.click("#go-ahead")


def states(stack: Stack, token: str, slugs: list[str]) -> dict[str, str]:
    return {slug: stack.api("GET", f"/v1/tenants/{slug}", token).json()["state"] for slug in slugs}


@pytest.mark.usefixtures("population")
def test_the_search_form_filters_by_slug_prefix_state_and_creation_time(
    stack: Stack, browser: Browser, tokens: dict[str, str]
) -> None:
    context = logged_in(browser, stack, tokens["org-admin"])
    page = context.new_page()
    page.goto(f"{stack.api_base}/console/tenants")
    expect_listed(page, [*FAILING, *GOING, KEPT])  # not another org's
    expect(page.locator("label[for=created_after]")).to_have_text("Created after (UTC)")

    page.fill("#slug_prefix", "gone-")
    page.click("#filter")  # the empty fields stay out of the address
    expect(page).to_have_url(re.compile(r"/console/tenants\?slug_prefix=gone-$"))
    expect_listed(page, GOING)

    page.fill("#slug_prefix", "retry-")
    page.select_option("#state", "failed")  # submits the whole form at once
    expect(page).to_have_url(re.compile(r"\?state=failed&slug_prefix=retry-$"))
    expect_listed(page, FAILING)
    expect(page.locator("#scope-matching")).to_be_visible()

    page.select_option("#state", "active")
    expect(page).to_have_url(re.compile(r"\?state=active&slug_prefix=retry-$"))
    expect(page.locator(".empty")).to_have_text("No tenants match this filter.")

    page.goto(f"{stack.api_base}/console/tenants?slug_prefix=gone-&created_after=2999-01-01T00:00")
    expect(page.locator(".empty")).to_have_text("No tenants match this filter.")
    expect(page.locator("#created_after")).to_have_value("2999-01-01T00:00")
    page.fill("#created_after", "2000-01-01T00:00")
    page.click("#filter")
    expect(page).to_have_url(re.compile(r"\?slug_prefix=gone-&created_after=2000-01-01T00%3A00$"))
    expect_listed(page, GOING)

    answer = page.goto(f"{stack.api_base}/console/tenants?created_after=yesterday")
    assert answer is not None and answer.status == 422  # said, not a 500
    expect(page.locator("#filter-error")).to_contain_text("'yesterday' is not a date and time")
    expect(page.locator("table.tenants")).to_have_count(0)
    answer = page.goto(f"{stack.api_base}/console/tenants?slug_prefix=Retry")
    assert answer is not None and answer.status == 422
    expect(page.locator("#filter-error")).to_have_text(
        "Slug prefix: lowercase letters, digits and '-' only"
    )
    context.close()


@pytest.mark.usefixtures("population")
def test_retry_all_matching_asks_for_the_count_and_only_the_exact_count_goes_ahead(
    stack: Stack, browser: Browser, tokens: dict[str, str], tmp_path: Path
) -> None:
    org_admin = tokens["org-admin"]
    context = logged_in(browser, stack, org_admin)
    page = context.new_page()
    page.goto(f"{stack.api_base}/console/tenants")
    page.select_option("#state", "failed")
    expect(page).to_have_url(re.compile(r"/console/tenants\?state=failed$"))
    expect_listed(page, FAILING)
    page.get_by_label("all 3 matching").check()
    shot(page, "bulk-list", tmp_path)
    page.click("#bulk-retry")

    expect(page.locator("#batch-summary")).to_have_text("Retry all 3 tenants matching state=failed")
    assert sorted(page.locator("#batch-slugs li").all_inner_texts()) == FAILING
    go_ahead(page, "4")
    expect(page.locator("#confirm-error")).to_have_text(
        "Not confirmed: you typed '4', not 3. Nothing was done."
    )
    shot(page, "bulk-not-confirmed", tmp_path)
    go_ahead(page, "")
    expect(page.locator("#confirm-error")).to_have_text(
        "Not confirmed: type 3 to go ahead. Nothing was done."
    )
    assert batch_feed(stack, org_admin) == []
    assert states(stack, org_admin, FAILING) == dict.fromkeys(FAILING, "failed")

    fetched: list[str] = []
    page.on("request", lambda request: fetched.append(request.url))
    go_ahead(page, "3")  # the batch acts after the answer: its page usually opens on "pending"
    expect(page).to_have_url(re.compile(r"/console/batches/[0-9a-f]{32}$"))
    first = page.locator("#batch-tally").inner_text()
    batch_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("h1")).to_contain_text("Retry 3 tenants")
    expect(page.locator("#batch-selection")).to_have_text("the tenants matching state=failed")
    expect(page.locator("#batch-tally")).to_have_text("3 done (finished)", timeout=WAIT_MS)
    expect(page.locator("#polling")).to_have_count(0)
    shot(page, "bulk-batch", tmp_path)
    if "finished" not in first:  # then the page's script followed it, without a reload
        assert any(url.endswith(f"/console/batches/{batch_id}/live") for url in fetched)
        assert fetched.count(f"{stack.api_base}/console/batches/{batch_id}") == 1
    rows = page.locator("table.batch tbody tr")
    assert sorted(rows.evaluate_all("rows => rows.map(row => row.dataset.slug)")) == FAILING
    assert rows.locator("td[data-label=Outcome]").all_inner_texts() == ["done"] * 3
    runs = rows.locator("td[data-label=Run] a").evaluate_all("links => links.map(a => a.href)")
    assert len(runs) == 3 and all("/dagster/runs/" in run for run in runs)

    for slug in FAILING:
        stack.wait_for_state(slug, {"active"}, 180)
    page.goto(f"{stack.api_base}/console/tenants?state=active&slug_prefix=retry-")
    expect_listed(page, FAILING)
    assert states(stack, tokens["platform-admin"], [ELSEWHERE]) == {ELSEWHERE: "failed"}

    # The same batch through the API, for its starter; counted as the console's.
    batch = stack.api("GET", f"/v1/batches/{batch_id}", org_admin).json()
    given = {name: value for name, value in batch["selection"]["filter"].items() if value}
    assert (given, batch["selection"]["slugs"]) == ({"state": "failed"}, None)
    assert batch["requested_by"] == "olga"
    scraped = stack.api("GET", "/metrics", tokens["platform-admin"]).text
    assert 'tenant_retries_total{started_by="console"} 3.0' in scraped
    context.close()

    # Someone else (here a viewer of the same org) is told there is no such batch.
    viewer = logged_in(browser, stack, tokens["viewer"])
    page = viewer.new_page()
    answer = page.goto(f"{stack.api_base}/console/batches/{batch_id}")
    assert answer is not None and answer.status == 404
    expect(page.locator(".error")).to_have_text(f"no batch '{batch_id}'")
    viewer.close()


@pytest.mark.usefixtures("population")
def test_decommission_two_checked_tenants_after_typing_two(
    stack: Stack, browser: Browser, tokens: dict[str, str]
) -> None:
    org_admin = tokens["org-admin"]
    context = logged_in(browser, stack, org_admin)
    page = context.new_page()
    page.goto(f"{stack.api_base}/console/tenants?state=active")
    # the rows read oldest first, and the runs that reserved them ran side by side
    named = ", ".join(slug for slug in listed(page) if slug in GOING)
    for slug in GOING:
        page.get_by_label(f"Select {slug}").check()
    expect(page.locator("#scope-selected")).to_be_checked()  # the selected ones by default
    fits_a_phone(page)
    page.click("#bulk-decommission")

    expect(page.locator("#batch-summary")).to_have_text(f"Decommission 2 tenants: {named}")
    fits_a_phone(page)
    go_ahead(page, "2")
    expect(page).to_have_url(re.compile(r"/console/batches/[0-9a-f]{32}$"))
    expect(page.locator("#batch-selection")).to_have_text(f"the tenants named: {named}")
    expect(page.locator("#batch-tally")).to_have_text("2 done (finished)", timeout=WAIT_MS)
    fits_a_phone(page)
    for slug in GOING:
        stack.wait_for_state(slug, {"decommissioned"}, 180)
    assert states(stack, org_admin, [KEPT]) == {KEPT: "active"}

    page.goto(f"{stack.api_base}/console/tenants?state=decommissioned")
    expect_listed(page, GOING)
    context.close()


@pytest.mark.usefixtures("population")
def test_a_selection_that_changed_since_it_was_confirmed_is_not_acted_on(
    stack: Stack, browser: Browser, tokens: dict[str, str]
) -> None:
    org_admin = tokens["org-admin"]
    context = logged_in(browser, stack, org_admin)
    page = context.new_page()
    page.goto(f"{stack.api_base}/console/tenants?slug_prefix=keep-")
    expect_listed(page, [KEPT])
    page.get_by_label("all 1 matching").check()
    page.click("#bulk-decommission")
    expect(page.locator("#batch-summary")).to_have_text(
        "Decommission 1 tenant matching slug_prefix=keep-"
    )

    submit(stack, org_admin, "keep-2", ORG)  # a second one matches before the count is typed
    stack.wait_for_state("keep-2", {"provisioning", "active"})
    before = len(batch_feed(stack, org_admin))
    go_ahead(page, "1")
    expect(page.locator("#confirm-error")).to_have_text(
        "2 tenant(s) match now, not the 1 confirmed; look again and confirm. Nothing was done."
    )
    expect(page.locator("#batch-summary")).to_have_text(
        "Decommission all 2 tenants matching slug_prefix=keep-"
    )
    assert len(batch_feed(stack, org_admin)) == before
    assert states(stack, org_admin, [KEPT]) == {KEPT: "active"}
    stack.wait_for_state("keep-2", {"active"}, 180)  # nothing left running behind the module
    context.close()


@pytest.mark.usefixtures("population")
def test_a_viewer_gets_no_bulk_controls_and_its_forged_form_is_refused(
    stack: Stack, browser: Browser, tokens: dict[str, str]
) -> None:
    context = logged_in(browser, stack, tokens["viewer"])
    page = context.new_page()
    page.goto(f"{stack.api_base}/console/tenants")
    assert KEPT in listed(page)
    expect(page.locator("#bulk, #bulk-actions, input[name=slug]")).to_have_count(0)

    csrf = page.locator("input[name=csrf_token]").first.get_attribute("value")
    assert csrf  # the session's own token: only the role stands in the way
    before = len(batch_feed(stack, tokens["org-admin"]))
    forged = {
        "csrf_token": csrf,
        "action": "decommission",
        "scope": "selected",
        "slug": KEPT,
        "expect": "1",
        "count": "1",  # confirmed, as the confirmation page would post it
    }
    for path in ("/console/batches/confirm", "/console/batches"):
        refused = forged_post(context, f"{stack.api_base}{path}", forged)
        assert refused.status == 403, path
        assert "role viewer may not decommission tenants" in refused.text()
    assert len(batch_feed(stack, tokens["org-admin"])) == before
    assert states(stack, tokens["org-admin"], [KEPT]) == {KEPT: "active"}
    context.close()


def forged_post(context: BrowserContext, url: str, form: dict[str, str]) -> APIResponse:
    """A POST made outside any page, carrying the context's session cookie."""
    return context.request.post(url, form=form, max_redirects=0)

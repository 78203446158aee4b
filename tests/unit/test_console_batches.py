"""What the console reads from its search and bulk forms and says about a batch
(`api.console_batches`): the words are the ones a person confirms, so they are checked exactly.
The browser test (tests/e2e/test_console_bulk_e2e.py) drives the same pages on a real stack."""

from datetime import UTC, datetime

import pytest
from starlette.datastructures import FormData, QueryParams

from tenant_pipelines.api.console_batches import (
    BadBulk,
    confirmation,
    confirmed_count,
    not_confirmed,
    read_bulk,
    read_filter,
    tally,
)
from tenant_pipelines.domain.batches import BatchItem, ItemOutcome
from tenant_pipelines.domain.states import TenantState


def test_a_date_time_without_a_zone_is_read_as_utc() -> None:
    search = read_filter(QueryParams("state=failed&created_after=2026-12-07T10:00"))
    assert search.wanted is not None
    assert search.wanted.state == TenantState.FAILED
    assert search.wanted.created_after == datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
    assert search.list_url == "/console/tenants?state=failed&created_after=2026-12-07T10%3A00"


@pytest.mark.parametrize(
    ("query", "said"),
    [
        ("created_after=yesterday", "Created after: 'yesterday' is not a date and time"),
        ("slug_prefix=Acme", "Slug prefix: lowercase letters, digits and '-' only"),
        ("state=broken", "State: one of provisioning, active, failed,"),
    ],
)
def test_a_filter_it_cannot_read_is_a_sentence(query: str, said: str) -> None:
    search = read_filter(QueryParams(query))
    assert search.wanted is None and search.error is not None
    assert search.error.startswith(said)


def test_the_confirmation_says_what_will_happen() -> None:
    form = FormData([("action", "retry"), ("scope", "selected"), ("slug", "a"), ("slug", "b")])
    checked = confirmation(read_bulk(form), ["a", "b"])
    assert checked.summary == "Retry 2 tenants: a, b"
    assert ("expect", "2") in checked.hidden and ("slug", "b") in checked.hidden

    form = FormData(
        [("action", "decommission"), ("scope", "matching"), ("state", "failed"), ("org", "acme")]
    )
    every = confirmation(read_bulk(form), [f"t{i}" for i in range(12)])
    assert every.summary == "Decommission all 12 tenants matching state=failed, org=acme"
    assert ("state", "failed") in every.hidden and not any(n == "slug" for n, _ in every.hidden)
    one = confirmation(read_bulk(form), ["t0"])
    assert one.summary == "Decommission 1 tenant matching state=failed, org=acme"


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ([("action", "erase"), ("scope", "matching")], "Choose Retry or Decommission."),
        ([("action", "retry"), ("scope", "selected")], "Select at least one tenant"),
        ([("action", "retry")], "Choose the selected tenants or all matching."),
    ],
)
def test_a_bulk_form_that_names_no_batch_goes_back_to_the_list(
    fields: list[tuple[str, str]], said: str
) -> None:
    with pytest.raises(BadBulk, match=said) as refused:
        read_bulk(FormData([*fields, ("state", "failed")]))
    assert refused.value.back == "/console/tenants?state=failed"


@pytest.mark.parametrize(
    ("typed", "shown", "confirmed"),
    [("3", "3", 3), (" 3 ", "3", 3), ("4", "3", None), ("03", "3", None), ("", "", None)],
)
def test_only_the_exact_count_shown_confirms(typed: str, shown: str, confirmed: int | None) -> None:
    assert confirmed_count({"count": typed, "expect": shown}) == confirmed


def test_a_wrong_count_is_said_with_nothing_done() -> None:
    said = not_confirmed({"count": "4", "expect": "3"})
    assert said == "Not confirmed: you typed '4', not 3. Nothing was done."


def test_the_tally_counts_each_outcome_pending_last() -> None:
    items = [
        BatchItem(slug="a", outcome=ItemOutcome.DONE, run_id="r"),
        BatchItem(slug="b"),
        BatchItem(slug="c", outcome=ItemOutcome.REFUSED, detail="why"),
        BatchItem(slug="d", outcome=ItemOutcome.DONE, run_id="s"),
    ]
    assert tally(items) == "2 done, 1 refused, 1 pending"

"""The console's search and bulk actions, read and shown: the tenant list's filter from its
query string, a bulk form as a batch's action and selection, the page that confirms a batch and
the page that follows one. Parsing and view-building only: the routes are `api.console`'s, and
the batch itself is `service.batches`'s, the same one `POST /v1/batches` starts, so the console
cannot act on a tenant the API would not.

What a person types is kept as typed (`FilterForm.values`) and carried from page to page in
that form, so the confirmation and the start read the same filter the list showed.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from pydantic import ValidationError

from tenant_pipelines.api.context import ApiContext
from tenant_pipelines.domain.access import ROLE_ACTIONS, Action, Caller
from tenant_pipelines.domain.batches import (
    BatchAction,
    BatchItem,
    BatchRecord,
    ItemOutcome,
    Selection,
    TenantFilter,
)
from tenant_pipelines.domain.request import field_errors
from tenant_pipelines.domain.states import TenantState
from tenant_pipelines.service import batches

FILTER_FIELDS = ("state", "plan", "org", "slug_prefix", "created_after")
LABELS = {
    "state": "State",
    "plan": "Plan",
    "org": "Org",
    "slug_prefix": "Slug prefix",
    "created_after": "Created after",
}
# Pydantic's words for these rules mean little to a person at the console.
RULES = {
    "state": "one of " + ", ".join(state.value for state in TenantState),
    "slug_prefix": "lowercase letters, digits and '-' only",
}
VERBS = {BatchAction.RETRY: "Retry", BatchAction.DECOMMISSION: "Decommission"}
SCOPE_SELECTED, SCOPE_MATCHING = "selected", "matching"
LISTED_AT_MOST = 50  # the confirmation names this many of the matching tenants, then counts
DIGITS = re.compile(r"[0-9]+")
TALLY_ORDER = (ItemOutcome.DONE, ItemOutcome.SKIPPED, ItemOutcome.REFUSED, ItemOutcome.PENDING)


class BadFilter(ValueError):
    """A filter field the list cannot use, with a sentence for the person who typed it."""


class BadBulk(ValueError):
    """A bulk form that names no batch; `back` is the list it came from."""

    def __init__(self, message: str, back: str) -> None:
        super().__init__(message)
        self.back = back


@dataclass(frozen=True)
class FilterForm:
    values: dict[str, str]  # as typed: shown again, and carried into the bulk form
    wanted: TenantFilter | None  # None when the input is bad, and `error` says why
    error: str | None = None

    @property
    def given(self) -> list[tuple[str, str]]:
        return [(name, value) for name, value in self.values.items() if value]

    @property
    def list_url(self) -> str:
        """The tenant list with this filter, without the fields left empty."""
        query = urlencode(self.given)
        return "/console/tenants" + (f"?{query}" if query else "")


def read_filter(source: Mapping[str, Any]) -> FilterForm:
    """The filter in a query string or a posted form; bad input is a sentence, never a 500."""
    values = {name: str(source.get(name) or "").strip() for name in FILTER_FIELDS}
    try:
        return FilterForm(values, tenant_filter(values))
    except BadFilter as bad:
        return FilterForm(values, None, str(bad))


def tenant_filter(values: Mapping[str, str]) -> TenantFilter:
    given: dict[str, object] = {name: value for name, value in values.items() if value}
    if "created_after" in given:
        given["created_after"] = utc_moment(values["created_after"])
    try:
        return TenantFilter.model_validate(given)
    except ValidationError as error:
        field, rule = field_errors(error)[0]
        raise BadFilter(f"{LABELS.get(field, field)}: {RULES.get(field, rule)}") from None


def utc_moment(text: str) -> datetime:
    """A date-time input's value (`2026-12-07T10:00`, no zone) read as UTC, as the page says;
    a value that names its own offset (typed into the address bar) keeps it."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadFilter(
            f"Created after: {text!r} is not a date and time; use the picker or type "
            "2026-12-07T10:00 (UTC)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def describe(wanted: TenantFilter) -> str:
    """The filter in the words of the list's query string: `state=failed, org=acme`."""
    parts = []
    for name in FILTER_FIELDS:
        value = getattr(wanted, name)
        if isinstance(value, datetime):
            parts.append(f"{name}={utc_text(value)}")
        elif value is not None and value != "":
            parts.append(f"{name}={value}")
    return ", ".join(parts)


def utc_text(moment: datetime) -> str:
    """A moment as the page shows it, in UTC (a stored one without a zone already is)."""
    shown = moment.astimezone(UTC) if moment.tzinfo is not None else moment
    return shown.strftime("%Y-%m-%d %H:%M" + (":%S" if shown.second else "") + " UTC")


def bulk_actions(caller: Caller) -> list[BatchAction]:
    """The batches the caller's role may start: none for a viewer, who gets no bulk controls."""
    allowed = ROLE_ACTIONS[caller.role]
    return [action for action in BatchAction if Action(action.value) in allowed]


@dataclass(frozen=True)
class BulkOffer:
    actions: list[BatchAction]
    matching: int  # the tenants a batch on the list's filter would act on now


def bulk_offer(ctx: ApiContext, caller: Caller, wanted: TenantFilter) -> BulkOffer | None:
    """What the list offers to act on, counted as the batch would count it (requests that have
    no tenant yet, shown on the list, are not among them); None when the caller may do none."""
    actions = bulk_actions(caller)
    if not actions:
        return None
    matching = batches.selected_slugs(ctx.service, caller, Selection(filter=wanted))
    return BulkOffer(actions, len(matching))


@dataclass(frozen=True)
class BulkAsk:
    """A batch as the bulk form names it: what to do, and to which tenants."""

    action: BatchAction
    scope: str  # SCOPE_SELECTED or SCOPE_MATCHING
    selection: Selection
    search: FilterForm  # the list's filter: the selection when all matching, and the way back


def read_bulk(form: Any) -> BulkAsk:
    """The bulk form (a Starlette `FormData`: checked slugs repeat `slug`), or BadBulk."""
    search = read_filter(form)
    action = str(form.get("action") or "")
    if action not in {known.value for known in BatchAction}:
        raise BadBulk("Choose Retry or Decommission.", search.list_url)
    scope = str(form.get("scope") or "")
    if scope == SCOPE_MATCHING:
        if search.wanted is None:
            raise BadBulk(search.error or "The filter is not valid.", search.list_url)
        selection = Selection(filter=search.wanted)
    elif scope == SCOPE_SELECTED:
        selection = selected(form, search)
    else:
        raise BadBulk("Choose the selected tenants or all matching.", search.list_url)
    return BulkAsk(BatchAction(action), scope, selection, search)


def selected(form: Any, search: FilterForm) -> Selection:
    slugs = [str(slug) for slug in form.getlist("slug") if str(slug)]
    if not slugs:
        raise BadBulk("Select at least one tenant, or choose all matching.", search.list_url)
    try:
        return Selection(slugs=slugs)
    except ValidationError:
        too_many = "Too many tenants selected: filter them and choose all matching."
        raise BadBulk(too_many, search.list_url) from None


def tenants_text(count: int) -> str:
    return f"{count} tenant" + ("" if count == 1 else "s")


@dataclass(frozen=True)
class Confirmation:
    ask: BulkAsk
    slugs: list[str]  # what the batch would act on if started now
    summary: str
    hidden: list[tuple[str, str]]  # the fields that carry the ask (and its count) to the start

    @property
    def count(self) -> int:
        return len(self.slugs)

    @property
    def listed(self) -> list[str]:
        return self.slugs[:LISTED_AT_MOST]

    @property
    def verb(self) -> str:
        return VERBS[self.ask.action]


def confirmation(ask: BulkAsk, slugs: list[str]) -> Confirmation:
    """What the confirmation page says will happen, in one sentence, and what it posts."""
    verb, count = VERBS[ask.action], len(slugs)
    every = tenants_text(count) if count == 1 else f"all {tenants_text(count)}"
    if ask.selection.filter is None:
        summary = f"{verb} {tenants_text(count)}: {', '.join(slugs)}"
    elif described := describe(ask.selection.filter):
        summary = f"{verb} {every} matching {described}"
    else:
        summary = f"{verb} {every} you can see (no filter)"
    hidden = [("action", ask.action.value), ("scope", ask.scope), *ask.search.given]
    if ask.selection.slugs is not None:
        hidden += [("slug", slug) for slug in slugs]
    return Confirmation(ask, slugs, summary, [*hidden, ("expect", str(count))])


def confirmed_count(form: Mapping[str, str]) -> int | None:
    """The count the person confirmed: the one they typed, if it is exactly the one the page
    showed (`expect`); otherwise None, and nothing goes ahead."""
    typed, shown = form.get("count", "").strip(), form.get("expect", "")
    if DIGITS.fullmatch(shown) and typed == shown:
        return int(shown)
    return None


def not_confirmed(form: Mapping[str, str]) -> str:
    typed, shown = form.get("count", "").strip(), form.get("expect", "")
    said = f"you typed {typed!r}, not {shown}" if typed else f"type {shown} to go ahead"
    return f"Not confirmed: {said}. Nothing was done."


@dataclass(frozen=True)
class ItemView:
    item: BatchItem
    run_url: str | None


@dataclass(frozen=True)
class BatchView:
    record: BatchRecord
    title: str  # "Retry 3 tenants"
    selection: str  # the filter, or the slugs as named
    tally: str  # "2 done, 1 pending"
    started: str
    items: list[ItemView]

    @property
    def at_rest(self) -> bool:
        return self.record.finished


def batch_view(ctx: ApiContext, record: BatchRecord) -> BatchView:
    items = record.items
    wanted = record.selection.filter
    if wanted is None:
        selection = "the tenants named: " + ", ".join(record.selection.slugs or [])
    else:
        selection = "the tenants matching " + (describe(wanted) or "no filter")
    return BatchView(
        record=record,
        title=f"{VERBS[record.action]} {tenants_text(len(items))}",
        selection=selection,
        tally=tally(items),
        started=utc_text(record.created_at),
        items=[ItemView(item, ctx.run_url(item.run_id) if item.run_id else None) for item in items],
    )


def tally(items: list[BatchItem]) -> str:
    """How many tenants have each outcome, those still to come last."""
    counts = [(sum(i.outcome == o for i in items), o.value) for o in TALLY_ORDER]
    said = [f"{count} {outcome}" for count, outcome in counts if count]
    return ", ".join(said) or "no tenants"

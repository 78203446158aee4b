"""`/console`: the tenant console, server-rendered (Jinja2) with one small script for the live
parts. Every page asks `session_caller`; every form carries the session's CSRF token; the
words a person sees are the contract (docs/contracts.md). The session lives on the server
(`api.sessions`): logging in gives it a new id, logging out ends it. Handlers that read a form
are async; what they ask of the registry or the platform runs in a worker thread, never in the
event loop that the event streams share. The list's search and its bulk actions (a batch of
`service.batches`, confirmed by typing its count) are read and shown by `api.console_batches`."""

import hmac
import secrets
from pathlib import Path
from typing import Any

from fastapi import APIRouter, BackgroundTasks, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from tenant_pipelines.api import tenants
from tenant_pipelines.api.auth import SESSION_CSRF, SESSION_TOKEN_ID, Ctx, session_caller
from tenant_pipelines.api.console_batches import (
    BadBulk,
    BulkAsk,
    BulkOffer,
    FilterForm,
    batch_view,
    bulk_offer,
    confirmation,
    confirmed_count,
    not_confirmed,
    read_bulk,
    read_filter,
)
from tenant_pipelines.api.console_views import Row, detail_view, list_view
from tenant_pipelines.api.errors import InvalidInput
from tenant_pipelines.api.platform_view import platform_view, require_platform_admin
from tenant_pipelines.domain.access import (
    Action,
    Caller,
    Forbidden,
    NotAuthenticated,
    authorize_batch,
)
from tenant_pipelines.domain.errors import NotFound, Refused, TenantPipelinesError
from tenant_pipelines.domain.plans import PLANS, ROLE_PLANS
from tenant_pipelines.domain.request import TenantFields, field_errors
from tenant_pipelines.domain.states import TenantState
from tenant_pipelines.service import batches
from tenant_pipelines.support.metrics import Door

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(prefix="/console", include_in_schema=False)
CSRF = SESSION_CSRF
FLASH = "flash"
FORM_FIELDS = ("slug", "org", "plan", "admin_email")


def mount_static(app: FastAPI) -> None:
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")


class LoginRequired(Exception):
    """No usable session: the person is sent to the login page."""


def csrf_token(request: Request) -> str:
    token = request.session.get(CSRF)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session[CSRF] = token
    return token


async def checked_form(request: Request) -> dict[str, str]:
    """The posted form, if it carries this session's CSRF token; otherwise 403."""
    form = {key: str(value) for key, value in (await request.form()).items()}
    expected = request.session.get(CSRF)
    sent = form.pop("csrf_token", "")
    if not isinstance(expected, str) or not hmac.compare_digest(sent, expected):
        raise CsrfFailure()
    return form


class CsrfFailure(Exception):
    pass


def caller_or_login(request: Request, ctx: Ctx) -> Caller:
    caller = session_caller(request, ctx)
    if caller is None:
        raise LoginRequired()
    return caller


def page(request: Request, name: str, status: int = 200, **values: Any) -> HTMLResponse:
    """A whole page: it shows (and so consumes) the message left by the last action."""
    return fragment(request, name, status, flash=request.session.pop(FLASH, None), **values)


def fragment(request: Request, name: str, status: int = 200, **values: Any) -> HTMLResponse:
    values.setdefault("caller", None)
    context = {"csrf_token": csrf_token(request), **values}
    return templates.TemplateResponse(request, name, context, status_code=status)


def go(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


@router.get("", include_in_schema=False)
def home() -> RedirectResponse:
    return go("/console/tenants")


def local_target(path: str | None) -> str:
    """Where to go after login: a path on this server (the page that asked for the login, e.g.
    the Dagster UI), never another site."""
    if path and path.startswith("/") and not path.startswith("//") and "\\" not in path:
        return path
    return "/console/tenants"


@router.get("/login")
def login_page(request: Request, next: str | None = None) -> HTMLResponse:
    return page(request, "login.html", next=local_target(next))


@router.post("/login")
async def login(request: Request, ctx: Ctx) -> Response:
    form = await checked_form(request)
    target = local_target(form.get("next"))
    try:
        token = form.get("token", "").strip()
        caller = await run_in_threadpool(ctx.registry.tokens.authenticate, token)
    except NotAuthenticated as error:
        return page(request, "login.html", status=401, error=str(error), next=target)
    request.session.clear()
    request.session[SESSION_TOKEN_ID] = caller.token_id  # a new session id (`api.sessions`)
    return go(target)


@router.post("/logout")
async def logout(request: Request) -> RedirectResponse:
    await checked_form(request)
    request.session.clear()  # ends the session on the server: the old cookie opens nothing
    return go("/console/login")


@router.get("/tenants")
def tenant_list(request: Request, ctx: Ctx) -> HTMLResponse:
    """The tenants the caller sees that match the filter in the query string, with the bulk
    controls its role allows; a filter it cannot read is said, and nothing is listed."""
    caller = caller_or_login(request, ctx)
    search = read_filter(request.query_params)
    if search.wanted is None:
        return _list_page(request, caller, search, rows=[], bulk=None, status=422)
    rows = list_view(tenants.list_visible(ctx, caller, search.wanted))
    return _list_page(request, caller, search, rows, bulk_offer(ctx, caller, search.wanted))


def _list_page(
    request: Request,
    caller: Caller,
    search: FilterForm,
    rows: list[Row],
    bulk: BulkOffer | None,
    status: int = 200,
) -> HTMLResponse:
    values = {"rows": rows, "search": search, "bulk": bulk, "states": TenantState, "plans": PLANS}
    return page(request, "tenants.html", status, caller=caller, **values)


@router.get("/tenants/new")
def new_tenant_form(request: Request, ctx: Ctx) -> HTMLResponse:
    caller = caller_or_login(request, ctx)
    return _form(request, caller, values={"org": caller.org or ""}, errors={})


def _form(
    request: Request,
    caller: Caller,
    values: dict[str, str],
    errors: dict[str, str],
    status: int = 200,
) -> HTMLResponse:
    plans = [plan for plan in PLANS if plan in ROLE_PLANS[caller.role]]
    return page(
        request, "new.html", status, caller=caller, values=values, errors=errors, plans=plans
    )


@router.post("/tenants/new")
async def new_tenant(request: Request, ctx: Ctx) -> Response:
    caller = await run_in_threadpool(caller_or_login, request, ctx)
    form = await checked_form(request)
    values = {name: form.get(name, "").strip() for name in FORM_FIELDS}
    try:
        fields = TenantFields.model_validate(values)
        submission = await run_in_threadpool(tenants.submit, ctx, caller, fields, None)
    except ValidationError as error:
        errors = {field: rule for field, rule in reversed(field_errors(error))}
        return _form(request, caller, values, errors, status=422)
    except InvalidInput as bad:
        return _form(request, caller, values, {bad.field or "request": str(bad)}, status=422)
    except TenantPipelinesError as refusal:
        return _form(request, caller, values, {"request": str(refusal)}, status=403)
    return go(f"/console/tenants/{submission.request.slug}")


@router.get("/tenants/{slug}")
def tenant_page(request: Request, ctx: Ctx, slug: str) -> HTMLResponse:
    caller = caller_or_login(request, ctx)
    try:
        view = detail_view(ctx, caller, slug)
    except NotFound as missing:
        return page(request, "missing.html", status=404, caller=caller, error=str(missing))
    return page(request, "tenant.html", caller=caller, view=view)


@router.get("/tenants/{slug}/live")
def tenant_live(request: Request, ctx: Ctx, slug: str) -> HTMLResponse:
    """The part of the detail page that changes, for the page's script to swap in."""
    caller = caller_or_login(request, ctx)
    view = detail_view(ctx, caller, slug)
    return fragment(request, "tenant_live.html", caller=caller, view=view)


@router.post("/tenants/{slug}/retry")
async def retry(request: Request, ctx: Ctx, slug: str) -> RedirectResponse:
    return await _act(request, ctx, slug, tenants.retry, "Retry launched")


@router.post("/tenants/{slug}/decommission")
async def decommission(request: Request, ctx: Ctx, slug: str) -> RedirectResponse:
    return await _act(request, ctx, slug, tenants.decommission, "Decommission launched")


async def _act(request: Request, ctx: Ctx, slug: str, action: Any, done: str) -> RedirectResponse:
    caller = await run_in_threadpool(caller_or_login, request, ctx)
    await checked_form(request)
    try:
        run_id = await action(ctx, caller, slug, Door.CONSOLE)
        request.session[FLASH] = f"{done} (run {run_id[:8]})"
    except TenantPipelinesError as refusal:
        request.session[FLASH] = str(refusal)
    return go(f"/console/tenants/{slug}")


@router.post("/batches/confirm")
async def confirm_batch(request: Request, ctx: Ctx) -> Response:
    """The bulk form's answer: what the batch would do, and a field for its count. Nothing is
    done yet."""
    caller = await run_in_threadpool(caller_or_login, request, ctx)
    await checked_form(request)
    ask = await _bulk_ask(request, caller)
    if isinstance(ask, Response):
        return ask
    return await _confirm_page(request, ctx, caller, ask)


@router.post("/batches")
async def start_batch(request: Request, ctx: Ctx, after_answer: BackgroundTasks) -> Response:
    """Start the batch once the count typed is the count shown; it acts after the answer, and
    the batch's page follows it. A selection that changed size since is confirmed again."""
    caller = await run_in_threadpool(caller_or_login, request, ctx)
    form = await checked_form(request)
    ask = await _bulk_ask(request, caller)
    if isinstance(ask, Response):
        return ask
    expect = confirmed_count(form)
    if expect is None:
        return await _confirm_page(request, ctx, caller, ask, not_confirmed(form), 422)
    try:
        record = await run_in_threadpool(
            batches.start, ctx.service, caller, ask.action, ask.selection, expect
        )
    except Refused as changed:
        return await _confirm_page(request, ctx, caller, ask, f"{changed}. Nothing was done.", 409)
    after_answer.add_task(batches.run, ctx.service, caller, record.batch_id, Door.CONSOLE)
    return go(f"/console/batches/{record.batch_id}")


async def _bulk_ask(request: Request, caller: Caller) -> BulkAsk | Response:
    """The batch a (CSRF-checked) bulk form names, if the caller's role may start it: a
    viewer's forged form is refused here (403), before anything is counted."""
    try:
        ask = read_bulk(await request.form())  # parsed once: the form `checked_form` read
        authorize_batch(caller, Action(ask.action.value))
    except BadBulk as bad:
        request.session[FLASH] = str(bad)
        return go(bad.back)
    except Forbidden as refusal:
        return page(request, "missing.html", status=403, caller=caller, error=str(refusal))
    return ask


async def _confirm_page(
    request: Request,
    ctx: Ctx,
    caller: Caller,
    ask: BulkAsk,
    error: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    """The confirmation, counted now (as `batches.start` will count it)."""
    slugs = await run_in_threadpool(batches.selected_slugs, ctx.service, caller, ask.selection)
    view = confirmation(ask, slugs)
    return page(request, "batch_confirm.html", status, caller=caller, view=view, error=error)


@router.get("/batches/{batch_id}")
def batch_page(request: Request, ctx: Ctx, batch_id: str) -> HTMLResponse:
    """Each tenant's outcome so far; the page follows the batch until it has finished. Someone
    else's batch does not exist here (`batches.visible_batch`)."""
    caller = caller_or_login(request, ctx)
    try:
        view = batch_view(ctx, batches.visible_batch(ctx.service, caller, batch_id))
    except NotFound as missing:
        return page(request, "missing.html", status=404, caller=caller, error=str(missing))
    return page(request, "batch.html", caller=caller, view=view)


@router.get("/batches/{batch_id}/live")
def batch_live(request: Request, ctx: Ctx, batch_id: str) -> HTMLResponse:
    """The part of the batch page that changes, for the page's script to swap in."""
    caller = caller_or_login(request, ctx)
    view = batch_view(ctx, batches.visible_batch(ctx.service, caller, batch_id))
    return fragment(request, "batch_live.html", caller=caller, view=view)


@router.get("/events")
def audit_feed(request: Request, ctx: Ctx, type: str | None = None) -> HTMLResponse:
    caller = caller_or_login(request, ctx)
    glob = (type or "").strip() or None
    events = list(reversed(tenants.visible_events(ctx, caller, glob)))
    return page(request, "events.html", caller=caller, events=events, glob=glob or "")


@router.get("/platform")
def platform(request: Request, ctx: Ctx) -> HTMLResponse:
    """Every org's tenants at a glance (`api.platform_view`): a platform-admin's only."""
    caller = caller_or_login(request, ctx)
    try:
        require_platform_admin(caller)
    except Forbidden as refusal:
        return page(request, "missing.html", status=403, caller=caller, error=str(refusal))
    view = platform_view(ctx.registry.platform_stats)
    return page(request, "platform.html", caller=caller, view=view)


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(LoginRequired)
    async def _login(_: Request, __: LoginRequired) -> RedirectResponse:
        return go("/console/login")

    @app.exception_handler(CsrfFailure)
    async def _csrf(request: Request, __: CsrfFailure) -> HTMLResponse:
        return page(request, "missing.html", status=403, error="The form expired: reload it.")

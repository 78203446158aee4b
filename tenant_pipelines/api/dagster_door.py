"""The door to the Dagster UI: `/dagster/...` on the API server's own origin, for platform-admins.

The Dagster UI (`runtime.dagster_ui`, dagster-webserver's app in this process) shows every
org's runs and can launch, re-execute and terminate any of them. It has no authentication of
its own, so nothing reaches it but through this ASGI middleware, which lets a request pass only:

- from a platform-admin: a console session (the cookie of `/console/login`) or an API token
  (`Authorization: Bearer`, for scripts such as dagster-graphql's `DagsterGraphQLClient`);
  anyone else gets 401 (a browser is sent to the console's login) or 403;
- for a session, only same-origin writes carrying the session's CSRF token: any request but a
  read must come from a page of this origin (`Origin`) with the token in `X-CSRF-Token` (the
  UI's pages get a small script, under the page's own CSP nonce, that adds it to their
  same-origin requests), every websocket from this origin; GraphQL bodies only as JSON (which a
  page of another origin cannot send without a CORS preflight, never granted here), GraphQL
  mutations never by GET nor on the websocket. With the SameSite=Strict session cookie, no page
  of another origin (a tenant's own page in the operator's browser included) can act here;
- never for what would rewrite the audit feed (the run logs are the feed: deleting runs, wiping
  or reporting asset events) or run the sensors' side effects outside the daemon (`REFUSED_*`).

A request that passes carries its caller in the ASGI scope (`admission.DOOR_SCOPE_KEY`): Dagster
hands the UI's request to the run coordinator as the launch's source, which admits the run as
the caller's (`orchestration.admission`). An open websocket (the UI's live run view) is closed
within `RECHECK_S` once its session or token no longer admits it.
"""

import hmac
import json
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import anyio
from graphql import GraphQLError, OperationDefinitionNode, OperationType, parse
from starlette.datastructures import Headers, QueryParams
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tenant_pipelines.api.auth import SESSION_CSRF, caller_of_session
from tenant_pipelines.api.context import DAGSTER_UI_PATH, ApiContext
from tenant_pipelines.api.sessions import SESSION_ID_KEY
from tenant_pipelines.domain.access import (
    Caller,
    Forbidden,
    NotAuthenticated,
    authorize_operator_ui,
)
from tenant_pipelines.domain.errors import RegistryUnavailable
from tenant_pipelines.orchestration.admission import DOOR_SCOPE_KEY, DoorCaller

GRAPHQL_PATH = f"{DAGSTER_UI_PATH}/graphql"
CSRF_HEADER = "x-csrf-token"
MAX_GRAPHQL_BODY_BYTES = 4 << 20
RECHECK_S = 1.0
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# What the UI must not do here: the run logs are the audit feed (deleting runs or asset events,
# or reporting events, would rewrite it), and a sensor's dry run performs the intake's
# side effects outside the daemon.
REFUSED_MUTATIONS = frozenset(
    {"deleteRun", "deletePipelineRun", "wipeAssets", "reportRunlessAssetEvents", "sensorDryRun"}
)
REFUSED_PATHS = tuple(
    f"{DAGSTER_UI_PATH}/{endpoint}/"
    for endpoint in (
        "report_asset_materialization",
        "report_asset_check",
        "report_asset_observation",
    )
)
LOGIN_PATH = "/console/login"


class Refusal(Exception):
    """A request the door turns away: its status and one sentence."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class LoginRequired(Refusal):
    def __init__(self) -> None:
        super().__init__(401, "log in to the console as a platform-admin to open the Dagster UI")


@dataclass(frozen=True)
class DoorPass:
    """Who passed, and how: a session (browser rules apply) or a bearer token."""

    caller: Caller
    token: str | None = None  # the bearer token, re-checked while a websocket stays open
    session: dict[str, Any] = field(default_factory=dict)
    session_id: str | None = None  # the stored session, re-checked while a websocket stays open

    @property
    def by_session(self) -> bool:
        return self.token is None


def is_ui_path(path: str) -> bool:
    return path == DAGSTER_UI_PATH or path.startswith(f"{DAGSTER_UI_PATH}/")


class DagsterDoor:
    """ASGI middleware: `/dagster/...` to the Dagster UI through the door, the rest to `app`."""

    def __init__(self, app: ASGIApp, ctx: ApiContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not is_ui_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        try:
            ui = self.ctx.dagster_ui
            if ui is None:
                raise Refusal(404, "this API server serves no Dagster UI")
            door_pass = await self._pass(scope)
            if scope["type"] == "http":
                receive = await _checked_http(scope, receive, door_pass)
            elif door_pass.by_session and not _same_origin(scope):
                raise Refusal(403, "the Dagster UI's websocket opens only from its own pages")
        except Refusal as refusal:
            await _refuse(scope, receive, send, refusal)
            return
        scope[DOOR_SCOPE_KEY] = DoorCaller(door_pass.caller.subject, self.ctx.registry)
        if scope["type"] == "websocket":
            await self._websocket(ui.app, scope, receive, send, door_pass)
        elif door_pass.by_session and scope["method"] == "GET":
            await ui.app(scope, receive, _csrf_into_pages(send, session_csrf(door_pass.session)))
        else:
            await ui.app(scope, receive, send)

    async def _pass(self, scope: Scope) -> DoorPass:
        """The caller, authenticated and allowed; Refusal otherwise."""
        authorization = Headers(scope=scope).get("authorization")
        try:
            door_pass = await anyio.to_thread.run_sync(self._authenticate, scope, authorization)
            authorize_operator_ui(door_pass.caller)
        except NotAuthenticated as error:
            raise Refusal(401, str(error)) from None
        except Forbidden as error:
            raise Refusal(403, str(error)) from None
        except RegistryUnavailable as error:
            raise Refusal(503, str(error)) from None
        return door_pass

    def _authenticate(self, scope: Scope, authorization: str | None) -> DoorPass:
        if authorization is not None:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise NotAuthenticated("send the API token as 'Authorization: Bearer <token>'")
            token = token.strip()
            return DoorPass(self.ctx.registry.tokens.authenticate(token), token=token)
        session = scope.get("session")
        session = session if isinstance(session, dict) else {}
        caller = caller_of_session(session, self.ctx)
        if caller is None:
            raise LoginRequired()
        return DoorPass(caller, session=session, session_id=scope.get(SESSION_ID_KEY))

    def _still_admitted(self, door_pass: DoorPass) -> bool:
        try:
            if door_pass.token is not None:
                caller: Caller | None = self.ctx.registry.tokens.authenticate(door_pass.token)
            else:
                stored = self.ctx.registry.sessions.load(door_pass.session_id or "")
                caller = caller_of_session(stored.data, self.ctx) if stored else None
            if caller is None:
                return False
            authorize_operator_ui(caller)
        except (NotAuthenticated, Forbidden):
            return False
        return True

    async def _websocket(
        self, app: ASGIApp, scope: Scope, receive: Receive, send: Send, door_pass: DoorPass
    ) -> None:
        """The UI's live views, closed once the caller's session or token ends; every
        operation sent on it is checked as a GET would be (no mutation)."""
        async with anyio.create_task_group() as tasks:

            async def watch() -> None:
                while await anyio.to_thread.run_sync(self._still_admitted, door_pass):
                    await anyio.sleep(RECHECK_S)
                await send({"type": "websocket.close", "code": 4401, "reason": "session ended"})
                tasks.cancel_scope.cancel()

            tasks.start_soon(watch)
            await app(scope, _inspecting(receive, send), send)
            tasks.cancel_scope.cancel()


async def _checked_http(scope: Scope, receive: Receive, door_pass: DoorPass) -> Receive:
    """Refuse what the door does not let through; the request's body, replayed for the UI."""
    path, method = scope["path"], scope["method"]
    if path.startswith(REFUSED_PATHS):
        raise Refusal(403, "reporting asset events would rewrite the audit feed; refused")
    if door_pass.by_session and method not in SAFE_METHODS:
        if not _same_origin(scope):
            raise Refusal(403, "cross-origin request refused: act from the Dagster UI's own pages")
        sent = Headers(scope=scope).get(CSRF_HEADER, "")
        expected = door_pass.session.get(SESSION_CSRF)
        if not isinstance(expected, str) or not hmac.compare_digest(sent, expected):
            raise Refusal(403, "the session's CSRF token is missing: reload the Dagster UI")
    if path != GRAPHQL_PATH:
        return receive
    if method in SAFE_METHODS:
        _check_operations(QueryParams(scope.get("query_string", b"")).get("query"), reads=True)
        return receive
    return await _checked_graphql_body(scope, receive)


async def _checked_graphql_body(scope: Scope, receive: Receive) -> Receive:
    content_type = Headers(scope=scope).get("content-type", "")
    if "application/json" not in content_type:
        raise Refusal(415, "send GraphQL requests as application/json")
    body = await _read_body(receive)
    try:
        data = json.loads(body)
    except ValueError:
        raise Refusal(400, "the GraphQL request is not JSON") from None
    query = data.get("query") if isinstance(data, dict) else None
    if not isinstance(query, str):
        raise Refusal(400, "the GraphQL request has no query")
    _check_operations(query, reads=False)
    return _replaying(body, receive)


def _check_operations(query: str | None, reads: bool) -> None:
    """Refuse mutations in a read (GET, websocket) and the mutations the door never passes."""
    if query is None:
        return
    try:
        document = parse(query)
    except GraphQLError:
        return  # nothing that does not parse can run: the UI answers the syntax error
    for operation in document.definitions:
        if not isinstance(operation, OperationDefinitionNode):
            continue
        if reads and operation.operation == OperationType.MUTATION:
            raise Refusal(405, "GraphQL mutations only by POST, from the Dagster UI's own pages")
        if operation.operation == OperationType.MUTATION:
            fields = {getattr(s, "name", None) for s in operation.selection_set.selections}
            if refused := sorted(
                str(f.value) for f in fields if f and f.value in REFUSED_MUTATIONS
            ):
                raise Refusal(403, f"{', '.join(refused)} would rewrite the audit feed; refused")


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise Refusal(400, "the client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_GRAPHQL_BODY_BYTES:
            raise Refusal(413, f"GraphQL requests are limited to {MAX_GRAPHQL_BODY_BYTES} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the UI the body already read, then the client's next messages."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


def _inspecting(receive: Receive, send: Send) -> Callable[[], Awaitable[Message]]:
    """The websocket's messages, each GraphQL operation checked as a read."""

    async def inspect() -> Message:
        message = await receive()
        if message["type"] != "websocket.receive":
            return message
        try:
            _check_operations(_ws_query(message), reads=True)
        except Refusal as refusal:
            await send({"type": "websocket.close", "code": 4403, "reason": str(refusal)[:120]})
            return {"type": "websocket.disconnect", "code": 4403}
        return message

    return inspect


def _ws_query(message: Message) -> str | None:
    text = message.get("text") or (message.get("bytes") or b"").decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        return None
    payload = data.get("payload") if isinstance(data, dict) else None
    query = payload.get("query") if isinstance(payload, dict) else None
    return query if isinstance(query, str) else None


def session_csrf(session: dict[str, Any]) -> str:
    """The session's CSRF token, made now if the session has none yet (it is saved with it)."""
    token = session.get(SESSION_CSRF)
    if not isinstance(token, str):
        token = session[SESSION_CSRF] = secrets.token_urlsafe(32)
    return token


# Added to every same-origin request of the UI's pages: the session's CSRF token.
CSRF_SCRIPT = (
    "(()=>{{const t='{token}',f=window.fetch;window.fetch=(i,o={{}})=>{{"
    "const u=new URL(typeof i==='string'?i:i.url,location.href);"
    "if(u.origin===location.origin){{const h=new Headers(o.headers||(i instanceof Request?"
    "i.headers:undefined));h.set('X-CSRF-Token',t);o={{...o,headers:h}};}}return f(i,o);}};}})();"
)
NONCE = re.compile(rb'nonce="([A-Za-z0-9+/=_-]+)"')


def _csrf_into_pages(send: Send, token: str) -> Send:
    """A send that adds the CSRF script to the UI's HTML pages, under the page's own nonce."""
    held: list[Message] = []

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = Headers(raw=message.get("headers", []))
            if headers.get("content-type", "").startswith("text/html"):
                held.append(message)
                return
        elif held and message["type"] == "http.response.body":
            held.append(message)
            if message.get("more_body", False):
                return
            start, *parts = held
            held.clear()
            body = _with_csrf_script(b"".join(p.get("body", b"") for p in parts), token)
            await send(_with_length(start, len(body)))
            await send({"type": "http.response.body", "body": body})
            return
        await send(message)

    return sending


def _with_csrf_script(page: bytes, token: str) -> bytes:
    nonce = NONCE.search(page)
    if nonce is None or b"<head>" not in page:
        return page  # a page without a nonce runs no script of ours (nor any inline one)
    script = f'<script nonce="{nonce[1].decode()}">{CSRF_SCRIPT.format(token=token)}</script>'
    return page.replace(b"<head>", b"<head>" + script.encode(), 1)


def _with_length(start: Message, length: int) -> Message:
    headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
    return {**start, "headers": [*headers, (b"content-length", str(length).encode())]}


def _same_origin(scope: Scope) -> bool:
    """Whether the request's `Origin` is this server's own (as the client addressed it)."""
    headers = Headers(scope=scope)
    origin, host = headers.get("origin"), headers.get("host")
    secure = scope.get("scheme") in ("https", "wss")
    return (
        origin is not None
        and host is not None
        and origin == f"{'https' if secure else 'http'}://{host}"
    )


async def _refuse(scope: Scope, receive: Receive, send: Send, refusal: Refusal) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 4000 + refusal.status})
        return
    await _response(scope, refusal)(scope, receive, send)


def _response(scope: Scope, refusal: Refusal) -> Response:
    wants_page = "text/html" in Headers(scope=scope).get("accept", "")
    if isinstance(refusal, LoginRequired) and wants_page and scope["method"] == "GET":
        target = scope["path"] + (
            f"?{scope['query_string'].decode()}" if scope.get("query_string") else ""
        )
        return RedirectResponse(f"{LOGIN_PATH}?next={quote(target, safe='/')}", status_code=303)
    headers = {"WWW-Authenticate": "Bearer"} if refusal.status == 401 else None
    return JSONResponse({"error": str(refusal)}, status_code=refusal.status, headers=headers)

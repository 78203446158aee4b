"""Console sessions kept on the server, as a plain ASGI middleware.

The cookie carries only a random id (256 bits); what the session holds (the token id it was
opened with, the CSRF token, a flash message) is a row of the registry (`registry.sessions`), so
logging out, revoking the token or the end of the session's 8 hours ends it on the server: the
old cookie then opens nothing. Like Starlette's `SessionMiddleware`, it puts a dict in
`scope["session"]` (so `request.session` works) for any ASGI app behind it, FastAPI or not, and
saves what changed when the response starts.

The id changes whenever the session's token does (login, or a login as someone else): an id
fixed before login never becomes a logged-in session. An id the browser sends that names no
live session is never adopted either: new data gets a new id. The cookie is HttpOnly,
SameSite=Strict, path /, and Secure whenever the request came over HTTPS (or the server is told
it always does).
"""

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio.to_thread
from starlette.datastructures import MutableHeaders
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tenant_pipelines.domain.errors import RegistryUnavailable
from tenant_pipelines.registry.sessions import ConsoleSession, SessionStore, new_session_id

log = logging.getLogger(__name__)

SESSION_COOKIE = "tp_console"
TOKEN_ID = "token_id"  # the key naming the token a session was opened with
SESSION_ID_KEY = "tenant_pipelines.session_id"  # in the ASGI scope: the session's id, if loaded
SESSION_LIFETIME = timedelta(hours=8)  # absolute: counted from login, never extended
# Before login a session holds only the login form's CSRF token; any visitor can make one.
PRE_LOGIN_LIFETIME = timedelta(hours=1)
MAX_PRE_LOGIN_SESSIONS = 10_000
PURGE_INTERVAL_S = 60.0
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{43}")  # what `new_session_id` makes
_EXPIRED = "Thu, 01 Jan 1970 00:00:00 GMT"


def _token_of(data: Mapping[str, Any]) -> str | None:
    token_id = data.get(TOKEN_ID)
    return token_id if isinstance(token_id, str) else None


def _dump(data: Mapping[str, Any]) -> str:
    return json.dumps(dict(data), sort_keys=True)


class ServerSessions:
    """ASGI middleware: `scope["session"]` from the registry, changes saved at response start.

    `store` is called once per request that carries data to load or save (the registry is
    opened in the app's lifespan, after the middleware is built); its calls run in a worker
    thread and take a few milliseconds.
    """

    def __init__(
        self,
        app: ASGIApp,
        store: Callable[[], SessionStore],
        secure_cookies: bool = False,
        cookie: str = SESSION_COOKIE,
    ) -> None:
        self.app = app
        self.store = store
        self.secure_cookies = secure_cookies
        self.cookie = cookie
        self._next_purge = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        sent_id = self._sent_id(scope)
        try:
            loaded = await self._run(self.store().load, sent_id) if sent_id else None
        except RegistryUnavailable as error:
            await _unavailable(scope, send, error)
            return
        session: dict[str, Any] = dict(loaded.data) if loaded else {}
        scope["session"] = session
        # Which stored session this is: a long-lived connection (the Dagster UI's websocket)
        # checks that it has not ended since.
        scope[SESSION_ID_KEY] = sent_id if loaded else None
        before = _dump(session)
        secure = self.secure_cookies or scope.get("scheme") in ("https", "wss")
        replaced = False

        async def send_saving(message: Message) -> None:
            nonlocal replaced
            if replaced:
                return  # the app's own answer was replaced by a 503 below
            if message["type"] == "http.response.start":
                try:
                    saved = (sent_id, loaded, session, before, secure)
                    cookie = await self._run(self._persist, *saved)
                except RegistryUnavailable as error:
                    replaced = True
                    await _unavailable(scope, send, error)
                    return
                if cookie is not None:
                    MutableHeaders(scope=message).append("set-cookie", cookie)
            await send(message)

        await self.app(scope, receive, send_saving)

    def _sent_id(self, scope: Scope) -> str | None:
        for name, value in scope.get("headers", ()):
            if name == b"cookie":
                found = cookie_parser(value.decode("latin-1")).get(self.cookie)
                if found:  # a malformed value is no session, never an error
                    return found if _SESSION_ID.fullmatch(found) else ""
        return None

    @staticmethod
    async def _run(function: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(function, *args)

    def _persist(
        self,
        sent_id: str | None,
        loaded: ConsoleSession | None,
        session: dict[str, Any],
        before: str,
        secure: bool,
    ) -> str | None:
        """Save what the request changed; the Set-Cookie value to send, if any."""
        store = self.store()
        if not session:
            if loaded is not None and sent_id:
                store.end(sent_id)  # logout
            return self._header("", 0, secure) if sent_id is not None else None
        token_id = _token_of(session)
        if loaded is None or not sent_id or token_id != loaded.token_id:
            live_id = sent_id if loaded is not None else None
            return self._start(store, session, token_id, live_id, secure)
        if _dump(session) != before:
            store.save(sent_id, session)  # False: ended meanwhile, and stays ended
        return None

    def _start(
        self,
        store: SessionStore,
        session: dict[str, Any],
        token_id: str | None,
        replaces: str | None,
        secure: bool,
    ) -> str:
        """A session under a new id (login rotates it), and now and then a purge."""
        session_id = new_session_id()
        lifetime = SESSION_LIFETIME if token_id else PRE_LOGIN_LIFETIME
        expires_at = store.start(session_id, session, token_id, lifetime, replaces)
        if time.monotonic() >= self._next_purge:
            self._next_purge = time.monotonic() + PURGE_INTERVAL_S
            store.purge(MAX_PRE_LOGIN_SESSIONS)
        max_age = max(0, int((expires_at - datetime.now(UTC)).total_seconds()))
        return self._header(session_id, max_age, secure)

    def _header(self, value: str, max_age: int, secure: bool) -> str:
        parts = [f"{self.cookie}={value}", "Path=/", f"Max-Age={max_age}"]
        if max_age == 0:
            parts.append(f"Expires={_EXPIRED}")
        parts += ["HttpOnly", "SameSite=Strict"]
        if secure:
            parts.append("Secure")
        return "; ".join(parts)


async def _unavailable(scope: Scope, send: Send, error: RegistryUnavailable) -> None:
    """The registry cannot be read or written: 503 with the reason, as the API answers."""
    log.warning("console session: %s", error)
    if scope["type"] != "http":
        await send({"type": "websocket.close", "code": 1011})
        return
    body = json.dumps({"error": str(error)}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})

"""A local stand-in for SendGrid's v3 Mail Send, on loopback, for the real client to talk to.

It checks what the real service checks that our mailer could get wrong (the bearer token, the
request's JSON shape) and answers from a script, one reply per request: 202 with `X-Message-Id`
(the default once the script is used up), 429 with `Retry-After`, 500, 400, or a hang (no answer
until the server stops). Every request is recorded with the answer it got.
"""

import itertools
import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from resources.mailer import SendGridMailer

MAIL_SEND_PATH = "/v3/mail/send"
HANDLER_TIMEOUT_S = 5.0
HANG_MAX_S = 30.0  # a hung request is released when the server stops, at the latest after this
MAX_CATEGORIES = 10


@dataclass(frozen=True)
class Reply:
    status: int = 202
    retry_after: str | None = None
    hang: bool = False
    message: str = ""


def accept() -> Reply:
    return Reply(202)


def rate_limited(retry_after: str | None = "1") -> Reply:
    return Reply(429, retry_after=retry_after, message="too many requests")


def server_error() -> Reply:
    return Reply(500, message="internal error")


def bad_request(
    message: str = "The from address does not match a verified Sender Identity",
) -> Reply:
    return Reply(400, message=message)


def hang() -> Reply:
    return Reply(hang=True)


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # the parsed JSON, or the raw text if it was not JSON
    answered: int | None  # None: the server hung


@dataclass
class _State:
    api_key: str
    script: deque[Reply] = field(default_factory=deque)
    requests: list[ReceivedRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    released: threading.Event = field(default_factory=threading.Event)
    ids: itertools.count = field(default_factory=lambda: itertools.count(1))


def shape_problems(body: Any) -> list[str]:
    """What a v3 Mail Send body lacks, as SendGrid-style messages; empty if it is well formed."""
    if not isinstance(body, dict):
        return ["the request body must be a JSON object"]
    problems = _personalization_problems(body.get("personalizations"))
    sender = body.get("from")
    if not (isinstance(sender, dict) and _is_address(sender.get("email"))):
        problems.append("from.email must be a valid email address")
    if not (isinstance(body.get("subject"), str) and body["subject"].strip()):
        problems.append("subject is required")
    problems += _content_problems(body.get("content"))
    categories = body.get("categories")
    if not (
        isinstance(categories, list)
        and 0 < len(categories) <= MAX_CATEGORIES
        and all(isinstance(c, str) and c.isascii() and c for c in categories)
    ):
        problems.append("categories must be 1 to 10 non-empty ASCII strings")
    args = body.get("custom_args")
    if not (
        isinstance(args, dict)
        and args
        and all(isinstance(k, str) and isinstance(v, str) for k, v in args.items())
    ):
        problems.append("custom_args must map strings to strings")
    return problems


def _personalization_problems(items: Any) -> list[str]:
    if not (isinstance(items, list) and items):
        return ["personalizations must be a non-empty array"]
    for item in items:
        recipients = item.get("to") if isinstance(item, dict) else None
        if not (isinstance(recipients, list) and recipients):
            return ["personalizations[].to must be a non-empty array"]
        if not all(isinstance(r, dict) and _is_address(r.get("email")) for r in recipients):
            return ["personalizations[].to[].email must be a valid email address"]
    return []


def _content_problems(content: Any) -> list[str]:
    if not isinstance(content, list):
        return ["content must be an array"]
    types = [c.get("type") for c in content if isinstance(c, dict)]
    if types[:1] != ["text/plain"] or "text/html" not in types:
        return ["content must start with text/plain and include text/html"]
    if not all(isinstance(c.get("value"), str) and c["value"] for c in content):
        return ["content[].value must be a non-empty string"]
    return []


def _is_address(value: Any) -> bool:
    return isinstance(value, str) and value.count("@") == 1 and "." in value.split("@")[1]


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    timeout = HANDLER_TIMEOUT_S

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        state = self.server.state
        if self.path != MAIL_SEND_PATH:
            self._answer(body, 404, "not found")
        elif self.headers.get("Authorization") != f"Bearer {state.api_key}":
            self._answer(body, 401, "The provided authorization grant is invalid")
        elif problems := shape_problems(body):
            self._answer(body, 400, "; ".join(problems))
        else:
            self._scripted(body, state)

    def _scripted(self, body: Any, state: _State) -> None:
        with state.lock:
            reply = state.script.popleft() if state.script else accept()
        if reply.hang:
            self._record(body, None)
            state.released.wait(HANG_MAX_S)
            self.close_connection = True
            return
        self._answer(body, reply.status, reply.message, reply.retry_after)

    def _answer(self, body: Any, status: int, message: str, retry_after: str | None = None) -> None:
        self._record(body, status)
        payload = b"" if status == 202 else json.dumps({"errors": [{"message": message}]}).encode()
        self.send_response(status)
        if status == 202:
            self.send_header("X-Message-Id", f"fake-msg-{next(self.server.state.ids):04d}")
        if retry_after is not None:
            self.send_header("Retry-After", retry_after)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _record(self, body: Any, answered: int | None) -> None:
        request = ReceivedRequest(
            self.command, self.path, dict(self.headers.items()), body, answered
        )
        with self.server.state.lock:
            self.server.state.requests.append(request)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the tests read `requests` instead."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: _State) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


class FakeSendGrid:
    """Use as a context manager; `url` is the API host to give the real client."""

    def __init__(self, api_key: str) -> None:
        self._state = _State(api_key=api_key)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "the server is not running"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._state.lock:
            return list(self._state.requests)

    @property
    def delivered(self) -> list[ReceivedRequest]:
        """The requests answered 202: the emails SendGrid would have sent."""
        return [r for r in self.requests if r.answered == 202]

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with these replies, then 202 again."""
        with self._state.lock:
            self._state.script.extend(replies)

    def start(self) -> Self:
        self._server = _Server(self._state)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._state.released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=HANDLER_TIMEOUT_S)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def fast_mailer(fake: FakeSendGrid, **fields: object) -> "SendGridMailer":
    """The real SendGrid mailer pointed at `fake`, with timeouts and backoff sized for tests;
    `fields` (api_key and from_email at least) override the defaults."""
    from resources.mailer import SendGridMailer

    settings: dict[str, object] = {
        "api_host": fake.url,
        "timeout_s": 2.0,
        "max_total_s": 5.0,
        "backoff_base_s": 0.02,
        "backoff_max_s": 0.1,
        **fields,
    }
    return SendGridMailer(**settings)  # type: ignore[arg-type]

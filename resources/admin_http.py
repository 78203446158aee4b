"""HTTP for the admin console of a tenant's workload: a request as the workload read it, the
answer it sends, and the headers and cookies every answer of the console carries.

Standard library only and small, like the workload itself (`resources.workload_server` speaks
HTTP by hand and hands `/admin` requests to `resources.tenant_admin`).
"""

import json
from collections.abc import Mapping
from typing import NamedTuple
from urllib.parse import parse_qs, urlsplit

CONSOLE = "/admin"  # the cookies' path: the sign-in pages live under it too
MAX_FORM_FIELDS = 10
MAX_CLIENT_CHARS = 64
HTML = "text/html; charset=utf-8"
SECURITY_HEADERS = (
    ("Cache-Control", "no-store"),
    (
        "Content-Security-Policy",
        "default-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
)


class Request(NamedTuple):
    """One request as the workload read it: header names lower-case, the path without query."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    peer: str

    def cookie(self, name: str) -> str | None:
        for pair in self.headers.get("cookie", "").split(";"):
            key, _, value = pair.strip().partition("=")
            if key == name and value:
                return value
        return None

    @property
    def client(self) -> str:
        """Whom attempts are counted for: the address the edge saw (the last X-Forwarded-For
        it appends), else the peer. A local process can fake it, which the overall limit meets."""
        forwarded = self.headers.get("x-forwarded-for", "").rsplit(",", 1)[-1].strip()
        return (forwarded or self.peer)[:MAX_CLIENT_CHARS]

    @property
    def https(self) -> bool:
        return self.headers.get("x-forwarded-proto", "").strip().lower() == "https"

    @property
    def wants_html(self) -> bool:
        return "text/html" in self.headers.get("accept", "")

    @property
    def same_origin(self) -> bool:
        """No Origin (then the CSRF token decides) or one naming this very host."""
        origin = self.headers.get("origin")
        if origin is None:
            return True
        return urlsplit(origin).netloc.lower() == self.headers.get("host", "").lower()

    def form(self) -> dict[str, str] | None:
        """The url-encoded form's fields (first value of each); None if it is not one."""
        if "application/x-www-form-urlencoded" not in self.headers.get("content-type", ""):
            return None
        try:
            fields = parse_qs(self.body.decode(), max_num_fields=MAX_FORM_FIELDS)
        except ValueError:  # not UTF-8, or too many fields
            return None
        return {name: values[0] for name, values in fields.items()}


class Response(NamedTuple):
    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


def set_cookie(request: Request, name: str, value: str, max_age: int) -> tuple[str, str]:
    secure = "; Secure" if request.https else ""
    return (
        "Set-Cookie",
        f"{name}={value}; Path={CONSOLE}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}",
    )


def see_other(location: str, *headers: tuple[str, str]) -> Response:
    return Response(303, HTML, b"", (("Location", location), *headers, *SECURITY_HEADERS))


def json_answer(status: int, body: dict[str, str], *headers: tuple[str, str]) -> Response:
    data = json.dumps(body).encode()
    return Response(status, "application/json", data, (*headers, *SECURITY_HEADERS))

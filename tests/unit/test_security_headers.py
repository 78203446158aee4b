"""The security headers middleware (api.headers) around a real Starlette app, called as an ASGI
server calls it: which headers each path gets, and that a header the app set is never replaced
(the Dagster UI under /dagster brings its own Content-Security-Policy, with nonces)."""

import asyncio

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tenant_pipelines.api.headers import CONTENT_SECURITY_POLICY, SecurityHeaders

pytestmark = pytest.mark.unit

DAGSTER_CSP = "script-src 'nonce-abc' 'self'"


def answer(request: Request) -> PlainTextResponse:
    own = {"Content-Security-Policy": DAGSTER_CSP} if "own-csp" in request.url.path else {}
    return PlainTextResponse("ok", headers=own)


APP = SecurityHeaders(Starlette(routes=[Route("/{path:path}", answer)]))


def headers_of(path: str) -> dict[str, str]:
    """The response headers for GET `path`, as the ASGI server would send them."""
    started: list[dict[str, str]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.start":
            raw = message["headers"]
            assert isinstance(raw, list)
            started.append({k.decode().lower(): v.decode() for k, v in raw})

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [],
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1234),
    }
    asyncio.run(APP(scope, receive, send))
    assert len(started) == 1
    return started[0]


FRAME_SNIFF_REFERRER = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


@pytest.mark.parametrize("path", ["/console/tenants", "/v1/tenants", "/healthz", "/dagsterx"])
def test_own_pages_get_every_header(path: str) -> None:
    headers = headers_of(path)
    assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert headers["cache-control"] == "no-store"
    assert FRAME_SNIFF_REFERRER.items() <= headers.items()


def test_static_files_may_be_cached() -> None:
    headers = headers_of("/console/static/console.js")
    assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "cache-control" not in headers
    assert FRAME_SNIFF_REFERRER.items() <= headers.items()


@pytest.mark.parametrize("path", ["/dagster", "/dagster/runs/1", "/dagster/own-csp"])
def test_the_dagster_ui_keeps_its_own_policy(path: str) -> None:
    headers = headers_of(path)
    assert headers.get("content-security-policy") == (DAGSTER_CSP if "own-csp" in path else None)
    assert "cache-control" not in headers
    assert FRAME_SNIFF_REFERRER.items() <= headers.items()


def test_a_policy_the_response_carries_is_never_replaced() -> None:
    headers = headers_of("/console/own-csp")
    assert headers["content-security-policy"] == DAGSTER_CSP

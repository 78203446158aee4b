"""Browser hardening headers on every response of the API server.

The console's pages load nothing but this origin's own script and stylesheet, so its policy is
`default-src 'self'` with no inline script, style or handler: an injected `<script>` or `onclick=`
does not run. No other site may frame the console (clickjacking), sniff a JSON answer into a
script, or learn a tenant's path from the Referer; a shared browser or proxy keeps no copy of a
page that shows tenants.

The Dagster UI mounted under `/dagster` brings its own Content-Security-Policy (with per-page
nonces its pages need): there only the frame, nosniff and referrer headers are added. In general a
header a response already carries is never replaced.
"""

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
    ]
)
EVERYWHERE = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
OWN_PAGES = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Cache-Control": "no-store",
}
DAGSTER_PREFIX = "/dagster"
# The console's script and stylesheet: the same for everyone, so a browser may keep them.
STATIC_PREFIX = "/console/static/"


def headers_for(path: str) -> dict[str, str]:
    """The headers a response to `path` gets unless it already has them."""
    if path == DAGSTER_PREFIX or path.startswith(DAGSTER_PREFIX + "/"):
        return EVERYWHERE
    if path.startswith(STATIC_PREFIX):
        return {**EVERYWHERE, "Content-Security-Policy": CONTENT_SECURITY_POLICY}
    return {**EVERYWHERE, **OWN_PAGES}


class SecurityHeaders:
    """Pure ASGI middleware: adds the missing headers to each response as it starts."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        wanted = headers_for(scope["path"])

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in wanted.items():
                    if name not in headers:
                        headers.append(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)

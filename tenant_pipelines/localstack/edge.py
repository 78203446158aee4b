"""The local edge gateway: what stands where a load balancer would, for `tenantctl up`.

It answers by Host header. The route table (resources.route_table) says whether a host is a tenant
and whether its traffic is open; the deployer's state (resources.workload_state) says where its
workload listens. Both are read on every request, so provisioning takes effect without a reload;
neither imports Dagster, so a restarted edge serves again within a second.
Run as `python -m tenant_pipelines.localstack.edge --port M --data-dir D`.
"""

import argparse
import errno
import http.client
import io
import json
import signal
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any

from resources.route_table import lookup_route
from resources.workload_state import read_endpoint
from tenant_pipelines.localstack.request_head import (
    Refused,
    RequestHead,
    TimedSocketReader,
    check_framing,
    read_head,
)
from tenant_pipelines.support.loopback import LoopbackServer
from tenant_pipelines.support.redact import loggable_target, mask_secrets

PROXY_TIMEOUT_S = 30.0
CLIENT_TIMEOUT_S = 60.0
HEALTH_PATH = "/_edge/healthz"
# Headers that describe one connection, not the message: never relayed (RFC 9110, 7.6.1).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
RELAYED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Set again by this server on every response it sends.
OWN_RESPONSE_HEADERS = frozenset({"server", "date", "content-length"})


def host_name(header: str) -> str:
    """The Host header without its port, lowercased, as routes are keyed."""
    value = header.strip().lower()
    if value.startswith("["):  # IPv6 literal
        return value.split("]", 1)[0] + "]"
    return value.split(":", 1)[0].rstrip(".")


class EdgeHandler(BaseHTTPRequestHandler):
    """Decides per request: refused as malformed, health, unknown host, inactive tenant, or
    relayed to the workload. One request per connection (HTTP/1.0 answers)."""

    server: "EdgeServer"
    timeout = CLIENT_TIMEOUT_S
    head: RequestHead  # the request being served, once read and checked
    body: bytes
    default_request_version = "HTTP/1.0"  # a refusal before the version is known has a status line

    def setup(self) -> None:
        super().setup()
        self.input = TimedSocketReader(self.connection, self.server.client_timeout_s)
        self.connection.settimeout(self.server.client_timeout_s)
        self.rfile.close()  # the base class's reader: this one keeps deadlines
        self.rfile = io.BufferedReader(self.input)
        self.command, self.path, self.refusal = "", "", ""
        self.request_version = self.default_request_version

    def handle_one_request(self) -> None:
        """Read the head within its limits and deadline, check it, then serve: whatever the
        client sent, it hears a status or sees the connection close, never a traceback."""
        self.close_connection = True
        try:
            with self.input.deadline(self.server.client_timeout_s):
                head = read_head(self.rfile)
            if head is not None:
                self._serve(head)
        except Refused as refused:
            self._refuse(refused)
        except TimeoutError:
            self.log_error("closed a connection whose request did not arrive in time")

    def _serve(self, head: RequestHead) -> None:
        self.command, self.path, self.request_version = head.method, head.target, head.version
        if head.method not in RELAYED_METHODS:
            allow = ", ".join(sorted(RELAYED_METHODS))
            self._send_json(405, {"error": f"{head.method} is not served"}, {"Allow": allow})
            return
        length = check_framing(head)
        self.head, self.body = head, self.rfile.read(length) if length else b""
        if len(self.body) < length:
            raise Refused(400, "the request ended before its body did")
        self._dispatch()

    def _refuse(self, refused: Refused) -> None:
        self.refusal = refused.reason
        self._send_json(refused.status, {"error": refused.reason})

    def _dispatch(self) -> None:
        """Every request gets an answer: whatever stops the edge from serving one (registry
        unreadable, disk full) is a 503 with its reason, never a dropped connection."""
        if self.path.split("?", 1)[0] == HEALTH_PATH:
            self._send_json(200, {"status": "ok"})
            return
        host = host_name(self.head.host)
        try:
            self._route(host)
        except Exception as error:  # any cause: the client must hear why, not a reset
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            self.log_error("cannot serve %r: %s", host, reason)
            self._send_json(503, {"error": f"the edge cannot serve {host!r} now: {reason}"})

    def _route(self, host: str) -> None:
        route = lookup_route(self.server.data_dir, host)
        if route is None:
            self._send_json(404, {"error": f"unknown host {host!r}"})
        elif not route.is_open:
            self._send_json(503, {"error": f"tenant {route.tenant_key!r} is not active"})
        elif (port := read_endpoint(self.server.data_dir, route.tenant_key)) is None:
            self._send_json(503, {"error": f"tenant {route.tenant_key!r} has no live workload"})
        else:
            self._relay(port, host, route.tenant_key)

    def _relay(self, port: int, host: str, tenant_key: str) -> None:
        """Forward the request as received and send back whatever the workload answered."""
        upstream = http.client.HTTPConnection("127.0.0.1", port, timeout=PROXY_TIMEOUT_S)
        try:
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.head.fields:
                if name.lower() not in HOP_BY_HOP:
                    upstream.putheader(name, value)
            upstream.putheader("X-Forwarded-For", self.client_address[0])
            upstream.putheader("X-Forwarded-Host", host)
            upstream.endheaders(self.body or None)
            response = upstream.getresponse()
            data = response.read()
        except TimeoutError:
            self._send_json(504, {"error": f"tenant {tenant_key!r} did not answer in time"})
            return
        except ConnectionRefusedError:
            self._send_json(503, {"error": f"tenant {tenant_key!r} workload is down"})
            return
        except (OSError, http.client.HTTPException) as error:
            self._send_json(502, {"error": f"tenant {tenant_key!r} workload failed: {error}"})
            return
        finally:
            upstream.close()
        self.send_response(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in HOP_BY_HOP | OWN_RESPONSE_HEADERS:
                self.send_header(name, value)
        length_header = response.getheader("Content-Length") if self.command == "HEAD" else None
        self.send_header("Content-Length", length_header or str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _send_json(
        self, status: int, body: dict[str, object], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """One line per answer: method, path (no query string, secrets masked), status, and the
        reason of a refusal. Never a header: tokens and cookies travel there."""
        if self.path.split("?", 1)[0] == HEALTH_PATH:
            return
        status = code.value if isinstance(code, HTTPStatus) else code
        line = f'"{self.command or "-"} {loggable_target(self.path) or "-"}" {status}'
        self.log_message("%s", f"{line} ({self.refusal})" if self.refusal else line)

    def log_message(self, format: str, *args: object) -> None:
        # The base class escapes control characters; masking keeps secrets out of the rest.
        super().log_message("%s", mask_secrets(format % args))


class EdgeServer(LoopbackServer):
    """The gateway's listener; knows the data directory its routes and workloads live in."""

    request_queue_size = 128

    def __init__(
        self, port: int, data_dir: str, client_timeout_s: float = CLIENT_TIMEOUT_S
    ) -> None:
        self.data_dir = data_dir
        self.client_timeout_s = client_timeout_s
        super().__init__(port, EdgeHandler)

    def handle_error(self, request: object, client_address: Any) -> None:
        """A connection that broke mid-answer (the client left) is one line in the log, not a
        traceback: the edge keeps serving either way."""
        error = sys.exc_info()[1]
        reason = mask_secrets(f"{type(error).__name__}: {error}")
        print(f"edge: connection from {client_address[0]} ended: {reason}", file=sys.stderr)


def serve(port: int, data_dir: str, client_timeout_s: float = CLIENT_TIMEOUT_S) -> None:
    """Serve until SIGTERM or SIGINT; raises OSError if the port cannot be bound."""
    server = EdgeServer(port, data_dir, client_timeout_s)

    def stop(signum: int, frame: object) -> None:
        # shutdown() waits for serve_forever, which runs in this thread: ask from another one.
        threading.Thread(target=server.shutdown, daemon=True).start()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
    print(
        f"edge: serving http://127.0.0.1:{server.server_address[1]} (data dir {data_dir})",
        flush=True,
    )
    try:
        server.serve_forever()
    finally:
        server.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edge", description="The local edge gateway.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument(
        "--client-timeout",
        type=float,
        default=CLIENT_TIMEOUT_S,
        help="seconds a client has to send a request's head, and for each read and write after",
    )
    args = parser.parse_args(argv)
    try:
        serve(args.port, args.data_dir, args.client_timeout)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            print(f"edge: port {args.port} is already in use", file=sys.stderr)
        else:
            print(f"edge: cannot listen on port {args.port}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

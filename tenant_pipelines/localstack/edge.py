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
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler

from resources.route_table import lookup_route
from resources.workload_state import read_endpoint
from tenant_pipelines.support.loopback import LoopbackServer

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
# Set again by this server on every response it sends.
OWN_RESPONSE_HEADERS = frozenset({"server", "date", "content-length"})


def host_name(header: str) -> str:
    """The Host header without its port, lowercased, as routes are keyed."""
    value = header.strip().lower()
    if value.startswith("["):  # IPv6 literal
        return value.split("]", 1)[0] + "]"
    return value.split(":", 1)[0].rstrip(".")


class EdgeHandler(BaseHTTPRequestHandler):
    """Decides per request: health, unknown host, inactive tenant, or relay to the workload."""

    server: "EdgeServer"
    timeout = CLIENT_TIMEOUT_S

    def _dispatch(self) -> None:
        """Every request gets an answer: whatever stops the edge from serving one (registry
        unreadable, disk full) is a 503 with its reason, never a dropped connection."""
        if self.path.split("?", 1)[0] == HEALTH_PATH:
            self._send_json(200, {"status": "ok"})
            return
        host = host_name(self.headers.get("Host") or "")
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

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _dispatch

    def _relay(self, port: int, host: str, tenant_key: str) -> None:
        """Forward the request as received and send back whatever the workload answered."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self._send_json(411, {"error": "chunked request bodies are not supported"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else None
        upstream = http.client.HTTPConnection("127.0.0.1", port, timeout=PROXY_TIMEOUT_S)
        try:
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in HOP_BY_HOP:
                    upstream.putheader(name, value)
            upstream.putheader("X-Forwarded-For", self.client_address[0])
            upstream.putheader("X-Forwarded-Host", host)
            upstream.endheaders(body)
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

    def _send_json(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        if self.path.split("?", 1)[0] != HEALTH_PATH:
            super().log_message(format, *args)


class EdgeServer(LoopbackServer):
    """The gateway's listener; knows the data directory its routes and workloads live in."""

    request_queue_size = 128

    def __init__(self, port: int, data_dir: str) -> None:
        self.data_dir = data_dir
        super().__init__(port, EdgeHandler)


def serve(port: int, data_dir: str) -> None:
    """Serve until SIGTERM or SIGINT; raises OSError if the port cannot be bound."""
    server = EdgeServer(port, data_dir)

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
    args = parser.parse_args(argv)
    try:
        serve(args.port, args.data_dir)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            print(f"edge: port {args.port} is already in use", file=sys.stderr)
        else:
            print(f"edge: cannot listen on port {args.port}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The edge as a tenant's users meet it: HTTPS to the edge's port with the tenant's name in SNI
and in Host, the certificate checked against the platform's local CA (as a browser that trusts
it would); and plain HTTP, whose answers the edge gives itself (redirects, 404s)."""

import http.client
import json
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from resources.gateway import local_ca_root

TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> dict[str, object]:
        return json.loads(self.body)


class EdgeHTTPS(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1:`port` for `host` (a name like acme-widgets.localhost resolves to the
    loopback in a browser, not always here), verified against `ca_file`."""

    def __init__(self, port: int, host: str, ca_file: Path, timeout: float = TIMEOUT_S) -> None:
        self.tls = ssl.create_default_context(cafile=str(ca_file))
        super().__init__(host, port, timeout=timeout, context=self.tls)

    def connect(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        self.sock = self.tls.wrap_socket(sock, server_hostname=self.host)


def exchange(
    conn: http.client.HTTPConnection,
    path: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        lowered = {name.lower(): value for name, value in response.getheaders()}
        return Answer(response.status, lowered, response.read())
    finally:
        conn.close()


def https_get(
    port: int,
    data_dir: Path,
    host: str,
    path: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """`path` of tenant `host` through the edge's HTTPS port."""
    conn = EdgeHTTPS(port, host, local_ca_root(data_dir))
    return exchange(conn, path, method, body, headers)


def http_get(port: int, host: str, path: str) -> Answer:
    """`path` of `host` on the edge's plain-HTTP port."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
    return exchange(conn, path, headers={"Host": host})

"""HTTP over a Unix socket: how the platform talks to what listens on a path, not a port
(tenant workloads, the gateway's admin endpoint)."""

import http.client
import socket


class UnixHTTPConnection(http.client.HTTPConnection):
    """`http.client.HTTPConnection` whose transport is the Unix socket at `path`; `host` is only
    what the Host header says."""

    def __init__(self, path: str, timeout: float, host: str = "localhost") -> None:
        super().__init__(host, timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock

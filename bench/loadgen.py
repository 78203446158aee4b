"""A closed-loop HTTP/1.1 load generator: `clients` threads, each sending one GET after another
on raw sockets (no HTTP library: a response costs the generator a few microseconds of parsing).

    python -m bench.loadgen [--clients 16] [--seconds 3]    its own ceiling

A client keeps its connection while the server does (HTTP/1.1 without `Connection: close`) and
opens a new one for the next request otherwise, as an ordinary client would. A request's latency
runs from just before its bytes are written, or, when it is the first on a new connection, from
just before connect() (so it includes the TCP connect and any TLS handshake), to when the last
byte of its body has been read. A request counts only if it completed within the measured window,
which follows a warm-up; its status must be 2xx, else it counts as an error, as does an exception
(the connection is then dropped).

The threads share one interpreter lock, so the generator tops out near one core: its CPU per
request says where. Run as a module, it measures that ceiling: the same clients against a minimal
server in a process of its own (asyncio, one canned response), keep-alive and one connection per
request, with the CPU each side used (a minimal server busy on a whole core is the limit then).
"""

import argparse
import asyncio
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import percentile, print_table

RECV_BYTES = 65536
TIMEOUT_S = 10.0
ERROR_PAUSE_S = 0.001  # after a failed request: a refused connect must not spin a core
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Target:
    """Where requests go: TCP on 127.0.0.1:port or a Unix socket; TLS when `ca` is given (SNI
    and certificate checked for `host`, HTTP/1.1 offered by ALPN)."""

    host: str
    path: str
    port: int | None = None
    unix_socket: str | None = None
    ca: Path | None = None

    def request(self) -> bytes:
        return f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nAccept: */*\r\n\r\n".encode()


@dataclass
class ClientLog:
    done: list[tuple[float, float, bool]] = field(default_factory=list)  # ended, latency, fresh
    errors: list[float] = field(default_factory=list)  # when each failed


@dataclass(frozen=True)
class LoadResult:
    seconds: float
    latencies_s: list[float]
    errors: int
    connections: int  # opened by the requests counted
    cpu: dict[str, float]  # cores used over the window: "machine", "generator", each watched

    @property
    def rps(self) -> float:
        return len(self.latencies_s) / self.seconds

    @property
    def generator_us_per_request(self) -> float | None:
        """The generator's CPU per completed request: 1e6 / this is what one core of it serves."""
        return self.cpu["generator"] * 1e6 / self.rps if self.latencies_s else None

    def latency_ms(self, p: float) -> float | None:
        return percentile(self.latencies_s, p) * 1000 if self.latencies_s else None


class Failed(Exception):
    """The server's answer was not HTTP as expected."""


def _connect(target: Target, tls: ssl.SSLContext | None) -> socket.socket:
    if target.unix_socket is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(TIMEOUT_S)
        sock.connect(target.unix_socket)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(TIMEOUT_S)
        sock.connect(("127.0.0.1", target.port or 0))
    return tls.wrap_socket(sock, server_hostname=target.host) if tls else sock


def _read_response(sock: socket.socket) -> tuple[int, bool]:
    """Read one whole response; its status and whether the connection may be used again."""
    data = b""
    while (end := data.find(b"\r\n\r\n")) < 0:
        chunk = sock.recv(RECV_BYTES)
        if not chunk:
            raise Failed("connection closed before the response head")
        data += chunk
    lines = data[:end].decode("latin-1").split("\r\n")
    version, status = lines[0].split(" ", 2)[:2]
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    body = data[end + 4 :]
    keep = version == "HTTP/1.1" and headers.get("connection") != "close"
    if "transfer-encoding" in headers:
        _read_chunked(sock, body)
    elif "content-length" in headers:
        _read_exactly(sock, int(headers["content-length"]) - len(body))
    else:  # delimited by the end of the connection
        while sock.recv(RECV_BYTES):
            pass
        keep = False
    return int(status), keep


def _read_exactly(sock: socket.socket, missing: int) -> None:
    while missing > 0:
        chunk = sock.recv(min(missing, RECV_BYTES))
        if not chunk:
            raise Failed("connection closed within the body")
        missing -= len(chunk)


def _read_chunked(sock: socket.socket, data: bytes) -> None:
    while True:
        while (eol := data.find(b"\r\n")) < 0:
            data += _recv(sock)
        size = int(data[:eol].split(b";")[0], 16)
        data = data[eol + 2 :]
        while len(data) < size + 2:
            data += _recv(sock)
        data = data[size + 2 :]
        if size == 0:  # no trailers expected: the last chunk's CRLF ends the message
            return


def _recv(sock: socket.socket) -> bytes:
    chunk = sock.recv(RECV_BYTES)
    if not chunk:
        raise Failed("connection closed within a chunked body")
    return chunk


def fetch_status(target: Target) -> int:
    """One request on a connection of its own: the answer's status."""
    tls = tls_context(target.ca) if target.ca else None
    with _connect(target, tls) as sock:
        sock.sendall(target.request())
        return _read_response(sock)[0]


def _client(target: Target, tls: ssl.SSLContext | None, stop: float, log: ClientLog) -> None:
    request = target.request()
    sock: socket.socket | None = None
    while (started := time.perf_counter()) < stop:
        try:
            fresh = sock is None
            if sock is None:
                sock = _connect(target, tls)
            sock.sendall(request)
            status, keep = _read_response(sock)
            if not keep:
                sock.close()
                sock = None
        except (OSError, ValueError, Failed):
            if sock is not None:
                sock.close()
                sock = None
            log.errors.append(time.perf_counter())
            time.sleep(ERROR_PAUSE_S)
            continue
        ended = time.perf_counter()
        if 200 <= status < 300:
            log.done.append((ended, ended - started, fresh))
        else:
            log.errors.append(ended)
    if sock is not None:
        sock.close()


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU the processes have used so far (those gone count nothing)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU time all cores have spent not idle so far (/proc/stat), the kernel's included."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields) - idle) / CLK_TCK


def tls_context(ca: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["http/1.1"])
    return context


def run_load(
    target: Target,
    clients: int,
    seconds: float,
    warmup_s: float = 1.0,
    watch: dict[str, list[int]] | None = None,
) -> LoadResult:
    """`clients` threads for `warmup_s` + `seconds`; what completed in the last `seconds`.
    `watch`: processes (by label) whose CPU use over the window is reported beside the
    generator's own and the whole machine's."""
    tls = tls_context(target.ca) if target.ca else None
    watched = {"generator": [os.getpid()], **(watch or {})}

    def used() -> dict[str, float]:
        pids = {name: cpu_seconds(pids) for name, pids in watched.items()}
        return {"machine": machine_busy_seconds(), **pids}

    begin = time.perf_counter()
    window_start, stop = begin + warmup_s, begin + warmup_s + seconds
    logs = [ClientLog() for _ in range(clients)]
    threads = [
        threading.Thread(target=_client, args=(target, tls, stop, log), daemon=True) for log in logs
    ]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, window_start - time.perf_counter()))
    before = used()
    time.sleep(max(0.0, stop - time.perf_counter()))
    cpu = {name: (after - before[name]) / seconds for name, after in used().items()}
    for thread in threads:
        thread.join(TIMEOUT_S + 1)

    def within(when: float) -> bool:
        return window_start <= when <= stop

    done = [(latency, fresh) for log in logs for ended, latency, fresh in log.done if within(ended)]
    return LoadResult(
        seconds=seconds,
        latencies_s=[latency for latency, _ in done],
        errors=sum(1 for log in logs for when in log.errors if within(when)),
        connections=sum(1 for _, fresh in done if fresh),
        cpu=cpu,
    )


CANNED_BODY = b'{"issuer": "https://ceiling.localhost", "padding": "' + b"x" * 600 + b'"}'


def canned_response(close: bool) -> bytes:
    head = (
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(CANNED_BODY)}\r\n"
        f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
    )
    return head.encode() + CANNED_BODY


class Canned(asyncio.Protocol):
    """The minimal server: one canned 200 per request head, closing after it if `close`."""

    close = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport, self.buffer = transport, b""
        self.response = canned_response(self.close)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            self.buffer = self.buffer[end + 4 :]
            self.transport.write(self.response)
            if self.close:
                self.transport.close()
                return


async def serve_canned(close: bool) -> None:
    """Print the port, then serve until killed."""
    Canned.close = close
    server = await asyncio.get_running_loop().create_server(Canned, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()


def ceiling(clients: int, seconds: float) -> list[dict[str, Any]]:
    """The generator against the minimal server (a child process, stopped by its PID)."""
    rows: list[dict[str, Any]] = []
    for mode in ("keep-alive", "close"):
        server = subprocess.Popen(
            [sys.executable, "-m", "bench.loadgen", "--serve", mode],
            stdout=subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[1],
        )
        try:
            assert server.stdout is not None
            port = int(server.stdout.readline())
            target = Target(host="ceiling.localhost", path="/", port=port)
            result = run_load(target, clients, seconds, watch={"server": [server.pid]})
        finally:
            server.kill()
            server.wait()
        rows.append(
            {
                "connections": mode,
                "req_s": result.rps,
                "p50_ms": result.latency_ms(50),
                "p99_ms": result.latency_ms(99),
                "errors": result.errors,
                "generator_cpu": result.cpu["generator"],
                "generator_us_per_req": result.generator_us_per_request or 0.0,
                "server_cpu": result.cpu["server"],
                "machine_cpu": result.cpu["machine"],
            }
        )
    return rows


def ceiling_summary(rows: list[dict[str, Any]]) -> str:
    """What the ceiling means: one core of the generator, at its CPU cost per request."""
    return "; ".join(
        f"{row['connections']}: {row['generator_us_per_req']:.0f} us of generator CPU per request"
        f" (~{1e6 / row['generator_us_per_req']:.0f} req/s on a core of its own), minimal server at"
        f" {row['server_cpu']:.2f} cores"
        for row in rows
        if row["generator_us_per_req"]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--serve", choices=["keep-alive", "close"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve_canned(close=args.serve == "close"))
        return
    rows = ceiling(args.clients, args.seconds)
    print_table(rows, list(rows[0]))
    print(ceiling_summary(rows))


if __name__ == "__main__":
    main()

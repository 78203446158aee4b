"""Issue 18, finding 7: the edge crashed on a malformed request line (an empty reply and an
`AttributeError` traceback in its log) and answered `Content-Length: abc` with a 503. Now every
malformed request gets a 4xx status or a closed connection, never a traceback, and the edge keeps
serving: the two requests of the finding, a fuzz loop of 2,000 malformed requests of every kind
the issue names, and clients that send too slowly."""

import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from resources.deployer import LocalProcessDeployer
from resources.identity import LocalSQLiteIdentityStore
from resources.traffic import LocalEdgeRoutes
from tests.edge_fuzz import KINDS, malformed_requests
from tests.integration.test_edge import ACME, DOMAIN, free_port, request, start_edge, wait_until_up

pytestmark = pytest.mark.integration

TENANT_HOST = "acme-corp.localhost"
CLIENT_TIMEOUT_S = 2.0  # the edge's, for this test: slow clients are dropped after it
ANSWER_TIMEOUT_S = 10.0  # the test's: an edge that neither answers nor closes by then fails
FUZZ_COUNT = 2000
FUZZ_SEED = 18


@dataclass(frozen=True)
class RunningEdge:
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def assert_healthy(self) -> None:
        """Alive, no traceback in its log, and a real tenant's workload served through it."""
        assert self.process.poll() is None, "the edge exited"
        log = self.log_text()
        assert "Traceback" not in log and "Exception occurred" not in log, log[-3000:]
        served = request(self.port, TENANT_HOST, "/.well-known/openid-configuration")
        assert served.status == 200, served.body
        assert served.json()["issuer"] == f"https://{TENANT_HOST}"


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEdge]:
    """An edge in front of one real tenant workload (ACME), as `tenantctl up` runs it."""
    data_dir = tmp_path_factory.mktemp("edge").resolve()
    LocalSQLiteIdentityStore(data_dir=str(data_dir)).ensure(ACME)
    deployer = LocalProcessDeployer(data_dir=str(data_dir), domain=DOMAIN)
    port, log = free_port(), data_dir / "edge.log"
    process = start_edge(port, data_dir, log, "--client-timeout", str(CLIENT_TIMEOUT_S))
    try:
        deployer.ensure(ACME)
        LocalEdgeRoutes(data_dir=str(data_dir), domain=DOMAIN).open(ACME)
        wait_until_up(port, process)
        yield RunningEdge(port, process, log)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        deployer.stop_all()
    assert deployer.list_existing() == set()


def exchange(port: int, data: bytes) -> bytes:
    """Send `data` and end the request, then read until the edge closes: what it answered, b""
    if it closed without a word. A reset (the edge closed on unread input) counts as closed;
    an edge that neither answers nor closes in time fails the test (socket timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_TIMEOUT_S) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except TimeoutError:
            raise
        except OSError:  # closed before it had all of it (a head too long): it may have answered
            pass
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
        return answer


def status_of(answer: bytes) -> int | None:
    """The status code of an HTTP answer; None for a closed connection."""
    if not answer:
        return None
    assert answer.startswith(b"HTTP/1."), answer[:200]
    return int(answer.split(b" ", 2)[1])


def test_a_garbage_request_line_is_a_400_and_no_traceback(edge: RunningEdge) -> None:
    answer = exchange(edge.port, b"GARBAGE\r\n\r\n")
    assert status_of(answer) == 400, answer
    assert b'"error": "the request line is not' in answer
    edge.assert_healthy()


def test_a_content_length_that_is_no_number_is_a_400(edge: RunningEdge) -> None:
    sent = f"POST /token HTTP/1.1\r\nHost: {TENANT_HOST}\r\nContent-Length: abc\r\n\r\n"
    answer = exchange(edge.port, sent.encode())
    assert status_of(answer) == 400, answer
    assert b"Content-Length is not a number of bytes" in answer
    edge.assert_healthy()


def test_2000_malformed_requests_get_a_4xx_or_a_closed_connection(edge: RunningEdge) -> None:
    answered: dict[str, set[int | None]] = {}
    for kind, data in malformed_requests(FUZZ_COUNT, TENANT_HOST, FUZZ_SEED):
        status = status_of(exchange(edge.port, data))
        assert status is None or 400 <= status < 500, (kind, data[:300], status)
        answered.setdefault(kind, set()).add(status)
    assert len(answered) == len(KINDS)  # every kind was sent
    # The edge answered (rather than only dropped) every kind but the TLS handshake's.
    assert all(statuses - {None} for kind, statuses in answered.items()), answered
    edge.assert_healthy()


def wait_closed(sock: socket.socket, within_s: float, drip: bytes = b"") -> float:
    """Seconds until the edge closes `sock`, sending one byte of `drip` every 0.2 s meanwhile."""
    started = time.monotonic()
    sock.settimeout(0.2)
    for byte in [drip[i : i + 1] for i in range(len(drip))] or [b""] * 10_000:
        if time.monotonic() - started > within_s:
            raise AssertionError(f"the edge kept a slow client for over {within_s} s")
        try:
            if byte:
                sock.sendall(byte)
            if sock.recv(65536) == b"":
                return time.monotonic() - started
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - started
    raise AssertionError("the edge answered before the request was complete")


@pytest.mark.parametrize(
    ("sent", "drip"),
    [
        pytest.param(b"", b"", id="connects-and-says-nothing"),
        pytest.param(f"GET / HTTP/1.1\r\nHost: {TENANT_HOST}\r\n".encode(), b"", id="half-a-head"),
        pytest.param(b"GET / HTTP/1.1\r\n", b"X-Slow: " + b"z" * 200, id="drips-one-header"),
        pytest.param(
            f"POST / HTTP/1.1\r\nHost: {TENANT_HOST}\r\nContent-Length: 10\r\n\r\nab".encode(),
            b"",
            id="half-a-body",
        ),
    ],
)
def test_a_client_that_sends_too_slowly_is_dropped(
    edge: RunningEdge, sent: bytes, drip: bytes
) -> None:
    with socket.create_connection(("127.0.0.1", edge.port), timeout=ANSWER_TIMEOUT_S) as sock:
        sock.sendall(sent)
        waited = wait_closed(sock, CLIENT_TIMEOUT_S + 5, drip)
    assert waited >= CLIENT_TIMEOUT_S - 0.5
    edge.assert_healthy()

"""Issue 18, finding 7 (the old Python edge crashed on a malformed request line), held against
the gateway that replaced it (Caddy): the two requests of the finding are 400s, 2,000 fuzzed
requests of every kind the issue names (on the plain-HTTP port, and one in twenty inside TLS on the
HTTPS port) never break the edge, and clients that send too slowly are dropped.

Caddy (Go's HTTP server) tolerates what RFC 9112 lets a server tolerate and the old edge refused:
a folded header line, a repeated Content-Length of the same value, Transfer-Encoding beside
Content-Length (read as chunked, the length dropped before relaying), a request line over 8 KiB,
more than 100 fields. Those are answered as any request is (on the plain port: a redirect to
HTTPS, or 404). What is invalid whatever the reading (a length that is no number, HTTP/0.9, TLS
bytes on the plain port) is always a 4xx or a closed connection; no answer is a 5xx but the two
RFC 9110 gives for what a server does not implement (501: a transfer coding, 505: a version)."""

import http.client
import socket
import ssl
import time
from collections.abc import Iterator

import pytest

from resources.gateway import local_ca_root
from tests.edge_fuzz import KINDS, malformed_requests
from tests.stack_fixtures import StackOptions
from tests.stack_helpers import Stack

pytestmark = pytest.mark.e2e

ORG = "fuzz"
TENANT_HOST = f"acme-{ORG}.localhost"
CLIENT_TIMEOUT_S = 1  # the edge's, for this test (TENANT_EDGE_CLIENT_TIMEOUT_S)
ANSWER_TIMEOUT_S = 10.0  # the test's: an edge that neither answers nor closes by then fails
FUZZ_COUNT = 2000
TLS_SHARE = 20  # every twentieth malformed request goes inside TLS to the HTTPS port
FUZZ_SEED = 18
ALWAYS_REFUSED = {"bad_length", "http09", "tls_client_hello"}  # invalid whatever the reading
NOT_IMPLEMENTED = {501, 505}


@pytest.fixture(scope="module")
def stack_options() -> StackOptions:
    return StackOptions(env={"TENANT_EDGE_CLIENT_TIMEOUT_S": str(CLIENT_TIMEOUT_S)})


@pytest.fixture(scope="module")
def edge(stack: Stack) -> Iterator[Stack]:
    """The stack's edge in front of one real, active tenant."""
    stack.cli(
        *("request", "--slug", "acme", "--org", ORG, "--plan", "free"),
        *("--admin-email", "admin@acme.example.com", "--caller", "sec", "--role", "platform-admin"),
    )
    assert stack.wait_for_state("acme", {"active", "failed"})["state"] == "active"
    yield stack


def assert_healthy(stack: Stack) -> None:
    """Alive, and the tenant's workload served through it."""
    served = stack.edge_get(TENANT_HOST, "/.well-known/openid-configuration")
    assert served.status == 200, served.body
    assert served.json()["issuer"] == f"https://{TENANT_HOST}:{stack.https_port}"


def connect(stack: Stack, tls: bool = False) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", stack.https_port if tls else stack.edge_port))
    sock.settimeout(ANSWER_TIMEOUT_S)
    if not tls:
        return sock
    context = ssl.create_default_context(cafile=str(local_ca_root(stack.data_dir)))
    return context.wrap_socket(sock, server_hostname=TENANT_HOST)


def exchange(stack: Stack, data: bytes, tls: bool = False) -> bytes:
    """Send `data` and end the request, then read the first answer's status line as a client
    reads it: b"" if the edge closed without a word (a reset counts as closed). On the plain
    port the request is ended by half-closing; TLS cannot half-close, so there a request cut
    short waits for the edge's client timeout. An edge that neither answers nor closes in time
    fails the test (socket timeout)."""
    with connect(stack, tls) as sock:
        try:
            sock.sendall(data)
            if not tls:
                sock.shutdown(socket.SHUT_WR)
        except TimeoutError:
            raise
        except OSError:  # closed before it had all of it (a head too long): it may have answered
            pass
        return first_answer(sock, data.split(b" ", 1)[0].decode("latin-1"))


def first_answer(sock: socket.socket, method: str) -> bytes:
    """The status line of the first answer (b"" if none came)."""
    response = http.client.HTTPResponse(sock, method=method)  # type: ignore[arg-type]
    try:
        response.begin()
    except (http.client.HTTPException, ConnectionResetError, ssl.SSLError):
        return b""
    return f"HTTP/1.1 {response.status} {response.reason}\r\n\r\n".encode()


def status_of(answer: bytes) -> int | None:
    """The status code of an HTTP answer; None for a closed connection."""
    if not answer:
        return None
    assert answer.startswith(b"HTTP/1."), answer[:200]
    return int(answer.split(b" ", 2)[1])


def test_a_garbage_request_line_is_a_400(edge: Stack) -> None:
    answer = exchange(edge, b"GARBAGE\r\n\r\n")
    assert status_of(answer) == 400, answer
    assert_healthy(edge)


def test_a_content_length_that_is_no_number_is_a_400(edge: Stack) -> None:
    sent = f"POST /token HTTP/1.1\r\nHost: {TENANT_HOST}\r\nContent-Length: abc\r\n\r\n"
    for tls in (False, True):
        answer = exchange(edge, sent.encode(), tls)
        assert status_of(answer) == 400, (tls, answer)
    assert_healthy(edge)


# Hosts whose first label could be read as a path by the route markers (edge/open/<label>).
PATH_LIKE_HOSTS = [
    "..localhost",
    ".localhost",
    "open.localhost",
    "to.localhost",
    "closed.localhost",
    "%2e%2e.localhost",
    f"acme-{ORG}%2f..localhost",
    f"acme-{ORG}/...localhost",
    f"x.acme-{ORG}.localhost",
    f"acme-{ORG}\\..localhost",
]


@pytest.mark.parametrize("host", PATH_LIKE_HOSTS)
def test_a_host_never_names_a_path_among_the_route_markers(edge: Stack, host: str) -> None:
    """The gateway finds a tenant's route by a file named after its host's first label: a host
    that reads as a path (or names the markers' own directories) is refused or unknown, never
    relayed, redirected or told "not active"."""
    sent = f"GET /admin HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    answer = exchange(edge, sent.encode())
    assert status_of(answer) in {400, 404, None}, (host, answer)
    upper = f"GET /admin HTTP/1.1\r\nHost: {TENANT_HOST.upper()}\r\n\r\n"
    assert status_of(exchange(edge, upper.encode())) == 308  # a real host, in any case
    assert_healthy(edge)


def test_2000_malformed_requests_never_break_the_edge(edge: Stack) -> None:
    answered: dict[str, set[int | None]] = {}
    for n, (kind, data) in enumerate(malformed_requests(FUZZ_COUNT, TENANT_HOST, FUZZ_SEED)):
        # A request cut short cannot be ended inside TLS but by closing it (no half-close):
        # those go to the plain port, where the edge answers without relaying.
        tls = n % TLS_SHARE == 0 and kind != "truncated"
        status = status_of(exchange(edge, data, tls))
        refused = status is None or 400 <= status < 500
        if kind in ALWAYS_REFUSED:
            assert refused, (kind, tls, data[:300], status)
        assert refused or status in NOT_IMPLEMENTED or status < 500, (kind, tls, data[:300], status)
        if not tls:  # nothing is relayed from the plain port: the edge answers itself
            assert refused or status in {308, 404, *NOT_IMPLEMENTED}, (kind, data[:300], status)
        answered.setdefault(kind, set()).add(status)
    assert len(answered) == len(KINDS)  # every kind was sent
    assert_healthy(edge)


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
def test_a_client_that_sends_too_slowly_is_dropped(edge: Stack, sent: bytes, drip: bytes) -> None:
    with connect(edge) as sock:
        sock.sendall(sent)
        waited = wait_closed(sock, CLIENT_TIMEOUT_S + 5, drip)
    assert waited >= CLIENT_TIMEOUT_S - 0.5
    assert_healthy(edge)

"""How the edge reads and checks a request's head (localstack.request_head), rule by rule; the
edge as a real process is tested in tests/security/test_edge_malformed.py."""

import io

import pytest

from tenant_pipelines.localstack.request_head import (
    MAX_BODY_BYTES,
    Refused,
    RequestHead,
    check_framing,
    read_head,
)

pytestmark = pytest.mark.unit

HOST = b"Host: acme-corp.localhost:8080\r\n"


def head_of(data: bytes) -> RequestHead | None:
    return read_head(io.BytesIO(data))


def refusal(data: bytes) -> tuple[int, str]:
    with pytest.raises(Refused) as refused:
        head = head_of(data)
        assert head is not None
        check_framing(head)
    return refused.value.status, refused.value.reason


def test_a_well_formed_head_is_read_as_sent() -> None:
    data = (
        b"\r\nPOST /token?x=1 HTTP/1.1\r\n" + HOST + b"Content-Length: 4\r\nX-A:\t b \r\n\r\nbody"
    )
    stream = io.BytesIO(data)
    head = read_head(stream)
    assert head == RequestHead(
        "POST",
        "/token?x=1",
        "HTTP/1.1",
        (("Host", "acme-corp.localhost:8080"), ("Content-Length", "4"), ("X-A", "b")),
    )
    assert check_framing(head) == 4
    assert stream.read() == b"body"  # the body is left for the relay


def test_a_closed_connection_is_no_request() -> None:
    assert head_of(b"") is None


def test_http_1_0_may_omit_the_host() -> None:
    head = head_of(b"GET / HTTP/1.0\n\n")  # bare newlines are tolerated (RFC 9112 2.2)
    assert head is not None and check_framing(head) == 0 and head.host == ""


@pytest.mark.parametrize(
    "line",
    [
        b"GARBAGE",
        b"GET /",  # HTTP/0.9
        b"GET / HTTP/2.0",
        b"GET http://acme-corp.localhost/ HTTP/1.1",
        b"GET  / HTTP/1.1",
        b"GET / HTTP/1.1 more",
        b"GET /\x00 HTTP/1.1",
        b"GET /caf\xc3\xa9 HTTP/1.1",
        b"\x16\x03\x01\x02\x00\x01\x00",
    ],
)
def test_a_bad_request_line_is_400(line: bytes) -> None:
    assert refusal(line + b"\r\n" + HOST + b"\r\n")[0] == 400


@pytest.mark.parametrize(
    "field",
    [b"X-Folded: a\r\n b", b"NoColon", b"X A: 1", b"Host : x", b"X-Nul: a\x00b", b"X-8bit: \xe9"],
)
def test_a_bad_header_field_is_400(field: bytes) -> None:
    assert refusal(b"GET / HTTP/1.1\r\n" + HOST + field + b"\r\n\r\n")[0] == 400


@pytest.mark.parametrize(
    ("fields", "status", "reason"),
    [
        (b"", 400, "exactly one Host"),
        (HOST + HOST, 400, "exactly one Host"),
        (b"Host: a b\r\n", 400, "not a host name"),
        (b"Host: x:port\r\n", 400, "not a host name"),
        (HOST + b"Content-Length: abc\r\n", 400, "not a number"),
        (HOST + b"Content-Length: -1\r\n", 400, "not a number"),
        (HOST + b"Content-Length: 1\r\nContent-Length: 2\r\n", 400, "more than one"),
        (HOST + b"Content-Length: 1\r\nContent-Length: 1\r\n", 400, "more than one"),
        (HOST + b"Content-Length: %d\r\n" % (MAX_BODY_BYTES + 1), 413, "limited"),
        (HOST + b"Transfer-Encoding: chunked\r\nContent-Length: 1\r\n", 400, "both"),
        (HOST + b"Transfer-Encoding: chunked\r\n", 411, "chunked"),
    ],
)
def test_an_ambiguous_host_or_framing_is_refused(fields: bytes, status: int, reason: str) -> None:
    answered = refusal(b"POST / HTTP/1.1\r\n" + fields + b"\r\n")
    assert answered[0] == status and reason in answered[1]


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET /" + b"a" * 8 * 1024 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"v" * 8 * 1024 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\n" + b"X-F: 1\r\n" * 101 + b"\r\n", 431),
        (b"GET / HTTP/1.1\r\n" + (b"X-F: " + b"v" * 4000 + b"\r\n") * 17 + b"\r\n", 431),
    ],
)
def test_a_head_past_its_limits_is_refused(data: bytes, status: int) -> None:
    assert refusal(data)[0] == status


@pytest.mark.parametrize("cut", [b"GET / HTT", b"GET / HTTP/1.1\r\nHost: a", b"GET / HTTP/1.1\r\n"])
def test_a_head_cut_short_is_400(cut: bytes) -> None:
    assert refusal(cut)[0] == 400

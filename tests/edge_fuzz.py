"""Malformed HTTP requests for the edge, generated deterministically: a seeded random choice of
kind (the ways a request can be malformed that issue 18 names) and of its details. Every one is
malformed by construction, so the only right answers are a 4xx status or a closed connection."""

import random
from collections.abc import Callable, Iterator

Make = Callable[[random.Random, str], bytes]
CRLF = b"\r\n"
METHODS = [b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH"]


def well_formed(rng: random.Random, host: str, body: bytes = b"") -> bytes:
    """A request the edge would relay to `host`'s workload: what the mutators start from."""
    method = rng.choice(METHODS) if not body else b"POST"
    path = rng.choice([b"/", b"/admin", b"/.well-known/openid-configuration", b"/a?b=c"])
    lines = [method + b" " + path + b" HTTP/1.1", b"Host: " + host.encode(), b"Accept: */*"]
    if body:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return CRLF.join(lines) + CRLF + CRLF + body


def _head(host: str, *fields: bytes, line: bytes = b"POST / HTTP/1.1") -> bytes:
    return CRLF.join([line, b"Host: " + host.encode(), *fields]) + CRLF + CRLF


def _printable(rng: random.Random, size: int) -> bytes:
    return bytes(rng.randrange(0x21, 0x7F) for _ in range(size))


def garbage_line(rng: random.Random, host: str) -> bytes:
    line = rng.choice(
        [
            b"GARBAGE",
            _printable(rng, rng.randrange(1, 40)),
            b"GET / HTTP/1.1 extra",
            b"GET  / HTTP/1.1",
            b"GET /",
            b"GET http://" + host.encode() + b"/ HTTP/1.1",
            b"GET * HTTP/1.1",
            b"GET / HTTP/2.0",
            b"GET / HTTPS/1.1",
            b"GET / HTTP/1",
            b"GET / HTTP/1.1\r",
            b"PRI * HTTP/2.0",
            b" GET / HTTP/1.1",
            b"\tGET / HTTP/1.1",
        ]
    )
    return line + CRLF + b"Host: " + host.encode() + CRLF + CRLF


def bad_length(rng: random.Random, host: str) -> bytes:
    value = rng.choice(
        [b"abc", b"-1", b"+1", b"1.5", b"0x10", b"", b"1 2", b"1e3", b"\xef\xbc\x91", b"1,1"]
    )
    return _head(host, b"Content-Length: " + value + rng.choice([b"", b" "]))


def conflicting_lengths(rng: random.Random, host: str) -> bytes:
    first = rng.randrange(0, 50)
    second = rng.choice([first, first + rng.randrange(1, 50)])
    fields = [b"Content-Length: %d" % first, b"Content-Length: %d" % second]
    return _head(host, *rng.sample(fields, 2)) + b"x" * max(first, second)


def transfer_encoding_and_length(rng: random.Random, host: str) -> bytes:
    coding = rng.choice([b"chunked", b"gzip, chunked", b"identity", b"Chunked", b"chunked, gzip"])
    fields = [b"Transfer-Encoding: " + coding, b"Content-Length: 5"]
    return _head(host, *rng.sample(fields, 2)) + b"5\r\nhello\r\n0\r\n\r\n"


def oversized_line(rng: random.Random, host: str) -> bytes:
    path = b"/" + b"a" * rng.randrange(8 * 1024, 70 * 1024)
    return _head(host, line=b"GET " + path + b" HTTP/1.1")


def oversized_head(rng: random.Random, host: str) -> bytes:
    shape = rng.randrange(3)
    if shape == 0:  # one field line too long
        fields = [b"X-Big: " + b"v" * rng.randrange(8 * 1024, 20 * 1024)]
    elif shape == 1:  # too many fields
        fields = [b"X-F%d: 1" % i for i in range(rng.randrange(101, 400))]
    else:  # too many bytes in all
        fields = [b"X-F%d: " % i + b"v" * 7000 for i in range(rng.randrange(10, 30))]
    return _head(host, *fields, line=b"GET / HTTP/1.1")


def http09(rng: random.Random, host: str) -> bytes:
    path = rng.choice([b"/", b"/admin", b"/" + _printable(rng, 10).replace(b" ", b"")])
    return b"GET " + path + rng.choice([CRLF, CRLF + CRLF, b"\n"])


def tls_client_hello(rng: random.Random, host: str) -> bytes:
    body = bytes(rng.randrange(256) for _ in range(rng.randrange(40, 500)))
    record = b"\x01" + len(body).to_bytes(3, "big") + b"\x03\x03" + body
    return b"\x16\x03\x01" + len(record).to_bytes(2, "big") + record


def odd_bytes(rng: random.Random, host: str) -> bytes:
    """A byte no head may carry (NUL, a control, non-ASCII) anywhere in a well-formed head."""
    head = well_formed(rng, host)
    at = rng.randrange(0, len(head) - 1)  # before the head's last newline
    odd = rng.choice([0, *range(1, 9), 11, 12, *range(14, 32), 127, *range(128, 256)])
    return head[:at] + bytes([odd]) + head[at:]


def bad_host(rng: random.Random, host: str) -> bytes:
    line = b"GET / HTTP/1.1"
    shapes = [
        [],
        [b"Host:"],
        [b"Host: a b"],
        [b"Host: " + host.encode() + b":abc"],
        [b"Host: " + host.encode() + b"/evil"],
        [b"Host: user@" + host.encode()],
        [b"Host: [::1"],
        [b"Host: _"],
        [b"Host: " + host.encode(), b"Host: " + host.encode()],
        [b"Host: " + host.encode(), b"Host: other.localhost"],
        [b"Host : " + host.encode()],
    ]
    return CRLF.join([line, *rng.choice(shapes)]) + CRLF + CRLF


def malformed_field(rng: random.Random, host: str) -> bytes:
    field = rng.choice(
        [b"X-Folded: a\r\n continued", b"NoColon", b": empty-name", b"X A: 1", b"X-Tab\t: 1"]
    )
    return _head(host, field, line=b"GET / HTTP/1.1")


def truncated(rng: random.Random, host: str) -> bytes:
    """A request with a body, cut anywhere before its end."""
    whole = well_formed(rng, host, body=b"payload=" + _printable(rng, rng.randrange(1, 60)))
    return whole[: rng.randrange(1, len(whole))]


KINDS: list[Make] = [
    garbage_line,
    bad_length,
    conflicting_lengths,
    transfer_encoding_and_length,
    oversized_line,
    oversized_head,
    http09,
    tls_client_hello,
    odd_bytes,
    bad_host,
    malformed_field,
    truncated,
]


def malformed_requests(count: int, host: str, seed: int) -> Iterator[tuple[str, bytes]]:
    """`count` malformed requests to `host`, the same ones for the same seed: (kind, bytes)."""
    rng = random.Random(seed)
    for i in range(count):
        make = KINDS[i % len(KINDS)] if i < len(KINDS) else rng.choice(KINDS)
        yield make.__name__, make(rng, host)

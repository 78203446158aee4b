"""Reading a request's head at the edge: within limits, against a deadline, and strictly.

The edge is the one door that anyone who reaches the host's address can knock on, so it reads
a request as RFC 9112 says a server must: a request line of three parts, header lines of a name,
a colon and visible ASCII, one Host, one Content-Length (or none) and never beside a
Transfer-Encoding, as a proxy must to keep a smuggled second request out of the workload's
stream. Anything else is refused with a 4xx status and its reason before any routing happens; a
head that is too long, has too many fields, or comes in too slowly is refused or dropped, so one
client cannot hold a thread or memory for long. The standard library's parser is lenient on
each of these points (it folds continuation lines, keeps duplicates, accepts HTTP/0.9 and stops
quietly at the end of input), which is why the head is read here instead.
"""

import io
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import BufferedIOBase
from typing import Any

MAX_LINE_BYTES = 8 * 1024
MAX_HEAD_BYTES = 64 * 1024
MAX_FIELDS = 100
MAX_BODY_BYTES = 16 * 1024 * 1024
_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") (/[\x21-\x7e]*) (HTTP/1\.[0-9])\r?\n")
_FIELD_LINE = re.compile(rb"(" + _TOKEN + rb"):([\t\x20-\x7e]*)\r?\n")
_END_OF_HEAD = (b"\r\n", b"\n")
_LABELS = r"(?:[A-Za-z0-9-]+\.)*[A-Za-z0-9-]+\.?"
_HOST = re.compile(rf"(?:{_LABELS}|\[[0-9A-Fa-f:.]+\])(?::[0-9]{{1,5}})?", re.ASCII)
_DIGITS = re.compile(r"[0-9]{1,19}", re.ASCII)


class Refused(Exception):
    """The request cannot be served as sent: answered with `status` and `reason`, then closed."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class RequestHead:
    """A request line and its header fields, as sent; checked by `check_framing`."""

    method: str
    target: str
    version: str
    fields: tuple[tuple[str, str], ...]

    def values(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for field, value in self.fields if field.lower() == wanted]

    @property
    def host(self) -> str:
        return next(iter(self.values("Host")), "")


class TimedSocketReader(io.RawIOBase):
    """A client socket's input, each receive waiting at most `timeout_s`, and inside `deadline`
    no later than it: a client that sends a byte now and then cannot stretch a head for long."""

    def __init__(self, sock: socket.socket, timeout_s: float) -> None:
        super().__init__()
        self.sock, self.timeout_s = sock, timeout_s
        self._deadline: float | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        wait = self.timeout_s
        if self._deadline is not None:
            wait = min(wait, self._deadline - time.monotonic())
            if wait <= 0:
                raise TimeoutError("the request head did not arrive in time")
        self.sock.settimeout(wait)
        return self.sock.recv_into(buffer)

    @contextmanager
    def deadline(self, seconds: float) -> Iterator[None]:
        self._deadline = time.monotonic() + seconds
        try:
            yield
        finally:
            self._deadline = None
            self.sock.settimeout(self.timeout_s)  # for the body and the answer


class _Lines:
    """A stream, a line at a time, within the head's byte budget."""

    def __init__(self, stream: BufferedIOBase) -> None:
        self.stream = stream
        self.budget = MAX_HEAD_BYTES

    def next(self, too_long: Refused) -> bytes:
        """The next line with its ending, b"" at the end of input; `too_long` is raised past a
        line's or the head's limit."""
        limit = min(MAX_LINE_BYTES, self.budget)
        line = self.stream.readline(limit + 1)
        if len(line) > limit:
            raise too_long
        self.budget -= len(line)
        return line


def read_head(stream: BufferedIOBase) -> RequestHead | None:
    """The next request's head; None if the client closed before sending one."""
    lines = _Lines(stream)
    too_long = Refused(414, "the request line is too long")
    first = lines.next(too_long)
    if first in _END_OF_HEAD:  # RFC 9112 2.2: one empty line before a request is ignored
        first = lines.next(too_long)
    if not first:
        return None
    matched = _REQUEST_LINE.fullmatch(first)
    if matched is None:
        raise Refused(400, "the request line is not `METHOD /path HTTP/1.x`")
    method, target, version = (part.decode("ascii") for part in matched.groups())
    return RequestHead(method, target, version, _read_fields(lines))


def _read_fields(lines: _Lines) -> tuple[tuple[str, str], ...]:
    fields: list[tuple[str, str]] = []
    too_long = Refused(431, "the request's header fields are too large")
    while (line := lines.next(too_long)) not in _END_OF_HEAD:
        if not line.endswith(b"\n"):
            raise Refused(400, "the request ended before its header fields did")
        matched = _FIELD_LINE.fullmatch(line)
        if matched is None:
            raise Refused(400, "a header field is not `Name: visible ASCII`")
        if len(fields) == MAX_FIELDS:
            raise Refused(431, f"the request has more than {MAX_FIELDS} header fields")
        name, value = matched.groups()
        fields.append((name.decode("ascii"), value.decode("ascii").strip(" \t")))
    return tuple(fields)


def check_framing(head: RequestHead) -> int:
    """The length of the body that follows `head`; raises Refused when its host or framing is
    ambiguous (RFC 9112 3.2 and 6.3)."""
    hosts = head.values("Host")
    if len(hosts) > 1 or (head.version != "HTTP/1.0" and not hosts):
        raise Refused(400, "the request needs exactly one Host header")
    if hosts and _HOST.fullmatch(hosts[0]) is None:
        raise Refused(400, "the Host header is not a host name with an optional port")
    lengths = head.values("Content-Length")
    if head.values("Transfer-Encoding"):
        if lengths:
            raise Refused(400, "a request may not carry both Transfer-Encoding and Content-Length")
        raise Refused(411, "chunked request bodies are not supported: send a Content-Length")
    if not lengths:
        return 0
    if len(lengths) > 1:
        raise Refused(400, "the request carries more than one Content-Length")
    if _DIGITS.fullmatch(lengths[0]) is None:
        raise Refused(400, "Content-Length is not a number of bytes")
    if int(lengths[0]) > MAX_BODY_BYTES:
        raise Refused(413, f"request bodies are limited to {MAX_BODY_BYTES} bytes")
    return int(lengths[0])

"""Sans-IO HTTP/1.x pieces shared by epserver and epwget.

No sockets here: parsers take bytes and return parsed values, builders return bytes. The apps feed
them whatever `mtcp_read` returned, so the same code runs over the mTCP API, the kernel's sockets
in the benchmarks, and plain byte strings in the tests.
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass

MAX_HEADER = 8192
"""Largest request/response head we buffer before giving up (RFC 9112 2.3 leaves it to us)."""

REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           414: "URI Too Long", 431: "Request Header Fields Too Large",
           505: "HTTP Version Not Supported"}


class HttpError(ValueError):
    """A malformed message; `status` is the response code a server answers it with."""

    def __init__(self, status: int, what: str):
        super().__init__(f"HTTP {status}: {what}")
        self.status = status


@dataclass(slots=True)
class Request:
    method: str
    target: str
    version: str
    headers: dict[str, str]     # lower-case names; a repeated header keeps its last value

    @property
    def keep_alive(self) -> bool:
        return _persists(self.version, self.headers)


@dataclass(slots=True)
class ResponseHead:
    status: int
    version: str
    headers: dict[str, str]
    length: int          # bytes of the head itself, CRLFCRLF included

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("content-length")
        return None if value is None else int(value)

    @property
    def keep_alive(self) -> bool:
        return _persists(self.version, self.headers)


def _persists(version: str, headers: dict[str, str]) -> bool:
    """Whether a message keeps its connection open for the next one.

    RFC 9112 9.3: HTTP/1.1 persists unless `close`; HTTP/1.0 only with `keep-alive`."""
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    if version == "HTTP/1.1":
        return "close" not in tokens
    return "keep-alive" in tokens


def _split_head(buf: bytes | bytearray, limit: int) -> int:
    """Index just past the blank line ending the head, 0 while incomplete."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > limit:
            raise HttpError(431, f"head longer than {limit} bytes without a blank line")
        return 0
    if end + 4 > limit:
        raise HttpError(431, f"head of {end + 4} bytes exceeds {limit}")
    return end + 4


def _parse_fields(lines: list[bytes]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for n, line in enumerate(lines, 2):
        name, sep, value = line.partition(b":")
        # RFC 9112 5.1: no whitespace between the field name and the colon.
        if not sep or not name or name != name.strip() or b" " in name:
            raise HttpError(400, f"header line {n} is not 'name: value': {line[:60]!r}")
        try:
            headers[name.decode("ascii").lower()] = value.strip().decode("latin-1")
        except UnicodeDecodeError:
            raise HttpError(400, f"header line {n} has a non-ASCII name") from None
    return headers


class RequestParser:
    """Splits a server-side byte stream into requests (pipelining included).

    Requests with a body are refused (405 for anything but GET/HEAD): a static file server has
    nothing to do with one, and silently skipping it would desynchronise the stream.
    """

    def __init__(self, limit: int = MAX_HEADER):
        self._buf = bytearray()
        self._limit = limit

    def feed(self, data: bytes) -> list[Request]:
        self._buf += data
        out: list[Request] = []
        while True:
            end = _split_head(self._buf, self._limit)
            if not end:
                return out
            head = bytes(self._buf[:end - 4])
            del self._buf[:end]
            out.append(parse_request(head))

    @property
    def buffered(self) -> int:
        return len(self._buf)


def parse_request(head: bytes) -> Request:
    """One request head without its final CRLFCRLF."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise HttpError(400, f"request line is not 'METHOD target VERSION': {lines[0][:80]!r}")
    method, target, version = (p.decode("latin-1") for p in parts)
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise HttpError(505, f"unsupported version {version!r}")
    if method not in ("GET", "HEAD"):
        raise HttpError(405, f"method {method!r} not served")
    if not target.startswith("/"):
        raise HttpError(400, f"target {target!r} is not an absolute path")
    headers = _parse_fields(lines[1:])
    if headers.get("content-length", "0") != "0" or "transfer-encoding" in headers:
        raise HttpError(400, "request carries a body")
    return Request(method, target, version, headers)


class _DateCache:
    """The Date header's text for the current second: formatting it is a few microseconds, a
    server answering thousands of requests a second needs it once a second (RFC 9110 6.6.1:
    the date has one-second resolution)."""

    def __init__(self) -> None:
        self.second = -1
        self.text = ""

    def text_at(self, now: float) -> str:
        second = int(now)
        if second != self.second:
            self.text = email.utils.formatdate(second, usegmt=True)
            self.second = second
        return self.text


_dates = _DateCache()


def build_response_head(status: int, content_length: int, keep_alive: bool,
                        now: float | None = None) -> bytes:
    """Status line and headers of a response whose body is `content_length` bytes."""
    date = _dates.text_at(time.time() if now is None else now)
    return (f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\n"
            f"Date: {date}\r\n"
            f"Server: p4mtcp epserver\r\n"
            f"Content-Length: {content_length}\r\n"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n").encode("ascii")


def build_request(host: str, path: str, keep_alive: bool = False) -> bytes:
    return (f"GET {path} HTTP/1.1\r\n"
            f"Host: {host}\r\n"
            f"User-Agent: p4mtcp-epwget\r\n"
            f"Accept: */*\r\n"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n").encode("ascii")


class ResponseReader:
    """Client side of one response: `feed` returns body bytes; `done` once the body is whole.

    The body ends at Content-Length, or at the connection's end when there is none (RFC 9112 6.3
    rule 8); `eof()` tells the reader the peer closed, and raises if the body is cut short.
    """

    def __init__(self, limit: int = MAX_HEADER):
        self._buf = bytearray()
        self._limit = limit
        self.head: ResponseHead | None = None
        self.received = 0          # body bytes so far
        self.done = False

    def feed(self, data: bytes) -> bytes:
        if self.done:
            if data:
                raise HttpError(400, f"{len(data)} bytes after the end of the response")
            return b""
        if self.head is None:
            self._buf += data
            end = _split_head(self._buf, self._limit)
            if not end:
                return b""
            self.head = parse_response_head(bytes(self._buf[:end - 4]), end)
            data = bytes(self._buf[end:])
            self._buf.clear()
        want = self.head.content_length
        if want is not None and self.received + len(data) > want:
            raise HttpError(400, f"body longer than Content-Length {want}")
        self.received += len(data)
        if want is not None and self.received == want:
            self.done = True
        return data

    def eof(self) -> None:
        if self.done:
            return
        if self.head is None:
            raise HttpError(400, "connection closed before the response head was complete")
        if self.head.content_length is not None:
            raise HttpError(400, f"connection closed after {self.received} of "
                                 f"{self.head.content_length} body bytes")
        self.done = True


def parse_response_head(head: bytes, length: int) -> ResponseHead:
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise HttpError(400, f"bad status line {lines[0][:80]!r}")
    headers = _parse_fields(lines[1:])
    if "transfer-encoding" in headers:
        raise HttpError(400, f"transfer-encoding {headers['transfer-encoding']!r} not supported")
    cl = headers.get("content-length")
    if cl is not None and not cl.isdigit():
        raise HttpError(400, f"bad Content-Length {cl!r}")
    return ResponseHead(int(parts[1]), parts[0].decode("ascii"), headers, length)


def split_url(url: str, default_port: int = 80) -> tuple[str, int, str]:
    """(host, port, path) of `host[:port]/path` (mTCP's epwget form) or `http://host[:port]/path`."""
    rest = url[len("http://"):] if url.startswith("http://") else url
    if "://" in rest:
        raise ValueError(f"url {url!r}: only http:// is supported")
    hostport, slash, path = rest.partition("/")
    host, colon, port = hostport.partition(":")
    if not host:
        raise ValueError(f"url {url!r} has no host")
    if colon and not port.isdigit():
        raise ValueError(f"url {url!r} has a bad port {port!r}")
    port_n = int(port) if colon else default_port
    if not 0 < port_n < 65536:
        raise ValueError(f"url {url!r}: port {port_n} out of range")
    return host, port_n, "/" + path if slash else "/"

"""epserver/epwget's sans-IO HTTP pieces: parsing, building, the file cache, the session."""

from __future__ import annotations

import email.utils

import pytest

from p4mtcp.apps.http import (HttpError, RequestParser, ResponseReader, build_request,
                              build_response_head, parse_request, split_url)
from p4mtcp.apps.webfiles import FileCache, Session


def test_request_parser_splits_pipelined_requests_across_feeds():
    p = RequestParser()
    stream = build_request("h", "/a", keep_alive=True) + build_request("h", "/b?x=1")
    got = []
    for i in range(0, len(stream), 7):           # arbitrary segment boundaries
        got += p.feed(stream[i:i + 7])
    assert [r.target for r in got] == ["/a", "/b?x=1"]
    assert [r.keep_alive for r in got] == [True, False]
    assert p.buffered == 0


@pytest.mark.parametrize("version,connection,keep", [
    ("HTTP/1.1", None, True), ("HTTP/1.1", "close", False), ("HTTP/1.1", "Keep-Alive, Close", False),
    ("HTTP/1.0", None, False), ("HTTP/1.0", "Keep-Alive", True)])
def test_keep_alive_follows_rfc9112_9_3(version, connection, keep):
    head = f"GET / {version}\r\nHost: x".encode()
    if connection:
        head += f"\r\nConnection: {connection}".encode()
    assert parse_request(head).keep_alive is keep


@pytest.mark.parametrize("head,status", [
    (b"GET /\r\n", 400), (b"GET / HTTP/2.0", 505), (b"POST / HTTP/1.1", 405),
    (b"GET x HTTP/1.1", 400), (b"GET / HTTP/1.1\r\nBad header", 400),
    (b"GET / HTTP/1.1\r\nHost : x", 400), (b"GET / HTTP/1.1\r\nContent-Length: 5", 400)])
def test_malformed_requests_name_the_problem(head, status):
    with pytest.raises(HttpError) as err:
        parse_request(head)
    assert err.value.status == status


def test_oversized_head_is_refused_not_buffered_forever():
    p = RequestParser(limit=64)
    with pytest.raises(HttpError) as err:
        p.feed(b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 20)
    assert err.value.status == 431


def test_response_reader_counts_body_by_content_length():
    body = bytes(range(256)) * 10
    wire = build_response_head(200, len(body), False) + body
    r = ResponseReader()
    got = b"".join(r.feed(wire[i:i + 100]) for i in range(0, len(wire), 100))
    assert got == body and r.done and r.head.status == 200
    assert r.head.length == len(wire) - len(body)


def test_response_reader_detects_truncation_and_overrun():
    r = ResponseReader()
    r.feed(build_response_head(200, 10, False) + b"12345")
    with pytest.raises(HttpError, match="5 of 10"):
        r.eof()
    r = ResponseReader()
    with pytest.raises(HttpError, match="longer than Content-Length"):
        r.feed(build_response_head(200, 3, False) + b"1234")


def test_response_without_length_ends_at_eof():
    r = ResponseReader()
    assert r.feed(b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\nabc") == b"abc"
    assert not r.done
    r.eof()
    assert r.done and r.received == 3


def test_split_url_accepts_mtcp_and_http_forms():
    assert split_url("10.0.0.1/index.html") == ("10.0.0.1", 80, "/index.html")
    assert split_url("http://10.0.0.1:8080") == ("10.0.0.1", 8080, "/")
    for bad in ("https://x/", "/path", "h:port/", "h:0/"):
        with pytest.raises(ValueError):
            split_url(bad)


@pytest.fixture
def www(tmp_path):
    (tmp_path / "index.html").write_bytes(b"<h1>hi</h1>")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a b.bin").write_bytes(bytes(range(256)) * 100)
    return tmp_path


def test_file_cache_maps_paths_and_escapes(www):
    cache = FileCache(str(www))
    assert cache.lookup("/") == b"<h1>hi</h1>"
    assert cache.lookup("/sub/a%20b.bin?x#y") == bytes(range(256)) * 100
    assert cache.lookup("/../etc/passwd") is None
    with pytest.raises(ValueError, match="not a directory"):
        FileCache(str(www / "index.html"))


def drain(session: Session, step: int = 1000) -> bytes:
    out = bytearray()
    while session.pending:
        chunk = session.chunk()[:step]
        out += chunk
        session.sent(len(chunk))
    return bytes(out)


def test_session_serves_keep_alive_then_closes_on_request(www):
    s = Session(FileCache(str(www)))
    s.feed(build_request("h", "/", keep_alive=True) + build_request("h", "/missing"))
    wire = drain(s, step=7)
    r1 = ResponseReader()
    body1 = r1.feed(wire[:wire.index(b"</h1>") + 5])
    assert body1 == b"<h1>hi</h1>" and r1.done and r1.head.keep_alive
    rest = wire[wire.index(b"</h1>") + 5:]
    r2 = ResponseReader()
    r2.feed(rest)
    assert r2.head.status == 404 and not r2.head.keep_alive and r2.done
    assert s.finished and s.requests == 2


def test_session_answers_garbage_with_400_and_closes(www):
    s = Session(FileCache(str(www)))
    s.feed(b"BREW /pot HTCPCP/1.0\r\n\r\n")
    r = ResponseReader()
    r.feed(drain(s))
    assert r.head.status == 505
    assert s.finished and s.errors == 1
    s.feed(build_request("h", "/"))              # ignored after the error
    assert not s.pending


def test_date_header_follows_the_clock_second_by_second():
    # The Date text is kept for the current second: each second gets its own, RFC 9110 6.6.1's
    # IMF-fixdate, the same as formatting it afresh.
    for now in (1_700_000_000.2, 1_700_000_000.9, 1_700_000_001.0, 1_699_999_999.5):
        head = build_response_head(200, 1, True, now).decode()
        assert f"\r\nDate: {email.utils.formatdate(int(now), usegmt=True)}\r\n" in head

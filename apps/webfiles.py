"""epserver's in-memory file cache and per-connection HTTP session (sans-IO).

Like mTCP's epserver, every file under the served directory is read into memory at start, so a
request costs a dictionary lookup and the response body is sent from one buffer with no copies
(`memoryview` slices). The session turns request bytes into queued response bytes; the socket
loop only moves bytes between it and `mtcp_read`/`mtcp_write`.
"""

from __future__ import annotations

import os
import urllib.parse
from collections import deque

from p4mtcp.apps.http import HttpError, RequestParser, build_response_head

SMALL_BODY = 16 * 1024
"""Bodies up to this size are copied behind their head and written in one call."""


class FileCache:
    """URL path -> file contents, for every regular file below `root` (symlinks not followed)."""

    def __init__(self, root: str, max_bytes: int = 1 << 31):
        if not os.path.isdir(root):
            raise ValueError(f"-p {root}: not a directory")
        self.root = root
        self.files: dict[str, bytes] = {}
        total = 0
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                if os.path.islink(full) or not os.path.isfile(full):
                    continue
                rel = os.path.relpath(full, root).replace(os.sep, "/")
                with open(full, "rb") as fh:
                    data = fh.read()
                total += len(data)
                if total > max_bytes:
                    raise ValueError(f"-p {root}: files exceed {max_bytes} bytes of cache")
                self.files["/" + rel] = data

    def lookup(self, target: str) -> bytes | None:
        """Contents for a request target (query dropped, %-escapes decoded, / -> /index.html)."""
        path = urllib.parse.unquote(target.split("?", 1)[0].split("#", 1)[0])
        if path.endswith("/"):
            path += "index.html"
        return self.files.get(path)


class Session:
    """One HTTP/1.1 connection: requests in, response bytes out, keep-alive as negotiated.

    After a malformed request the session answers it with the error status and closes: the
    stream position is unknown, so nothing after it can be trusted (RFC 9112 2.2).
    """

    def __init__(self, cache: FileCache):
        self.cache = cache
        self.parser = RequestParser()
        self.out: deque[memoryview] = deque()
        self.close_after = False      # close once `out` is drained
        self.requests = 0
        self.errors = 0

    def feed(self, data: bytes, now: float | None = None) -> None:
        if self.close_after:
            return                    # requests after a Connection: close are ignored
        try:
            requests = self.parser.feed(data)
        except HttpError as exc:
            self.errors += 1
            body = f"{exc}\n".encode()
            self._queue(build_response_head(exc.status, len(body), False, now), body)
            self.close_after = True
            return
        for req in requests:
            self.requests += 1
            body = self.cache.lookup(req.target)
            status = 200 if body is not None else 404
            if body is None:
                body = f"{req.target} not found\n".encode()
            keep = req.keep_alive
            self._queue(build_response_head(status, len(body), keep, now),
                        b"" if req.method == "HEAD" else body)
            if not keep:
                self.close_after = True
                return

    def _queue(self, head: bytes, body: bytes) -> None:
        # A small body goes in the same write as its head: one segment, not a small segment
        # followed by another that Nagle would hold for the first one's (delayed) ACK.
        if len(body) <= SMALL_BODY:
            self.out.append(memoryview(head + body))
            return
        self.out.append(memoryview(head))
        self.out.append(memoryview(body))

    @property
    def pending(self) -> bool:
        return bool(self.out)

    def chunk(self) -> memoryview:
        """The next bytes to write (call only while `pending`)."""
        return self.out[0]

    def sent(self, n: int) -> None:
        """`n` bytes of `chunk()` were accepted by the socket."""
        head = self.out[0]
        if n >= len(head):
            self.out.popleft()
        else:
            self.out[0] = head[n:]

    @property
    def finished(self) -> bool:
        """Everything owed is written and the connection should now be closed."""
        return self.close_after and not self.out

"""What every app's per-core object shares: an epoll on its own mTCP context.

epserver's CoreServer, epwget's CoreClient and perf's Receiver each register their sockets with
the socket id as the event data, so an event names its socket; closing a socket takes it out of
the epoll (mtcp_close does, as Linux's close does), so no EPOLL_CTL_DEL precedes it.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from typing import Any


class CorePoll:
    """One core's epoll (`max_events` as mtcp_epoll_create sizes it) on context `mctx`."""

    def __init__(self, mtcp: Any, mctx: Any, max_events: int):
        self.m = mtcp
        self.mctx = mctx
        self.ep = mtcp.mtcp_epoll_create(mctx, max_events)

    def _ctl(self, op: int, sockid: int, events: int) -> None:
        self.m.mtcp_epoll_ctl(self.mctx, self.ep, op, sockid,
                              self.m.MtcpEpollEvent(events, sockid))

    def _listen(self, port: int, backlog: int, nodelay: bool = False) -> int:
        """A non-blocking listener on 0.0.0.0:`port` registered for EPOLLIN; its socket id.

        With `nodelay`, TCP_NODELAY is set before listen, so accepted sockets inherit it."""
        m, mctx = self.m, self.mctx
        s = m.mtcp_socket(mctx, m.AF_INET, m.SOCK_STREAM, 0)
        m.mtcp_setsock_nonblock(mctx, s)
        if nodelay:
            m.mtcp_setsockopt(mctx, s, m.IPPROTO_TCP, m.TCP_NODELAY, 1)
        m.mtcp_bind(mctx, s, ("0.0.0.0", port))
        m.mtcp_listen(mctx, s, backlog)
        self._ctl(m.MTCP_EPOLL_CTL_ADD, s, m.MTCP_EPOLLIN)
        return s

    def _accept_ready(self, listener: int, wait_when_full: bool = False) -> Iterator[int]:
        """Accept every connection waiting on `listener` until accept would block.

        With `wait_when_full`, ENFILE (the context's pool is full) also ends the round: the
        connection stays in the backlog until a close frees a slot."""
        while True:
            try:
                c = self.m.mtcp_accept(self.mctx, listener)
            except BlockingIOError:
                return
            except OSError as exc:
                if wait_when_full and exc.errno == errno.ENFILE:
                    return
                raise
            yield c

    def _drop(self, sockid: int) -> None:
        """Close `sockid`, which also takes it out of the epoll: one call per connection
        fewer than a DEL first."""
        self.m.mtcp_close(self.mctx, sockid)

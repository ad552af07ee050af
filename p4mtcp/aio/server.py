"""asyncio's Server over one mTCP listening socket: accepts into transports of the loop.

Behaves as ``asyncio.base_events.Server`` does for the socket transports: ``close()`` stops
listening (connections already accepted live on), ``wait_closed()`` returns once the server is
closed and its last connection has gone, ``serve_forever()`` closes the server when cancelled.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Callable
from typing import Any

from p4mtcp import mtcp
from p4mtcp.aio.transport import MtcpSocket, MtcpTransport

log = logging.getLogger(__name__)

ACCEPT_RETRY = 0.1
"""Seconds the listener is left alone after accept ran out of socket ids or buffers."""
_OUT_OF = (errno.ENFILE, errno.EMFILE, errno.ENOMEM, errno.ENOBUFS)


class MtcpServer(asyncio.AbstractServer):
    def __init__(self, loop: Any, protocol_factory: Callable[[], asyncio.BaseProtocol],
                 listener: int):
        self._loop = loop
        self._factory = protocol_factory
        self._listener: int | None = listener
        self._serving = False
        self._active = 0
        self._waiters: list[asyncio.Future[None]] = []
        self._forever: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"<MtcpServer sockets={self.sockets!r}>"

    # ------------------------------------------------------------ connection accounting

    def attach(self) -> None:
        self._active += 1

    def detach(self) -> None:
        self._active -= 1
        self._wake()

    def _wake(self) -> None:
        if self._listener is None and not self._active:
            waiters, self._waiters = self._waiters, []
            for w in waiters:
                if not w.done():
                    w.set_result(None)

    # ------------------------------------------------------------ AbstractServer

    @property
    def sockets(self) -> tuple[MtcpSocket, ...]:
        if self._listener is None:
            return ()
        return (MtcpSocket(self._loop.mctx, self._listener),)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    def start_serving_now(self) -> None:
        """Watch the listener (idempotent); ``start_serving`` is the awaitable form."""
        if self._serving or self._listener is None:
            return
        self._serving = True
        self._loop.mtcp_register(self._listener, mtcp.EPOLLIN, self._on_events)

    async def start_serving(self) -> None:
        self.start_serving_now()
        await asyncio.sleep(0)

    def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is None:
            return
        self._serving = False
        self._loop.mtcp_unregister(listener)
        if not self._loop.mctx.done:
            mtcp.mtcp_close(self._loop.mctx, listener)
        if self._forever is not None and not self._forever.done():
            self._forever.cancel()
            self._forever = None
        self._wake()

    async def wait_closed(self) -> None:
        if self._listener is None and not self._active:
            return
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._waiters.append(waiter)
        await waiter

    async def serve_forever(self) -> None:
        if self._forever is not None:
            raise RuntimeError(f"server {self!r} is already being awaited on serve_forever()")
        if self._listener is None:
            raise RuntimeError(f"server {self!r} is closed")
        self.start_serving_now()
        self._forever = self._loop.create_future()
        try:
            await self._forever
        except asyncio.CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._forever = None

    # ------------------------------------------------------------ accepting

    def _on_events(self, bits: int) -> None:
        mctx, listener = self._loop.mctx, self._listener
        if listener is None:
            return
        while True:
            try:
                sockid = mtcp.mtcp_accept(mctx, listener)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno not in _OUT_OF:
                    raise
                # Out of ids/buffers: the connection waits in the backlog; look again shortly
                # instead of spinning on the level-triggered listener.
                log.warning("accept on mTCP socket %d: %s; retrying in %.1f s",
                            listener, exc, ACCEPT_RETRY)
                self._loop.mtcp_unregister(listener)
                self._serving = False
                self._loop.call_later(ACCEPT_RETRY, self.start_serving_now)
                return
            try:
                protocol = self._factory()
            except Exception as exc:  # the application's factory failed: drop this one
                self._loop.call_exception_handler({"message": "protocol factory failed",
                                                   "exception": exc})
                mtcp.mtcp_abort(mctx, sockid)
                continue
            MtcpTransport(self._loop, sockid, protocol, self._loop.create_future(), self)

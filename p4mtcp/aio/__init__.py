"""asyncio on p4mtcp: an event loop whose sockets are mTCP sockets of one core's context.

An unmodified asyncio streams program runs on the stack by running it on that loop::

    from p4mtcp import mtcp, aio
    mtcp.mtcp_init("mtcp.conf")
    mctx = mtcp.mtcp_create_context(core)
    aio.run(main(), mctx)     # asyncio.start_server / open_connection inside use mTCP

or, for code that calls ``asyncio.run`` itself, ``asyncio.set_event_loop_policy(
aio.MtcpEventLoopPolicy(mctx))``. ``loop.create_connection`` / ``create_server`` (and so
``asyncio.open_connection`` / ``start_server``) make mTCP connections; timers, ``call_soon``,
tasks, cancellation and executors are asyncio's own. Not available on this loop: TLS, kernel
file descriptors (``add_reader``, ``sock_*``), datagrams, pipes, subprocesses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from p4mtcp.aio.loop import MtcpEventLoop
from p4mtcp.aio.server import MtcpServer
from p4mtcp.aio.transport import MtcpSocket, MtcpTransport

T = TypeVar("T")

__all__ = ["MtcpEventLoop", "MtcpEventLoopPolicy", "MtcpServer", "MtcpSocket", "MtcpTransport",
           "run"]


def run(main: Coroutine[Any, Any, T], mctx: Any, *, debug: bool | None = None) -> T:
    """``asyncio.run(main)`` on an :class:`MtcpEventLoop` over context ``mctx``."""
    with asyncio.Runner(debug=debug, loop_factory=lambda: MtcpEventLoop(mctx)) as runner:
        return runner.run(main)


class MtcpEventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """A policy whose new loops run on context ``mctx`` (one context, one thread)."""

    def __init__(self, mctx: Any):
        super().__init__()
        self.mctx = mctx

    def new_event_loop(self) -> MtcpEventLoop:
        return MtcpEventLoop(self.mctx)

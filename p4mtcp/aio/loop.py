"""The asyncio event loop whose I/O is one mTCP context, waited on with ``mtcp_epoll_wait``.

``asyncio.BaseEventLoop`` owns the scheduling (ready queue, timers, tasks, executors); each of its
iterations asks ``self._selector.select(timeout)`` for I/O events with ``timeout`` = time to the
next timer (0 while callbacks are ready) and hands the result to ``_process_events``. Here that
selector is one mTCP epoll on the context: waiting on it *is* the context's run-to-completion
loop (frames in, engine timers, frames out), so the network progresses exactly while the asyncio
loop would otherwise sleep, and timers fire on time because the wait ends at their deadline.

The loop knows only mTCP socket ids: ``add_reader``/``sock_*`` on kernel file descriptors are not
supported (the context's thread never waits on them). A thread calling ``call_soon_threadsafe``
is noticed within :data:`WAKEUP` seconds: the epoll wait is capped at that, as the context's own
waits are capped at ``MAX_WAIT`` to notice signals.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
from collections.abc import Callable
from typing import Any

from p4mtcp import mtcp
from p4mtcp.control.epoll import MtcpEpollEvent
from p4mtcp.aio.server import MtcpServer
from p4mtcp.aio.transport import MtcpTransport

WAKEUP = 0.1
"""Longest single epoll wait (seconds): bounds how late a thread's call_soon_threadsafe runs."""
MAX_EVENTS = 4096
EPOLL_SIZE = 4096
DEFAULT_BACKLOG = 100
FREE_PORTS = range(40000, 40064)
"""Ports ``create_server(port=0)`` tries in turn."""

Handler = Callable[[int], None]
"""Called with the epoll condition bits that hold for the socket it was registered for."""


class _EpollSelector:
    """What BaseEventLoop's iteration calls ``select(timeout)`` on: one epoll of the context."""

    def __init__(self, mctx: Any):
        self.mctx = mctx
        self.ep = mtcp.mtcp_epoll_create(mctx, EPOLL_SIZE)

    def select(self, timeout: float | None) -> list[MtcpEpollEvent]:
        wait = WAKEUP if timeout is None else min(timeout, WAKEUP)
        try:
            return mtcp.mtcp_epoll_wait(self.mctx, self.ep, MAX_EVENTS, wait * 1000.0)
        except InterruptedError:  # a registered signal: its handler ran; the loop goes on
            return []

    def close(self) -> None:
        if not self.mctx.done:
            mtcp.mtcp_close(self.mctx, self.ep)


class MtcpEventLoop(asyncio.BaseEventLoop):
    """An asyncio loop on mTCP context ``mctx`` (one per core process, owned by this thread):
    ``create_connection``/``create_server`` — and so ``asyncio.open_connection`` and
    ``asyncio.start_server`` — make mTCP connections."""

    def __init__(self, mctx: Any):
        super().__init__()
        self.mctx = mctx
        # BaseEventLoop._run_once waits on `self._selector`; the selector event loops set it too.
        self._selector = _EpollSelector(mctx)
        self._handlers: dict[int, Handler] = {}

    # ------------------------------------------------------------ the I/O registrations

    def mtcp_register(self, sockid: int, events: int, handler: Handler) -> None:
        """Watch mTCP socket ``sockid`` for ``events`` (level-triggered; ERR/HUP always)."""
        mtcp.mtcp_epoll_ctl(self.mctx, self._selector.ep, mtcp.EPOLL_CTL_ADD, sockid,
                            mtcp.MtcpEpollEvent(events, sockid))
        self._handlers[sockid] = handler

    def mtcp_modify(self, sockid: int, events: int) -> None:
        mtcp.mtcp_epoll_ctl(self.mctx, self._selector.ep, mtcp.EPOLL_CTL_MOD, sockid,
                            mtcp.MtcpEpollEvent(events, sockid))

    def mtcp_unregister(self, sockid: int) -> None:
        if self._handlers.pop(sockid, None) is not None:
            mtcp.mtcp_epoll_ctl(self.mctx, self._selector.ep, mtcp.EPOLL_CTL_DEL, sockid, None)

    def _process_events(self, event_list: list[MtcpEpollEvent]) -> None:
        handlers = self._handlers
        for events, sockid in event_list:
            handler = handlers.get(sockid)
            if handler is not None:  # a handler earlier in this batch may have closed it
                handler(events)

    def _write_to_self(self) -> None:
        """Nothing to do: the epoll wait is capped at WAKEUP, so a callback another thread
        queued runs at the next iteration."""

    def close(self) -> None:
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        super().close()
        self._selector.close()

    # ------------------------------------------------------------ connections

    async def _address(self, host: Any, port: Any, what: str) -> tuple[str, int]:
        """(dotted IPv4, port) for ``host``: an address literal as is, a name resolved by the
        kernel's resolver in the default executor (mTCP has no resolver of its own)."""
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise ValueError(f"{what}: port {port!r} is not an int in 0..65535")
        if host in (None, ""):
            return "0.0.0.0", port
        if not isinstance(host, str):
            raise TypeError(f"{what}: host {host!r} is not a str")
        try:
            return str(ipaddress.IPv4Address(host)), port
        except ValueError:
            pass
        infos = await self.getaddrinfo(host, port, family=socket.AF_INET,
                                       type=socket.SOCK_STREAM)
        if not infos:
            raise OSError(f"{what}: getaddrinfo({host!r}) returned no IPv4 address")
        return str(infos[0][4][0]), port

    async def create_connection(self, protocol_factory: Callable[[], asyncio.BaseProtocol],
                                host: str | None = None, port: int | None = None, *,
                                ssl: Any = None, family: int = 0, proto: int = 0,
                                flags: int = 0, sock: Any = None,
                                local_addr: tuple[str, int] | None = None,
                                server_hostname: str | None = None,
                                ssl_handshake_timeout: float | None = None,
                                ssl_shutdown_timeout: float | None = None,
                                happy_eyeballs_delay: float | None = None,
                                interleave: int | None = None) -> tuple[MtcpTransport, Any]:
        """An mTCP connection to (host, port). Failures raise the socket module's exceptions:
        ConnectionRefusedError (RST to the SYN), TimeoutError (SYN retries exhausted), OSError
        with mTCP's errno otherwise. Cancelling the call closes the half-open socket."""
        _supported("create_connection", ssl, sock, family)
        rhost, rport = await self._address(host, port, "create_connection")
        m, mctx = mtcp, self.mctx
        sockid = m.mtcp_socket(mctx, m.AF_INET, m.SOCK_STREAM, 0)
        m.mtcp_setsock_nonblock(mctx, sockid)
        try:
            if local_addr is not None:
                m.mtcp_bind(mctx, sockid, await self._address(*local_addr, "local_addr"))
            m.mtcp_connect(mctx, sockid, (rhost, rport))
            done: asyncio.Future[None] = self.create_future()
            self.mtcp_register(sockid, m.EPOLLOUT, lambda bits: _connected(done, bits))
            try:
                await done
            finally:
                self.mtcp_unregister(sockid)
            err = m.mtcp_getsockopt(mctx, sockid, m.SOL_SOCKET, m.SO_ERROR)
            if err:
                # OSError(errno, ...) is constructed as its subclass: ConnectionRefusedError...
                raise OSError(err, f"connect to {rhost}:{rport}: {errno.errorcode[err]}")
        except BaseException:
            _discard(mctx, sockid)
            raise
        return await self._open_transport(sockid, protocol_factory)

    async def _open_transport(self, sockid: int, protocol_factory: Callable[[], Any]
                              ) -> tuple[MtcpTransport, Any]:
        try:
            protocol = protocol_factory()
        except BaseException:
            _discard(self.mctx, sockid)
            raise
        made: asyncio.Future[None] = self.create_future()
        transport = MtcpTransport(self, sockid, protocol, made)  # owns the socket from here
        try:
            await made
        except BaseException:
            transport.abort()
            raise
        return transport, protocol

    async def create_server(  # type: ignore[override]  # asyncio declares overloads
                            self, protocol_factory: Callable[[], asyncio.BaseProtocol],
                            host: str | None = None, port: int | None = None, *,
                            family: int = 0, flags: int = 0, sock: Any = None,
                            backlog: int = DEFAULT_BACKLOG, ssl: Any = None,
                            reuse_address: bool | None = None, reuse_port: bool | None = None,
                            ssl_handshake_timeout: float | None = None,
                            ssl_shutdown_timeout: float | None = None,
                            start_serving: bool = True) -> MtcpServer:
        """A listening mTCP socket on (host, port) — host None or "" for every local address.
        Port 0 picks a free one (``server.sockets[0].getsockname()`` tells which)."""
        _supported("create_server", ssl, sock, family)
        if not isinstance(host, (str, type(None))):
            raise TypeError(f"create_server on mTCP: host {host!r}: one address (or None)")
        addr = await self._address(host, port or 0, "create_server")
        server = MtcpServer(self, protocol_factory, self._listen(addr, backlog, reuse_address))
        if start_serving:
            server.start_serving_now()
            await asyncio.sleep(0)  # as asyncio's: give the serving registration a turn
        return server

    def _listen(self, addr: tuple[str, int], backlog: int, reuse: bool | None) -> int:
        m, mctx = mtcp, self.mctx
        backlog = max(1, min(backlog, mctx.max_concurrency))
        ports = [addr[1]] if addr[1] else FREE_PORTS  # mTCP cannot listen on port 0
        error: OSError | None = None
        for port in ports:
            sockid = m.mtcp_socket(mctx, m.AF_INET, m.SOCK_STREAM, 0)
            try:
                m.mtcp_setsock_nonblock(mctx, sockid)
                if reuse:
                    m.mtcp_setsockopt(mctx, sockid, m.SOL_SOCKET, m.SO_REUSEADDR, 1)
                m.mtcp_bind(mctx, sockid, (addr[0], port))
                m.mtcp_listen(mctx, sockid, backlog)
                return sockid
            except OSError as exc:
                m.mtcp_close(mctx, sockid)
                if exc.errno != errno.EADDRINUSE or addr[1]:
                    raise
                error = exc
        raise OSError(errno.EADDRINUSE, f"create_server: no free port to listen on ({error})")

    # ------------------------------------------------------------ what mTCP cannot do here

    def _unsupported(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("the mTCP event loop serves mTCP sockets only (no kernel "
                                  "file descriptors, datagrams, pipes or subprocesses)")

    add_reader = add_writer = _unsupported  # type: ignore[assignment]
    remove_reader = remove_writer = _unsupported
    sock_recv = sock_sendall = sock_connect = sock_accept = _unsupported
    create_datagram_endpoint = create_unix_connection = create_unix_server = _unsupported
    connect_read_pipe = connect_write_pipe = subprocess_exec = subprocess_shell = _unsupported


def _supported(call: str, ssl: Any, sock: Any, family: int) -> None:
    """ValueError for what an mTCP connection cannot be: TLS, a kernel socket, not IPv4."""
    if ssl:
        raise ValueError(f"{call} on mTCP: TLS (ssl=) is not supported")
    if sock is not None:
        raise ValueError(f"{call} on mTCP: sock= (a kernel socket) is not supported")
    if family not in (0, socket.AF_INET):
        raise ValueError(f"{call} on mTCP: family {family!r}: only AF_INET")


def _connected(done: asyncio.Future[None], bits: int) -> None:
    """The handshake ended (EPOLLOUT: established; ERR/HUP: failed, SO_ERROR says why)."""
    if not done.done():
        done.set_result(None)


def _discard(mctx: Any, sockid: int) -> None:
    """Close a socket whose connect or hand-over failed, if the context still lives."""
    if not mctx.done:
        try:
            mtcp.mtcp_close(mctx, sockid)
        except OSError:  # already closed (EBADF)
            pass

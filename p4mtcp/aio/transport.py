"""asyncio's Transport over one mTCP stream socket: buffered writes, flow control both ways.

The owning :class:`~p4mtcp.aio.loop.MtcpEventLoop` watches the socket's epoll registration and
calls :meth:`MtcpTransport.on_events`; the interest set follows the transport's state (EPOLLIN
while reading, EPOLLOUT while bytes wait in the transport's buffer) and the registration is
dropped once nothing more can happen, so level-triggered HUP/ERR never spin the loop.

Writes go straight into the connection's send buffer (``mtcp_write``); what it does not take
(EAGAIN) waits here and is pushed on EPOLLOUT. The protocol's ``pause_writing`` /
``resume_writing`` follow this transport's buffer against the high/low water marks, as with
asyncio's socket transports; ``pause_reading`` drops EPOLLIN, which stops reading from the
connection, so its receive window closes and the peer's sender stops (TCP flow control).
"""

from __future__ import annotations

import asyncio
import errno
import logging
from typing import Any

from p4mtcp import mtcp

log = logging.getLogger(__name__)

READ_SIZE = 256 * 1024
READS_PER_EVENT = 16          # reads per readiness report, so one busy peer cannot hog the loop
HIGH_WATER = 64 * 1024        # asyncio's defaults for its socket transports
LOG_WRITES_AFTER_LOST = 5


class MtcpSocket:
    """What ``get_extra_info('socket')`` and ``Server.sockets`` give for an mTCP socket: the
    calls of a socket that make sense on one the transport owns (no I/O: the transport does it).
    ``fileno()`` is the mTCP socket id, not a kernel descriptor."""

    family = mtcp.AF_INET
    type = mtcp.SOCK_STREAM
    proto = 0

    def __init__(self, mctx: Any, sockid: int):
        self._mctx = mctx
        self._id = sockid

    def fileno(self) -> int:
        return self._id

    def getsockname(self) -> tuple[str, int]:
        return mtcp.mtcp_getsockname(self._mctx, self._id)

    def getpeername(self) -> tuple[str, int]:
        return mtcp.mtcp_getpeername(self._mctx, self._id)

    def setsockopt(self, level: int, optname: int, value: Any) -> None:
        mtcp.mtcp_setsockopt(self._mctx, self._id, level, optname, value)

    def getsockopt(self, level: int, optname: int) -> Any:
        return mtcp.mtcp_getsockopt(self._mctx, self._id, level, optname)

    def __repr__(self) -> str:
        return f"<MtcpSocket id={self._id} core={self._mctx.core}>"


class MtcpTransport(asyncio.Transport):
    """One connected mTCP socket. ``made`` gets its result once ``connection_made`` ran;
    ``server`` (if any) counts the connection until ``connection_lost``."""

    def __init__(self, loop: Any, sockid: int, protocol: asyncio.BaseProtocol,
                 made: asyncio.Future[None], server: Any = None):
        mctx = loop.mctx
        extra = {"socket": MtcpSocket(mctx, sockid),
                 "sockname": mtcp.mtcp_getsockname(mctx, sockid)}
        try:
            extra["peername"] = mtcp.mtcp_getpeername(mctx, sockid)
        except OSError:  # reset between accept and here: connection_lost will tell
            pass
        super().__init__(extra)
        self._loop = loop
        self._mctx = mctx
        self._id = sockid
        self._protocol: Any = protocol
        self._server = server
        self._buffer = bytearray()
        self._reading = True          # not paused by the protocol
        self._closing = False         # close()/abort()/fatal error: no new reads
        self._eof_sent = False        # write_eof() called
        self._eof_received = False    # the peer's FIN was handed to eof_received()
        self._hup = False             # both directions are finished: nothing more to report
        self._conn_lost = 0           # >0 once connection_lost is scheduled; counts late writes
        self._released = False        # the mTCP socket is closed
        self._watched: int | None = None  # the epoll interest registered, None: not registered
        self._high = HIGH_WATER
        self._low = HIGH_WATER // 4
        self._write_paused = False
        if server is not None:
            server.attach()
        loop.call_soon(self._start, made)

    def __repr__(self) -> str:
        state = "closing" if self._closing else "open"
        return f"<MtcpTransport id={self._id} core={self._mctx.core} {state}>"

    def _start(self, made: asyncio.Future[None]) -> None:
        try:
            self._protocol.connection_made(self)
        except BaseException as exc:
            if not made.done():
                made.set_exception(exc)
            self._force_close(None)
            if not isinstance(exc, Exception):
                raise
            return
        self._sync()
        if not made.done():
            made.set_result(None)

    # ------------------------------------------------------------ epoll interest

    def _interest(self) -> int | None:
        """The epoll events to watch now; None when nothing more can be reported."""
        if self._released:
            return None
        bits = mtcp.EPOLLOUT if self._buffer else 0
        if self._reading and not self._closing and not self._eof_received:
            bits |= mtcp.EPOLLIN
        if not bits and self._hup:
            return None
        return bits

    def _sync(self) -> None:
        """Make the epoll registration match :meth:`_interest`."""
        want = self._interest()
        if want == self._watched:
            return
        loop = self._loop
        if want is None:
            loop.mtcp_unregister(self._id)
        elif self._watched is None:
            loop.mtcp_register(self._id, want, self.on_events)
        else:
            loop.mtcp_modify(self._id, want)
        self._watched = want

    def on_events(self, bits: int) -> None:
        """The loop's report for this socket (level-triggered condition bits)."""
        reading = self._reading and not self._closing and not self._eof_received
        if bits & mtcp.EPOLLERR and not reading:  # reading reports it after the queued data
            err = mtcp.mtcp_getsockopt(self._mctx, self._id, mtcp.SOL_SOCKET, mtcp.SO_ERROR)
            self._fatal_error(OSError(err or errno.ECONNRESET, "connection failed"))
            return
        if bits & (mtcp.EPOLLIN | mtcp.EPOLLERR) and reading:
            self._read_ready()
        if bits & (mtcp.EPOLLOUT | mtcp.EPOLLERR) and self._buffer and not self._released:
            self._write_ready()
        if bits & mtcp.EPOLLHUP and not self._hup:
            self._hup = True
            self._sync()

    # ------------------------------------------------------------ reading

    def _read_ready(self) -> None:
        read = mtcp.mtcp_read
        for _ in range(READS_PER_EVENT):
            try:
                data = read(self._mctx, self._id, READ_SIZE)
            except BlockingIOError:
                return
            except OSError as exc:  # ECONNRESET, ETIMEDOUT... (after the data still queued)
                self._fatal_error(exc)
                return
            if not data:
                self._on_eof()
                return
            try:
                self._protocol.data_received(data)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "protocol.data_received() call failed.")
                return
            if not self._reading or self._closing or len(data) < READ_SIZE:
                return  # a short read emptied the buffer: another read would only fail EAGAIN

    def _on_eof(self) -> None:
        self._eof_received = True
        try:
            keep_open = self._protocol.eof_received()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "protocol.eof_received() call failed.")
            return
        if keep_open:
            self._sync()
        else:
            self.close()

    def is_reading(self) -> bool:
        return self._reading and not self._closing

    def pause_reading(self) -> None:
        if self._closing or not self._reading:
            return
        self._reading = False
        self._sync()

    def resume_reading(self) -> None:
        if self._closing or self._reading:
            return
        self._reading = True
        self._sync()

    # ------------------------------------------------------------ writing

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data argument must be a bytes-like object, "
                            f"not {type(data).__name__!r}")
        if self._eof_sent:
            raise RuntimeError("Cannot call write() after write_eof()")
        if not data:
            return
        if self._conn_lost:
            if self._conn_lost >= LOG_WRITES_AFTER_LOST:
                log.warning("mTCP socket %d: write() after the connection was lost", self._id)
            self._conn_lost += 1
            return
        if not self._buffer:
            n = self._send(data)
            if n < 0 or n == len(data):
                return
            self._buffer += memoryview(data)[n:]
            self._sync()
        else:
            self._buffer += data
        self._maybe_pause_protocol()

    def _send(self, data: bytes | bytearray | memoryview) -> int:
        """Bytes the connection took (0: its buffer is full); -1 after a fatal error."""
        try:
            return mtcp.mtcp_write(self._mctx, self._id, data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            self._fatal_error(exc)
            return -1

    def _write_ready(self) -> None:
        n = self._send(self._buffer)
        if n <= 0:
            return
        del self._buffer[:n]
        self._maybe_resume_protocol()
        if self._buffer:
            return
        self._sync()
        if self._closing:
            self._conn_lost += 1
            self._loop.call_soon(self._call_connection_lost, None)
        elif self._eof_sent:
            self._shutdown_write()

    def _shutdown_write(self) -> None:
        try:
            mtcp.mtcp_shutdown(self._mctx, self._id, mtcp.SHUT_WR)
        except OSError as exc:  # reset meanwhile: reading reports it
            log.debug("mTCP socket %d: shutdown: %s", self._id, exc)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """FIN once the buffered bytes are out (half-close; reading goes on)."""
        if self._closing or self._eof_sent:
            return
        self._eof_sent = True
        if not self._buffer:
            self._shutdown_write()

    def get_write_buffer_size(self) -> int:
        return len(self._buffer)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high, self._low = high, low
        self._maybe_pause_protocol()

    def _maybe_pause_protocol(self) -> None:
        if len(self._buffer) <= self._high or self._write_paused:
            return
        self._write_paused = True
        self._protocol_call("pause_writing")

    def _maybe_resume_protocol(self) -> None:
        if self._write_paused and len(self._buffer) <= self._low:
            self._write_paused = False
            self._protocol_call("resume_writing")

    def _protocol_call(self, name: str) -> None:
        try:
            getattr(self._protocol, name)()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler({
                "message": f"protocol.{name}() failed", "exception": exc,
                "transport": self, "protocol": self._protocol})

    # ------------------------------------------------------------ closing

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Graceful: the buffered bytes go out, then FIN; connection_lost(None) follows."""
        if self._closing:
            return
        self._closing = True
        self._sync()
        if not self._buffer:
            self._conn_lost += 1
            self._loop.call_soon(self._call_connection_lost, None)

    def abort(self) -> None:
        """At once: the buffer is dropped and the peer gets a RST."""
        self._force_close(None)

    def _fatal_error(self, exc: BaseException, message: str = "Fatal error on transport") -> None:
        if not isinstance(exc, OSError):  # a protocol's bug, not the network's doing
            self._loop.call_exception_handler({"message": message, "exception": exc,
                                               "transport": self, "protocol": self._protocol})
        self._force_close(exc)

    def _force_close(self, exc: BaseException | None) -> None:
        if self._conn_lost:
            return
        self._buffer.clear()
        self._closing = True
        self._conn_lost += 1
        self._release(abort=True)
        self._loop.call_soon(self._call_connection_lost, exc)

    def _release(self, abort: bool) -> None:
        """Stop watching and close the mTCP socket (with RST when ``abort``); once."""
        if self._released:
            return
        self._released = True
        self._sync()
        mctx = self._mctx
        if mctx.done:
            return
        try:
            if abort:
                mtcp.mtcp_abort(mctx, self._id)
            else:
                mtcp.mtcp_close(mctx, self._id)
        except OSError:  # no connection left to reset: just give the id back
            mtcp.mtcp_close(mctx, self._id)

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        try:
            if self._protocol is not None:
                self._protocol.connection_lost(exc)
        finally:
            self._release(abort=False)
            self._protocol = None
            if self._server is not None:
                self._server.detach()
                self._server = None

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> Any:
        return self._protocol

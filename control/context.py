"""One per-core context: the run-to-completion loop, the socket-id pool, buffers, epoll wiring.

A context owns everything one core needs and shares nothing (DESIGN.md section 3): its core port
(a frame pipe to the NIC), a :class:`~p4mtcp.control.netif.NetIf`, a sans-IO ``TcpStack``, the
socket table, its epolls and the clock. Nothing runs in the background: every loop step happens
inside an API call (``mtcp_epoll_wait`` or a blocking call), in the application's thread.

One loop step (:meth:`Context.step`), in mTCP's order: let the stack run its due timers and hand
over what to transmit (``stack.poll(now)``: what the application queued since the last step and
the ACKs the last batch owes) and send it; drain the port in one batch and feed the segments to
the stack; turn the stack's events into epoll notifications. The application answers before
the next step transmits, so ACKs ride on its segments. When nothing is waiting the step blocks
on the port's file descriptor until the next timer deadline, capped at :data:`MAX_WAIT` seconds
so that signals (``mtcp_register_signal``) are noticed promptly.

Socket ids 0..max_concurrency-1 are shared by stream, listener, epoll and pipe sockets. A stream
socket's id returns to the pool only when both the application has closed it and the engine has
freed the TCB (``EventKind.CLOSED``, or the connection is already CLOSED at close time), so an id
is never reused while segments for the old connection can still raise events. Buffers are
counted against ``max_num_buffers`` like mTCP's pools: a receive buffer from connect/accept until
the application can read nothing more (end of stream read, or closed), a send buffer from the
first write until the TCB is freed.
"""

from __future__ import annotations

import errno
import itertools
import os
import select
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from enum import IntEnum
from typing import Any, NoReturn, TypeVar

from p4mtcp.control import epoll as ep
from p4mtcp.control.netif import NetIf
from p4mtcp.control.rss import PortSelector
from p4mtcp.control.tcp import Connection, EventKind, Listener, State, TcpConfig, TcpStack
from p4mtcp.link import Port

MAX_WAIT = 0.1
"""Longest single block on the port (seconds); bounds signal latency, not timer accuracy."""
RECONNECT = 0.5
"""Seconds between attempts to reconnect a core link the NIC hung up."""
PIPE_BUF_SIZE = 10240
"""mTCP's pipe buffer size."""
EPHEMERAL = (1024, 65535)
FALLBACK_TRIES = 4          # flow_steer fallback ports tried when other cores hold them

T = TypeVar("T")


def fail(err: int, call: str, detail: str = "") -> NoReturn:
    """Raise the OSError subclass for ``err`` (BlockingIOError for EAGAIN, ...) naming the call."""
    msg = f"{call}: {os.strerror(err)}"
    raise OSError(err, f"{msg} ({detail})" if detail else msg)


SteerFlow = Callable[[int, int, int, int, int], bool]
"""``(core, local_ip, local_port, remote_ip, remote_port) -> installed``: the agent's flow_steer
fallback for a flow the RSS hash cannot place on this core."""
UnsteerFlow = Callable[[int, int, int, int, int], None]
"""Same arguments: the steered connection's TCB is freed, its flow_steer entry may go."""


class SockType(IntEnum):
    """mTCP's ``enum socket_type``."""

    UNUSED = 0
    STREAM = 1
    PROXY = 2
    LISTENER = 3
    EPOLL = 4
    PIPE = 5


class Pipe:
    """mTCP's in-context pipe: one bounded byte buffer between a read end and a write end."""

    __slots__ = ("buf", "read_id", "write_id", "reader_open", "writer_open")

    def __init__(self, read_id: int, write_id: int):
        self.buf = bytearray()
        self.read_id = read_id
        self.write_id = write_id
        self.reader_open = True
        self.writer_open = True

    def space(self) -> int:
        return PIPE_BUF_SIZE - len(self.buf)


class Socket:
    """One entry of the socket table (mTCP's ``socket_map``). A plain class, not a dataclass:
    one is made per connection, and a written-out ``__init__`` is compiled in the optional
    build where a dataclass's generated one stays Python."""

    __slots__ = ("id", "type", "nonblock", "bound", "conn", "listener", "epoll", "pipe", "opts",
                 "watchers", "app_closed", "tcb_freed", "shut_rd", "shut_wr", "error_reported",
                 "snd_buf", "rcv_buf")

    def __init__(self, sockid: int, stype: SockType):
        self.id = sockid
        self.type = stype
        self.nonblock = True  # mTCP sockets are non-blocking by default
        self.bound: tuple[int, int] | None = None  # (ip, port) from mtcp_bind or implicit
        self.conn: Connection | None = None
        self.listener: Listener | None = None
        self.epoll: ep.Epoll | None = None
        self.pipe: Pipe | None = None
        self.opts: dict[tuple[int, int], Any] = {}  # (level, optname) -> value
        self.watchers: list[ep.Epoll] = []
        self.app_closed = False
        self.tcb_freed = False
        self.shut_rd = False
        self.shut_wr = False
        self.error_reported = False  # the connection's error was raised once (sock_error)
        self.snd_buf = False
        self.rcv_buf = False

    def __repr__(self) -> str:
        return f"Socket({self.id}, {self.type.name})"


@dataclass
class ContextStats:
    """Per-context counters for mTCP-style per-second statistics (monotonic; diff them)."""

    rx_packets: int = 0
    rx_bytes: int = 0
    tx_packets: int = 0
    tx_bytes: int = 0
    connects: int = 0  # active opens started
    accepts: int = 0  # passive opens handed to the application
    flows_freed: int = 0  # TCBs freed by the engine
    tx_dropped: int = 0  # frames the port could not take (its peer's buffer was full)
    tx_errors: int = 0  # transmit batches the port refused (NIC gone)
    reconnects: int = 0  # core link re-opened after the NIC hung up (restart)
    loops: int = 0

    def snapshot(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # compiled: no __dict__


# What each engine event may have made true, for epoll notifications.
_EVENT_BITS = {
    EventKind.ACCEPTABLE: ep.EPOLLIN,
    EventKind.CONNECTED: ep.EPOLLOUT,
    EventKind.READABLE: ep.EPOLLIN,
    EventKind.WRITABLE: ep.EPOLLOUT,
    EventKind.EOF: ep.EPOLLIN | ep.EPOLLRDHUP,
    EventKind.RESET: ep.CONDITIONS,
    EventKind.ERROR: ep.CONDITIONS,
    EventKind.CLOSED: ep.CONDITIONS,
}
_ESTABLISHED, _CLOSE_WAIT = State.ESTABLISHED, State.CLOSE_WAIT  # identity tests: enum hashing is slow


class Context:
    """mTCP's per-core context (``mctx_t``): create one per core with ``mtcp_create_context``."""

    def __init__(self, core: int, conf: Any, port: Port, local_ips: Sequence[int], *,
                 offload_checksum: bool = True, selector: PortSelector | None = None,
                 steer_flow: SteerFlow | None = None, unsteer_flow: UnsteerFlow | None = None,
                 clock: Callable[[], float] = time.monotonic, isn_secret: bytes | None = None,
                 tcp_config: TcpConfig | None = None,
                 routes: Sequence[tuple[int, int]] | None = None,
                 reopen: Callable[[], Port] | None = None, congestion: str = "newreno",
                 mss: int = 1460):
        if not local_ips:
            raise ValueError(f"context for core {core}: no local IPv4 address configured")
        self.core = core
        self.max_concurrency = int(conf.max_concurrency)
        self.max_num_buffers = int(conf.max_num_buffers)
        self.rcvbuf_size = int(conf.rcvbuf_size)
        self.sndbuf_size = int(conf.sndbuf_size)
        self.local_ips = list(local_ips)
        self.routes = None if routes is None else list(routes)  # (network, mask); None: any
        self._routed = -1  # the last remote address a route was found for
        self.port = port
        self.netif = NetIf(offload_checksum=offload_checksum)
        self.selector = selector  # RSS-aware source ports; None: any free port (no NIC hash)
        self.steer_flow = steer_flow
        self.unsteer_flow = unsteer_flow
        self._steered: set[tuple[int, int, int, int]] = set()  # flows with a flow_steer entry
        self.clock = clock
        cfg = tcp_config or TcpConfig(rcvbuf=self.rcvbuf_size, sndbuf=self.sndbuf_size,
                                      timewait=float(conf.tcp_timewait),
                                      idle_timeout=float(conf.tcp_timeout),
                                      offload_checksum=offload_checksum, congestion=congestion,
                                      mss=mss)  # mtcp.conf mtu - 40
        self.stack = TcpStack(cfg, isn_secret=isn_secret or os.urandom(16))
        self.stats = ContextStats()
        # Longest a blocking-socket call waits (then EAGAIN): tcp_timeout when on, else no limit.
        self.block_timeout = float(conf.tcp_timeout) if conf.tcp_timeout > 0 else None
        self.done = False  # destroyed: every call fails EPERM (mTCP's ctx->done)
        self.interrupted = False  # a registered signal arrived: waits return EINTR
        self.rss_pool: tuple[Sequence[int], int, int] | None = None  # (src ips, dst ip, port)
        self._socks: list[Socket | None] = [None] * self.max_concurrency
        self._free: deque[int] = deque(range(self.max_concurrency))
        self._by_tcb: dict[int, Socket] = {}  # id(Connection | Listener) -> socket
        self._listening: dict[int, Socket] = {}  # port -> listener socket
        self._port_users: dict[int, int] = {}  # local port -> live connections using it
        self._snd_used = 0
        self._rcv_used = 0
        self._next_port = itertools.cycle(range(*EPHEMERAL))
        self._reopen = reopen  # how to reconnect the core link after the NIC hung up
        self._next_reopen = 0.0
        self._poller = select.poll()
        self._poller.register(port.fileno(), select.POLLIN)
        self.introspect: Any = None  # control/sockstat.py's server for p4mtcp ss, polled per step

    # ---------------------------------------------------------------- socket table and pool

    def get(self, sockid: Any, call: str) -> Socket:
        """The live socket ``sockid`` or EBADF (mTCP: out of range or unused)."""
        if type(sockid) is not int or not 0 <= sockid < self.max_concurrency:
            fail(errno.EBADF, call, f"socket id {sockid!r} out of range")
        s = self._socks[sockid]
        if s is None or s.app_closed:
            fail(errno.EBADF, call, f"socket id {sockid} is not open")
        return s

    def allocate(self, stype: SockType, call: str) -> Socket:
        if not self._free:
            fail(errno.ENFILE, call, f"all {self.max_concurrency} socket ids in use")
        s = Socket(self._free.popleft(), stype)
        self._socks[s.id] = s
        return s

    def free_ids(self) -> int:
        return len(self._free)

    def flows(self) -> list[tuple[tuple[int, int], tuple[int, int]]]:
        """(local, remote) (ip, port) pairs of this core's live connections (its flow table)."""
        return [(s.conn.local, s.conn.remote) for s in self._by_tcb.values()
                if s.conn is not None and not s.tcb_freed]

    def connections(self) -> list[Connection]:
        """This core's live engine connections (what p4mtcp ss shows)."""
        return [s.conn for s in self._by_tcb.values() if s.conn is not None and not s.tcb_freed]

    def listeners(self) -> list[Listener]:
        """This core's listening endpoints (what p4mtcp ss -l shows)."""
        return [s.listener for s in self._listening.values() if s.listener is not None]

    def buffers_in_use(self) -> tuple[int, int]:
        """(send buffers, receive buffers) currently taken from the max_num_buffers pools."""
        return self._snd_used, self._rcv_used

    def _release(self, s: Socket) -> None:
        """Return ``s``'s id and buffers once both the app and the engine are done with it."""
        self._drop_buffers(s)
        if self._socks[s.id] is s:
            self._socks[s.id] = None
            self._free.append(s.id)

    def _drop_buffers(self, s: Socket) -> None:
        if s.snd_buf:
            s.snd_buf = False
            self._snd_used -= 1
        self.drop_recv_buffer(s)

    def take_send_buffer(self, s: Socket, call: str) -> None:
        """mTCP allocates a stream's send buffer at its first write; none left -> ENOMEM."""
        if s.snd_buf:
            return
        if self._snd_used >= self.max_num_buffers:
            fail(errno.ENOMEM, call, f"all {self.max_num_buffers} send buffers in use")
        self._snd_used += 1
        s.snd_buf = True

    def drop_recv_buffer(self, s: Socket) -> None:
        """The application consumed the end of the stream: no byte can arrive any more, so the
        receive buffer goes back to the pool (a half-closed connection keeps only its send
        buffer)."""
        if s.rcv_buf:
            s.rcv_buf = False
            self._rcv_used -= 1

    def _take_recv_buffer(self, s: Socket) -> None:
        self._rcv_used += 1
        s.rcv_buf = True

    def recv_buffer_left(self) -> bool:
        return self._rcv_used < self.max_num_buffers

    def close_socket(self, s: Socket) -> None:
        """The application is done with ``s``: stop reporting it, tear down what it owns."""
        s.app_closed = True
        for w in s.watchers:
            w.remove(s.id)
        s.watchers.clear()
        if s.type is SockType.EPOLL:
            self._close_epoll(s)
        elif s.type is SockType.PIPE:
            self._close_pipe_end(s)
        elif s.type is SockType.LISTENER and s.listener is not None:
            s.listener.close()
            self._by_tcb.pop(id(s.listener), None)
            self._listening.pop(s.bound[1] if s.bound else -1, None)
        elif s.conn is not None and not s.tcb_freed:
            self.drop_recv_buffer(s)  # nothing can be read any more; unsent data still can go
            if s.conn.state is not State.CLOSED:
                s.conn.close()
            if s.conn.state is not State.CLOSED:
                return  # the id comes back with EventKind.CLOSED
            self._tcb_freed(s)
        self._release(s)

    def _close_epoll(self, s: Socket) -> None:
        assert s.epoll is not None
        for sockid in s.epoll.sockets():
            w = self._socks[sockid]
            if w is not None and s.epoll in w.watchers:
                w.watchers.remove(s.epoll)
        s.epoll = None

    def _close_pipe_end(self, s: Socket) -> None:
        p = s.pipe
        assert p is not None
        if s.id == p.read_id:
            p.reader_open = False
            self.notify(p.write_id, ep.EPOLLERR | ep.EPOLLOUT)
        else:
            p.writer_open = False
            self.notify(p.read_id, ep.EPOLLIN | ep.EPOLLHUP)

    def destroy(self) -> None:
        """Close every socket, push out what that sends, and close the port."""
        for s in list(self._socks):
            if s is not None and not s.app_closed:
                self.close_socket(s)
        if not self.done:
            self._transmit(self.clock())
            self.done = True
            self._poller.unregister(self.port.fileno())
            self.port.close()
            if self.introspect is not None:
                self.introspect.close()

    # ---------------------------------------------------------------- epoll

    def readiness(self, sockid: int) -> int:
        """Epoll condition bits that hold for ``sockid`` now."""
        s = self._socks[sockid]
        if s is None or s.app_closed:
            return 0
        if s.type is SockType.STREAM:
            c = s.conn
            if c is None:
                return 0
            bits = 0
            if c.error:  # Linux tcp_poll: EPOLLERR only while the error is not yet reported
                bits |= ep.EPOLLHUP | ep.EPOLLIN | ep.EPOLLRDHUP
                if not s.error_reported:
                    bits |= ep.EPOLLERR
            elif c.readable_bytes or c.eof:
                bits |= ep.EPOLLIN
            if c.eof:
                bits |= ep.EPOLLRDHUP
                if s.shut_wr:
                    bits |= ep.EPOLLHUP
            st = c.state
            if (st is _ESTABLISHED or st is _CLOSE_WAIT) and not s.shut_wr and c.send_space > 0:
                bits |= ep.EPOLLOUT
            return bits
        if s.type is SockType.LISTENER:
            return ep.EPOLLIN if s.listener is not None and s.listener.pending else 0
        if s.type is SockType.PIPE:
            p = s.pipe
            if p is None:
                return 0
            if s.id == p.read_id:
                bits = ep.EPOLLIN if p.buf else 0
                return bits if p.writer_open else bits | ep.EPOLLIN | ep.EPOLLHUP
            if not p.reader_open:
                return ep.EPOLLERR
            return ep.EPOLLOUT if p.space() else 0
        return 0

    def new_epoll(self, call: str) -> Socket:
        s = self.allocate(SockType.EPOLL, call)
        s.epoll = ep.Epoll(self.readiness)
        return s

    def watch(self, epoll: ep.Epoll, s: Socket, events: int, data: Any) -> None:
        if s.epoll is not None:
            fail(errno.EINVAL, "mtcp_epoll_ctl", "an epoll socket cannot be watched")
        epoll.add(s.id, events, data)
        s.watchers.append(epoll)

    def unwatch(self, epoll: ep.Epoll, s: Socket) -> None:
        epoll.remove(s.id)
        if epoll in s.watchers:
            s.watchers.remove(epoll)

    def notify(self, sockid: int, bits: int) -> None:
        s = self._socks[sockid]
        if s is not None:
            for w in s.watchers:
                w.notify(sockid, bits)

    # ---------------------------------------------------------------- the loop

    def step(self, timeout: float = 0.0) -> None:
        """One run-to-completion iteration; waits up to ``timeout`` s for frames or a timer.

        First out goes what the application's calls queued and what the previous batch owes
        (ACKs), then a batch comes in and its events go to the application, which answers
        before anything is sent: the ACK of a request leaves with the response, the ACK of a
        SYN-ACK with the request, the ACK of a FIN with the FIN of the close it prompts (mTCP's
        receive, application, transmit order). Woken by a timer, the step runs it at once."""
        self._transmit(self.clock())
        frames = self.port.recv_batch()
        hung_up = not frames and self.port.closed_by_peer
        if hung_up and self._reopen is not None:
            hung_up = not self._try_reopen()
        if not frames and timeout > 0:
            wait = min(timeout, MAX_WAIT)
            deadline = self.stack.next_deadline()
            if deadline is not None:
                wait = min(wait, deadline - self.clock())
            if wait > 0:
                if hung_up:
                    time.sleep(wait)  # a hung-up link's fd stays readable: do not spin on it
                elif not self.port.arm() or self._poller.poll(wait * 1000.0):
                    frames = self.port.recv_batch()  # arm(): a ring's doorbell, if it sleeps
        now = self.clock()
        self.stats.loops += 1
        if frames:
            st = self.stats
            st.rx_packets += len(frames)
            st.rx_bytes += sum(map(len, frames))
            receive = self.stack.receive
            for src, dst, tcp in self.netif.decode_batch(frames):
                receive(src, dst, tcp, now)
            if self.netif.icmp:  # fragmentation needed, forwarded by the NIC agent (RFC 1191)
                for src, dst, msg in self.netif.take_icmp():
                    self.stack.receive_icmp(src, dst, msg, now)
            self._dispatch()
        else:
            self._transmit(now)
        if self.introspect is not None:
            self.introspect.poll(now)

    def _try_reopen(self) -> bool:
        """The NIC hung up (restart): reconnect the core link, at most every RECONNECT s.
        Connections survive; TCP retransmits whatever was lost meanwhile."""
        now = self.clock()
        if now < self._next_reopen:
            return False
        self._next_reopen = now + RECONNECT
        try:
            port = self._reopen()  # type: ignore[misc]
        except OSError:
            return False
        self._poller.unregister(self.port.fileno())
        try:
            self.port.close()
        except OSError:
            pass
        self.port = port
        self._poller.register(port.fileno(), select.POLLIN)
        self.stats.reconnects += 1
        return True

    def flush(self) -> None:
        """Send what API calls queued (writes, FINs, RSTs, SYNs) without waiting for frames."""
        self._transmit(self.clock())

    def _transmit(self, now: float) -> None:
        out = self.stack.poll(now)
        if out:
            frames = self.netif.encode_batch(out)
            st = self.stats
            try:
                lost = self._send(frames)  # full NIC ring: lost like on a wire; TCP recovers
            except OSError:
                # The NIC end is gone (restarting or shut down): what did not leave is lost on
                # the wire, and TCP's retransmissions cover it if the NIC comes back.
                st.tx_errors += 1
            else:
                st.tx_dropped += len(lost)
                st.tx_packets += len(frames) - len(lost)
                st.tx_bytes += sum(map(len, frames)) - sum(map(len, lost))
        self._dispatch()

    def _send(self, frames: list[bytes]) -> list[bytes]:
        """Hand a loop step's frames to the port as one batch (one syscall on a UNIX link, none
        on a ring); the frames it refused, always a tail."""
        return frames[self.port.send_batch(frames):]

    def _dispatch(self) -> None:
        by_tcb = self._by_tcb
        closed = EventKind.CLOSED
        for ev in self.stack.events():
            s = by_tcb.get(id(ev.sock))
            if s is None:
                continue
            kind = ev.kind
            if kind is closed:
                self._tcb_freed(s)
            if s.watchers:
                bits = _EVENT_BITS[kind]
                for w in s.watchers:
                    w.notify(s.id, bits)

    def _tcb_freed(self, s: Socket) -> None:
        if s.tcb_freed:
            return
        s.tcb_freed = True
        self.stats.flows_freed += 1
        conn = s.conn
        assert conn is not None  # only stream sockets with a connection have a TCB
        self._by_tcb.pop(id(conn), None)
        (lip, port), (rip, rport) = conn.local, conn.remote
        if self._steered:
            self._unsteer((lip, port, rip, rport))
        users = self._port_users
        if users[port] > 1:
            users[port] -= 1
        else:
            del users[port]
        self._drop_buffers(s)
        if s.app_closed:
            self._release(s)

    def run_until(self, done: Callable[[], T], timeout: float | None, call: str) -> T:
        """Run loop steps until ``done()`` is truthy or ``timeout`` seconds (None: no limit) pass.

        Returns the last ``done()`` value; raises EINTR if a registered signal arrived.
        """
        end = None if timeout is None else self.clock() + timeout
        wait = 0.0
        while True:
            self.step(wait)
            result = done()
            if result:
                return result
            if self.interrupted:
                self.interrupted = False
                fail(errno.EINTR, call, "interrupted by a registered signal")
            if end is None:
                wait = MAX_WAIT
            else:
                wait = end - self.clock()
                if wait <= 0:
                    return result

    # ---------------------------------------------------------------- streams

    def attach(self, s: Socket, conn: Connection) -> None:
        """Bind an engine connection to stream socket ``s`` (connect or accept)."""
        s.conn = conn
        s.tcb_freed = False
        self._by_tcb[id(conn)] = s
        users = self._port_users
        port = conn.local[1]
        users[port] = users.get(port, 0) + 1
        self._take_recv_buffer(s)
        for (level, name), value in s.opts.items():
            apply_option(conn, level, name, value)
        if conn.state is State.CLOSED:  # already over before the application saw it
            self._tcb_freed(s)

    def listen(self, s: Socket, backlog: int, call: str) -> None:
        ip, port = s.bound  # type: ignore[misc]
        if port in self._listening:
            fail(errno.EADDRINUSE, call, f"port {port} already has a listener")
        users = self._port_users.get(port, 0)
        if users and not s.opts.get((socket.SOL_SOCKET, socket.SO_REUSEADDR)):
            fail(errno.EADDRINUSE, call, f"port {port} is used by {users} "
                                         "connection(s); set SO_REUSEADDR to listen anyway")
        try:
            lst = self.stack.listen(ip, port, backlog)
        except OSError as exc:
            fail(exc.errno or errno.EADDRINUSE, call, str(exc))
        s.type = SockType.LISTENER
        s.listener = lst
        self._listening[port] = s
        self._by_tcb[id(lst)] = s

    def accept(self, lsock: Socket, call: str) -> Socket | None:
        """A new stream socket for the oldest established connection, or None if none waits."""
        lst = lsock.listener
        assert lst is not None
        if not lst.pending:
            return None
        if not self._free:
            fail(errno.ENFILE, call, f"all {self.max_concurrency} socket ids in use")
        if not self.recv_buffer_left():
            fail(errno.ENOMEM, call, f"all {self.max_num_buffers} receive buffers in use")
        conn = lst.accept()
        if conn is None:
            return None
        s = self.allocate(SockType.STREAM, call)
        s.bound = conn.local
        s.opts = dict(lsock.opts)  # accepted sockets inherit the listener's options
        self.attach(s, conn)
        self.stats.accepts += 1
        return s

    def connect(self, s: Socket, rip: int, rport: int, call: str) -> None:
        """Choose the local address (RSS-aware) and start the handshake."""
        if rip != self._routed and not self._routable(rip):
            fail(errno.EINVAL, call, f"no route to {socket.inet_ntoa(rip.to_bytes(4, 'big'))} "
                                     "(route.conf and the local subnets)")
        if not self.recv_buffer_left():
            fail(errno.ENOMEM, call, f"all {self.max_num_buffers} receive buffers in use")
        stack = self.stack
        bound_ip, bound_port = s.bound or (0, 0)
        if bound_port:
            lip, lport = bound_ip or self._source_ips(rip, rport)[0], bound_port
            if stack.in_use(lip, lport, rip, rport):
                fail(errno.EADDRINUSE, call, "4-tuple already in use")
            # A bound tuple whose replies the NIC hashes to another core gets a flow_steer
            # entry; without one (no steering hook, or it failed) it is EINVAL, as in mTCP.
            sel = self.selector
            if (sel is not None and not sel.steers_here(lip, lport, rip, rport)
                    and not self._steer(lip, lport, rip, rport)):
                fail(errno.EINVAL, call, f"bound port {lport}: replies would be steered to NIC "
                                         f"port {sel.core_port_of(lip, lport, rip, rport)}"
                                         + self._steer_note())
        else:
            lip, lport = self._choose_source([bound_ip] if bound_ip else
                                             self._source_ips(rip, rport), rip, rport, call)
        try:
            conn = stack.connect(lip, lport, rip, rport, self.clock())
        except OSError as exc:
            self._unsteer((lip, lport, rip, rport))
            fail(exc.errno or errno.EADDRINUSE, call, str(exc))
        s.bound = (lip, lport)
        self.attach(s, conn)
        self.stats.connects += 1

    def _routable(self, rip: int) -> bool:
        """Whether a route reaches ``rip``; remembers the last address that passed (a client
        connects to one server over and over)."""
        if self.routes is not None:
            for network, mask in self.routes:
                if rip & mask == network:
                    break
            else:
                return False
        self._routed = rip
        return True

    def _source_ips(self, rip: int, rport: int) -> Sequence[int]:
        """mtcp_init_rss's address pool for its destination, else the configured addresses."""
        pool = self.rss_pool
        if pool and pool[1] == rip and pool[2] == rport:
            return pool[0]
        return self.local_ips

    def _choose_source(self, ips: Sequence[int], rip: int, rport: int, call: str
                       ) -> tuple[int, int]:
        in_use = self.stack.in_use
        sel = self.selector
        note = ""
        for lip in ips:
            def taken(p: int, lip: int = lip) -> bool:
                return p in self._listening or in_use(lip, p, rip, rport)

            if sel is None:
                port = self._sequential_port(taken)
            else:
                port = sel.pick(lip, rip, rport, taken)
                if port is None and self.steer_flow is not None:
                    # RSS cannot place this flow on our core: an exact flow_steer entry can.
                    # Another core may hold the tuple (EADDRINUSE): try a few other ports, never
                    # one already refused (a random pick could ask for it again every time).
                    refused: set[int] = set()
                    for _ in range(FALLBACK_TRIES):
                        port = sel.pick_any(lip, rip, rport,
                                            lambda p: taken(p) or p in refused)
                        if port is None or self._steer(lip, port, rip, rport):
                            break
                        refused.add(port)
                        port, note = None, self._steer_note()
                        if not self._steer_refused_as_taken():
                            break
            if port is not None:
                return lip, port
        fail(errno.EAGAIN, call, "no free source port steers to this core" + note)

    def _steer(self, lip: int, lport: int, rip: int, rport: int) -> bool:
        """Ask for a flow_steer entry sending the flow's replies to this core."""
        if self.steer_flow is None or not self.steer_flow(self.core, lip, lport, rip, rport):
            return False
        self._steered.add((lip, lport, rip, rport))
        return True

    def _unsteer(self, flow: tuple[int, int, int, int]) -> None:
        if flow in self._steered:
            self._steered.discard(flow)
            if self.unsteer_flow is not None:
                self.unsteer_flow(self.core, *flow)

    def _steer_error(self) -> object:
        """The steering hook's ``last_error``, if it keeps one (SteeringClient does)."""
        return getattr(getattr(self.steer_flow, "__self__", None), "last_error", None)

    def _steer_refused_as_taken(self) -> bool:
        """The last flow_steer request failed because another core holds the 4-tuple."""
        why = self._steer_error()
        return isinstance(why, OSError) and why.errno == errno.EADDRINUSE

    def _steer_note(self) -> str:
        """Why the flow_steer fallback did not help."""
        if self.steer_flow is None:
            return " (no flow_steer fallback: mtcp.conf has no steer_socket)"
        return f" (flow_steer fallback failed: {self._steer_error() or 'refused'})"

    def _sequential_port(self, taken: Callable[[int], bool]) -> int | None:
        for _ in range(EPHEMERAL[1] - EPHEMERAL[0]):
            p = next(self._next_port)
            if not taken(p):
                return p
        return None


ENGINE_OPTIONS: dict[tuple[int, int], str] = {
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE): "keepalive",
    (socket.SOL_SOCKET, socket.SO_LINGER): "linger",
    (socket.SOL_SOCKET, socket.SO_RCVBUF): "rcvbuf",
    (socket.SOL_SOCKET, socket.SO_SNDBUF): "sndbuf",
    (socket.IPPROTO_TCP, socket.TCP_NODELAY): "nodelay",
}
"""Socket options the engine applies per connection: (level, optname) -> ``set_option`` name.
SO_REUSEADDR is the context's (it decides whether ``mtcp_listen`` may reuse a busy port)."""


def apply_option(conn: Connection, level: int, name: int, value: Any) -> None:
    """Hand an API option value to the engine in its terms."""
    engine_name = ENGINE_OPTIONS.get((level, name))
    if engine_name is None:
        return
    if engine_name == "linger":  # struct linger {l_onoff, l_linger} -> seconds or None (off)
        value = value[1] if value[0] else None
    conn.set_option(engine_name, value)

"""TcpStack: demultiplexing, RST for segments nobody owns, timers and the output queue."""

from __future__ import annotations

import errno
import heapq
import itertools
from typing import cast

from . import pmtu, wire
from .config import TcpConfig
from .connection import Connection, connection_key
from .events import Event, EventKind, State
from .isn import initial_seq
from .listener import Listener
from .reset import reset_for
from .seq import MASK
from .stats import TcpStats
from .wire import ACK, RST, SYN

_TIME_WAIT = State.TIME_WAIT
_new_tuple = tuple.__new__


class TcpStack:
    """The engine for one core: every connection and listener, fed segments and time."""

    def __init__(self, config: TcpConfig | None, isn_secret: bytes) -> None:
        """``isn_secret``: at least 16 random bytes keying ISNs and SYN cookies (RFC 6528); the
        caller supplies them so that the engine itself stays deterministic."""
        if len(isn_secret) < 16:
            raise ValueError(f"isn_secret must be at least 16 bytes (RFC 6528), got {len(isn_secret)}")
        self.config = config or TcpConfig()
        self._secret = bytes(isn_secret)
        self._conns: dict[int, Connection] = {}   # connection_key -> Connection
        self._listeners: dict[tuple[int, int], Listener] = {}
        self._out: list[tuple[int, int, bytes]] = []
        self._events: list[Event] = []
        self._queued: list[Connection] = []       # connections with output to run
        self._timers: list[tuple[float, int, Connection]] = []
        self._tick = itertools.count()
        self.now = 0.0                            # Host: the time of the last receive()/poll()
        self._challenge_second = -1
        self._challenge_count = 0
        self.stats = TcpStats()
        self.path_mtus = pmtu.PathCache()          # RFC 1191 5: per destination, for every conn
        self.last_error = ""          # why the last segment was dropped as malformed

    # ------------------------------------------------------------------ facade

    def listen(self, local_ip: int, local_port: int, backlog: int) -> Listener:
        """Passive OPEN; ``local_ip`` 0 listens on every address. OSError EADDRINUSE / EINVAL."""
        if backlog <= 0:
            raise OSError(errno.EINVAL, f"listen: backlog must be > 0, got {backlog}")
        _check_endpoint("listen", local_ip, local_port)
        if (local_ip, local_port) in self._listeners:
            raise OSError(errno.EADDRINUSE, f"listen: {_fmt(local_ip, local_port)} already listening")
        lst = Listener(self, self._secret, local_ip, local_port, backlog)
        self._listeners[(local_ip, local_port)] = lst
        return lst

    def connect(self, local_ip: int, local_port: int, remote_ip: int, remote_port: int,
                now: float) -> Connection:
        """Active OPEN: the SYN goes out on the next poll(). OSError EADDRINUSE if the 4-tuple is taken."""
        _check_endpoint("connect", local_ip, local_port)
        _check_endpoint("connect", remote_ip, remote_port)
        if not _unicast(local_ip) or not _unicast(remote_ip):   # RFC 9293 3.9.1 MUST-46
            raise OSError(errno.EINVAL, f"connect: {_fmt(local_ip, 0)} -> {_fmt(remote_ip, 0)}: "
                          "addresses must be unicast (not 0, broadcast or multicast)")
        if connection_key(local_ip, local_port, remote_ip, remote_port) in self._conns:
            raise OSError(errno.EADDRINUSE, f"connect: {_fmt(local_ip, local_port)} -> "
                          f"{_fmt(remote_ip, remote_port)} already in use")
        self.now = now
        conn = self.new_connection(local_ip, local_port, remote_ip, remote_port, now)
        self.stats.active_opens += 1
        conn.open_active()
        return conn

    def receive(self, src_ip: int, dst_ip: int, tcp_bytes: bytes | bytearray | memoryview,
                now: float) -> None:
        """Process one TCP segment (header + payload). Malformed input is counted, never raised."""
        self.now = now
        stats = self.stats
        stats.segs_in += 1
        seg = wire.parse(tcp_bytes, src_ip, dst_ip, not self.config.offload_checksum)
        if isinstance(seg, str):
            if seg is wire.BAD_CHECKSUM:
                stats.bad_checksums += 1
            else:
                stats.bad_segments += 1
            self.last_error = f"{seg} (from {_fmt(src_ip, 0)} to {_fmt(dst_ip, 0)})"
            return
        conn = self._conns.get(dst_ip << 64 | seg.dport << 48 | src_ip << 16 | seg.sport)
        if conn is not None and conn.state is _TIME_WAIT and seg.flags & (SYN | ACK | RST) == SYN \
                and conn.timewait_reusable(seg):
            conn.delete()                          # RFC 6191 / RFC 9293 3.6.1: reuse TIME-WAIT
            conn = None
        if conn is not None:
            conn.on_segment(seg, now)
            self.mark(conn)           # output waits for poll(): one ACK per batch (MUST-58, MUST-59)
            return
        if not _unicast(src_ip) or not _unicast(dst_ip):
            return                    # RFC 9293 3.9.1 MUST-57, MUST-63: drop broadcast/multicast
        lst = self._listeners.get((dst_ip, seg.dport)) or self._listeners.get((0, seg.dport))
        if lst is not None:
            lst.on_segment(seg, src_ip, dst_ip, now)
            return
        if not seg.flags & RST:                    # RFC 9293 3.10.7.1 (CLOSED): RST for any but RST
            self.send_rst(dst_ip, src_ip, seg.dport, seg.sport, *reset_for(seg))

    def receive_icmp(self, src_ip: int, dst_ip: int, icmp_bytes: bytes | bytearray | memoryview,
                     now: float) -> None:
        """Process one ICMP message (the IPv4 payload); only fragmentation needed acts
        (`path_mtu`). Anything else is counted as ignored, never raised."""
        self.stats.icmp_in += 1
        try:
            msg = pmtu.frag_needed(icmp_bytes)
        except ValueError as exc:
            self.stats.pmtu_ignored += 1
            self.last_error = f"{exc} (from {_fmt(src_ip, 0)} to {_fmt(dst_ip, 0)})"
            return
        self.path_mtu(msg.local_ip, msg.local_port, msg.remote_ip, msg.remote_port, msg.seq,
                      msg.mtu, now)

    def path_mtu(self, local_ip: int, local_port: int, remote_ip: int, remote_port: int,
                 seq: int, mtu: int, now: float) -> bool:
        """RFC 1191: the path of the connection that sent the segment at wire ``seq`` carries
        ``mtu`` octets (already judged by `pmtu.path_mtu`). True when that connection's MSS went
        down (its flight goes again at the new size on the next poll); else counted ignored."""
        self.now = now
        conn = self._conns.get(connection_key(local_ip, local_port, remote_ip, remote_port))
        if conn is not None and conn.path_mtu(seq, mtu):
            self.stats.pmtu_lowered += 1
            return True
        self.stats.pmtu_ignored += 1
        return False

    def path_mtu_for(self, remote_ip: int) -> int:
        """Host: the path MTU learned for ``remote_ip``, 0 if none (`pmtu.PathCache`)."""
        return self.path_mtus.lookup(remote_ip, self.now)

    def learn_path_mtu(self, remote_ip: int, mtu: int) -> None:
        """Host: remember a believed path MTU for ``remote_ip``."""
        self.path_mtus.learn(remote_ip, mtu, self.now)

    def poll(self, now: float) -> list[tuple[int, int, bytes]]:
        """Run due timers and pending output; return (src_ip, dst_ip, tcp_bytes) to transmit."""
        self.now = now
        if self._queued:
            self._flush(now)
        timers = self._timers
        budget = len(timers) + 16                  # a timer re-armed in the past waits a poll
        while timers and timers[0][0] <= now and budget:
            budget -= 1
            t, _, conn = heapq.heappop(timers)
            if conn.timer_at != t or conn.freed:
                continue                           # superseded entry
            conn.timer_at = None
            conn.on_timer(now)
            if not conn.freed:
                self._schedule(conn)
        if self._queued:
            self._flush(now)
        out, self._out = self._out, []
        return out

    def _flush(self, now: float) -> None:
        """Output for every connection touched by segments or application calls."""
        while self._queued:
            queued, self._queued = self._queued, []
            for conn in queued:
                if conn.queued:
                    conn.output(now)               # clears conn.queued
                    if not conn.freed:
                        self._schedule(conn)

    def next_deadline(self) -> float | None:
        """When poll() must next run; a time already past means at once (output is pending)."""
        if self._out or self._queued:
            return self.now
        timers = self._timers
        while timers:
            t, _, conn = timers[0]
            if conn.timer_at == t and not conn.freed:
                return t
            heapq.heappop(timers)
        return None

    def events(self) -> list[Event]:
        """Events since the last call (drained)."""
        ev, self._events = self._events, []
        for e in ev:
            if e.sock.__class__ is Connection:
                e.sock.reported = 0
        return ev

    def in_use(self, local_ip: int, local_port: int, remote_ip: int, remote_port: int) -> bool:
        return connection_key(local_ip, local_port, remote_ip, remote_port) in self._conns

    @property
    def connections(self) -> int:
        return len(self._conns)

    # ------------------------------------------------------------------ the Host (host.py)

    def new_connection(self, local_ip: int, local_port: int, remote_ip: int, remote_port: int,
                       now: float, iss: int | None = None) -> Connection:
        if iss is None:                            # RFC 9293 3.4.1 / RFC 6528
            iss = initial_seq(self._secret, local_ip, local_port, remote_ip, remote_port, now)
        conn = Connection(self, local_ip, local_port, remote_ip, remote_port, iss, now)
        self._conns[conn.key] = conn
        return conn

    def forget(self, conn: Connection) -> None:
        if self._conns.get(conn.key) is conn:
            del self._conns[conn.key]
        conn.timer_at = -1.0

    def unlisten(self, listener: Listener) -> None:
        self._listeners.pop(listener.local, None)

    def mark(self, conn: Connection) -> None:
        if not conn.queued and not conn.freed:
            conn.queued = True
            self._queued.append(conn)

    def event(self, kind: EventKind, sock: Connection | Listener) -> None:
        # tuple.__new__ directly: a NamedTuple's own __new__ is Python even when this is
        # compiled, and a short connection raises about ten events
        self._events.append(cast(Event, _new_tuple(Event, (kind, sock))))

    def emit(self, src_ip: int, dst_ip: int, segment: bytes) -> None:
        self.stats.segs_out += 1
        self._out.append((src_ip, dst_ip, segment))

    def emit_run(self, src_ip: int, dst_ip: int, segments: list[bytes]) -> None:
        self.stats.segs_out += len(segments)
        self._out += [(src_ip, dst_ip, seg) for seg in segments]

    def send_rst(self, src_ip: int, dst_ip: int, sport: int, dport: int, seq: int, ack: int,
                 flags: int) -> None:
        self.stats.rst_out += 1
        self.emit(src_ip, dst_ip, wire.build(src_ip, dst_ip, sport, dport, seq, ack, flags, 0,
                                             b"", b"", not self.config.offload_checksum))

    def challenge(self, now: float) -> bool:
        """RFC 5961 section 7: challenge ACKs, at most ``challenge_ack_limit`` per second."""
        second = int(now)
        if second != self._challenge_second:
            self._challenge_second = second
            self._challenge_count = 0
        if self._challenge_count >= self.config.challenge_ack_limit:
            self.stats.challenge_acks_suppressed += 1
            return False
        self._challenge_count += 1
        self.stats.challenge_acks += 1
        return True

    # ------------------------------------------------------------------ timers

    def _schedule(self, conn: Connection) -> None:
        d = conn.deadline()
        if d is None:
            return
        s = conn.timer_at
        if s is None or d < s:
            conn.timer_at = d
            timers = self._timers
            heapq.heappush(timers, (d, next(self._tick), conn))
            if len(timers) > 1024 and len(timers) > 4 * len(self._conns):
                self._compact_timers()

    def _compact_timers(self) -> None:
        """Drop superseded entries (and freed connections) so the heap stays O(connections)."""
        tick = self._tick
        timers = self._timers                      # in place: poll() may be iterating it
        timers[:] = [(c.timer_at, next(tick), c) for c in self._conns.values()
                     if c.timer_at is not None and c.timer_at >= 0]
        heapq.heapify(timers)


def _check_endpoint(call: str, ip: int, port: int) -> None:
    if not (isinstance(ip, int) and 0 <= ip <= MASK):
        raise ValueError(f"{call}: IPv4 address must be an int in 0..2**32-1, got {ip!r}")
    if not (isinstance(port, int) and 0 < port <= 0xFFFF):
        raise ValueError(f"{call}: port must be an int in 1..65535, got {port!r}")


def _unicast(ip: int) -> bool:
    """Not 0.0.0.0, not multicast/reserved (224/3), not limited broadcast."""
    return ip != 0 and ip < 0xE0000000


def _fmt(ip: int, port: int) -> str:
    addr = ".".join(str((ip >> s) & 0xFF) for s in (24, 16, 8, 0))
    return f"{addr}:{port}" if port else addr

"""A passive-open endpoint (RFC 9293 LISTEN): SYN queue, accept queue and SYN cookies."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from . import wire
from .events import EventKind, State
from .reset import reset_for
from .syncookies import check_cookie, make_cookie
from .wire import ACK, RST, SYN, Segment

if TYPE_CHECKING:
    from .connection import Connection
    from .host import Host


class Listener:
    """Half-open connections are bounded by ``TcpConfig.syn_backlog``; past that, SYNs are
    answered with SYN cookies (no state), so a flood cannot fill the table. Completed
    connections wait in an accept queue of ``backlog`` entries."""

    __slots__ = ("_host", "_secret", "local", "backlog", "state", "_queue", "_half_open")

    def __init__(self, host: Host, secret: bytes, local_ip: int, local_port: int,
                 backlog: int) -> None:
        """``secret`` keys the SYN cookies (the stack's ISN secret, RFC 6528)."""
        self._host = host
        self._secret = secret
        self.local = (local_ip, local_port)
        self.backlog = backlog
        self.state = State.LISTEN
        self._queue: deque[Connection] = deque()
        self._half_open: set[Connection] = set()

    def __repr__(self) -> str:
        return f"<Listener {self.local} pending={len(self._queue)}>"

    @property
    def pending(self) -> int:
        """Established connections waiting for accept()."""
        return len(self._queue)

    def accept(self) -> Connection | None:
        """The oldest established connection, or None. Data or a FIN that arrived before
        accept() is reported as READABLE/EOF events right away."""
        while self._queue:
            conn = self._queue.popleft()
            if conn.freed:
                continue
            conn.listener = None
            conn.visible = True
            if conn.readable_bytes:
                conn.report(EventKind.READABLE)
            if conn.eof:
                conn.report(EventKind.EOF)
            return conn
        return None

    def close(self) -> None:
        """Stop listening; connections not yet accepted are reset (RFC 9293 3.10.4 LISTEN)."""
        if self.state is State.CLOSED:
            return
        self.state = State.CLOSED
        self._host.unlisten(self)
        for conn in list(self._half_open) + list(self._queue):
            conn.listener = None
            conn.abort()
        self._half_open.clear()
        self._queue.clear()

    # ------------------------------------------------------------------ engine side

    def on_segment(self, seg: Segment, src_ip: int, dst_ip: int, now: float) -> None:
        """RFC 9293 3.10.7.2: a segment for LISTEN with no TCB."""
        host = self._host
        flags = seg.flags
        if flags & RST:                            # first check: ignore RST
            return
        if flags & ACK:                            # second check: ACK -> cookie or RST
            if not flags & SYN and host.config.syncookies:
                mss = self._check_cookie(seg, src_ip, dst_ip, now)
                if mss is not None:
                    if len(self._queue) >= self.backlog:
                        host.stats.listen_overflows += 1   # drop: the peer retransmits its ACK
                        return
                    self._cookie_open(seg, src_ip, dst_ip, mss, now)
                    return
            host.send_rst(dst_ip, src_ip, seg.dport, seg.sport, *reset_for(seg))
            return
        if not flags & SYN:                        # fourth: anything else is dropped
            return
        cfg = host.config
        if len(self._queue) >= self.backlog:       # accept queue full: drop, the peer retries
            host.stats.syn_dropped += 1
            return
        if len(self._half_open) >= cfg.syn_backlog:
            if not cfg.syncookies:
                host.stats.syn_dropped += 1
                return
            self._send_syn_cookie(seg, src_ip, dst_ip, now)
            return
        conn = host.new_connection(dst_ip, seg.dport, src_ip, seg.sport, now)
        conn.open_passive(seg, self, now)
        self._half_open.add(conn)
        host.stats.passive_opens += 1
        host.mark(conn)

    def _send_syn_cookie(self, seg: Segment, src_ip: int, dst_ip: int, now: float) -> None:
        """A stateless SYN-ACK whose ISN is the cookie; only MSS is offered (syncookies.py)."""
        host = self._host
        cfg = host.config
        key = (dst_ip, seg.dport, src_ip, seg.sport)
        cookie, mss = make_cookie(self._secret, key, seg.seq, min(seg.mss or 536, cfg.mss), now)
        host.stats.syncookies_sent += 1
        host.emit(dst_ip, src_ip, wire.build(
            dst_ip, src_ip, seg.dport, seg.sport, cookie, (seg.seq + 1) & 0xFFFFFFFF, SYN | ACK,
            min(cfg.rcvbuf, 65535), wire.syn_options(mss, None, False, None), b"",
            not cfg.offload_checksum))

    def _check_cookie(self, seg: Segment, src_ip: int, dst_ip: int, now: float) -> int | None:
        """The MSS a valid SYN cookie in this ACK encodes, or None (counted as rejected)."""
        mss = check_cookie(self._secret, (dst_ip, seg.dport, src_ip, seg.sport),
                           (seg.seq - 1) & 0xFFFFFFFF, (seg.ack - 1) & 0xFFFFFFFF, now)
        if mss is None:
            self._host.stats.syncookies_rejected += 1
        return mss

    def _cookie_open(self, seg: Segment, src_ip: int, dst_ip: int, mss: int, now: float) -> None:
        """Build the connection a valid cookie implies and queue it for accept()."""
        host = self._host
        host.stats.syncookies_accepted += 1
        host.stats.passive_opens += 1
        conn = host.new_connection(dst_ip, seg.dport, src_ip, seg.sport, now,
                                   iss=(seg.ack - 1) & 0xFFFFFFFF)
        conn.open_cookie(seg, mss, now)
        conn.listener = self
        self._queue.append(conn)
        host.event(EventKind.ACCEPTABLE, self)
        conn.on_segment(seg, now)                  # the ACK may carry data or a FIN
        host.mark(conn)

    def established(self, conn: Connection) -> None:
        """``conn`` (from this listener's SYN queue) completed its handshake: ready to accept."""
        self._half_open.discard(conn)
        self._queue.append(conn)
        self._host.event(EventKind.ACCEPTABLE, self)

    def forget(self, conn: Connection) -> None:
        """``conn``'s TCB was deleted before accept()."""
        self._half_open.discard(conn)
        try:
            self._queue.remove(conn)
        except ValueError:
            pass

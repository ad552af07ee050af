"""The transmission control block and its state machine (RFC 9293 section 3.10).

Positions are kept as unbounded integers: on the send side 0 is ISS (the SYN), data starts at 1;
on the receive side 0 is IRS. Wire sequence numbers are derived at the edge (``seq.py``), so
the buffers, the SACK scoreboard and the congestion logic never see wrap-around.
"""

from __future__ import annotations

import errno
import socket
from typing import TYPE_CHECKING

from . import pmtu, wire
from .buffers import RecvBuffer, SendBuffer
from .congestion import CongestionControl
from .congestion import make as make_congestion_control
from .recovery import LossRecovery
from .reorder import DUP_THRESH
from .events import EventKind, State
from .rtt import RttEstimator
from .reset import reset_for
from .seq import MASK, seq_diff, seq_lt
from .states import ALLOWED
from .wire import ACK, FIN, PSH, RST, SYN, TS_OPTION, Segment

if TYPE_CHECKING:
    from .host import Host
    from .listener import Listener
    from .trace import ConnTrace

# Enum attribute lookups cost ~90 ns each; the hot path uses these module constants.
CLOSED, LISTEN, SYN_SENT, SYN_RECEIVED = State.CLOSED, State.LISTEN, State.SYN_SENT, State.SYN_RECEIVED
ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2 = State.ESTABLISHED, State.FIN_WAIT_1, State.FIN_WAIT_2
CLOSE_WAIT, CLOSING, LAST_ACK, TIME_WAIT = State.CLOSE_WAIT, State.CLOSING, State.LAST_ACK, State.TIME_WAIT
EV_CONNECTED, EV_READABLE, EV_WRITABLE = EventKind.CONNECTED, EventKind.READABLE, EventKind.WRITABLE
EV_EOF, EV_RESET, EV_ERROR, EV_CLOSED = EventKind.EOF, EventKind.RESET, EventKind.ERROR, EventKind.CLOSED
_READABLE_BIT, _WRITABLE_BIT = 1 << EV_READABLE.value, 1 << EV_WRITABLE.value   # in `reported`

_CAN_SEND = frozenset({SYN_SENT, SYN_RECEIVED, ESTABLISHED, CLOSE_WAIT})
_DATA_OUT = frozenset({ESTABLISHED, CLOSE_WAIT, FIN_WAIT_1, CLOSING,
                       LAST_ACK})
_RECEIVING = frozenset({ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2})
_CONTROL = SYN | FIN | RST | ACK | 0x20     # header prediction needs exactly ACK among these (+PSH)
_OPTIONS = ("nodelay", "keepalive", "linger", "rcvbuf", "sndbuf")
_DEFAULT_MSS = 536          # RFC 9293 3.7.1 (MUST-15): assume 536 when no MSS option arrives
_MAX_WINDOW = 65535
# The algorithm is built once the MSS is negotiated (_set_mss), before any state that sends
# data; until then every connection points at this one inert instance, never changed.
_BEFORE_MSS = CongestionControl(_DEFAULT_MSS, 10)


def connection_key(local_ip: int, local_port: int, remote_ip: int, remote_port: int) -> int:
    """The stack's table key for a 4-tuple: one int (40 bytes) rather than a 4-tuple (72)."""
    return local_ip << 64 | local_port << 48 | remote_ip << 16 | remote_port


def window_shift(rcvbuf: int) -> int:
    """Smallest RFC 7323 shift that lets ``rcvbuf`` be advertised (at most 14)."""
    shift = 0
    while shift < 14 and (rcvbuf >> shift) > _MAX_WINDOW:
        shift += 1
    return shift


class Connection:
    """One TCP connection. Application calls (send, recv, shutdown, close, abort) never need the
    time: their effects go out on the stack's next ``poll(now)``."""

    __slots__ = (
        "_host", "_cfg", "_lip", "_lport", "_rip", "_rport", "key", "state", "error", "eof", "listener",
        "passive", "visible", "_app_closed", "_rd_shut", "nodelay", "keepalive", "linger",
        "iss", "una", "nxt", "snd_max", "_tail_start", "snd_wnd", "max_snd_wnd", "_wl1", "_wl2",
        "sndbuf",
        "fin_off", "_fin_pending", "_want_write", "irs", "rcv", "_rcv_adv", "_fin_rcv_off",
        "_rcv_mss", "_last_ack_sent", "mss_peer", "eff_mss", "snd_wscale", "rcv_wscale",
        "sack_ok", "ts_ok", "ts_recent", "rtt", "cc", "lr", "_rtt_off", "_rtt_time", "_retries", "_rto_at",
        "_dack_at", "_persist_at", "_persist_n", "_tw_at", "_last_rx", "_ka_sent", "_ack_now",
        "_send_syn", "timer_at", "queued", "freed", "_peer_ws", "reported", "_dsack",
        "retransmits", "trace",
    )

    def __init__(self, host: Host, local_ip: int, local_port: int, remote_ip: int,
                 remote_port: int, iss: int, now: float) -> None:
        cfg = host.config
        self._host = host
        self._cfg = cfg
        self._lip, self._lport, self._rip, self._rport = local_ip, local_port, remote_ip, remote_port
        self.key = connection_key(local_ip, local_port, remote_ip, remote_port)
        self.state = CLOSED
        self.error = 0
        self.eof = False
        self.listener: Listener | None = None
        self.passive = False
        self.visible = False
        self._app_closed = False
        self._rd_shut = False
        self.nodelay = cfg.nodelay
        self.keepalive = cfg.keepalive
        self.linger: int | None = None
        # send sequence space (RFC 9293 3.3.1), as offsets from ISS
        self.iss = iss
        self.una = 0
        self.nxt = 0
        self.snd_max = 0
        self._tail_start = 0                   # where the newest segment sent starts
        self.snd_wnd = 0
        self.max_snd_wnd = 0
        self._wl1 = 0
        self._wl2 = 0
        self.sndbuf = SendBuffer(cfg.sndbuf)
        self.sndbuf.base = 1
        self.fin_off: int | None = None
        self._fin_pending = False
        self._want_write = False
        # receive sequence space, as offsets from IRS
        self.irs = 0
        self.rcv = RecvBuffer(cfg.rcvbuf)
        self._rcv_adv = 0
        self._fin_rcv_off: int | None = None
        self._rcv_mss = _DEFAULT_MSS
        self._last_ack_sent = 0
        # negotiated options
        self.mss_peer = _DEFAULT_MSS
        self.eff_mss = _DEFAULT_MSS
        self.snd_wscale = 0
        self.rcv_wscale = window_shift(cfg.rcvbuf) if cfg.window_scaling else 0
        self.sack_ok = False
        self.ts_ok = False
        self.ts_recent = 0
        # loss recovery and congestion control
        self.rtt = RttEstimator(cfg.rto_initial, cfg.rto_min, cfg.rto_max)
        self.cc = _BEFORE_MSS
        self.lr = LossRecovery()              # recovery.py: dupacks, SACK, reordering, TLP
        self._dsack: tuple[int, int] | None = None   # duplicate to report next (RFC 2883)
        self._rtt_off: int | None = None
        self._rtt_time = 0.0
        self._retries = 0
        # timers (absolute times or None)
        self._rto_at: float | None = None
        self._dack_at: float | None = None
        self._persist_at: float | None = None
        self.retransmits = 0                   # segments sent again (p4mtcp ss, traces)
        self.trace: ConnTrace | None = None    # trace.py: sampled per ACK while attached
        self._persist_n = 0
        self._tw_at: float | None = None
        self._last_rx = now
        self._ka_sent = 0
        self._ack_now = False
        self._send_syn = False
        self._peer_ws = False
        # Kept by the host (host.py), read by the connection: the deadline its timer heap holds
        # for us (-1: none will be), whether we wait in its output list, the READABLE/WRITABLE
        # bits already queued since its last events(), and whether the TCB is deleted.
        self.timer_at: float | None = None
        self.queued = False
        self.reported = 0
        self.freed = False

    def __repr__(self) -> str:
        return f"<Connection {self.state.name} {self.local}->{self.remote}>"

    @property
    def local(self) -> tuple[int, int]:
        """(IPv4 address as int, port) of this end."""
        return self._lip, self._lport

    @property
    def remote(self) -> tuple[int, int]:
        return self._rip, self._rport

    def _set_state(self, new: State) -> None:
        """Every state change passes here: one RFC 9293 figure 5 does not draw raises (states.py)
        and changes nothing."""
        old = self.state
        if not ALLOWED[old] >> new & 1:
            raise RuntimeError(f"{self!r}: RFC 9293 has no transition {old.name} -> {new.name}")
        self.state = new

    # ------------------------------------------------------------------ application interface

    @property
    def readable_bytes(self) -> int:
        return self.rcv.readable

    @property
    def send_space(self) -> int:
        if self.state not in _CAN_SEND or self.fin_off is not None or self._fin_pending:
            return 0
        return self.sndbuf.space

    def send(self, data: bytes | bytearray | memoryview) -> int:
        """Queue data; return how many bytes were taken (0 when the buffer is full).

        OSError: ENOTCONN before connect, EPIPE after shutdown(SHUT_WR)/close, the connection's
        error (ECONNRESET, ETIMEDOUT, ...) once it failed."""
        st = self.state
        if st not in _CAN_SEND or self.fin_off is not None or self._fin_pending:
            if self.error:
                raise OSError(self.error, f"send: {errno.errorcode[self.error]}")
            if st is CLOSED or st is LISTEN:
                raise OSError(errno.ENOTCONN, "send: not connected")
            raise OSError(errno.EPIPE, f"send: connection shut down for writing ({st.name})")
        n = self.sndbuf.write(data)
        if n < len(data):
            self._want_write = True
        if n and st is not SYN_SENT and st is not SYN_RECEIVED:
            self._host.mark(self)
        return n

    def recv(self, n: int, peek: bool = False) -> bytes:
        """Up to ``n`` in-order bytes; b"" when none are buffered (then check ``eof``/``error``)."""
        if n < 0:
            raise ValueError(f"recv: negative size {n}")
        data = self.rcv.read(n, peek)
        if data and not peek and self.state in _RECEIVING:
            # RFC 9293 3.8.6.2.2: announce the reopened window once it grew by enough.
            rcv = self.rcv
            if rcv.nxt + rcv.window - self._rcv_adv >= min(rcv.capacity // 2, 2 * self.eff_mss):
                self._ack_now = True
                self._host.mark(self)
        return data

    def shutdown(self, how: int) -> None:
        """SHUT_RD discards further input; SHUT_WR sends FIN after queued data (half-close)."""
        if how not in (socket.SHUT_RD, socket.SHUT_WR, socket.SHUT_RDWR):
            raise ValueError(f"shutdown: how must be SHUT_RD, SHUT_WR or SHUT_RDWR, got {how!r}")
        st = self.state
        if st is CLOSED or st is LISTEN:
            raise OSError(errno.ENOTCONN, "shutdown: not connected")
        if how != socket.SHUT_WR:
            self._rd_shut = True
        if how != socket.SHUT_RD:
            self._close_write()

    def close(self) -> None:
        """Application CLOSE (RFC 9293 3.10.4): FIN after queued data; RST if unread data remains
        or SO_LINGER is on with a zero timeout (RFC 2525 2.17)."""
        if self._app_closed or self.freed:
            self._app_closed = True
            return
        self._app_closed = True
        st = self.state
        if st is SYN_SENT or st is CLOSED:
            self.delete()                          # RFC 9293 3.10.4: SYN-SENT -> delete the TCB
            return
        if self.rcv.readable or self.linger == 0:
            self.abort()
            return
        self._close_write()
        if self.state is FIN_WAIT_2:
            self._tw_at = self._last_rx + self._cfg.fin_timeout

    def abort(self) -> None:
        """ABORT (RFC 9293 3.10.5): send RST in synchronized states, then delete the TCB."""
        if self.freed:
            return
        if self.state in (SYN_RECEIVED, ESTABLISHED, FIN_WAIT_1,
                          FIN_WAIT_2, CLOSE_WAIT):
            self._send_reset()
        self._app_closed = True
        self.delete()

    def _send_reset(self) -> None:
        """<SEQ=SND.NXT><CTL=RST> (RFC 9293 3.10.5)."""
        self._host.send_rst(self._lip, self._rip, self._lport, self._rport,
                            (self.iss + self.nxt) & MASK, 0, RST)

    def set_option(self, name: str, value: object) -> None:
        """nodelay (bool), keepalive (bool), linger (None or seconds >= 0), rcvbuf, sndbuf (int > 0).

        linger 0 makes close() abortive (RST); other values are kept but close() never blocks
        here. rcvbuf above 65535 needs window scaling, so it only grows past that before our SYN
        leaves (or up to the negotiated scale)."""
        if name not in _OPTIONS:
            raise OSError(errno.ENOPROTOOPT, f"set_option: unknown option {name!r} (known: {_OPTIONS})")
        if name == "nodelay" or name == "keepalive":
            setattr(self, name, bool(value))
            if name == "nodelay" and value:
                self._host.mark(self)           # flush anything Nagle was holding
            return
        if name == "linger":
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"set_option: linger must be None or an int >= 0, got {value!r}")
            self.linger = value
            return
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"set_option: {name} must be a positive int, got {value!r}")
        if name == "rcvbuf":
            if self.snd_max == 0 and not self.passive and self._cfg.window_scaling:
                self.rcv_wscale = window_shift(value)      # our SYN has not left yet
            self.rcv.capacity = min(value, _MAX_WINDOW << self.rcv_wscale)   # RFC 7323 2.3
        else:
            self.sndbuf.capacity = value

    # ------------------------------------------------------------------ opening

    def open_active(self) -> None:
        self._set_state(SYN_SENT)
        self.visible = True
        self._send_syn = True
        self._host.mark(self)

    def open_passive(self, seg: Segment, listener: Listener, now: float) -> None:
        """A SYN reached a listener with room: RFC 9293 3.10.7.2 LISTEN, third check."""
        self.passive = True
        self.listener = listener
        self.irs = seg.seq
        self.rcv.nxt = 1
        self._rcv_adv = 1
        self._negotiate(seg)
        self.snd_wnd = seg.window                  # RFC 7323 2.2: a SYN's window is never scaled
        self.max_snd_wnd = self.snd_wnd
        self._set_state(SYN_RECEIVED)
        self._send_syn = True
        self._last_rx = now

    def open_cookie(self, seg: Segment, mss: int, now: float) -> None:
        """The handshake-completing ACK carried a valid SYN cookie: build the TCB it implies."""
        self.passive = True
        self.irs = (seg.seq - 1) & MASK
        self.rcv.nxt = 1
        self.mss_peer = mss
        self.rcv_wscale = 0                        # cookies carry no window scale (module doc)
        self.rcv.capacity = min(self.rcv.capacity, _MAX_WINDOW)
        self._rcv_adv = 1 + self.rcv.window
        self._set_mss()
        self.una = self.nxt = self.snd_max = 1
        self.snd_wnd = self.max_snd_wnd = seg.window
        self._wl1, self._wl2 = 1, 1
        self._set_state(ESTABLISHED)
        self._last_rx = now

    def _negotiate(self, seg: Segment) -> None:
        """Options of the peer's SYN: each extension only when both sides offer it."""
        cfg = self._cfg
        self.mss_peer = seg.mss if seg.mss else _DEFAULT_MSS          # RFC 9293 3.7.1
        self._peer_ws = seg.wscale is not None
        if cfg.window_scaling and seg.wscale is not None:              # RFC 7323 1.3, 2.2
            self.snd_wscale = seg.wscale
        else:
            self.snd_wscale = self.rcv_wscale = 0
        self.sack_ok = cfg.sack and seg.sack_ok                         # RFC 2018 section 2
        if cfg.timestamps and seg.tsval is not None:                   # RFC 7323 3.2
            self.ts_ok = True
            self.ts_recent = seg.tsval
        self.rcv.capacity = min(self.rcv.capacity, _MAX_WINDOW << self.rcv_wscale)
        self._set_mss()

    def _set_mss(self) -> None:
        # RFC 9293 3.7.1 and RFC 6691: the data we send fits min(peer MSS, ours) less options.
        options = 12 if self.ts_ok else 0
        self.eff_mss = max(64, min(self.mss_peer, self._cfg.mss) - options)
        self._rcv_mss = self.eff_mss
        mtu = self._host.path_mtu_for(self._rip)   # RFC 1191 5: learned by an earlier connection
        learned = pmtu.mss_for(mtu, options) if mtu else self.eff_mss
        if learned < self.eff_mss:
            self.eff_mss = learned
            self._host.stats.pmtu_from_cache += 1
        self.cc = make_congestion_control(self._cfg.congestion, self.eff_mss,
                                          self._cfg.initial_window)

    def path_mtu(self, seq: int, mtu: int) -> bool:
        """A fragmentation-needed message quoting our segment at wire ``seq`` says the path
        carries ``mtu`` octets (pmtu.py); True when the MSS went down.

        RFC 5927 4.1: believed only for a quoted sequence number in SND.UNA..SND.NXT (sent, not
        yet acknowledged), and only once data flows. RFC 1191 6.4 and 8: the MSS never rises on
        such a message. As Linux's tcp_simple_retransmit, the flight goes again at once at the
        new size (back to SND.UNA, as cwnd allows) and cwnd is kept, in bytes: the drops were
        no congestion and no more data is in the network (RFC 1191 6.4). In fast recovery the
        holes are resent at the new size as recovery reaches them."""
        una = self.una
        off = una + seq_diff(seq, (self.iss + una) & MASK)
        if self.state not in _DATA_OUT or not una <= off < self.snd_max:   # SND.MAX: sent
            return False
        self._host.learn_path_mtu(self._rip, mtu)   # RFC 1191 5: for later connections too
        mss = pmtu.mss_for(mtu, 12 if self.ts_ok else 0)
        if mss >= self.eff_mss:
            return False
        self.eff_mss = mss
        if self.lr.point is None:
            self.nxt = una
            self._host.mark(self)
        return True

    def _syn_options(self) -> bytes:
        cfg = self._cfg
        if self.passive:     # SYN-ACK: only what the peer offered (RFC 7323 1.3, RFC 2018 2)
            ws = self.rcv_wscale if cfg.window_scaling and self._peer_ws else None
            return wire.syn_options(cfg.mss, ws, self.sack_ok,
                                    (self._ts_now(), self.ts_recent) if self.ts_ok else None)
        ts = (self._ts_now(), self.ts_recent) if cfg.timestamps else None
        if self.state is SYN_RECEIVED:   # simultaneous open: answer what was negotiated
            ts = (self._ts_now(), self.ts_recent) if self.ts_ok else None
        return wire.syn_options(cfg.mss, self.rcv_wscale if cfg.window_scaling else None,
                                cfg.sack, ts)

    # ------------------------------------------------------------------ segment arrival

    def on_segment(self, seg: Segment, now: float) -> None:
        """RFC 9293 3.10.7.3 / 3.10.7.4, in the RFC's order."""
        self._last_rx = now
        self._ka_sent = 0
        if self.state is ESTABLISHED and seg.flags & _CONTROL == ACK and self._predicted(seg, now):
            return
        if self.state is SYN_SENT:
            self._process_syn_sent(seg, now)
            return
        flags = seg.flags
        rcv = self.rcv
        rnxt = rcv.nxt
        seq_off = rnxt + seq_diff(seg.seq, (self.irs + rnxt) & MASK)
        payload = seg.payload
        plen = len(payload)
        if self.state is SYN_RECEIVED and flags & SYN and seq_off == 0:
            if not flags & ACK:
                self._send_syn = True              # duplicate SYN: repeat our SYN-ACK
                return
            flags &= ~SYN                          # simultaneous open: the peer's SYN-ACK (RFC 9293
            seq_off = 1                            # fig. 8); its SYN is already accounted for
        # RFC 7323 5.3 (PAWS): an old timestamp makes a non-RST segment unacceptable.
        if self.ts_ok and seg.tsval is not None and not flags & RST \
                and seq_lt(seg.tsval, self.ts_recent):
            self._ack_now = True
            return
        # RFC 9293 3.10.7.4 first check: sequence number acceptability (four cases).
        slen = plen + (flags & SYN and 1) + (flags & FIN and 1)
        rwnd = rcv.window
        if slen == 0:
            ok = seq_off == rnxt if rwnd == 0 else rnxt <= seq_off < rnxt + rwnd
        elif rwnd == 0:
            # RFC 9293 3.10.7.4: with a zero window, still take ACKs, RSTs (and URGs) at RCV.NXT.
            ok = seq_off == rnxt
        else:
            ok = (rnxt <= seq_off < rnxt + rwnd) or (rnxt <= seq_off + slen - 1 < rnxt + rwnd)
        if not ok:
            if not flags & RST:                    # RFC 9293 3.10.7.4: <SEQ=SND.NXT><ACK=RCV.NXT><ACK>
                self._ack_now = True
                if plen and seq_off + plen <= rnxt:
                    self._note_duplicate(seq_off, seq_off + plen, now)
                if self.state is TIME_WAIT and flags & FIN and self._cfg.timewait > 0:
                    self._tw_at = now + self._cfg.timewait   # restart the 2 MSL wait
            return
        # second check: RST (RFC 5961 3.2: exact match resets, in-window gets a challenge ACK).
        if flags & RST:
            if seq_off == rnxt:
                self._reset_by_peer()
            else:
                self._challenge(now)
            return
        # fourth check: SYN in a synchronized state (RFC 5961 4.2: challenge ACK, drop).
        if flags & SYN:
            if self.state is SYN_RECEIVED and self.passive:
                self.delete()                      # RFC 9293 3.10.7.4: back to LISTEN
            else:
                self._challenge(now)
            return
        # fifth check: ACK. RFC 9293: a segment without ACK is dropped.
        if not flags & ACK:
            return
        ack_off = self.una + seq_diff(seg.ack, (self.iss + self.una) & MASK)
        if self.state is SYN_RECEIVED:
            if 0 < ack_off <= self.snd_max:        # RFC 9293 3.10.7.4 SYN-RECEIVED: our SYN acked
                self._established(seg, seq_off)
            else:                                  # <SEQ=SEG.ACK><CTL=RST>
                self._host.send_rst(self._lip, self._rip, self._lport, self._rport,
                                    *reset_for(seg))
                return
        if ack_off > self.snd_max:                 # RFC 9293: acks unsent data -> ACK, drop
            self._challenge(now)
            return
        if ack_off < self.una - self.max_snd_wnd:  # RFC 5961 5.2: too old -> challenge ACK, drop
            self._challenge(now)
            return
        if self.ts_ok and seg.tsval is not None and seq_off <= self._last_ack_sent:
            self.ts_recent = seg.tsval             # RFC 7323 4.3: TS.Recent update
        self._on_ack(seg, seq_off, ack_off, plen, now)
        if self.freed:
            return
        st = self.state
        fin_acked = self.fin_off is not None and self.una > self.fin_off
        if fin_acked:
            if st is FIN_WAIT_1:             # RFC 9293: FIN acked -> FIN-WAIT-2
                self._set_state(FIN_WAIT_2)
                st = FIN_WAIT_2
                if self._app_closed:
                    self._tw_at = now + self._cfg.fin_timeout
            elif st is CLOSING:              # FIN acked -> TIME-WAIT
                self._enter_time_wait(now)
                return
            elif st is LAST_ACK:             # FIN acked -> CLOSED
                self.delete()
                return
        # sixth check: URG is ignored (RFC 9293 3.8.5 / RFC 6093 deprecate it).
        # seventh check: segment text.
        fin = bool(flags & FIN)
        if seq_off < rnxt:                         # trim what was already received
            cut = rnxt - seq_off
            if plen:
                self._note_duplicate(seq_off, min(rnxt, seq_off + plen), now)
            payload = payload[cut:] if cut < plen else payload[:0]
            seq_off = rnxt
            plen = len(payload)
        if plen > rwnd - (seq_off - rnxt):         # trim beyond the window, FIN with it
            keep = max(0, rwnd - (seq_off - rnxt))
            payload = payload[:keep]
            plen = keep
            fin = False
            self._ack_now = True
        if plen:
            if st in _RECEIVING:
                self._receive_data(seq_off, payload, fin, now)
                if self.freed:
                    return
            # CLOSE-WAIT, CLOSING, LAST-ACK, TIME-WAIT: text after a FIN is ignored (RFC 9293).
        # eighth check: FIN.
        if fin:
            fin_at = seq_off + plen
            if fin_at == self.rcv.nxt:
                self._receive_fin(now)
            elif fin_at > self.rcv.nxt:
                self._fin_rcv_off = fin_at          # wait for the gap to fill
                self._ack_now = True

    def _predicted(self, seg: Segment, now: float) -> bool:
        """Header prediction: an in-order, in-window segment in ESTABLISHED that acknowledges
        nothing old passes every RFC 9293 3.10.7.4 check as a formality, so only the ACK and text
        steps run. Anything else returns False and takes the full path."""
        rcv = self.rcv
        rnxt = rcv.nxt
        if seg.seq != (self.irs + rnxt) & MASK or rcv.has_ooo or self._app_closed or self._rd_shut:
            return False
        payload = seg.payload
        plen = len(payload)
        if plen > rcv.window:
            return False
        una = self.una
        ack_off = una + seq_diff(seg.ack, (self.iss + una) & MASK)
        if ack_off < una or ack_off > self.snd_max:
            return False
        tsval = seg.tsval
        if tsval is not None and self.ts_ok:
            if seq_lt(tsval, self.ts_recent):      # RFC 7323 5.3 (PAWS): full path
                return False
            if rnxt <= self._last_ack_sent:
                self.ts_recent = tsval             # RFC 7323 4.3
        if ack_off == una and plen and una == self.snd_max and seg.sack is None \
                and self.lr.tlp_end is None and self.trace is None:
            # Data to a side with nothing in flight (the receiver of a bulk transfer): no RTT,
            # congestion or recovery step applies, only the window bookkeeping.
            self._update_window(seg.window << self.snd_wscale, rnxt, ack_off)
        else:
            self._on_ack(seg, rnxt, ack_off, plen, now)
        if plen:
            self._receive_data(rnxt, payload, False, now)
        return True

    def _process_syn_sent(self, seg: Segment, now: float) -> None:
        """RFC 9293 3.10.7.3: SYN-SENT."""
        flags = seg.flags
        ack_ok = False
        if flags & ACK:
            ack_off = seq_diff(seg.ack, self.iss)
            if not 0 < ack_off <= self.snd_max:    # first check: unacceptable ACK -> RST
                if not flags & RST:
                    self._host.send_rst(self._lip, self._rip, self._lport, self._rport,
                                        *reset_for(seg))
                return
            ack_ok = True
        if flags & RST:                            # second check (RFC 5961 3.2 in SYN-SENT)
            if ack_ok:
                self._fail(errno.ECONNREFUSED, EV_RESET)
            return
        if not flags & SYN:                        # fifth: neither SYN nor RST -> drop
            return
        self.irs = seg.seq                         # fourth check: SYN
        self.rcv.nxt = 1
        self._rcv_adv = 1
        self._negotiate(seg)
        self.snd_wnd = self.max_snd_wnd = seg.window
        if ack_ok:
            self.una = 1
            self._rto_at = None
            if self._retries:
                self.rtt.after_syn_timeout()
            self._retries = 0
            if self._rtt_off is not None:          # Karn: only an unretransmitted SYN is timed
                self.rtt.sample(now - self._rtt_time)
                self._rtt_off = None
            self._wl1, self._wl2 = 0, 1
            self._set_state(ESTABLISHED)
            self._send_syn = False
            self._ack_now = True
            self.report(EV_CONNECTED)
            self.report(EV_WRITABLE)
            if self._fin_pending:
                self._close_write()
            if len(seg.payload) or flags & FIN:    # data on a SYN-ACK: continue at the text step
                self._syn_text(seg, now)
        else:                                      # simultaneous open (RFC 9293 3.5, figure 8)
            self._set_state(SYN_RECEIVED)
            self._send_syn = True

    def _syn_text(self, seg: Segment, now: float) -> None:
        payload = seg.payload
        plen = min(len(payload), self.rcv.window)
        if plen:
            self._receive_data(1, payload[:plen], False, now)
        if seg.flags & FIN and plen == len(payload):
            self._receive_fin(now)

    def _established(self, seg: Segment, seq_off: int) -> None:
        """SYN-RECEIVED -> ESTABLISHED: set the window from this ACK (RFC 9293 3.10.7.4)."""
        self._set_state(ESTABLISHED)
        if self._retries:
            self.rtt.after_syn_timeout()
        if self._send_syn:                         # simultaneous open: our SYN-ACK never left,
            self._send_syn = False                 # so the peer's SYN still needs an ACK
            self._ack_now = True
        self.snd_wnd = seg.window << self.snd_wscale
        self.max_snd_wnd = max(self.max_snd_wnd, self.snd_wnd)
        self._wl1 = seq_off
        self._wl2 = 0
        lst = self.listener
        if lst is not None:
            lst.established(self)
        elif not self.passive:                     # simultaneous open completes a connect()
            self.report(EV_CONNECTED)
            self.report(EV_WRITABLE)
        if self._fin_pending:
            self._close_write()

    def _on_ack(self, seg: Segment, seq_off: int, ack_off: int, plen: int, now: float) -> None:
        """ACK processing: window update, RTT, congestion control and loss recovery."""
        una = self.una
        mss = self.eff_mss
        old_wnd = self.snd_wnd
        wnd = seg.window << self.snd_wscale
        self._update_window(wnd, seq_off, ack_off)
        sack_new = False
        fack = self.lr.sb.high                        # the highest SACK known before this ACK
        if self.sack_ok and seg.sack:
            sack_new = self._on_sack(seg.sack, una, ack_off)
        if ack_off > una:
            acked = ack_off - una
            if self.ts_ok and seg.tsecr and seg.tsval is not None:      # RFC 7323 4.1 RTTM
                r = ((self._ts_now() - seg.tsecr) & MASK) / 1000.0
                if r <= self._cfg.rto_max:         # an echo we never sent is no measurement
                    self.rtt.sample(r)
            elif self._rtt_off is not None and ack_off >= self._rtt_off:   # RFC 6298 3 (Karn)
                self.rtt.sample(now - self._rtt_time)
                self._rtt_off = None
            self.una = ack_off
            if self.nxt < ack_off:
                self.nxt = ack_off
            self.sndbuf.release(ack_off)
            self._retries = 0
            self.rtt.reset_backoff()
            self.lr.on_cumulative_ack(una, ack_off, fack, mss)
            if self.lr.point is not None:
                if self.lr.reo.first_ack_spurious(seg.tsecr if self.ts_ok else None):
                    self._undo()                   # RFC 3522 3.2 + RFC 4015 3.2
                if ack_off >= self.lr.point:       # RFC 6582 3.2 step 6 / RFC 6675 full ACK
                    self.lr.finish()
                    if not self.lr.reo.undone:     # RFC 4015 3.2: an undone cwnd stays restored
                        self.cc.on_exit_recovery(self.snd_max - ack_off, mss)
                elif not self.sack_ok:             # RFC 6582 3.2 step 5: partial ACK
                    self.cc.on_partial_ack(acked, mss)
                    self._retransmit_first(now)
                    self._rto_at = now + self.rtt.rto
            else:
                self.lr.dupacks = 0
                if una == 0:
                    acked -= 1                     # the SYN is not data
                if acked > 0:
                    self.cc.on_ack(acked, mss, now, self.rtt.srtt)     # RFC 5681 3.1
            if self.una >= self.snd_max:           # RFC 6298 5.2: all acked -> stop the timer
                self._rto_at = None
            else:                                  # RFC 6298 5.3: restart on new data acked
                self._rto_at = now + self.rtt.rto
            if self._want_write and self.sndbuf.space and self.fin_off is None:
                self._want_write = False
                self.report(EV_WRITABLE)
            self._host.mark(self)
        elif ack_off == una and wnd == 0 and self.snd_max > una:
            self._retries = 0                      # the peer answers our zero-window probes
        elif ack_off == una and self.snd_max > una and plen == 0 \
                and not seg.flags & (SYN | FIN) and wnd == old_wnd \
                and (sack_new or not self.sack_ok):
            # RFC 5681 2 / 3.2: a duplicate ACK; with SACK (RFC 6675 2) it must SACK new data,
            # so re-ACKs of duplicate segments (e.g. after go-back-N) do not start recovery.
            self.lr.dupacks += 1
            if self.lr.point is None:
                dt = self.lr.dupthresh(self.snd_max - una, mss) if self.sack_ok else DUP_THRESH
                if self.lr.dupacks >= dt or (self.sack_ok and self.lr.sb.is_lost(una, mss, dt)):
                    self._enter_recovery(now)
                else:
                    self._host.mark(self)        # RFC 3042 / RFC 4653 limited transmit
            else:
                if not self.sack_ok:
                    self.cc.on_dupack_in_recovery(mss)   # RFC 6582 3.2 step 4
                self._host.mark(self)
        if sack_new and self.lr.point is None and self.una < self.snd_max and self.lr.sb.is_lost(
                self.una, mss, self.lr.dupthresh(self.snd_max - self.una, mss)):
            self._enter_recovery(now)              # RFC 6675 5 (IsLost on the first hole)
        elif sack_new and self.lr.rxt_marks and self.lr.point is not None:
            self._resend_lost_retransmissions(now)
        if self.lr.tlp_end is not None:
            if self.una >= self.lr.tlp_end:
                self._end_tlp_episode()
            elif (sack_new or self.lr.tlp_dsack) and self.lr.point is None and self.lr.sb \
                    and self.una < self.lr.sb.high:
                # RFC 8985 7.4 (by RACK's rule 6.2): the probe went out 2*SRTT after the data
                # below it; its ACK still shows a hole there, so that data is lost.
                self._enter_recovery(now)
        if ack_off > una:
            self._arm_pto(now)                     # RFC 8985 7.2: restart on a new cumulative ACK
        if self.trace is not None:
            self.trace.sample(now, self, self.lr.point is not None)

    def _update_window(self, wnd: int, seq_off: int, ack_off: int) -> None:
        """RFC 9293 3.10.7.4: take the peer's window only from newer segments (SND.WL1/WL2)."""
        if self._wl1 < seq_off or (self._wl1 == seq_off and self._wl2 <= ack_off):
            self.snd_wnd = wnd
            self._wl1 = seq_off
            self._wl2 = ack_off
            if wnd > self.max_snd_wnd:
                self.max_snd_wnd = wnd
            if wnd and self._persist_at is not None:
                self._persist_at = None
                self._persist_n = 0
                self._host.mark(self)

    def _arm_pto(self, now: float) -> None:
        """RFC 8985 7.2: schedule a tail loss probe, PTO = 2*SRTT (+ the worst-case delayed ACK
        when one segment is in flight), never later than the RTO. Only with SACK and an RTT
        sample, outside recovery and after-RTO repair, with no probe already out."""
        if (self.lr.tlp_end is not None or self.lr.point is not None or self.una < self.lr.recover
                or not self.sack_ok or self.una >= self.snd_max or self.rtt.srtt is None
                or not self._cfg.tail_loss_probe or self.state not in _DATA_OUT):
            self.lr.pto_at = None
            return
        pto = self.lr.pto(self.rtt.srtt, self._tail_start <= self.una)   # one segment in flight?
        rto = self._rto_at
        self.lr.pto_at = now + pto if rto is None else min(now + pto, rto)   # PTO = min(RTO, PTO)

    def _on_pto(self, now: float) -> None:
        """RFC 8985 7.3: send one probe — a new segment if the peer's window takes one (cwnd
        does not apply), else the last segment again — and leave the RTO armed behind it."""
        self.lr.pto_at = None
        mss = self.eff_mss
        off = self.nxt
        if off < self.sndbuf.end and off < self.una + self.snd_wnd and off == self.snd_max:
            self._send_new_segment(now)
            resent = False
        else:
            top = self.snd_max
            fin = self.fin_off is not None and top == self.fin_off + 1
            data_top = top - 1 if fin else top
            lo = max(self.una, data_top - mss)
            if data_top <= lo and not fin:
                return
            self._resend(lo, data_top, ACK | (FIN if fin else 0), now)
            resent = True
        self.lr.probe_sent(self.snd_max, resent)
        self._host.stats.loss_probes += 1
        self._rto_at = now + self.rtt.rto           # RFC 8985 7.3: re-arm the RTO, not the PTO

    def _end_tlp_episode(self) -> None:
        """RFC 8985 7.4.2: everything up to the probe is acknowledged. A resent probe that was
        not reported as a duplicate repaired a loss (of the original or of the probe): respond
        to it as to any other loss, once."""
        if self.lr.tlp_rxt and not self.lr.tlp_dsack and self.lr.point is None:
            self.cc.on_enter_recovery(self.snd_max - self.una, self.eff_mss)
            self.cc.cwnd = self.cc.ssthresh
            self._host.stats.tlp_recoveries += 1
        self.lr.tlp_end = None

    def _resend_lost_retransmissions(self, now: float) -> None:
        """Resend the retransmissions found lost (``LossRecovery.lost_retransmissions``) rather
        than wait for the RTO."""
        una = self.una
        for lo, hi in self.lr.lost_retransmissions(una, self.snd_max, self.eff_mss):
            self._resend(lo, hi, ACK, now)         # marks it again at today's SND.MAX
            self._host.stats.lost_retransmits += 1
            if lo == una:                          # RFC 6298 5.3 spirit: the head went out again
                self._rto_at = now + self.rtt.rto

    def _on_sack(self, blocks: list[tuple[int, int]], una: int, ack_off: int) -> bool:
        """One ACK's SACK blocks, from wire sequence numbers to offsets, into the recovery
        books; True when they covered new data."""
        base = (self.iss + una) & MASK
        offsets = [(una + seq_diff(left, base), una + seq_diff(right, base))
                   for left, right in blocks]
        new, dsacks, undo = self.lr.on_sack(offsets, una, ack_off, self.snd_max, self.eff_mss)
        self._host.stats.dsacks_in += dsacks
        if undo:
            self._undo()                           # RFC 3708 3: every retransmission was needless
        return new

    def _undo(self) -> None:
        """The last fast recovery was spurious: restore the congestion state (RFC 4015 3.2). An
        episode still open runs on to its recovery point, so HighRxt keeps what was resent and
        the other holes are judged at the larger DupThresh."""
        self.lr.reo.undo(self.cc, self.eff_mss)
        self.cc.on_undo()
        self._host.stats.spurious_recoveries += 1
        self._host.mark(self)

    def _enter_recovery(self, now: float) -> None:
        """Fast retransmit / fast recovery (RFC 5681 3.2, RFC 6582 3.2, RFC 6675 5)."""
        if self.una < self.lr.recover:             # RFC 6582 3.2 step 2: not after an RTO episode
            return
        mss = self.eff_mss
        flight = self.snd_max - self.una
        self.lr.start(self.cc, self.una, self.snd_max, self._ts_now() if self.ts_ok else None)
        self.cc.on_enter_recovery(flight, mss)
        if self.sack_ok:
            self.cc.cwnd = self.cc.ssthresh        # RFC 6675 5 step 3: cwnd = ssthresh, no inflation
        self._host.stats.fast_retransmits += 1
        sent = self._retransmit_first(now)
        self.lr.high_rxt = self.una + sent
        self._rto_at = now + self.rtt.rto

    def _receive_data(self, off: int, payload: memoryview, fin: bool, now: float) -> None:
        """RFC 9293 3.10.7.4 seventh check: queue text, ACK in order / immediately when out of order."""
        if self._app_closed or self._rd_shut:
            if self._app_closed:                   # RFC 2525 2.17: data for a closed socket -> RST
                self.abort()
                self.error = errno.ECONNRESET
                return
            self.rcv.nxt = max(self.rcv.nxt, off + len(payload))   # SHUT_RD: consume silently
            self._ack_now = True
            return
        rcv = self.rcv
        had_ooo = rcv.has_ooo
        plen = len(payload)
        if plen > self._rcv_mss:
            self._rcv_mss = plen
        dup = had_ooo and self.sack_ok and rcv.covered(off, off + plen)
        new = rcv.add(off, payload)
        self._host.stats.bytes_in += new
        if new:
            if had_ooo:
                self._ack_now = True               # RFC 5681 4.2: ACK at once when a hole fills
            elif rcv.nxt - self._last_ack_sent >= 2 * self._rcv_mss or self._cfg.delayed_ack == 0:
                self._ack_now = True               # RFC 9293 3.8.6.3 / RFC 5681 4.2: every 2nd
            elif self._dack_at is None:            # segment, else after a bounded delay
                self._dack_at = now + self._cfg.delayed_ack
            if self._fin_rcv_off is not None and self._fin_rcv_off == rcv.nxt:
                self._receive_fin(now)
            if self.visible:
                self.report(EV_READABLE)
        elif off > rcv.nxt:
            if dup:
                self._note_duplicate(off, off + plen, now)
            self._emit(self.nxt, 0, ACK, now)      # RFC 5681 4.2: one immediate dup ACK per
        else:                                      # out-of-order segment (not batched)
            self._ack_now = True                   # a duplicate: re-ACK

    def _note_duplicate(self, lo: int, hi: int, now: float) -> None:
        """RFC 2883 4: report a duplicate segment in the first SACK block of the next ACK. Each
        duplicate gets its own report: one still waiting for an ACK goes out in an ACK now
        (several duplicates can arrive in one batch, and the batch's ACK has one first block)."""
        lo = max(lo, 1)
        if self.sack_ok and hi > lo:
            if self._dsack is not None:
                self._emit(self.nxt, 0, ACK, now)
            self._dsack = (lo, hi)
            self._ack_now = True                   # RFC 5681 4.2: a duplicate is ACKed at once

    def _receive_fin(self, now: float) -> None:
        """RFC 9293 3.10.7.4 eighth check."""
        if self.eof:
            self._ack_now = True
            return
        self.rcv.nxt += 1
        self._fin_rcv_off = None
        self.eof = True
        self._ack_now = True
        st = self.state
        if st is ESTABLISHED or st is SYN_RECEIVED:
            self._set_state(CLOSE_WAIT)
        elif st is FIN_WAIT_1:
            # our FIN not yet acked (else we would be in FIN-WAIT-2): simultaneous close
            self._set_state(CLOSING)
        elif st is FIN_WAIT_2:
            self._enter_time_wait(now)
        if self.visible:
            self.report(EV_EOF)

    def timewait_reusable(self, seg: Segment) -> bool:
        """RFC 6191 / RFC 9293 3.6.1: a new SYN may take over a TIME-WAIT 4-tuple when its
        timestamp is newer than TS.Recent or (without timestamps) its ISN is above RCV.NXT."""
        if self.ts_ok and seg.tsval is not None:
            return seq_lt(self.ts_recent, seg.tsval)
        return seq_lt((self.irs + self.rcv.nxt) & MASK, seg.seq)

    def _enter_time_wait(self, now: float) -> None:
        self._set_state(TIME_WAIT)
        self._rto_at = self._persist_at = self._dack_at = self.lr.pto_at = None
        self._tw_at = now + self._cfg.timewait

    def _challenge(self, now: float) -> None:
        """RFC 5961 3.2, 4.2, 5.2: answer with an ACK, if the host's rate limit allows one."""
        if self._host.challenge(now):
            self._ack_now = True

    def _reset_by_peer(self) -> None:
        """RFC 9293 3.10.7.4 second check, per state."""
        self._host.stats.rst_in += 1
        st = self.state
        if st is SYN_RECEIVED:
            if self.passive:
                self.delete()                      # passive open: back to LISTEN, nothing to report
            else:
                self._fail(errno.ECONNREFUSED, EV_RESET)
        elif st in (ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT):
            self._fail(errno.ECONNRESET, EV_RESET)
        else:                                      # CLOSING, LAST-ACK, TIME-WAIT
            self.delete()

    # ------------------------------------------------------------------ output

    def _close_write(self) -> None:
        st = self.state
        if self.fin_off is not None:
            return
        if st is SYN_SENT or st is SYN_RECEIVED:
            self._fin_pending = True               # RFC 9293 3.10.4: FIN once established
            return
        if st is ESTABLISHED:
            self._set_state(FIN_WAIT_1)
        elif st is CLOSE_WAIT:
            self._set_state(LAST_ACK)
        else:
            return
        self._fin_pending = False
        self.fin_off = self.sndbuf.end
        self._host.mark(self)

    def output(self, now: float) -> None:
        """Send what the state, windows and timers allow; then a pure ACK if one is owed."""
        self.queued = False
        if self.freed:
            return
        st = self.state
        if self._send_syn:
            self._send_syn = False
            flags = SYN | ACK if st is SYN_RECEIVED else SYN
            self._emit(0, 0, flags, now)
            if self.snd_max == 0:
                self.snd_max = self.nxt = 1
                self._rtt_off, self._rtt_time = 1, now
            if self._rto_at is None:
                self._rto_at = now + self.rtt.rto
            return
        if st in _DATA_OUT:
            top = self.snd_max
            self._send_data(now)
            if self.snd_max > top or self.lr.pto_at is None and self.snd_max > self.una:
                self._arm_pto(now)                 # RFC 8985 7.2: start or restart after new data
        if self._ack_now and not self.freed:
            self._emit(self.nxt, 0, ACK, now)
        if st is TIME_WAIT and self._tw_at is not None and self._tw_at <= now:
            self.delete()

    def _send_data(self, now: float) -> None:
        mss = self.eff_mss
        cc = self.cc
        end = self.sndbuf.end
        fin_off = self.fin_off
        if self.lr.point is not None and self.sack_ok:
            self._sack_recovery(now, end)
            return
        limit = cc.cwnd
        if self.lr.point is None and self.lr.dupacks:
            # RFC 3042 limited transmit, for as long as DupThresh waits (RFC 4653 3)
            dt = self.lr.dupthresh(self.snd_max - self.una, mss) if self.sack_ok else DUP_THRESH
            if self.lr.dupacks < dt:
                limit += self.lr.dupacks * mss
        wnd_end = self.una + self.snd_wnd
        sb = self.lr.sb
        while True:
            off = self.nxt
            if sb.starts and off < self.snd_max:
                # RFC 6675 5.1: going back N after an RTO, skip what the peer SACKed since.
                off = self.nxt = sb.skip(off)
            if off < end:
                room = min(limit - (off - self.una), wnd_end - off)
                if room > mss and off == self.snd_max and end - off > 2 * mss and not (
                        self.sack_ok and (self.rcv.has_ooo or self._dsack is not None)):
                    k = min(room, end - off - 1) // mss   # full ones, none the last: no PSH/FIN
                    if k > 1:
                        self._send_burst(off, k, mss, now)
                        continue
                n = min(mss, end - off)
                if room < n:
                    if room <= 0 or room < mss and room < self.max_snd_wnd // 2:
                        self._maybe_persist(now)   # RFC 9293 3.8.6.2.1 sender SWS avoidance
                        return
                    n = room
                elif n < mss and off > self.una and not self.nodelay and fin_off is None \
                        and off >= self.snd_max:   # data sent before (going back N) goes again
                    return                         # RFC 9293 3.7.4 Nagle: one small segment in flight
                fin = fin_off is not None and off + n == fin_off
                self._send_segment(off, n, fin, now)
            elif fin_off is not None and off == fin_off:
                self._send_segment(off, 0, True, now)
            else:
                return

    def _sack_recovery(self, now: float, end: int) -> None:
        """RFC 6675 5 step (C): send while cwnd - pipe >= 1 SMSS, choosing segments by NextSeg."""
        mss = self.eff_mss
        sb = self.lr.sb
        dt = self.lr.dupthresh(self.snd_max - self.una, mss)
        for _ in range(self.cc.cwnd // mss + 1):  # each pass sends one segment or stops
            pipe = sb.pipe(self.una, self.snd_max, self.lr.high_rxt, mss, dt)
            if self.cc.cwnd - pipe < mss:
                return
            nxt = sb.next_seg(self.una, self.lr.high_rxt, mss, True, dt)          # rule 1
            if nxt is None and self.nxt < end and self.nxt < self.una + self.snd_wnd:   # rule 2
                self._send_new_segment(now)
                continue
            if nxt is None:
                nxt = sb.next_seg(self.una, self.lr.high_rxt, mss, False, dt)     # rule 3
            rescue = False
            if nxt is None:
                if self.fin_off is not None and self.nxt == self.fin_off:
                    self._send_segment(self.nxt, 0, True, now)
                    return
                if self.nxt < end or self.lr.rescue is not None and self.una <= self.lr.rescue:
                    return
                # RFC 6675 4 rule 4: one rescue retransmission per recovery, holding the highest
                # outstanding un-SACKed octet, so a lost tail is not left to the RTO. Only at the
                # tail (nothing unsent): while the window merely blocks new data, more ACKs come.
                nxt = sb.rescue_seg(self.una, min(self.snd_max, end), mss)
                if nxt is None:
                    return
                self.lr.rescue = self.lr.point      # RescueRxt = RecoveryPoint
                rescue = True
            s, e = nxt
            e = min(e, end)
            fin = self.fin_off is not None and e == self.fin_off
            if e <= s and not fin:
                return
            self._resend(s, e, ACK | (FIN if fin else 0), now)
            if not rescue:                         # RFC 6675 4 rule 4: HighRxt is not updated
                self.lr.high_rxt = e + (1 if fin else 0)

    def _send_new_segment(self, now: float) -> None:
        """One segment of unsent data from SND.NXT, as much as the MSS and the peer's window
        allow, regardless of cwnd (callers decide that: RFC 6675 rule 2, RFC 8985 probes)."""
        off = self.nxt
        n = min(self.eff_mss, self.sndbuf.end - off, self.una + self.snd_wnd - off)
        self._send_segment(off, n, self.fin_off is not None and off + n == self.fin_off, now)

    def _send_segment(self, off: int, n: int, fin: bool, now: float) -> None:
        """Send [off, off+n) (+FIN) from SND.NXT and advance it; arm RTO, time RTT."""
        flags = ACK | (PSH if n and (fin or off + n == self.sndbuf.end) else 0) | (FIN if fin else 0)
        self._emit(off, n, flags, now)
        top = off + n + (1 if fin else 0)
        self.nxt = top
        if top > self.snd_max:
            self._sent_new(off, top, top, now)     # time one segment per RTT
        else:
            self._host.stats.retransmits += 1
            self.retransmits += 1
            self._rtt_off = None                   # Karn: no samples across retransmission
        if self._rto_at is None:                   # RFC 6298 5.1
            self._rto_at = now + self.rtt.rto

    def _send_burst(self, off: int, k: int, mss: int, now: float) -> None:
        """``k`` full segments of new data from SND.NXT = SND.MAX = ``off``, none of them the last
        buffered byte's (no PSH, no FIN) and no SACK option owed: what ``_send_segment`` does k
        times, with the ACK, window and timestamps of one output call computed once and the
        segments built in one run (wire.build_run)."""
        wnd = self._advertise()
        ack = self._ack_sent()
        n = k * mss
        lip, rip = self._lip, self._rip
        host = self._host
        host.emit_run(lip, rip, wire.build_run(
            lip, rip, self._lport, self._rport, (self.iss + off) & MASK, ack, wnd,
            (self._ts_now(), self.ts_recent) if self.ts_ok else None,
            self.sndbuf.view(off, n), mss, not self._cfg.offload_checksum))
        host.stats.bytes_out += n
        top = off + n
        self.nxt = top
        self._sent_new(top - mss, top, off + mss, now)   # time the first segment
        if self._rto_at is None:                   # RFC 6298 5.1
            self._rto_at = now + self.rtt.rto

    def _sent_new(self, tail: int, top: int, rtt_end: int, now: float) -> None:
        """New data up to ``top`` left, its newest segment starting at ``tail``: SND.MAX moves
        there, and with no RTT sample running (and no timestamps, which time every segment)
        the segment ending at ``rtt_end`` is timed (RFC 6298 3)."""
        self._tail_start = tail                    # where the newest segment in flight starts
        if self._rtt_off is None and not self.ts_ok:
            self._rtt_off, self._rtt_time = rtt_end, now
        self.snd_max = top

    def _ack_sent(self) -> int:
        """The ACK field of a segment about to leave: it acknowledges everything received, so
        no ACK is owed any more, immediate or delayed."""
        nxt = self.rcv.nxt
        self._last_ack_sent = nxt
        self._ack_now = False
        self._dack_at = None
        return (self.irs + nxt) & MASK

    def _retransmit_first(self, now: float, limit: int = 0) -> int:
        """Resend the earliest unacknowledged segment (RFC 6298 5.4, RFC 5681 3.2 step 4)."""
        una = self.una
        n = max(0, min(limit or self.eff_mss, self.sndbuf.end - una, self.snd_max - una))
        fin = self.fin_off is not None and una + n == self.fin_off and self.snd_max > self.fin_off
        if n == 0 and not fin:
            return 0
        self._resend(una, una + n, ACK | (PSH if n else 0) | (FIN if fin else 0), now)
        return n + (1 if fin else 0)

    def _resend(self, lo: int, hi: int, flags: int, now: float) -> None:
        """Send [lo, hi) again (with `flags`): counted, told to the reordering record, no RTT
        sample across it (Karn); in recovery, marked with SND.MAX so that its own loss can be
        seen (`_resend_lost_retransmissions`)."""
        self._emit(lo, hi - lo, flags, now)
        self._host.stats.retransmits += 1
        self.retransmits += 1
        self.lr.retransmitted(lo, hi, self.snd_max)
        self._rtt_off = None

    def _maybe_persist(self, now: float) -> None:
        """Data held by the peer's window with nothing in flight: arm the persist timer. It probes a
        zero window (RFC 9293 3.8.6.1) and is the override timeout of sender SWS avoidance
        (3.8.6.2.1), so a lost window update cannot stall the connection."""
        if self.una == self.snd_max and self._persist_at is None:
            backoff = min(self._cfg.rto_max, self.rtt.rto * (1 << min(self._persist_n, 10)))
            self._persist_at = now + backoff

    def _emit(self, off: int, n: int, flags: int, now: float) -> None:
        """Build one segment at send offset ``off`` carrying ``n`` buffered bytes."""
        rcv = self.rcv
        seq = (self.iss + off) & MASK
        opts = b""
        if flags & SYN:
            opts = self._syn_options()
            wnd = min(rcv.window, _MAX_WINDOW)     # RFC 7323 2.2: SYN windows are unscaled
            self._rcv_adv = rcv.nxt + wnd
        else:
            wnd = self._advertise()
            if self.sack_ok and (rcv.has_ooo or self._dsack is not None):
                opts = wire.data_options((self._ts_now(), self.ts_recent) if self.ts_ok else None,
                                         self._sack_blocks())
            elif self.ts_ok:                       # the common case: timestamps alone
                opts = TS_OPTION.pack(0x0101, wire.OPT_TS, 10, self._ts_now(), self.ts_recent)
        ack = self._ack_sent() if flags & ACK else 0
        payload = self.sndbuf.view(off, n) if n else b""
        lip, rip = self._lip, self._rip
        host = self._host
        host.emit(lip, rip, wire.build(lip, rip, self._lport, self._rport, seq, ack, flags, wnd,
                                       opts, payload, not self._cfg.offload_checksum))
        host.stats.bytes_out += n

    def _advertise(self) -> int:
        """The scaled window field; never shrinks the right edge (RFC 9293 3.8.6.2.2, RFC 7323 2.4)
        and opens only by min(RCV.BUFF/2, MSS) or more (receiver SWS avoidance, MUST-39)."""
        rcv = self.rcv
        nxt = rcv.nxt
        right = nxt + rcv.window
        adv = self._rcv_adv
        if right < adv or right - adv < min(rcv.capacity // 2, self.eff_mss):
            right = max(adv, nxt)
        shift = self.rcv_wscale
        field = min((right - nxt) >> shift, _MAX_WINDOW)
        self._rcv_adv = nxt + (field << shift)
        return field

    def _sack_blocks(self) -> list[tuple[int, int]] | None:
        """RFC 2018 4: up to 3 blocks (with timestamps) or 4, most recent first; a D-SACK first,
        reported once (RFC 2883 4)."""
        rcv = self.rcv
        dsack = self._dsack
        if not rcv.has_ooo and dsack is None:
            return None
        blocks = rcv.ooo_blocks() if rcv.has_ooo else []
        if dsack is not None:
            self._dsack = None
            self._host.stats.dsacks_out += 1
            lo, hi = dsack
            for i, (s, e) in enumerate(blocks):
                if s <= lo and hi <= e:            # RFC 2883 4: then the block holding it
                    blocks.insert(0, blocks.pop(i))
                    break
            blocks.insert(0, dsack)
        base = self.irs
        return [((base + s) & MASK, (base + e) & MASK) for s, e in blocks[:3 if self.ts_ok else 4]]

    def _ts_now(self) -> int:
        # A per-connection offset derived from the ISS (RFC 7323 5.4), not stored: 8 bytes less.
        return (int(self._host.now * 1000) + self.iss * 2654435761) & MASK

    # ------------------------------------------------------------------ timers

    def deadline(self) -> float | None:
        d = self._rto_at
        t = self._dack_at
        if t is not None and (d is None or t < d):
            d = t
        t = self.lr.pto_at
        if t is not None and (d is None or t < d):
            d = t
        t = self._persist_at
        if t is not None and (d is None or t < d):
            d = t
        t = self._tw_at
        if t is not None and (d is None or t < d):
            d = t
        st = self.state
        if st is ESTABLISHED or st is CLOSE_WAIT:
            cfg = self._cfg
            if self.keepalive:
                t = self._last_rx + cfg.keepalive_idle + self._ka_sent * cfg.keepalive_interval
                if d is None or t < d:
                    d = t
            if cfg.idle_timeout > 0:
                t = self._last_rx + cfg.idle_timeout
                if d is None or t < d:
                    d = t
        return d

    def on_timer(self, now: float) -> None:
        if self._tw_at is not None and now >= self._tw_at:
            if self.state is FIN_WAIT_2:
                self._send_reset()
            self.delete()                          # TIME-WAIT over / orphan FIN-WAIT-2 expired
            return
        if self.lr.pto_at is not None and now >= self.lr.pto_at:
            self._on_pto(now)                      # before the RTO it may stand in for
        if self._rto_at is not None and now >= self._rto_at:
            self._on_rto(now)
            if self.freed:
                return
        if self._persist_at is not None and now >= self._persist_at:
            self._on_persist(now)
        if self._dack_at is not None and now >= self._dack_at:
            self._ack_now = True
        st = self.state
        cfg = self._cfg
        if st is ESTABLISHED or st is CLOSE_WAIT:
            if cfg.idle_timeout > 0 and now >= self._last_rx + cfg.idle_timeout:
                self._send_reset()                 # mTCP tcp_timeout: idle connections are reset
                self._fail(errno.ETIMEDOUT, EV_ERROR)
                return
            if self.keepalive and now >= self._last_rx + cfg.keepalive_idle \
                    + self._ka_sent * cfg.keepalive_interval:
                if self._ka_sent >= cfg.keepalive_probes:
                    self._fail(errno.ETIMEDOUT, EV_ERROR)
                    return
                self._ka_sent += 1                 # RFC 9293 3.8.4: probe with SEG.SEQ = SND.NXT-1
                self._emit(self.nxt - 1, 0, ACK, now)
        self.output(now)

    def _on_rto(self, now: float) -> None:
        """RFC 6298 5.4-5.7 and RFC 5681 3.1 on retransmission timeout."""
        cfg = self._cfg
        self._host.stats.timeouts += 1
        self._retries += 1
        st = self.state
        if st is SYN_SENT or st is SYN_RECEIVED:
            if self._retries > (cfg.synack_retries if self.passive else cfg.syn_retries):
                # RFC 9293 3.8.3 (R2 for SYN)
                if self.passive:
                    self.delete()
                else:
                    self._fail(errno.ETIMEDOUT, EV_ERROR)
                return
            self.rtt.backoff()
            self._rtt_off = None
            self._send_syn = True
            self._rto_at = now + self.rtt.rto
            self._host.stats.retransmits += 1
            self.retransmits += 1
            return
        if self._retries > cfg.max_retries:        # RFC 9293 3.8.3 R2: give up
            self._fail(errno.ETIMEDOUT, EV_ERROR)
            return
        if self.snd_wnd:                           # a zero-window probe timing out is not loss
            self.cc.on_timeout(self.snd_max - self.una, self.eff_mss)
        self.rtt.backoff()                         # RFC 6298 5.5
        self.lr.on_timeout(self.snd_max)           # no fast recovery, no probe, no SACK info
        # RFC 6298 5.4; against a zero window this is the persist probe: one octet (MUST-36)
        sent = self._retransmit_first(now, 0 if self.snd_wnd else 1)
        self.nxt = self.una + sent                 # go back N for the rest, as cwnd opens
        self._rto_at = now + self.rtt.rto          # RFC 6298 5.6
        if self.trace is not None:
            self.trace.sample(now, self, False, timeout=True)

    def _on_persist(self, now: float) -> None:
        """Probe a zero window with one octet of new data (RFC 9293 3.8.6.1, MUST-36); into a
        small window, send what fits (the SWS override timeout, 3.8.6.2.1)."""
        self._persist_at = None
        self._persist_n += 1
        if self.una != self.snd_max:
            return
        off = self.nxt
        end = self.sndbuf.end
        if off < end:
            n = max(1, min(self.una + self.snd_wnd - off, end - off, self.eff_mss))
            self._send_segment(off, n, self.fin_off == off + n, now)
        elif self.fin_off is not None and off == self.fin_off:
            self._send_segment(off, 0, True, now)

    # ------------------------------------------------------------------ teardown

    def _fail(self, err: int, kind: EventKind) -> None:
        self.error = err
        if kind is EV_RESET:
            self._host.stats.resets += 1
        if self.visible:
            self.report(kind)
        self.delete()

    def delete(self) -> None:
        """Delete the TCB (RFC 9293 CLOSED): the stack forgets it; CLOSED is reported once."""
        if self.freed:
            return
        self.freed = True
        if self.state is not CLOSED:
            self._set_state(CLOSED)
        self._rto_at = self._dack_at = self._persist_at = self._tw_at = self.lr.pto_at = None
        if self.listener is not None:
            self.listener.forget(self)
        self._host.forget(self)
        if self.visible:
            self.report(EV_CLOSED)

    def report(self, kind: EventKind) -> None:
        if kind is EV_READABLE or kind is EV_WRITABLE:
            bit = _READABLE_BIT if kind is EV_READABLE else _WRITABLE_BIT
            if self.reported & bit:
                return                             # one per kind until the caller drains events
            self.reported |= bit
        self._host.event(kind, self)

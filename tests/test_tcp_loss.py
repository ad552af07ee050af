"""Loss recovery between two engines over a simulated link (tests/linkmodel.py).

10 MB must arrive byte-exact at 0%, 1%, 5% and 10% random loss, with reordering and
duplication, with ACK loss and through a drop-tail bottleneck; the sender's counters and an
independent audit of every transmission on the link must show the recovery RFC 5681/6582/6675
prescribe (no spurious resends, fast retransmit rather than timeouts, ssthresh = FlightSize/2).
Chosen single losses pin the exact counts.  All runs are deterministic (seeded) and bounded in
virtual time and iterations; the whole file takes a few seconds of CPU.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, replace

import pytest
from scapy.layers.inet import TCP

from enginedriver import StreamApp
from linkmodel import (WIRE_OVERHEAD, DropNthData, DropRule, LinkModel, LinkParams,
                       SimulationError, tcp_payload_len, tcp_seq)
from p4mtcp.control.tcp import ACCELERATED, Connection, TcpConfig, TcpStack
from p4mtcp.control.tcp.isn import initial_seq
from p4mtcp.control.tcp.sack import Scoreboard

A_IP, B_IP = 0x0A000001, 0x0A000002
SIZE = 10 << 20
DATA = random.Random(20261125).randbytes(SIZE)
MSS = 1460
CONFIG = TcpConfig(mss=MSS, rcvbuf=256 << 10, sndbuf=256 << 10, idle_timeout=0)
_ONES = b"\x01" * 65536


class WireAudit:
    """Link observer for the sender's direction: classifies every payload transmission.

    A retransmission is *spurious* when every byte it carries was already in a transmission the
    link delivers.  Two kinds are allowed and counted apart: go-back-N resends below the highest
    byte sent when an RTO fired (RFC 2018 section 8: ignore SACK information from before the
    timeout; what is SACKed after it is skipped, RFC 6675 5.1),
    in a new recovery episode, a resend of a segment already retransmitted in an earlier
    episode whose retransmission is still in flight (RFC 6675 resets HighRxt to HighACK on
    entry, 5 (4.3), and keeps no memory of the previous episode's resends), and one "rescue"
    retransmission per episode, ending at HighData (RFC 6675 4, NextSeg (4)).  Every other
    spurious retransmission is an error — in particular, resending within one episode.
    """

    def __init__(self, sender: TcpStack, size: int) -> None:
        self.sender = sender
        self.offered = bytearray(size + 1)      # stream bytes ever offered to the link
        self.arrives = bytearray(size + 1)      # ... in a transmission the link delivers
        self.first_ok = bytearray(size + 1)     # ... and the first transmission was delivered
        self.base: int | None = None
        self.payload_segments = self.payload_bytes = self.lost_payload_segments = 0
        self.retransmissions = self.lost_retransmissions = 0
        self.spurious = self.spurious_after_rto = self.spurious_across_episodes = 0
        self.rescues = 0                        # retransmissions ending at HighData
        self._rescued_in = -1                   # episode of the last rescue
        self._timeouts = 0
        self._rto_mark = 0
        self._high = 0
        self._resent_in: dict[int, int] = {}    # segment start -> episode of its last resend

    def __call__(self, tcp: bytes, delivered: bool) -> None:
        if tcp[13] & 0x02:                                  # SYN: data starts at ISS + 1
            self.base = (tcp_seq(tcp) + 1) & 0xFFFFFFFF
            return
        n = tcp_payload_len(tcp)
        if n == 0 or self.base is None:
            return
        start = (tcp_seq(tcp) - self.base) & 0xFFFFFFFF
        end = start + n
        stats = self.sender.stats
        if stats.timeouts != self._timeouts:
            self._timeouts, self._rto_mark = stats.timeouts, self._high
        episode = stats.fast_retransmits + stats.timeouts     # each counts one recovery entry
        self.payload_segments += 1
        self.payload_bytes += n
        self.lost_payload_segments += not delivered
        new_bytes = self.offered.find(0, start, end) != -1
        if not new_bytes:
            self.retransmissions += 1
            self.lost_retransmissions += not delivered
            rescue = end == self._high and self._rescued_in != episode
            if rescue:
                self.rescues += 1
                self._rescued_in = episode
            if self.arrives.find(0, start, end) == -1:
                if rescue:
                    pass                            # RFC 6675 NextSeg (4): allowed once
                elif start < self._rto_mark:
                    self.spurious_after_rto += 1
                elif (self.first_ok.find(1, start, end) == -1
                      and self._resent_in.get(start, episode) < episode):
                    self.spurious_across_episodes += 1
                else:
                    self.spurious += 1
            self._resent_in[start] = episode
        self.offered[start:end] = _ONES[:n]
        if delivered:
            self.arrives[start:end] = _ONES[:n]
            if new_bytes:
                self.first_ok[start:end] = _ONES[:n]
        self._high = max(self._high, end)


@dataclass
class Transfer:
    """One finished bulk transfer from the sender stack (A) to the receiver stack (B)."""

    sender: TcpStack
    receiver: TcpStack
    link: LinkModel
    audit: WireAudit
    received: bytes
    trace: list[tuple[float, int, int, int]]     # (time, cwnd, ssthresh, flight) per step
    conn: Connection                              # the sender's connection


SENDER_SECRET = b"sender-secret-0123"


def bulk(data: bytes, ab: LinkParams, ba: LinkParams | None = None, seed: int = 1,
         drop: DropRule | None = None, drop_ba: DropRule | None = None,
         config: TcpConfig = CONFIG,
         time_limit: float = 300.0, max_iterations: int = 200_000,
         start: float = 0.0) -> Transfer:
    """Connect A -> B over the link at time `start`, send data, close; run until B has read EOF
    and closed."""
    sender = TcpStack(config, isn_secret=SENDER_SECRET)
    receiver = TcpStack(config, isn_secret=b"receiver-secret-01")
    listener = receiver.listen(B_IP, 80, 8)
    conn = sender.connect(A_IP, 40000, B_IP, 80, start)
    client = StreamApp(conn, data)
    server: list[StreamApp] = []
    trace: list[tuple[float, int, int, int]] = []
    audit = WireAudit(sender, len(data))

    def app(now: float) -> None:
        sender.events()
        receiver.events()
        if not server:
            accepted = listener.accept()
            if accepted is not None:
                server.append(StreamApp(accepted, close_when_sent=False))
        client.pump()
        for s in server:
            s.pump()
        trace.append((now, conn.cc.cwnd, conn.cc.ssthresh, conn.snd_max - conn.una))

    link = LinkModel(sender, receiver, ab, ba or LinkParams(delay=ab.delay), seed=seed,
                     drop_ab=drop, drop_ba=drop_ba, observe_ab=audit, now=start)
    link.run(lambda: bool(server) and server[0].closed, app, time_limit=time_limit,
             max_iterations=max_iterations)
    return Transfer(sender, receiver, link, audit, bytes(server[0].incoming), trace, conn)


def assert_exact(t: Transfer, data: bytes) -> None:
    assert len(t.received) == len(data), f"received {len(t.received)} of {len(data)} bytes"
    assert t.received == data, "payload corrupted in transit"
    assert t.receiver.stats.bytes_in == len(data)
    assert t.receiver.stats.bad_segments == t.sender.stats.bad_segments == 0


# -- 10 MB bulk transfers ------------------------------------------------------------------------

def test_10mb_without_loss_sends_every_byte_once() -> None:
    t = bulk(DATA, LinkParams())
    assert_exact(t, DATA)
    st = t.sender.stats
    assert (st.retransmits, st.fast_retransmits, st.timeouts) == (0, 0, 0)
    assert t.audit.payload_bytes == SIZE and t.audit.retransmissions == 0
    assert st.bytes_out == SIZE


@pytest.mark.parametrize("loss", [0.01, 0.05, 0.10])
def test_10mb_random_loss_recovers_without_spurious_retransmissions(loss: float) -> None:
    """Data path loses `loss` of segments, ACK path clean, no reordering: every retransmission
    outside RTO go-back-N fills a real hole, and fast retransmit does most of the work."""
    t = bulk(DATA, LinkParams(loss=loss), seed=int(loss * 1000))
    assert_exact(t, DATA)
    st, audit = t.sender.stats, t.audit
    assert audit.lost_payload_segments > 0.5 * loss * audit.payload_segments
    assert audit.spurious == 0, f"{audit.spurious} retransmissions of data that was not lost"
    assert st.retransmits >= audit.retransmissions >= audit.lost_payload_segments
    assert st.fast_retransmits > st.timeouts
    if loss <= 0.01:
        # With SACK and a window of ~100 segments only a lost retransmission or a tail loss
        # leaves the sender without dupACKs (RFC 6675 has no lost-retransmission detection).
        assert st.timeouts <= audit.lost_retransmissions + 1


def test_10mb_reordering_and_duplication_without_loss() -> None:
    t = bulk(DATA, LinkParams(reorder=0.02, duplicate=0.02),
             LinkParams(reorder=0.02, duplicate=0.02), seed=11)
    assert_exact(t, DATA)
    assert t.link.a_to_b.stats.reordered > 50 and t.link.a_to_b.stats.duplicated > 50
    assert t.audit.lost_payload_segments == 0
    assert t.sender.stats.timeouts == 0, "nothing was lost, yet the RTO fired"


def test_10mb_loss_reordering_duplication_both_directions() -> None:
    both = LinkParams(loss=0.02, reorder=0.02, duplicate=0.02)
    t = bulk(DATA, both, both, seed=12)
    assert_exact(t, DATA)
    assert t.sender.stats.retransmits >= t.audit.lost_payload_segments > 0


@pytest.mark.parametrize("sack", [True, False], ids=["sack", "newreno"])
def test_10mb_through_a_bottleneck_queue(sack: bool) -> None:
    """Congestion loss: 100 Mbit/s with a 100 KB drop-tail queue and a 1 MiB window.  Slow start
    overflows the queue; every dropped segment is resent exactly once, with no timeout and
    nothing spurious.  SACK repairs the whole burst in a few round trips (RFC 6675); NewReno
    needs one round trip per hole (RFC 6582) but gets there too."""
    config = TcpConfig(mss=MSS, rcvbuf=1 << 20, sndbuf=1 << 20, idle_timeout=0, sack=sack)
    bottleneck = LinkParams(bandwidth=100e6, queue_limit=100_000)
    t = bulk(DATA, bottleneck, config=config)
    assert_exact(t, DATA)
    st, drops = t.sender.stats, t.link.a_to_b.stats.queue_dropped
    assert drops > 20, "the queue never overflowed: the test lost its point"
    assert st.retransmits == t.audit.retransmissions == drops
    assert st.timeouts == 0 and t.audit.spurious == t.audit.spurious_across_episodes == 0
    if sack:
        assert SIZE * 8 / t.link.now > 0.7 * 100e6, f"SACK goodput only {SIZE / t.link.now} B/s"


# -- exact recovery for chosen losses (1 MB) -------------------------------------------------------

SMALL = DATA[:1 << 20]


def reductions(t: Transfer) -> list[tuple[int, int, int]]:
    """(FlightSize when the loss was detected, new ssthresh, trace index) for every step at
    which ssthresh changed (the trace is taken after segment arrival, before transmission)."""
    out = []
    for i in range(1, len(t.trace)):
        if t.trace[i][2] != t.trace[i - 1][2]:
            out.append((t.trace[i][3], t.trace[i][2], i))
    return out


@pytest.mark.parametrize("sack", [True, False], ids=["sack", "newreno"])
def test_one_loss_costs_one_fast_retransmit_and_halves_cwnd(sack: bool) -> None:
    """RFC 5681 3.2 / RFC 6675: one lost segment in a large window -> exactly one retransmission,
    by fast retransmit, no timeout; ssthresh = FlightSize / 2 and cwnd ends near it."""
    drop = DropNthData(100)
    t = bulk(SMALL, LinkParams(), drop=drop,
             config=replace(CONFIG, sack=sack))
    assert_exact(t, SMALL)
    st = t.sender.stats
    assert len(drop.dropped) == 1
    assert (st.retransmits, st.fast_retransmits, st.timeouts) == (1, 1, 0)
    assert t.audit.retransmissions == 1 and t.audit.spurious == 0
    cuts = reductions(t)
    assert len(cuts) == 1, f"ssthresh changed {len(cuts)} times: {cuts}"
    flight, ssthresh, index = cuts[0]
    smss = MSS - 12                                  # timestamps take 12 bytes of each segment
    assert flight > 40 * smss, "the loss should hit a large window"
    assert abs(ssthresh - flight / 2) < smss, f"RFC 5681 eq. 4: ssthresh {ssthresh}, " \
        f"FlightSize {flight}"
    epoch = [cwnd for _, cwnd, ss, _ in t.trace[index:] if ss == ssthresh]
    # RFC 6582 3.2 step 6 may leave cwnd at FlightSize + SMSS below ssthresh, but never near the
    # one-segment loss window of a timeout.
    assert min(epoch) > 4 * smss, "cwnd collapsed as after a timeout"
    assert min(epoch) <= ssthresh + smss, "cwnd never came down to ssthresh (RFC 6582 step 6)"


@pytest.mark.parametrize("sack", [True, False], ids=["sack", "newreno"])
def test_two_losses_in_one_window_one_reduction_no_timeout(sack: bool) -> None:
    """RFC 6582 (partial ACKs) / RFC 6675: two holes in one window are repaired in one recovery
    episode: two retransmissions, one ssthresh reduction, no RTO."""
    drop = DropNthData(100, 106)
    t = bulk(SMALL, LinkParams(), drop=drop,
             config=replace(CONFIG, sack=sack))
    assert_exact(t, SMALL)
    st = t.sender.stats
    assert len(drop.dropped) == 2
    assert st.timeouts == 0 and st.retransmits == 2 and t.audit.spurious == 0
    assert st.fast_retransmits == 1 and len(reductions(t)) == 1




# -- the link model itself: checked with trivial endpoints, so engine failures are not link bugs --

class Pinger:
    """Sends `count` numbered 20+4-byte pseudo-segments at t=0; records what comes back."""

    def __init__(self, count: int) -> None:
        self.pending = [(1, 2, _HDR + struct.pack("!I", k)) for k in range(count)]
        self.got: list[tuple[float, int]] = []

    def receive(self, src_ip: int, dst_ip: int, tcp_bytes: bytes, now: float) -> None:
        self.got.append((now, struct.unpack_from("!I", tcp_bytes, 20)[0]))

    def poll(self, now: float) -> list[tuple[int, int, bytes]]:
        out, self.pending = self.pending, []
        return out

    def next_deadline(self) -> float | None:
        return None


class Echo(Pinger):
    """Returns every segment it receives, at once."""

    def __init__(self) -> None:
        super().__init__(0)

    def receive(self, src_ip: int, dst_ip: int, tcp_bytes: bytes, now: float) -> None:
        super().receive(src_ip, dst_ip, tcp_bytes, now)
        self.pending.append((dst_ip, src_ip, tcp_bytes))


_HDR = bytes(12) + b"\x50" + bytes(7)


def test_link_serialises_and_delays_exactly() -> None:
    """Arrival k = (k+1) * wire time + delay, and the echo returns after one more trip."""
    a, b = Pinger(5), Echo()
    link = LinkModel(a, b, LinkParams(delay=0.010, bandwidth=8e6))
    link.run(lambda: len(a.got) == 5, time_limit=1.0, max_iterations=100)
    wire = (24 + WIRE_OVERHEAD) * 8 / 8e6
    assert [k for _, k in b.got] == list(range(5))
    assert [t for t, _ in b.got] == pytest.approx([(k + 1) * wire + 0.010 for k in range(5)])
    assert a.got[-1][0] == pytest.approx(b.got[-1][0] + wire + 0.010)


def _lost_indices(seed: int, params: LinkParams, count: int = 4000) -> list[int]:
    a, b = Pinger(count), Echo()
    link = LinkModel(a, b, params, LinkParams(delay=0.0, bandwidth=None), seed=seed)
    link.run(lambda: link.now > 1.0 or not (link.a_to_b.in_flight or link.b_to_a.in_flight),
             time_limit=2.0, max_iterations=10 * count)
    got = {k for _, k in b.got}
    return [k for k in range(count) if k not in got]


def test_link_loss_is_seeded_and_near_rate() -> None:
    params = LinkParams(loss=0.05, delay=0.001, bandwidth=None)
    first = _lost_indices(7, params)
    assert first == _lost_indices(7, params)
    assert first != _lost_indices(8, params)
    assert 0.04 * 4000 < len(first) < 0.06 * 4000


def test_link_duplicates_and_reorders() -> None:
    a, b = Pinger(2000), Echo()
    link = LinkModel(a, b, LinkParams(duplicate=0.05, reorder=0.1, reorder_delay=0.001,
                                      delay=0.001, bandwidth=100e6), seed=3)
    link.run(lambda: not link.a_to_b.in_flight and link.now > 0.0, time_limit=2.0,
             max_iterations=100_000)
    order = [k for _, k in b.got]
    assert len(order) == 2000 + link.a_to_b.stats.duplicated
    assert 50 < link.a_to_b.stats.duplicated < 150 and 120 < link.a_to_b.stats.reordered < 280
    assert order != sorted(order) and sorted(set(order)) == list(range(2000))


def test_link_reports_stall_and_limits() -> None:
    link = LinkModel(Pinger(1), Echo(), LinkParams())
    with pytest.raises(SimulationError, match="stalled"):
        link.run(lambda: False, time_limit=1.0, max_iterations=1000)
    ping = LinkModel(Echo(), Echo(), LinkParams(delay=0.01))
    ping.a.pending.append((1, 2, _HDR + bytes(4)))          # bounces forever
    with pytest.raises(SimulationError, match="time limit"):
        ping.run(lambda: False, time_limit=0.5, max_iterations=1000)
    with pytest.raises(SimulationError, match="iteration cap"):
        ping.run(lambda: False, time_limit=100.0, max_iterations=10)


class DropTwice:
    """Drop rule: lose the n-th payload segment and the first retransmission of it."""

    def __init__(self, nth: int) -> None:
        self._nth = nth
        self._count = 0
        self.seq: int | None = None
        self.dropped = 0

    def __call__(self, index: int, seg: bytes) -> bool:
        if tcp_payload_len(seg) == 0:
            return False
        if self._count == self._nth:
            self.seq = tcp_seq(seg)
        self._count += 1
        if self.seq is not None and tcp_seq(seg) == self.seq and self.dropped < 2:
            self.dropped += 1
            return True
        return False


def test_lost_retransmission_is_sent_again_without_a_timeout() -> None:
    """RFC 6675 alone cannot see a lost retransmission and leaves it to the RTO; the engine
    notices that data first sent after the retransmission is SACKed while the hole stays open,
    and resends it at once: two retransmissions of the one segment, one reduction, no RTO."""
    drop = DropTwice(100)
    t = bulk(SMALL, LinkParams(), drop=drop)
    assert_exact(t, SMALL)
    st = t.sender.stats
    assert drop.dropped == 2
    assert (st.fast_retransmits, st.lost_retransmits, st.timeouts) == (1, 1, 0)
    assert st.retransmits == 2 and t.audit.retransmissions == 2 and t.audit.spurious == 0
    assert len(reductions(t)) == 1, "the lost retransmission cost a second reduction"
    smss = MSS - 12
    assert min(cwnd for _, cwnd, _, _ in t.trace[reductions(t)[0][2]:]) > 4 * smss, \
        "cwnd collapsed as after a timeout"


class AckBlackout:
    """Drop rule for the ACK direction: once `trigger` has lost a segment, lose the duplicate
    ACKs for it (those carrying SACK blocks), so the sender learns nothing of the hole or the
    segments above it, until an ACK reports a duplicate (a D-SACK, RFC 2883: the RTO's resend
    arrived); from then on every ACK passes."""

    def __init__(self, trigger: DropNthData) -> None:
        self.trigger = trigger
        self.lost = 0
        self.over = False

    def __call__(self, index: int, seg: bytes) -> bool:
        hole = self.trigger.dropped
        if self.over or not hole or seg[12] >> 4 <= 8:
            return False
        ack = struct.unpack_from("!I", seg, 8)[0]
        sack = dict(TCP(seg).options).get("SAck", ())
        if sack and (sack[0] - ack) & 0x80000000:        # first block below the ACK: D-SACK
            self.over = True
            return False
        self.lost += ack == hole[0]
        return ack == hole[0]


@pytest.mark.parametrize("skip", [True, False], ids=["skip-sacked", "plain-go-back-n"])
def test_go_back_n_after_a_timeout_skips_what_the_peer_sacked(skip: bool, monkeypatch) -> None:
    """RFC 6675 5.1: after an RTO the sender resends from SND.UNA, but what the receiver SACKs
    after the first resend (it kept its out-of-order segments) is not sent again: eight holes
    cost eight resends (and the one segment below the first hole whose ACK was delayed and then
    lost). The plain variant, skipping disabled, shows what go-back-N alone resends."""
    if not skip:
        if ACCELERATED:
            pytest.skip("the compiled engine's Scoreboard cannot be patched")
        monkeypatch.setattr(Scoreboard, "skip", lambda self, off: off)
    drop = DropNthData(*range(100, 130, 4))
    blackout = AckBlackout(drop)
    t = bulk(SMALL, LinkParams(), drop=drop, drop_ba=blackout)
    assert_exact(t, SMALL)
    st = t.sender.stats
    assert len(drop.dropped) == 8 and blackout.lost > 8 and blackout.over
    assert (st.timeouts, st.fast_retransmits) == (1, 0)
    assert t.audit.spurious == 0
    if skip:
        assert st.retransmits == 9 and t.audit.spurious_after_rto == 1
    else:
        assert st.retransmits > 30 and t.audit.spurious_after_rto > 20


def test_tail_loss_is_repaired_by_one_timeout_without_probes() -> None:
    """The last segment of the stream lost and no tail loss probe: no dupACKs can follow, so
    one RTO, one resend (RFC 6298 5.4)."""
    last = -(-len(SMALL) // (MSS - 12)) - 1
    drop = DropNthData(last)
    t = bulk(SMALL, LinkParams(), drop=drop,
             config=replace(CONFIG, tail_loss_probe=False))
    assert_exact(t, SMALL)
    st = t.sender.stats
    assert len(drop.dropped) == 1
    assert (st.retransmits, st.timeouts, st.loss_probes) == (1, 1, 0) and t.audit.spurious == 0


def test_tail_loss_is_repaired_by_a_loss_probe_not_a_timeout() -> None:
    """RFC 8985 7: the same loss with the tail loss probe on. One segment in flight waits out
    the worst-case delayed ACK, so the probe goes at the RTO's time (PTO = min(RTO, PTO)) and
    stands in for it: the last segment is resent, no timeout, no backoff, no 1-segment cwnd."""
    last = -(-len(SMALL) // (MSS - 12)) - 1
    drop = DropNthData(last)
    t = bulk(SMALL, LinkParams(), drop=drop)
    assert_exact(t, SMALL)
    st = t.sender.stats
    assert (st.retransmits, st.timeouts, st.loss_probes) == (1, 0, 1)
    assert t.audit.spurious == 0 and t.audit.retransmissions == 1
    smss = MSS - 12
    assert min(cwnd for _, cwnd, _, _ in t.trace[-50:]) > smss, "cwnd fell to the loss window"
    # The run stops when the receiver has closed; let the sender take the last ACK. The resent
    # probe was not reported a duplicate, so it repaired a loss: one reduction (RFC 8985 7.4.2).
    conn = t.conn
    t.link.run(lambda: t.sender.connections == 0, lambda now: None, time_limit=5.0)
    assert t.sender.stats.tlp_recoveries == 1 and t.sender.stats.timeouts == 0
    assert conn.cc.ssthresh == 2 * smss and conn.cc.cwnd == conn.cc.ssthresh


def test_loss_just_before_the_tail_is_found_by_the_probe() -> None:
    """The next-to-last segment lost: the last one draws a single dupACK, too few for fast
    retransmit. 2*SRTT later the probe resends the last segment; its D-SACK still shows the
    hole below, which (RFC 8985 7.4, RACK's rule) is then lost: fast recovery resends it long
    before the RTO. Retransmissions: the probe, the hole, and RFC 6675's one rescue."""
    last = -(-len(SMALL) // (MSS - 12)) - 1
    drop = DropNthData(last - 1)
    t = bulk(SMALL, LinkParams(), drop=drop)
    assert_exact(t, SMALL)
    st = t.sender.stats
    assert (st.loss_probes, st.fast_retransmits, st.timeouts) == (1, 1, 0)
    assert st.retransmits == 3 and t.audit.rescues == 1 and t.audit.lost_retransmissions == 0
    assert t.audit.spurious == 1, "only the probe itself may be a duplicate"
    plain = bulk(SMALL, LinkParams(), drop=DropNthData(last - 1),
                 config=replace(CONFIG, tail_loss_probe=False))
    assert plain.sender.stats.timeouts == 1, "without the probe the hole waits for the RTO"
    assert t.link.now < plain.link.now - 0.1, (t.link.now, plain.link.now)


@pytest.mark.parametrize("seed", [1, 13])
def test_10mb_ack_loss_alone_causes_no_fast_retransmit(seed: int) -> None:
    """Cumulative ACKs make lost ACKs harmless: with 10% of the receiver's segments lost and no
    data lost, no duplicate ACK can arise, so there is no fast retransmit and no data resent
    (a lost SYN-ACK or final ACK may still cost one timeout: seed 1 loses the SYN-ACK)."""
    t = bulk(DATA, LinkParams(), LinkParams(loss=0.10), seed=seed)
    assert_exact(t, DATA)
    assert t.link.b_to_a.stats.lost > 100
    st = t.sender.stats
    assert st.fast_retransmits == 0 and st.timeouts <= 1 and st.retransmits == st.timeouts
    assert t.audit.retransmissions == 0 and t.audit.payload_bytes == SIZE


@pytest.mark.parametrize("loss", [0.0, 0.02])
def test_slow_reader_closes_the_window_and_persist_keeps_it_going(loss: float) -> None:
    """The receiving app reads 16 KiB every 50 ms into a 64 KiB buffer: the window shuts (below
    one segment) again and again, and must reopen by window updates (RFC 9293 3.8.6.2) or
    probes (3.8.6.1) even when those are lost; 2 MiB arrive byte-exact at the app's pace."""
    data, rate_every, rate_bytes = DATA[:2 << 20], 0.05, 16 << 10
    config = TcpConfig(mss=MSS, rcvbuf=64 << 10, sndbuf=256 << 10, idle_timeout=0)
    sender = TcpStack(config, isn_secret=b"sender-secret-0123")
    receiver = TcpStack(config, isn_secret=b"receiver-secret-01")
    listener = receiver.listen(B_IP, 80, 8)
    client = StreamApp(sender.connect(A_IP, 40000, B_IP, 80, 0.0), data)
    got = bytearray()
    server: list = []
    windows: list[int] = []
    next_read = [0.0]

    def app(now: float) -> None:
        sender.events()
        receiver.events()
        client.pump()
        if not server:
            accepted = listener.accept()
            if accepted is not None:
                server.append(accepted)
        elif now >= next_read[0]:
            next_read[0] = now + rate_every
            got.extend(server[0].recv(rate_bytes))

    def record_window(tcp: bytes, delivered: bool) -> None:
        if not tcp[13] & 0x06:                       # neither SYN (unscaled) nor RST
            windows.append(int.from_bytes(tcp[14:16], "big"))

    link = LinkModel(sender, receiver, LinkParams(loss=loss), LinkParams(loss=loss), seed=21,
                     observe_ba=record_window)
    link.run(lambda: bool(server) and server[0].eof and not server[0].readable_bytes, app,
             time_limit=120.0, max_iterations=500_000,
             wake=lambda: next_read[0] if server else None)
    assert bytes(got) == data
    shut = sum(w << server[0].rcv_wscale < MSS - 12 for w in windows)
    assert shut > 10, "the window never shut: the test lost its point"
    paced = len(data) / rate_bytes * rate_every
    assert link.now < paced * 1.2 + 1.0, f"took {link.now:.1f} s, app pace allows {paced:.1f} s"
    if loss == 0.0:
        assert (sender.stats.retransmits, sender.stats.timeouts) == (0, 0)


def test_10mb_across_the_sequence_number_wrap_with_loss() -> None:
    """The sender's sequence numbers pass 2**32 two megabytes into the transfer (RFC 9293 3.4
    modular arithmetic), with 1% loss so that SACK blocks and retransmissions straddle it."""
    isn_at_zero = initial_seq(SENDER_SECRET, A_IP, 40000, B_IP, 80, 0.0)
    start = ((1 << 32) - (2 << 20) - isn_at_zero) % (1 << 32) / 250_000   # RFC 6528 4 us clock
    t = bulk(DATA, LinkParams(loss=0.01), seed=14, start=start)
    assert_exact(t, DATA)
    iss = t.audit.base - 1 if t.audit.base is not None else -1
    assert (1 << 32) - 3 * (1 << 20) < iss < (1 << 32) - (1 << 20), f"ISS {iss:#x} not near wrap"
    assert t.audit.spurious == 0 and t.sender.stats.retransmits >= t.audit.lost_payload_segments

"""Loss detection details, segment by segment against a scripted peer: when the tail loss probe
fires (RFC 8985 7.2), what counts as reordering (RFC 8985 6.2, RFC 4653), and that every
duplicate is reported by its own D-SACK (RFC 2883 4)."""

from __future__ import annotations

from test_tcp_support import ENGINE_IP, Peer, flags, opts, payload

NOP = ("NOP", None)
SACK_OK = [("MSS", 1460), ("SAckOK", b"")]
RTT = 0.05


def sack_connection(**cfg) -> tuple[Peer, object, int]:
    """Accepted, SACK negotiated, one RTT sample of 50 ms (RTO floor 1 s, so the PTO is seen
    alone); returns (peer, conn, the engine's first data sequence number)."""
    cfg.setdefault("rto_min", 1.0)
    p = Peer(**cfg)
    lst = p.stack.listen(ENGINE_IP, p.eport, 4)
    p.send("S", 1000, options=SACK_OK)
    synack = p.one()
    p.now += RTT
    p.send("A", 1001, synack.seq + 1)
    conn = lst.accept()
    conn.set_option("nodelay", True)
    assert abs(conn.rtt.srtt - RTT) < 1e-9
    return p, conn, synack.seq + 1


# ---------------------------------------------------------------- RFC 8985 7.2: the PTO


def test_one_segment_in_flight_waits_out_the_delayed_ack() -> None:
    """FlightSize one segment: PTO = 2*SRTT + WCDelAckT (0.2 s) = 0.3 s, then the probe
    resends that segment."""
    p, conn, snd = sack_connection()
    conn.send(b"a" * 100)
    assert [len(payload(s)) for s in p.out()] == [100]
    p.none(0.29)
    probe = p.one(0.02)
    assert (probe.seq, payload(probe)) == (snd, b"a" * 100)
    assert p.stack.stats.loss_probes == 1


def test_new_data_restarts_the_probe_timer() -> None:
    """"start or restart" after new data: the second segment, 50 ms after the first, moves the
    PTO to 2*SRTT after it, and with two segments in flight there is no delayed-ACK allowance:
    the probe (the last MSS of data again) leaves 150 ms after the first send, not 300 ms."""
    p, conn, snd = sack_connection()
    conn.send(b"a" * 100)
    p.out()
    p.none(0.05)
    conn.send(b"b" * 100)
    assert [payload(s) for s in p.out()] == [b"b" * 100]
    p.none(0.099)
    probe = p.one(0.002)
    assert (probe.seq, payload(probe)) == (snd, b"a" * 100 + b"b" * 100)


def test_two_small_segments_are_not_one_segment_in_flight() -> None:
    """200 bytes in two segments is less than an MSS but two segments: no allowance."""
    p, conn, snd = sack_connection()
    conn.send(b"a" * 100)
    conn.send(b"b" * 100)
    p.out()
    conn.send(b"c" * 100)                                  # nodelay: goes at once
    assert len(p.out()) == 1
    p.none(0.099)
    probe = p.one(0.002)
    assert (probe.seq, payload(probe)) == (snd, b"a" * 100 + b"b" * 100 + b"c" * 100)


def test_a_cumulative_ack_leaving_one_segment_restarts_with_the_allowance() -> None:
    p, conn, snd = sack_connection()
    conn.send(b"a" * 100)
    p.out()
    conn.send(b"b" * 100)
    p.out()
    p.now += RTT
    p.send("A", 1001, snd + 100)                           # only "b" is left in flight
    p.none(0.299)
    probe = p.one(0.002)
    assert (probe.seq, payload(probe)) == (snd + 100, b"b" * 100)


# ---------------------------------------------------------------- reordering (RFC 8985 6.2)


def _ten_segments(p: Peer, conn, snd: int) -> None:
    conn.send(b"x" * 14600)
    assert len(p.out()) == 10
    p.now += RTT


def test_sack_in_the_same_ack_as_the_cumulative_advance_is_not_reordering() -> None:
    """Segment 0 was ACKed late (delayed ACK), 1-2 are lost, 3 arrived: the receiver's ACK
    covers 0 and SACKs 3 at once. Nothing arrived out of order: the degree stays 3."""
    p, conn, snd = sack_connection(sndbuf=100_000)
    _ten_segments(p, conn, snd)
    p.send("A", 1001, snd + 1460, options=[NOP, NOP, ("SAck", (snd + 4380, snd + 5840))])
    assert conn.lr.reo.degree == 3
    assert p.stack.stats.fast_retransmits == 0


def test_a_hole_filled_below_an_earlier_sack_without_retransmission_is_reordering() -> None:
    """Segments 1-2 arrive after 3 was SACKed by an earlier ACK, never resent: reordering of
    3 segments, so DupThresh becomes 4."""
    p, conn, snd = sack_connection(sndbuf=100_000)
    _ten_segments(p, conn, snd)
    p.send("A", 1001, snd + 1460, options=[NOP, NOP, ("SAck", (snd + 4380, snd + 5840))])
    p.out()
    p.send("A", 1001, snd + 5840)
    assert conn.lr.reo.degree == 4
    assert p.stack.stats.retransmits == 0


def test_a_retransmitted_hole_filled_below_the_sack_is_not_reordering() -> None:
    """The hole came back by fast retransmit: its delivery below the SACKed data is loss
    recovery, not reordering."""
    p, conn, snd = sack_connection(sndbuf=100_000)
    _ten_segments(p, conn, snd)
    for k in range(3):
        p.send("A", 1001, snd, options=[NOP, NOP, ("SAck", (snd + 1460, snd + (2 + k) * 1460))])
    rtx = [s for s in p.out() if s.seq == snd]
    assert len(rtx) == 1
    p.send("A", 1001, snd + 4380)
    assert conn.lr.reo.degree == 3


# ---------------------------------------------------------------- RFC 2883: every duplicate


def test_each_duplicate_in_one_batch_gets_its_own_dsack() -> None:
    """Three duplicates arrive before the engine's next ACK: three ACKs, each naming one."""
    p, conn, snd = sack_connection()
    for k in range(3):
        p.send("PA", 1001 + 100 * k, snd, payload=bytes([65 + k]) * 100)
    p.out(1.0)
    for k in range(3):
        p.send("PA", 1001 + 100 * k, snd, payload=bytes([65 + k]) * 100)
    acks = p.out()
    assert [flags(a) for a in acks] == ["A", "A", "A"]
    assert [a.ack for a in acks] == [1301] * 3
    assert [opts(a)["SAck"] for a in acks] == [(1001, 1101), (1101, 1201), (1201, 1301)]
    assert p.stack.stats.dsacks_out == 3
    assert conn.recv(1000) == b"A" * 100 + b"B" * 100 + b"C" * 100


def test_a_single_duplicate_still_costs_one_ack() -> None:
    p, conn, snd = sack_connection()
    p.send("PA", 1001, snd, payload=b"a" * 100)
    p.out(1.0)
    p.send("PA", 1001, snd, payload=b"a" * 100)
    ack = p.one()
    assert ack.ack == 1101 and opts(ack)["SAck"] == (1001, 1101)

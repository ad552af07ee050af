"""RFC 9293 conformance of the engine, segment by segment: a scapy-built segment goes in, the
exact segments that come out are parsed with scapy and checked. docs/rfc9293-must.md maps each
Appendix B MUST to the tests here."""

from __future__ import annotations

import errno
import socket

import pytest
from scapy.layers.inet import TCP

from p4mtcp.control.tcp import EventKind, State, TcpConfig, TcpStack
from p4mtcp.control.tcp.isn import initial_seq
from test_tcp_support import ENGINE_IP, PEER_IP, Peer, flags, opts, payload, tcp_bytes

FULL = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1000, 0)), ("NOP", None), ("WScale", 7)]


def kinds(stack):
    return [e.kind for e in stack.events()]


def established(**cfg):
    """An accepted connection: peer ISN 1000 (data from 1001), engine data from synack.seq+1."""
    p = Peer(**cfg)
    conn, synack = p.accept()
    p.stack.events()
    return p, conn, synack.seq + 1


# ---------------------------------------------------------------- opening (3.5, 3.10.7.2/3)

def test_syn_to_listener_gets_synack_with_mss_only():
    """MUST-14, RFC 7323 1.3: a SYN offering only MSS gets MSS and nothing else back."""
    p = Peer()
    p.stack.listen(ENGINE_IP, 80, 4)
    p.send("S", 1000, options=[("MSS", 1200)])
    sa = p.one()
    assert flags(sa) == "SA" and sa.ack == 1001 and sa.window == 8192
    assert opts(sa) == {"MSS": 1460}


def test_synack_negotiates_what_the_peer_offers():
    p = Peer(rcvbuf=1 << 20)
    p.stack.listen(ENGINE_IP, 80, 4)
    p.send("S", 1000, options=FULL)
    sa = p.one()
    o = opts(sa)
    assert o["MSS"] == 1460 and o["WScale"] == 5 and "SAckOK" in o
    assert o["Timestamp"][1] == 1000                        # echoes the peer's TSval
    assert sa.window == 65535                               # RFC 7323 2.2: SYN window unscaled


def test_window_scale_not_applied_without_peer_offer():
    """mTCP scales without negotiation; RFC 7323 2.2 forbids it."""
    p = Peer(rcvbuf=1 << 20)
    conn, sa = p.accept(syn_options=[("MSS", 1460)])
    assert "WScale" not in opts(sa)
    conn.send(b"x")
    seg = p.one()
    assert seg.window == 65535 and payload(seg) == b"x"


def test_peer_window_scaled_when_negotiated():
    p = Peer(rcvbuf=1 << 20)
    conn, sa = p.accept(syn_options=[("MSS", 1000), ("WScale", 4)], window=100)
    assert conn.snd_wnd == 100 << 4                       # the final ACK's window is scaled
    conn.set_option("nodelay", True)
    conn.send(b"y" * 1600)
    segs = p.out()
    assert sum(len(payload(s)) for s in segs) == 1600


def test_default_send_mss_is_536():
    """MUST-15: without an MSS option the peer is assumed to take 536-octet segments."""
    p = Peer()
    conn, _ = p.accept(syn_options=[])
    conn.set_option("nodelay", True)
    conn.send(b"a" * 2000)
    sizes = [len(payload(s)) for s in p.out()]
    assert sizes == [536, 536, 536, 392]


def test_effective_mss_leaves_room_for_timestamps():
    """MUST-16 (RFC 6691): payload = min(MSS) minus the 12 option bytes of a timestamp."""
    p = Peer()
    conn, _ = p.accept(syn_options=[("MSS", 1000), ("Timestamp", (5, 0))])
    conn.send(b"b" * 3000)
    segs = p.out()
    assert [len(payload(s)) for s in segs][:2] == [988, 988]
    assert all(len(bytes(s)) - len(payload(s)) == 32 for s in segs)


def test_mss_option_only_on_syn():
    """MUST-65: no MSS option on non-SYN segments."""
    p, conn, _ = established()
    conn.send(b"z" * 100)
    assert all("MSS" not in opts(s) for s in p.out())


def test_simultaneous_open_by_scapy_peer():
    """MUST-10 (RFC 9293 figure 8): SYN crosses SYN; both reach ESTABLISHED."""
    p = Peer()
    p.eport, p.pport = 50000, 80
    conn = p.stack.connect(ENGINE_IP, 50000, PEER_IP, 80, p.now)
    syn = p.one()
    p.send("S", 7000, options=[("MSS", 1460)])           # the peer's own SYN, no ACK
    synack = p.one()
    assert flags(synack) == "SA" and synack.seq == syn.seq and synack.ack == 7001
    assert conn.state is State.SYN_RECEIVED
    p.send("SA", 7000, syn.seq + 1, options=[("MSS", 1460)])   # the peer's SYN-ACK
    assert EventKind.CONNECTED in kinds(p.stack)


def test_rst_in_syn_received_returns_to_listen():
    """MUST-11: a passive SYN-RECEIVED connection reset by the peer goes back to LISTEN."""
    p = Peer()
    lst = p.stack.listen(ENGINE_IP, 80, 4)
    p.send("S", 1000, options=[("MSS", 1460)])
    p.one()
    p.send("R", 1001)
    assert p.stack.connections == 0 and p.out() == []
    assert p.stack.events() == [] and lst.accept() is None
    p.send("S", 3000, options=[("MSS", 1460)])
    assert flags(p.one()) == "SA"


def test_duplicate_syn_in_syn_received_repeats_synack():
    p = Peer()
    p.stack.listen(ENGINE_IP, 80, 4)
    p.send("S", 1000, options=[("MSS", 1460)])
    first = p.one()
    p.send("S", 1000, options=[("MSS", 1460)])
    again = p.one()
    assert flags(again) == "SA" and again.seq == first.seq and again.ack == 1001


def test_listeners_on_one_port_for_different_addresses():
    """MUST-41, MUST-42: several LISTENs on one port, one per local address (plus a wildcard)."""
    other = ENGINE_IP + 1
    stack = TcpStack(TcpConfig(), isn_secret=b"0123456789abcdef")
    a = stack.listen(ENGINE_IP, 80, 4)
    b = stack.listen(other, 80, 4)
    w = stack.listen(0, 80, 4)
    with pytest.raises(OSError) as e:
        stack.listen(ENGINE_IP, 80, 4)
    assert e.value.errno == errno.EADDRINUSE
    for dst, lst in ((ENGINE_IP, a), (other, b), (ENGINE_IP + 2, w)):
        seg = tcp_bytes("S", 1, sport=999, dport=80, dst=socket.inet_ntoa(dst.to_bytes(4, "big")),
                        options=[("MSS", 1460)])
        stack.receive(PEER_IP, dst, seg, 1.0)
        stack.poll(1.0)
        assert len(lst._half_open) == 1


def test_open_to_broadcast_or_multicast_rejected():
    """MUST-46."""
    stack = TcpStack(TcpConfig(), isn_secret=b"0123456789abcdef")
    for bad in (0xFFFFFFFF, 0xE0000001, 0):
        with pytest.raises(OSError) as e:
            stack.connect(ENGINE_IP, 5000, bad, 80, 0.0)
        assert e.value.errno == errno.EINVAL


@pytest.mark.parametrize("src, dst", [("224.0.0.5", "10.0.0.1"), ("10.0.0.2", "255.255.255.255"),
                                      ("10.0.0.2", "239.1.1.1")])
def test_syn_with_broadcast_or_multicast_address_dropped(src, dst):
    """MUST-57, MUST-63: silently discarded, no SYN-ACK, no RST."""
    p = Peer()
    p.stack.listen(0, 80, 4)
    seg = tcp_bytes("S", 1, sport=4000, dport=80, src=src, dst=dst, options=[("MSS", 1460)])
    p.stack.receive(int.from_bytes(socket.inet_aton(src), "big"),
                    int.from_bytes(socket.inet_aton(dst), "big"), seg, p.now)
    p.none()
    assert p.stack.connections == 0


def test_isn_has_a_clock_component():
    """MUST-8, RFC 6528: the same 4-tuple 1 s later starts 250000 higher (4 us ticks)."""
    stack = TcpStack(TcpConfig(), isn_secret=b"0123456789abcdef")
    c1 = stack.connect(ENGINE_IP, 5000, PEER_IP, 80, 10.0)
    isn1 = TCP(stack.poll(10.0)[0][2]).seq
    c1.close()
    stack.connect(ENGINE_IP, 5000, PEER_IP, 80, 11.0)
    isn2 = TCP(stack.poll(11.0)[0][2]).seq
    assert (isn2 - isn1) & 0xFFFFFFFF == 250_000


def test_isn_is_keyed():
    """MUST-9: the ISN depends on a secret the outside does not know."""
    a = initial_seq(b"A" * 16, 1, 2, 3, 4, 5.0)
    b = initial_seq(b"B" * 16, 1, 2, 3, 4, 5.0)
    c = initial_seq(b"A" * 16, 1, 2, 3, 5, 5.0)
    assert len({a, b, c}) == 3


# ---------------------------------------------------------------- segments for no connection

def test_closed_port_syn_gets_rst_ack():
    """RFC 9293 3.10.7.1: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>."""
    p = Peer()
    p.send("S", 1000, options=[("MSS", 1460)])
    r = p.one()
    assert flags(r) == "RA" and r.seq == 0 and r.ack == 1001


def test_closed_port_data_gets_rst_ack_covering_it():
    p = Peer()
    p.send("P", 500, payload=b"12345")
    r = p.one()
    assert flags(r) == "RA" and r.ack == 505


def test_closed_port_ack_gets_rst_with_its_ack_number():
    p = Peer()
    p.send("A", 5, 777)
    r = p.one()
    assert flags(r) == "R" and r.seq == 777


def test_rst_to_closed_port_is_ignored():
    p = Peer()
    p.send("R", 5)
    p.none()


def test_ack_to_listener_gets_rst():
    """RFC 9293 3.10.7.2 second check (a forged cookie is not accepted)."""
    p = Peer()
    p.stack.listen(ENGINE_IP, 80, 4)
    p.send("A", 5, 777)
    r = p.one()
    assert flags(r) == "R" and r.seq == 777
    assert p.stack.connections == 0


# ---------------------------------------------------------------- synchronized states

def test_rst_with_exact_sequence_resets_and_informs():
    """MUST-12 and RFC 5961 3.2: RST at RCV.NXT aborts; the application sees RESET then CLOSED."""
    p, conn, _ = established()
    p.send("R", 1001)
    assert kinds(p.stack) == [EventKind.RESET, EventKind.CLOSED]
    assert conn.error == errno.ECONNRESET and conn.state is State.CLOSED
    p.none()
    with pytest.raises(OSError) as e:
        conn.send(b"x")
    assert e.value.errno == errno.ECONNRESET


def test_rst_in_window_gets_challenge_ack():
    """RFC 5961 3.2: in-window but not exact -> challenge ACK, connection kept."""
    p, conn, snd = established()
    p.send("R", 1101)
    ack = p.one()
    assert flags(ack) == "A" and ack.seq == snd and ack.ack == 1001
    assert conn.state is State.ESTABLISHED and p.stack.stats.challenge_acks == 1


def test_rst_outside_window_ignored():
    p, conn, _ = established()
    p.send("R", 1001 + 100_000)
    p.none()
    assert conn.state is State.ESTABLISHED


def test_syn_in_established_gets_challenge_ack():
    """RFC 5961 4.2 (RFC 9293 3.10.7.4 fourth check)."""
    p, conn, snd = established()
    p.send("S", 1005, options=[("MSS", 1460)])
    ack = p.one()
    assert flags(ack) == "A" and ack.seq == snd and ack.ack == 1001
    assert conn.state is State.ESTABLISHED


def test_challenge_acks_are_rate_limited():
    """RFC 5961 section 7."""
    p, conn, _ = established(challenge_ack_limit=2)
    sent = 0
    for i in range(5):
        p.send("R", 1101 + i)
        sent += len(p.out())
    assert sent == 2 and p.stack.stats.challenge_acks_suppressed == 3
    p.now += 1.0
    p.send("R", 1200)
    assert len(p.out()) == 1                               # next second, a fresh allowance


def test_ack_of_unsent_data_is_acked_and_dropped():
    """RFC 9293 3.10.7.4 fifth check: SEG.ACK > SND.NXT -> send ACK, drop the segment."""
    p, conn, snd = established()
    p.send("PA", 1001, snd + 1000, payload=b"evil")
    ack = p.one()
    assert flags(ack) == "A" and ack.ack == 1001
    assert conn.readable_bytes == 0


def test_too_old_ack_is_challenged():
    """RFC 5961 5.2: SEG.ACK below SND.UNA - MAX.SND.WND."""
    p, conn, snd = established()
    p.send("PA", 1001, snd - 200_000, payload=b"evil")
    assert flags(p.one()) == "A" and conn.readable_bytes == 0


def test_segment_outside_window_gets_ack():
    """RFC 9293 3.10.7.4 first check: unacceptable -> <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>."""
    p, conn, snd = established()
    p.send("PA", 1001 + 50_000, snd, payload=b"far")
    ack = p.one()
    assert flags(ack) == "A" and ack.seq == snd and ack.ack == 1001 and conn.readable_bytes == 0


def test_old_duplicate_data_reacked_not_redelivered():
    p, conn, snd = established()
    p.send("PA", 1001, snd, payload=b"hello")
    assert conn.recv(100) == b"hello"
    p.out(0.5)
    p.send("PA", 1001, snd, payload=b"hello")
    ack = p.one()
    assert ack.ack == 1006 and conn.recv(100) == b""


def test_zero_window_still_processes_ack_and_rst():
    """MUST-66: with RCV.WND = 0 the ACK field and RST are still processed."""
    p, conn, snd = established(rcvbuf=1000)
    p.send("PA", 1001, snd, payload=b"q" * 1000)
    ack = p.one(0.5)
    assert ack.window == 0
    conn.send(b"data")
    assert payload(p.one()) == b"data"
    p.send("PA", 2001, snd + 4, payload=b"more")            # ACKs our data; its text is refused
    assert conn.una == 5 and conn.readable_bytes == 1000
    assert p.one().window == 0
    p.send("R", 2001)
    assert conn.state is State.CLOSED and conn.error == errno.ECONNRESET


def test_urgent_data_delivered_inline():
    """URG is ignored (RFC 6093 guidance); the octets are ordinary in-line data."""
    p, conn, snd = established()
    p.send("PAU", 1001, snd, payload=b"abc", urgptr=2)
    assert conn.recv(10) == b"abc"


def test_unknown_option_in_established_segment_ignored():
    """MUST-5, MUST-6: options may appear in any segment; unknown ones are skipped."""
    p, conn, snd = established()
    p.send("PA", 1001, snd, payload=b"ok", options=[(253, b"\x01\x02"), ("NOP", None), ("NOP", None)])
    assert conn.recv(10) == b"ok"


# ---------------------------------------------------------------- receiving data and ACKs

def test_out_of_order_reassembled_with_sack_blocks():
    """SHLD-31, RFC 2018 4, RFC 5681 4.2: queue, SACK the block, ACK the hole fill at once."""
    p2 = Peer(rcvbuf=65535)
    conn, sa = p2.accept(syn_options=[("MSS", 1460), ("SAckOK", b"")])
    snd = sa.seq + 1
    p2.send("PA", 1101, snd, payload=b"B" * 100)
    dup = p2.one()
    assert dup.ack == 1001 and opts(dup)["SAck"] == (1101, 1201)
    assert conn.readable_bytes == 0
    p2.send("PA", 1001, snd, payload=b"A" * 100)
    ack = p2.one()
    assert ack.ack == 1201 and "SAck" not in opts(ack)
    assert conn.recv(1000) == b"A" * 100 + b"B" * 100


def test_sack_blocks_most_recent_first():
    p = Peer(rcvbuf=65535)
    conn, sa = p.accept(syn_options=[("MSS", 1460), ("SAckOK", b"")])
    snd = sa.seq + 1
    p.send("PA", 1201, snd, payload=b"x" * 100)
    p.out()
    p.send("PA", 1401, snd, payload=b"y" * 100)
    blocks = opts(p.one())["SAck"]
    assert blocks == (1401, 1501, 1201, 1301)


def test_delayed_ack_every_second_full_segment():
    """SHLD-18, SHLD-19."""
    p, conn, snd = established(rcvbuf=65535)
    p.send("A", 1001, snd, payload=b"1" * 1460)
    p.none()
    p.send("A", 2461, snd, payload=b"2" * 1460)
    ack = p.one()
    assert ack.ack == 1001 + 2920


def test_delayed_ack_is_bounded():
    """MUST-40: a lone segment is acknowledged within the configured delay (< 0.5 s)."""
    p, conn, snd = established(delayed_ack=0.2)
    p.send("PA", 1001, snd, payload=b"one")
    p.none()
    assert p.stack.next_deadline() == pytest.approx(p.now + 0.2)
    p.none(0.19)
    ack = p.one(0.01)
    assert ack.ack == 1004
    with pytest.raises(ValueError):
        TcpConfig(delayed_ack=0.5)


def test_acks_aggregated_over_a_batch():
    """MUST-58, MUST-59: everything received before poll() is processed, then one ACK."""
    p, conn, snd = established(rcvbuf=65535)
    for i in range(4):
        p.send("A", 1001 + i * 1000, snd, payload=bytes([65 + i]) * 1000)
    ack = p.one()
    assert ack.ack == 5001 and conn.readable_bytes == 4000


def test_receiver_sws_avoidance():
    """MUST-39: a small read does not reopen the window; a large enough one does."""
    p, conn, snd = established()                   # rcvbuf 8192
    seq = 1001
    for size in (1460,) * 5 + (892,):
        p.send("A", seq, snd, payload=b"w" * size)
        seq += size
    assert p.one(0.5).window == 0
    conn.recv(100)
    assert p.out(1.0) == []                        # 100 bytes free: no window update
    conn.recv(4000)
    upd = p.one()
    assert flags(upd) == "A" and upd.window == 4100 and upd.ack == seq


def test_window_advertisement_is_unsigned_16_bit():
    """MUST-1: the window is an unsigned 16-bit number (65535 not negative)."""
    p, conn, snd = established(rcvbuf=65535)
    p.send("A", 1001, snd, window=65535, payload=b"x")
    assert conn.snd_wnd == 65535
    assert p.one(1.0).window == 65535 - 1                  # 65534 free octets, as unsigned


# ---------------------------------------------------------------- sending data

def test_nagle_holds_small_segment_while_data_unacked():
    """SHLD-7, MUST-38: one small segment outstanding at most; ACK releases the next."""
    p, conn, snd = established()
    conn.send(b"a" * 100)
    assert payload(p.one()) == b"a" * 100
    conn.send(b"b" * 100)
    p.none()
    p.send("A", 1001, snd + 100)
    seg = p.one()
    assert payload(seg) == b"b" * 100 and seg.seq == snd + 100


def test_nodelay_disables_nagle():
    """MUST-17: the application can turn Nagle off."""
    p, conn, snd = established()
    conn.set_option("nodelay", True)
    conn.send(b"a" * 100)
    conn.send(b"b" * 100)
    assert [payload(s) for s in p.out()] == [b"a" * 100 + b"b" * 100]   # one poll, one segment
    conn.send(b"c" * 10)                                    # 200 octets still unacknowledged
    assert payload(p.one()) == b"c" * 10


def test_push_on_last_segment_of_a_write():
    """MUST-60, MUST-61: data is not held for a PUSH call, and the last segment carries PSH."""
    p, conn, snd = established()
    conn.set_option("nodelay", True)
    conn.send(b"p" * 3000)
    segs = p.out()
    assert [len(payload(s)) for s in segs] == [1460, 1460, 80]
    assert ["P" in flags(s) for s in segs] == [False, False, True]


def test_sender_sws_waits_for_a_useful_window():
    """MUST-38: no tiny segments into a small usable window while data is outstanding."""
    p, conn, snd = established()
    p.send("A", 1001, snd, window=3000)
    conn.send(b"s" * 6000)
    segs = p.out()
    assert [len(payload(s)) for s in segs] == [1460, 1460]
    p.send("A", 1001, snd + 1460, window=1460 + 80)        # usable window: 80 octets
    p.none()


def test_zero_window_probed_and_kept_open_indefinitely():
    """MUST-35, MUST-36, MUST-37, SHLD-29, SHLD-30: persist timer with backoff, one-octet probes,
    no timeout while the peer keeps answering with a zero window."""
    p = Peer(max_retries=3)
    conn, sa = p.accept(window=0)
    snd = sa.seq + 1
    conn.send(b"0123456789")
    p.none()
    probes = []
    for _ in range(8):
        segs = p.run_timers(p.stack.next_deadline())
        assert len(segs) == 1
        probes.append((p.now, segs[0]))
        p.send("A", 1001, snd, window=0)
        assert p.out() == []
    assert all(len(payload(s)) == 1 and s.seq == snd for _, s in probes)
    gaps = [b[0] - a[0] for a, b in zip(probes, probes[1:])]
    assert all(g2 >= g1 for g1, g2 in zip(gaps, gaps[1:])) and gaps[-1] > gaps[0]
    assert conn.state is State.ESTABLISHED
    p.send("A", 1001, snd + 1, window=65535)
    rest = p.one()
    assert payload(rest) == b"123456789" and rest.seq == snd + 1


def test_robust_against_shrinking_window():
    """MUST-34, SHLD-15, SHLD-16: nothing new beyond a shrunken window; old data is retransmitted."""
    p, conn, snd = established()
    conn.send(b"k" * 4380)
    assert len(p.out()) == 3
    p.send("A", 1001, snd + 1460, window=0)
    p.none()
    segs = p.run_timers(p.now + 1.5)
    assert segs and all(s.seq == snd + 1460 and len(payload(s)) <= 1 for s in segs)
    assert conn.state is State.ESTABLISHED


# ---------------------------------------------------------------- retransmission

def _sent_times(p, until):
    times = []
    for _ in range(100):
        d = p.stack.next_deadline()
        if d is None or d > until:
            break
        for s in p.out(d - p.now):
            times.append((p.now, s))
    return times


def test_rto_backs_off_exponentially():
    """MUST-19, RFC 6298 5.5."""
    p, conn, snd = established()
    conn.send(b"r" * 100)
    t0 = p.now
    p.one()
    times = [t for t, s in _sent_times(p, t0 + 30) if payload(s) == b"r" * 100]
    gaps = [b - a for a, b in zip([t0] + times, times)]
    assert len(gaps) >= 4
    for g1, g2 in zip(gaps, gaps[1:]):
        assert g2 == pytest.approx(2 * g1)


def test_karn_no_rtt_sample_from_retransmitted_segment():
    """MUST-18."""
    p, conn, snd = established()
    srtt = conn.rtt.srtt
    conn.send(b"k" * 10)
    p.one()
    rto = conn.rtt.rto
    p.one(rto)                                              # the retransmission
    p.send("A", 1001, snd + 10)
    assert conn.rtt.srtt == srtt
    assert conn.rtt.rto == pytest.approx(rto)               # backoff undone, no new sample


def test_retransmission_gives_up_after_r2():
    """MUST-20, MUST-21: R2 (TcpConfig.max_retries) exhausted -> close, report ETIMEDOUT."""
    p, conn, snd = established(max_retries=3)
    conn.send(b"t" * 10)
    sent = p.run_timers(p.now + 1000)
    assert len(sent) == 1 + 3
    assert kinds(p.stack) == [EventKind.ERROR, EventKind.CLOSED]
    assert conn.error == errno.ETIMEDOUT and p.stack.connections == 0


def test_syn_retransmitted_for_at_least_three_minutes():
    """MUST-22, MUST-23: SYNs use the same backoff; R2 for a SYN is at least 180 s."""
    p = Peer()
    conn = p.stack.connect(ENGINE_IP, 50000, PEER_IP, 80, p.now)
    t0 = p.now
    syns = _sent_times(p, t0 + 1000)
    assert all(flags(s) == "S" and s.seq == syns[0][1].seq for _, s in syns)
    assert len(syns) == 1 + TcpConfig().syn_retries
    assert conn.error == errno.ETIMEDOUT and conn.state is State.CLOSED
    assert p.now - t0 >= 180


def test_connection_refused_by_rst():
    p = Peer()
    p.eport, p.pport = 50000, 80
    conn = p.stack.connect(ENGINE_IP, 50000, PEER_IP, 80, p.now)
    syn = p.one()
    p.send("RA", 0, syn.seq + 1)
    assert conn.error == errno.ECONNREFUSED
    assert kinds(p.stack) == [EventKind.RESET, EventKind.CLOSED]


def test_syn_sent_unacceptable_ack_gets_rst():
    """RFC 9293 3.10.7.3 first check."""
    p = Peer()
    p.eport, p.pport = 50000, 80
    conn = p.stack.connect(ENGINE_IP, 50000, PEER_IP, 80, p.now)
    syn = p.one()
    p.send("SA", 9000, syn.seq + 77, options=[("MSS", 1460)])
    r = p.one()
    assert flags(r) == "R" and r.seq == syn.seq + 77 and conn.state is State.SYN_SENT


def test_data_on_synack_is_delivered():
    p = Peer()
    p.eport, p.pport = 50000, 80
    conn = p.stack.connect(ENGINE_IP, 50000, PEER_IP, 80, p.now)
    syn = p.one()
    p.send("SA", 9000, syn.seq + 1, options=[("MSS", 1460)], payload=b"early")
    ack = p.one()
    assert ack.ack == 9006 and conn.recv(10) == b"early"


# ---------------------------------------------------------------- keep-alive (3.8.4)

def test_keepalive_off_by_default():
    """MUST-25, MUST-28."""
    assert TcpConfig().keepalive is False and TcpConfig().keepalive_idle >= 7200
    p, conn, _ = established()
    assert p.run_timers(p.now + 5 * 3600) == []
    assert conn.state is State.ESTABLISHED


def test_keepalive_probe_after_idle_interval():
    """MUST-24, MUST-26, MUST-27, SHLD-12: requested by the app, sent only after the configured
    idle time, SEG.SEQ = SND.NXT - 1 and no data."""
    p, conn, snd = established(keepalive_idle=60, keepalive_interval=10)
    conn.set_option("keepalive", True)
    assert p.out(59) == []
    probe = p.run_timers(p.now + 1)
    assert len(probe) == 1 and flags(probe[0]) == "A"
    assert probe[0].seq == snd - 1 and payload(probe[0]) == b""
    p.send("A", 1001, snd)                                 # answered: idle timer restarts
    assert p.run_timers(p.now + 59) == []


def test_keepalive_tolerates_lost_acks_then_times_out():
    """MUST-29: several unanswered probes before giving up."""
    p, conn, snd = established(keepalive_idle=60, keepalive_interval=10, keepalive_probes=3)
    conn.set_option("keepalive", True)
    probes = p.run_timers(p.now + 60 + 10 * 5)
    assert len(probes) == 3
    assert conn.error == errno.ETIMEDOUT and conn.state is State.CLOSED


# ---------------------------------------------------------------- closing (3.6)

def test_close_sends_fin_after_data():
    p, conn, snd = established()
    conn.send(b"bye")
    conn.close()
    segs = p.out()
    assert payload(segs[0]) == b"bye" and "F" in flags(segs[-1])
    assert conn.state is State.FIN_WAIT_1


def test_half_close_keeps_receiving():
    """MAY-1 (mTCP lacks shutdown): SHUT_WR sends FIN; data from the peer still arrives."""
    p, conn, snd = established()
    conn.shutdown(socket.SHUT_WR)
    fin = p.one()
    assert flags(fin) == "FA" and fin.seq == snd
    p.send("A", 1001, snd + 1)
    assert conn.state is State.FIN_WAIT_2
    p.send("PA", 1001, snd + 1, payload=b"still here")
    assert conn.recv(100) == b"still here"
    with pytest.raises(OSError) as e:
        conn.send(b"no")
    assert e.value.errno == errno.EPIPE
    p.send("FA", 1011, snd + 1)
    assert p.one().ack == 1012 and conn.eof


def test_passive_close_through_close_wait_and_last_ack():
    p, conn, snd = established()
    p.send("FA", 1001, snd)
    assert conn.state is State.CLOSE_WAIT and conn.eof
    assert p.one().ack == 1002
    conn.close()
    fin = p.one()
    assert flags(fin) == "FA" and conn.state is State.LAST_ACK
    p.send("A", 1002, snd + 1)
    assert conn.state is State.CLOSED and EventKind.CLOSED in kinds(p.stack)


def test_time_wait_lasts_configured_time_and_reacks_fin():
    """MUST-13: TIME-WAIT holds the TCB for the configured 2*MSL, re-ACKing a repeated FIN."""
    p, conn, snd = established(timewait=60.0)
    conn.close()
    p.one()
    p.send("FA", 1001, snd + 1)
    assert conn.state is State.TIME_WAIT and p.one().ack == 1002
    p.now += 10
    p.send("FA", 1001, snd + 1)
    assert p.one().ack == 1002
    assert p.stack.in_use(ENGINE_IP, 80, PEER_IP, 40000)
    p.run_timers(p.now + 59.9)
    assert p.stack.in_use(ENGINE_IP, 80, PEER_IP, 40000)
    p.run_timers(p.now + 0.2)
    assert not p.stack.in_use(ENGINE_IP, 80, PEER_IP, 40000)


def test_time_wait_zero_frees_at_once():
    """mTCP's default tcp_timewait = 0."""
    p, conn, snd = established()
    conn.close()
    p.one()
    p.send("FA", 1001, snd + 1)
    p.one()
    assert not p.stack.in_use(ENGINE_IP, 80, PEER_IP, 40000)


def test_new_syn_reuses_time_wait():
    """MAY-2 / RFC 6191: a SYN with a higher sequence number takes over TIME-WAIT."""
    p, conn, snd = established(timewait=60.0)
    conn.close()
    p.one()
    p.send("FA", 1001, snd + 1)
    p.one()
    p.send("S", 90_000, options=[("MSS", 1460)])
    sa = p.one()
    assert flags(sa) == "SA" and sa.ack == 90_001


def test_simultaneous_close():
    p, conn, snd = established(timewait=30.0)
    conn.close()
    fin = p.one()
    p.send("FA", 1001, snd)                                 # the peer's FIN, not acking ours
    assert conn.state is State.CLOSING
    assert p.one().ack == 1002
    p.send("A", 1002, snd + 1)
    assert conn.state is State.TIME_WAIT and fin.seq == snd


def test_close_with_unread_data_sends_rst():
    """SHLD-3 (RFC 2525 2.17): data would be lost, so the peer is told with a RST."""
    p, conn, snd = established()
    p.send("PA", 1001, snd, payload=b"unread")
    conn.close()
    r = [s for s in p.out() if "R" in flags(s)]
    assert len(r) == 1 and r[0].seq == snd and p.stack.connections == 0


def test_abort_sends_rst_and_frees():
    p, conn, snd = established()
    conn.abort()
    r = p.one()
    assert flags(r) == "R" and r.seq == snd
    assert kinds(p.stack) == [EventKind.CLOSED] and p.stack.connections == 0


def test_linger_zero_close_sends_rst():
    p, conn, snd = established()
    conn.set_option("linger", 0)
    conn.close()
    assert flags(p.one()) == "R"


# ---------------------------------------------------------------- congestion control

def test_server_starts_in_slow_start_with_initial_window_10():
    """RFC 5681 3.1 / RFC 6928 (mTCP starts servers in congestion avoidance)."""
    p, conn, snd = established(sndbuf=100_000)
    assert conn.cc.cwnd == 14600 and conn.cc.ssthresh > 1 << 20
    conn.send(b"s" * 50_000)
    assert len(p.out()) == 10
    p.send("A", 1001, snd + 2920)
    assert conn.cc.cwnd == 14600 + 1460
    assert len(p.out()) == 3                                # 2 acked + 1 MSS of growth


def test_fast_retransmit_on_third_duplicate_ack():
    """RFC 5681 3.2: three duplicate ACKs -> retransmit the first unacked segment, no timeout."""
    p, conn, snd = established(sndbuf=100_000)
    conn.send(b"f" * 14600)
    assert len(p.out()) == 10
    for _ in range(2):
        p.send("A", 1001, snd)
    p.out()                                                 # limited transmit (RFC 3042) only
    p.send("A", 1001, snd)
    rtx = [s for s in p.out() if s.seq == snd]
    assert len(rtx) == 1 and len(payload(rtx[0])) == 1460
    assert p.stack.stats.fast_retransmits == 1 and p.stack.stats.timeouts == 0
    assert conn.cc.ssthresh == 7300


def test_newreno_partial_ack_retransmits_next_hole():
    """RFC 6582 3.2 step 5."""
    p, conn, snd = established(sndbuf=100_000)
    conn.send(b"n" * 14600)
    p.out()
    for _ in range(3):
        p.send("A", 1001, snd)
    p.out()
    p.send("A", 1001, snd + 4380)                           # partial: segment 4 also lost
    rtx = [s for s in p.out() if s.seq == snd + 4380]
    assert len(rtx) == 1 and conn.lr.point is not None


def test_sack_recovery_resends_only_the_holes():
    """RFC 6675: with SACK, retransmit the lost segments, not what the peer holds."""
    p = Peer(sndbuf=100_000)
    conn, sa = p.accept(syn_options=[("MSS", 1460), ("SAckOK", b"")])
    snd = sa.seq + 1
    conn.send(b"q" * 14600)
    p.out()
    m = 1460
    for k in range(3):                                      # segment 1 lost, 2..4 SACKed
        p.send("A", 1001, snd, options=[("NOP", None), ("NOP", None),
                                        ("SAck", (snd + m, snd + (2 + k) * m))])
    segs = p.out()
    rtx = [s for s in segs if s.seq < snd + 14600]
    assert [s.seq for s in rtx] == [snd]
    assert p.stack.stats.fast_retransmits == 1


# ---------------------------------------------------------------- RFC 7323 timestamps

def test_segments_without_timestamps_accepted_after_negotiation():
    """RFC 7323 3.2 allows accepting them; mTCP drops them."""
    p = Peer()
    conn, sa = p.accept(syn_options=[("MSS", 1460), ("Timestamp", (100, 0))])
    p.send("PA", 1001, sa.seq + 1, payload=b"no-ts")
    assert conn.recv(10) == b"no-ts"


def test_timestamps_echoed_on_every_segment():
    p = Peer()
    conn, sa = p.accept(syn_options=[("MSS", 1460), ("Timestamp", (100, 0))])
    p.send("PA", 1001, sa.seq + 1, payload=b"x", options=[("Timestamp", (150, opts(sa)["Timestamp"][0]))])
    ack = p.one(1.0)
    assert opts(ack)["Timestamp"][1] == 150


def test_paws_drops_old_timestamp():
    """RFC 7323 5.3."""
    p = Peer()
    conn, sa = p.accept(syn_options=[("MSS", 1460), ("Timestamp", (1000, 0))])
    snd = sa.seq + 1
    p.send("PA", 1001, snd, payload=b"new", options=[("Timestamp", (2000, 0))])
    p.send("PA", 1004, snd, payload=b"old", options=[("Timestamp", (1500, 0))])
    assert conn.recv(10) == b"new"


# ---------------------------------------------------------------- SYN flood defence

def test_syn_cookies_when_syn_backlog_full():
    """A flood cannot exhaust state: past syn_backlog, SYNs get stateless cookies (MSS only)."""
    p = Peer(syn_backlog=1)
    lst = p.stack.listen(ENGINE_IP, 80, 8)
    p.send("S", 1000, sport=1111, options=FULL)
    assert opts(p.one()).keys() >= {"MSS", "SAckOK"}
    p.send("S", 5000, sport=2222, options=FULL)
    cookie = p.one()
    assert flags(cookie) == "SA" and opts(cookie) == {"MSS": 1460}
    assert p.stack.connections == 1 and p.stack.stats.syncookies_sent == 1
    p.send("A", 5001, cookie.seq + 1, sport=2222, payload=b"GET")
    conn = lst.accept()
    assert conn is not None and conn.remote == (PEER_IP, 2222) and conn.recv(10) == b"GET"
    assert [flags(s) for s in p.out(1.0) if s.dport == 2222] == ["A"]
    conn.send(b"reply")
    seg = p.one()
    assert seg.seq == cookie.seq + 1 and payload(seg) == b"reply"


def test_forged_cookie_rejected_with_rst():
    p = Peer(syn_backlog=1)
    p.stack.listen(ENGINE_IP, 80, 8)
    p.send("S", 1000, sport=1111, options=FULL)
    p.out()
    p.send("A", 5001, 0x12345678, sport=3333)
    r = p.one()
    assert flags(r) == "R" and p.stack.stats.syncookies_rejected == 1


def test_syn_flood_does_not_grow_state():
    p = Peer(syn_backlog=8)
    p.stack.listen(ENGINE_IP, 80, 8)
    for port in range(2000, 2500):
        p.send("S", port * 7, sport=port, options=[("MSS", 1460)])
    assert len(p.out()) == 500
    assert p.stack.connections == 8 and p.stack.stats.syncookies_sent == 492


def test_events_are_deduplicated_until_drained():
    p, conn, snd = established(rcvbuf=65535)
    for i in range(3):
        p.send("PA", 1001 + i, snd, payload=b"x")
    assert kinds(p.stack) == [EventKind.READABLE]
    p.send("PA", 1004, snd, payload=b"y")
    assert kinds(p.stack) == [EventKind.READABLE]


def test_mss_announced_is_the_configured_one():
    """MUST-67: the MSS sent is derived from the configured MMS_R (TcpConfig.mss, e.g. MTU-40)."""
    p = Peer(mss=1200)
    p.stack.listen(ENGINE_IP, 80, 4)
    p.send("S", 1000, options=[("MSS", 1460)])
    assert opts(p.one())["MSS"] == 1200


def test_segments_carry_the_connection_local_address():
    """MUST-44, MUST-45: every segment leaves from the address the connection was opened on."""
    p, conn, snd = established()
    conn.send(b"addr")
    segs = p.out()
    assert segs and all(src == ENGINE_IP and dst == PEER_IP for src, dst, _ in p.raw)


def test_unacknowledged_fin_is_retransmitted():
    p, conn, snd = established()
    conn.close()
    fin = p.one()
    again = p.run_timers(p.now + conn.rtt.rto + 0.01)
    assert [(flags(s), s.seq) for s in again] == [("FA", fin.seq)]
    p.send("FA", 1001, snd + 1)
    assert p.one().ack == 1002 and p.stack.connections == 0


def test_data_on_the_handshake_ack_is_delivered():
    p = Peer()
    lst = p.stack.listen(ENGINE_IP, 80, 4)
    p.send("S", 1000, options=[("MSS", 1460)])
    sa = p.one()
    p.send("PA", 1001, sa.seq + 1, payload=b"GET / HTTP/1.1\r\n\r\n")
    conn = lst.accept()
    assert conn.state is State.ESTABLISHED and conn.recv(100) == b"GET / HTTP/1.1\r\n\r\n"


def test_ack_not_acknowledging_our_syn_in_syn_received_gets_rst():
    """RFC 9293 3.10.7.4 fifth check, SYN-RECEIVED: <SEQ=SEG.ACK><CTL=RST>."""
    p = Peer()
    p.stack.listen(ENGINE_IP, 80, 4)
    p.send("S", 1000, options=[("MSS", 1460)])
    sa = p.one()
    p.send("A", 1001, sa.seq + 500)
    r = p.one()
    assert flags(r) == "R" and r.seq == sa.seq + 500


def test_override_timer_sends_into_a_small_window():
    """RFC 9293 3.8.6.2.1: data held by sender SWS avoidance goes out when the override (persist)
    timer fires, so a lost window update cannot stall the connection."""
    p, conn, snd = established()
    p.send("A", 1001, snd, window=500)
    conn.send(b"d" * 3000)
    p.none()
    sent = p.run_timers(p.stack.next_deadline())
    assert [(s.seq, len(payload(s))) for s in sent] == [(snd, 500)]
    assert conn.state is State.ESTABLISHED


# ---------------------------------------------------------------- RFC 2883 D-SACK, spurious recovery

NOP = ("NOP", None)


def test_dsack_reports_a_duplicate_below_the_cumulative_ack_once():
    """RFC 2883 4: the first SACK block of the next ACK names the duplicate; only once."""
    p = Peer(rcvbuf=65535)
    conn, sa = p.accept(syn_options=[("MSS", 1460), ("SAckOK", b"")])
    snd = sa.seq + 1
    p.send("PA", 1001, snd, payload=b"a" * 100)
    p.out(1.0)                                             # the delayed ACK of 1101
    p.send("PA", 1001, snd, payload=b"a" * 100)           # a needless retransmission
    ack = p.one()
    assert ack.ack == 1101 and opts(ack)["SAck"] == (1001, 1101)
    assert p.stack.stats.dsacks_out == 1
    p.send("PA", 1101, snd, payload=b"b" * 100)
    later = p.out(1.0)
    assert later and all("SAck" not in opts(s) for s in later)
    assert conn.recv(1000) == b"a" * 100 + b"b" * 100     # the duplicate was not delivered twice


def test_dsack_of_out_of_order_data_is_followed_by_its_block():
    """RFC 2883 4: a duplicate above RCV.NXT: D-SACK first, then the block holding it."""
    p = Peer(rcvbuf=65535)
    conn, sa = p.accept(syn_options=[("MSS", 1460), ("SAckOK", b"")])
    snd = sa.seq + 1
    p.send("PA", 1101, snd, payload=b"b" * 100)
    p.out()
    p.send("PA", 1201, snd, payload=b"c" * 100)
    p.out()
    p.send("PA", 1401, snd, payload=b"e" * 100)           # a newer, separate block
    p.out()
    p.send("PA", 1201, snd, payload=b"c" * 100)           # duplicate inside [1101, 1301)
    ack = p.one()
    assert ack.ack == 1001
    assert opts(ack)["SAck"] == (1201, 1301, 1101, 1301, 1401, 1501)


def test_no_dsack_without_sack_permitted():
    p = Peer(rcvbuf=65535)
    conn, sa = p.accept(syn_options=[("MSS", 1460)])
    snd = sa.seq + 1
    p.send("PA", 1001, snd, payload=b"a" * 100)
    p.out(1.0)
    p.send("PA", 1001, snd, payload=b"a" * 100)
    ack = p.one()
    assert ack.ack == 1101 and "SAck" not in opts(ack) and p.stack.stats.dsacks_out == 0


def _fast_retransmit(p: Peer, conn, snd: int, ts: tuple[int, int] | None = None):
    """Ten segments out, the first reported missing by three SACKs: one fast retransmit.
    Returns (the first flight, the retransmission)."""
    conn.send(b"q" * 14600)
    first = p.out()
    m = 1460 - (12 if ts else 0)
    p.now += 0.05                                          # the SACKs come an RTT later
    for k in range(3):
        o = [NOP, NOP, ("SAck", (snd + m, snd + (2 + k) * m))]
        p.send("A", 1001, snd, options=o + ([("Timestamp", ts)] if ts else []))
    rtx = [s for s in p.out() if s.seq == snd]
    assert len(rtx) == 1 and p.stack.stats.fast_retransmits == 1
    return first, rtx[0]


def test_dsack_of_the_retransmission_undoes_the_cwnd_reduction():
    """RFC 3708 3: every retransmission D-SACKed -> spurious; RFC 4015: restore cwnd/ssthresh;
    the reordering it reveals raises DupThresh."""
    p = Peer(sndbuf=100_000)
    conn, sa = p.accept(syn_options=[("MSS", 1460), ("SAckOK", b"")])
    snd = sa.seq + 1
    cwnd0, ss0 = conn.cc.cwnd, conn.cc.ssthresh
    _fast_retransmit(p, conn, snd)
    assert conn.cc.cwnd < cwnd0 and conn.cc.ssthresh < ss0
    p.send("A", 1001, snd + 14600)                        # the late original filled the hole
    p.send("A", 1001, snd + 14600, options=[NOP, NOP, ("SAck", (snd, snd + 1460))])
    assert p.stack.stats.dsacks_in == 1 and p.stack.stats.spurious_recoveries == 1
    assert conn.cc.cwnd >= cwnd0 and conn.cc.ssthresh == ss0
    assert conn.lr.reo.degree > 3


def test_dsack_of_unretransmitted_data_undoes_nothing():
    """RFC 3708 3: only D-SACKs for retransmitted data count (a network duplicate does not)."""
    p = Peer(sndbuf=100_000)
    conn, sa = p.accept(syn_options=[("MSS", 1460), ("SAckOK", b"")])
    snd = sa.seq + 1
    _fast_retransmit(p, conn, snd)
    reduced = conn.cc.ssthresh
    p.send("A", 1001, snd + 14600)
    p.send("A", 1001, snd + 14600, options=[NOP, NOP, ("SAck", (snd + 5 * 1460, snd + 6 * 1460))])
    assert p.stack.stats.dsacks_in == 1 and p.stack.stats.spurious_recoveries == 0
    assert conn.cc.ssthresh == reduced


def test_timestamp_echo_older_than_the_retransmission_undoes_it():
    """RFC 3522 3.2 (Eifel): the ACK for the retransmitted segment echoes the original's TSval,
    so the original arrived; RFC 4015: the cwnd reduction is undone at once."""
    p = Peer(sndbuf=100_000)
    conn, sa = p.accept(syn_options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (100, 0))])
    snd = sa.seq + 1
    cwnd0 = conn.cc.cwnd
    first, rtx = _fast_retransmit(p, conn, snd, ts=(101, opts(sa)["Timestamp"][0]))
    t_orig = opts(first[0])["Timestamp"][0]
    assert opts(rtx)["Timestamp"][0] > t_orig
    assert conn.cc.cwnd < cwnd0
    p.send("A", 1001, snd + 14600 - 120, options=[("Timestamp", (102, t_orig))])
    assert p.stack.stats.spurious_recoveries == 1 and conn.cc.cwnd >= cwnd0


def test_timestamp_echo_of_the_retransmission_keeps_the_reduction():
    """RFC 3522 3.2: echoing the retransmission's TSval means the original was lost."""
    p = Peer(sndbuf=100_000)
    conn, sa = p.accept(syn_options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (100, 0))])
    snd = sa.seq + 1
    _, rtx = _fast_retransmit(p, conn, snd, ts=(101, opts(sa)["Timestamp"][0]))
    reduced = conn.cc.ssthresh
    p.send("A", 1001, snd + 14600 - 120, options=[("Timestamp", (102, opts(rtx)["Timestamp"][0]))])
    assert p.stack.stats.spurious_recoveries == 0 and conn.cc.ssthresh == reduced


def test_rescue_retransmission_of_a_lost_tail():
    """RFC 6675 4 NextSeg rule 4: with nothing new to send, one segment holding the highest
    un-SACKed octet is resent within the recovery (no RTO for a lost tail)."""
    p = Peer(sndbuf=100_000)
    conn, sa = p.accept(syn_options=[("MSS", 1460), ("SAckOK", b"")])
    snd = sa.seq + 1
    conn.send(b"q" * 14600)                               # 10 segments: the 1st and 10th lost
    p.out()
    m = 1460
    for k in range(3, 9):
        p.send("A", 1001, snd, options=[NOP, NOP, ("SAck", (snd + m, snd + k * m))])
    segs = p.out()
    assert sorted(s.seq for s in segs) == [snd, snd + 9 * m]
    assert p.stack.stats.timeouts == 0 and p.stack.stats.retransmits == 2
    p.send("A", 1001, snd + 9 * m, options=[NOP, NOP])    # partial ACK: no second rescue
    assert [s for s in p.out() if s.seq == snd + 9 * m] == []


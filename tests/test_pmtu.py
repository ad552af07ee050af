"""Path MTU discovery in the engine (RFC 1191, RFC 5927 4.1): a fragmentation-needed message
lowers a connection's MSS, re-slices its flight and leaves cwnd alone; forged or stale ones
change nothing. Sans-IO: segments and ICMP bytes in, segments out."""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.packet import Raw

from p4mtcp.control.tcp import pmtu
from test_tcp_recovery import NOP, sack_connection
from test_tcp_support import ENGINE_IP, ENGINE_IP_S, PEER_IP, PEER_IP_S, Peer, payload, tcp_bytes

ROUTER_IP = PEER_IP + 1


def frag_needed(seq: int, mtu: int, *, total: int = 1500, sport: int = 80, dport: int = 40000,
                proto: str = "tcp", type_code: tuple[int, int] = (3, 4)) -> bytes:
    """ICMP type 3 code 4 (the IPv4 payload) quoting our segment ENGINE:sport -> PEER:dport at
    wire sequence number ``seq``, whose IPv4 total length was ``total`` (RFC 792: header + 8)."""
    l4 = TCP(sport=sport, dport=dport, seq=seq) if proto == "tcp" else UDP(sport=sport,
                                                                          dport=dport)
    quoted = bytes(IP(src=ENGINE_IP_S, dst=PEER_IP_S, len=total, flags="DF") / l4)[:28]
    return bytes(ICMP(type=type_code[0], code=type_code[1], nexthopmtu=mtu) / Raw(quoted))


def sending(mss: int = 1460, nbytes: int = 4 * 1460, nodelay: bool = True, **cfg):
    """An accepted connection that has just sent ``nbytes``: (peer, conn, segments)."""
    p = Peer(**cfg)
    conn, _ = p.accept(syn_options=[("MSS", mss)])
    p.stack.events()
    conn.set_option("nodelay", nodelay)
    conn.send((bytes(range(251)) * (nbytes // 251 + 1))[:nbytes])
    return p, conn, p.out()


# ---------------------------------------------------------------- reading the message

def test_next_hop_mtu_is_used_as_reported():
    assert pmtu.path_mtu(1200, 1500) == 1200


def test_zero_next_hop_mtu_takes_the_plateau_below_the_quoted_length():
    """RFC 1191 5: an old router says 0; the greatest table 7-1 plateau below the total length."""
    assert pmtu.path_mtu(0, 1500) == 1492
    assert pmtu.path_mtu(0, 1492) == 1006
    assert pmtu.path_mtu(0, 9000) == 8166


def test_small_reports_are_raised_to_linux_min_pmtu_and_bogus_ones_refused():
    assert pmtu.path_mtu(300, 1500) == pmtu.MIN_PMTU == 552
    assert pmtu.path_mtu(68, 1500) == 552
    assert pmtu.path_mtu(0, 400) == 552                  # plateau 296, then the floor
    with pytest.raises(ValueError, match="below the 68 octets"):
        pmtu.path_mtu(67, 1500)


def test_frag_needed_names_the_flow_and_sequence_number():
    msg = pmtu.frag_needed(frag_needed(123456, 1280))
    assert (msg.local_ip, msg.local_port, msg.remote_ip, msg.remote_port) == (
        ENGINE_IP, 80, PEER_IP, 40000)
    assert (msg.seq, msg.mtu) == (123456, 1280)


@pytest.mark.parametrize("icmp, why", [
    (frag_needed(1, 1280)[:6], "shorter than its header"),
    (frag_needed(1, 1280, type_code=(11, 0)), "type 11 code 0 is not fragmentation needed"),
    (frag_needed(1, 1280)[:8 + 24], "quotes no IPv4 header and 8 octets"),
    (frag_needed(1, 1280, proto="udp"), "quotes protocol 17, not TCP"),
    (frag_needed(1, 20), "below the 68 octets"),
])
def test_unusable_messages_are_refused_with_the_reason(icmp, why):
    with pytest.raises(ValueError, match=why):
        pmtu.frag_needed(icmp)


def test_mss_subtracts_headers_and_fixed_options_with_a_floor():
    assert pmtu.mss_for(1000, 0) == 960
    assert pmtu.mss_for(1000, 12) == 948                  # timestamps on every segment
    assert pmtu.mss_for(90, 12) == pmtu.MIN_MSS


# ---------------------------------------------------------------- the engine

def test_mss_lowered_and_the_flight_resent_at_the_new_size_with_cwnd_kept():
    p, conn, segs = sending()
    assert [len(payload(s)) for s in segs] == [1460] * 4
    first = segs[0].seq
    cwnd = conn.cc.cwnd
    p.stack.receive_icmp(ROUTER_IP, ENGINE_IP, frag_needed(first, 1000), p.now)
    assert conn.eff_mss == 960
    assert p.stack.stats.pmtu_lowered == 1 and p.stack.stats.icmp_in == 1
    again = p.out()                                       # at once: no timer involved
    sizes = [len(payload(s)) for s in again]
    assert sizes and max(sizes) <= 960
    assert again[0].seq == first
    assert b"".join(payload(s) for s in again) == b"".join(payload(s) for s in segs)
    assert p.stack.stats.retransmits == len(again)
    assert conn.cc.cwnd == cwnd                           # not a congestion signal
    assert p.stack.stats.timeouts == 0 and p.stack.stats.fast_retransmits == 0


def test_the_whole_flight_goes_again_at_once_with_nagle_on():
    """The re-sliced flight's last piece is smaller than the new MSS: already sent data, so
    Nagle (RFC 9293 3.7.4, for new data) does not hold it back for an ACK."""
    p, conn, segs = sending(nbytes=3 * 1460, nodelay=False)
    assert [len(payload(s)) for s in segs] == [1460] * 3
    p.stack.receive_icmp(ROUTER_IP, ENGINE_IP, frag_needed(segs[0].seq, 1000), p.now)
    again = p.out()
    assert [len(payload(s)) for s in again] == [960] * 4 + [540]
    assert b"".join(payload(s) for s in again) == b"".join(payload(s) for s in segs)


def test_next_segments_carry_at_most_the_new_mss():
    p, conn, segs = sending(nbytes=1460)
    p.stack.receive_icmp(ROUTER_IP, ENGINE_IP, frag_needed(segs[0].seq, 1000), p.now)
    p.out()                                               # the resent flight
    top = segs[0].seq + 1460
    p.send("A", 1001, top)                                # all of it acknowledged
    assert p.out() == []
    conn.send(b"n" * 5000)
    new = p.out()
    assert [len(payload(s)) for s in new] == [960] * 5 + [200]
    assert new[0].seq == top


def test_timestamps_count_against_the_new_mss():
    p = Peer()
    conn, _ = p.accept(syn_options=[("MSS", 1460), ("Timestamp", (1, 0))])
    assert conn.eff_mss == 1448
    conn.set_option("nodelay", True)
    conn.send(b"t" * 3000)
    segs = p.out()
    p.stack.receive_icmp(ROUTER_IP, ENGINE_IP, frag_needed(segs[1].seq, 1000), p.now)
    assert conn.eff_mss == 948
    assert max(len(payload(s)) for s in p.out()) == 948


@pytest.mark.parametrize("where", ["acknowledged", "beyond SND.NXT", "far away"])
def test_quoted_sequence_number_outside_the_flight_is_ignored(where):
    """RFC 5927 4.1: SND.UNA <= SEG.SEQ < SND.NXT, else a blind attacker could shrink the MSS."""
    p, conn, segs = sending()
    p.send("A", 1001, segs[1].seq)                        # the first segment acknowledged
    p.out()
    seq = {"acknowledged": segs[0].seq, "beyond SND.NXT": segs[-1].seq + 1460,
           "far away": segs[0].seq + (1 << 31)}[where]
    p.stack.receive_icmp(ROUTER_IP, ENGINE_IP, frag_needed(seq, 1000), p.now)
    assert conn.eff_mss == 1460
    assert p.stack.stats.pmtu_ignored == 1 and p.stack.stats.pmtu_lowered == 0
    assert p.out() == []


def test_an_mtu_that_does_not_lower_the_mss_changes_nothing():
    """RFC 1191 6.4 and 8: never raise the estimate on a message, never resend for one that
    does not lower it."""
    p, conn, segs = sending()
    p.stack.receive_icmp(ROUTER_IP, ENGINE_IP, frag_needed(segs[0].seq, 1500), p.now)
    assert conn.eff_mss == 1460 and p.out() == []
    p.stack.receive_icmp(ROUTER_IP, ENGINE_IP, frag_needed(segs[0].seq, 1000), p.now)
    p.out()
    p.stack.receive_icmp(ROUTER_IP, ENGINE_IP, frag_needed(segs[0].seq, 1200), p.now)
    assert conn.eff_mss == 960 and p.out() == []
    assert (p.stack.stats.pmtu_lowered, p.stack.stats.pmtu_ignored) == (1, 2)


def test_messages_for_no_connection_or_malformed_are_counted_never_raised():
    p, conn, segs = sending()
    p.stack.receive_icmp(ROUTER_IP, ENGINE_IP, frag_needed(segs[0].seq, 1000, dport=1), p.now)
    p.stack.receive_icmp(ROUTER_IP, ENGINE_IP, b"\x03\x04", p.now)
    assert p.stack.stats.pmtu_ignored == 2 and p.stack.stats.icmp_in == 2
    assert "shorter than its header" in p.stack.last_error
    assert conn.eff_mss == 1460 and p.out() == []


def test_in_fast_recovery_only_the_mss_changes_and_repairs_use_it():
    """During SACK recovery (RFC 6675) the flight is not sent again wholesale: the scoreboard
    decides what is resent, now in segments of the new MSS."""
    p, conn, snd = sack_connection(sndbuf=100_000)
    conn.send(b"x" * 14600)
    assert len(p.out()) == 10
    for k in range(3):                                    # segment 0 lost, 1..3 SACKed
        p.send("A", 1001, snd, options=[NOP, NOP, ("SAck", (snd + 1460, snd + (2 + k) * 1460))])
    assert [s.seq for s in p.out()] == [snd]              # fast retransmit, old size
    assert conn.lr.point is not None
    p.stack.receive_icmp(ROUTER_IP, ENGINE_IP, frag_needed(snd + 5 * 1460, 1000), p.now)
    assert conn.eff_mss == 960 and p.out() == []
    p.send("A", 1001, snd, options=[NOP, NOP, ("SAck", (snd + 1460, snd + 4 * 1460,
                                                        snd + 5 * 1460, snd + 10 * 1460))])
    out = p.out()                                         # segment 4 is a hole now, lost
    assert out and max(len(payload(s)) for s in out) <= 960
    assert (snd + 4 * 1460, 960) in [(s.seq, len(payload(s))) for s in out]


# ---------------------------------------------------------------- per destination (RFC 1191 5)

OTHER_IP_S = "10.9.9.9"


def second_connection(p: Peer, pport: int = 40001, src: str = PEER_IP_S):
    """Another accepted connection on the engine's listener, from ``src``:``pport``."""
    p.stack.receive(int.from_bytes(bytes(map(int, src.split("."))), "big"), ENGINE_IP,
                    tcp_bytes("S", 7000, sport=pport, dport=p.eport, src=src,
                              options=[("MSS", 1460)]), p.now)
    synack = p.one()
    p.stack.receive(int.from_bytes(bytes(map(int, src.split("."))), "big"), ENGINE_IP,
                    tcp_bytes("A", 7001, synack.seq + 1, sport=pport, dport=p.eport, src=src),
                    p.now)
    conn = p.listener.accept()
    assert conn is not None
    conn.set_option("nodelay", True)
    return conn


def test_a_later_connection_to_the_same_host_starts_at_the_learned_size():
    """RFC 1191 5: the estimate belongs to the destination; the next connection's first flight
    fits the path instead of being dropped by the same router again."""
    p, conn, segs = sending()
    p.stack.receive_icmp(ROUTER_IP, ENGINE_IP, frag_needed(segs[0].seq, 1000), p.now)
    p.out()
    later = second_connection(p)
    assert later.eff_mss == 960 and p.stack.stats.pmtu_from_cache == 1
    later.send(b"L" * 3000)
    assert [len(payload(s)) for s in p.out()] == [960, 960, 960, 120]


def test_other_destinations_keep_the_full_mss():
    p, conn, segs = sending()
    p.stack.receive_icmp(ROUTER_IP, ENGINE_IP, frag_needed(segs[0].seq, 1000), p.now)
    p.out()
    elsewhere = second_connection(p, src=OTHER_IP_S)
    assert elsewhere.eff_mss == 1460 and p.stack.stats.pmtu_from_cache == 0


def test_the_learned_size_ages_out_after_ten_minutes():
    """RFC 1191 6.3: the estimate is raised again after 10 minutes; the open connection keeps
    its MSS (6.4), a new one starts at full size."""
    p, conn, segs = sending()
    p.stack.receive_icmp(ROUTER_IP, ENGINE_IP, frag_needed(segs[0].seq, 1000), p.now)
    p.out()
    p.send("A", 1001, segs[-1].seq + 1460)
    p.out()
    p.now += pmtu.CACHE_SECONDS - 1
    p.out()
    assert second_connection(p, 40001).eff_mss == 960
    p.now += 1
    p.out()
    assert second_connection(p, 40002).eff_mss == 1460
    assert conn.eff_mss == 960
    assert len(p.stack.path_mtus) == 0


def test_a_message_the_engine_does_not_believe_teaches_the_cache_nothing():
    """RFC 5927 4.1: a quoted sequence number outside the flight is not believed for the
    connection, nor for the destination."""
    p, conn, segs = sending()
    p.stack.receive_icmp(ROUTER_IP, ENGINE_IP, frag_needed(segs[0].seq + (1 << 31), 1000), p.now)
    assert len(p.stack.path_mtus) == 0
    assert second_connection(p).eff_mss == 1460


def test_the_cache_never_raises_an_estimate_and_forgets_the_oldest_when_full():
    cache = pmtu.PathCache()
    cache.learn(1, 1200, 0.0)
    cache.learn(1, 1400, 1.0)                             # higher: ignored (RFC 1191 6.4)
    assert cache.lookup(1, 2.0) == 1200
    cache.learn(1, 1000, 500.0)                           # lower: taken, its 10 minutes restart
    assert cache.lookup(1, 500.0 + pmtu.CACHE_SECONDS - 1) == 1000
    for ip in range(2, pmtu.CACHE_ENTRIES + 2):
        cache.learn(ip, 1280, 600.0)
    assert len(cache) == pmtu.CACHE_ENTRIES
    assert cache.lookup(1, 601.0) == 0                    # the oldest went first
    assert cache.lookup(2, 601.0) == 1280 and cache.lookup(pmtu.CACHE_ENTRIES + 1, 601.0) == 1280

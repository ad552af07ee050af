"""Unit tests of the engine's parts: sequence arithmetic, buffers, SACK scoreboard, RTO
estimator, NewReno, ISN and SYN cookies."""

from __future__ import annotations

import pytest

from p4mtcp.control.tcp.buffers import RecvBuffer, SendBuffer
from p4mtcp.control.tcp.congestion import NewReno
from p4mtcp.control.tcp.config import TcpConfig
from p4mtcp.control.tcp.rtt import RttEstimator
from p4mtcp.control.tcp.reorder import Reordering
from p4mtcp.control.tcp.sack import Scoreboard
from p4mtcp.control.tcp.seq import seq_diff, seq_lt
from p4mtcp.control.tcp.syncookies import MSS_TABLE, check_cookie, make_cookie


def test_sequence_comparisons_wrap():
    assert seq_lt(0xFFFFFFF0, 0x10) and not seq_lt(0x10, 0xFFFFFFF0)
    assert seq_diff(0x10, 0xFFFFFFF0) == 0x20 and seq_diff(0xFFFFFFF0, 0x10) == -0x20
    assert not seq_lt(5, 5) and seq_diff(5, 5) == 0


def test_send_buffer_views_and_release():
    b = SendBuffer(10)
    b.base = 1
    assert b.write(b"abcdefghijkl") == 10 and b.space == 0 and b.end == 11
    assert bytes(b.view(3, 4)) == b"cdef"
    b.release(5)
    assert b.base == 5 and len(b) == 6 and b.space == 4
    assert bytes(b.view(5, 6)) == b"efghij"
    assert b.write(b"XYZ") == 3 and bytes(b.view(9, 5)) == b"ijXYZ"


def test_recv_buffer_in_order_and_holes():
    r = RecvBuffer(100)
    r.nxt = 1
    assert r.add(11, memoryview(b"K" * 10)) == 0 and r.has_ooo
    assert r.add(31, memoryview(b"M" * 10)) == 0
    assert r.ooo_blocks()[0] == (31, 41)             # most recent first
    assert r.add(21, memoryview(b"L" * 10)) == 0
    assert r.ooo_blocks() == [(11, 41)]              # merged into one block
    assert r.add(1, memoryview(b"J" * 10)) == 40 and not r.has_ooo
    assert r.read(100) == b"J" * 10 + b"K" * 10 + b"L" * 10 + b"M" * 10
    assert r.window == 100


def test_recv_buffer_overlaps_and_duplicates():
    r = RecvBuffer(100)
    r.nxt = 0
    r.add(5, memoryview(b"bbbbb"))
    r.add(3, memoryview(b"XXbbbYY"))                 # overlaps the held block on both sides
    assert r.ooo_blocks() == [(3, 10)]
    assert r.add(0, memoryview(b"aaaa")) == 10
    assert r.read(100, peek=True) == b"aaaaXbbbbb"
    assert r.add(2, memoryview(b"zz")) == 0          # old duplicate
    assert r.read(4) == b"aaaa" and r.readable == 6


def test_scoreboard_merge_prune_and_loss():
    sb = Scoreboard()
    assert sb.add(200, 300) and sb.add(400, 500) and sb.add(300, 400)
    assert (sb.starts, sb.ends) == ([200], [500])
    assert not sb.add(250, 300)
    sb.add(600, 700)
    assert sb.is_lost(100, 100)                      # 400 bytes SACKed above > 2*SMSS
    assert not sb.is_lost(500, 100)                  # only 100 above
    assert sb.next_seg(100, 0, 100, lost_only=True) == (100, 200)
    assert sb.next_seg(100, 200, 100, lost_only=True) is None       # [500,600) is not lost
    assert sb.next_seg(100, 200, 100, lost_only=False) == (500, 600)   # RFC 6675 rule 3
    sb.prune(250)
    assert sb.starts == [250, 600]


def test_scoreboard_pipe_counts_unsacked_and_retransmitted():
    sb = Scoreboard()
    sb.add(1100, 1400)
    # [1000,1100) is lost (300 SACKed above, > 2*100); [1400, 1600) is in flight
    assert sb.pipe(1000, 1600, 1000, 100) == 200
    assert sb.pipe(1000, 1600, 1100, 100) == 300      # the hole was retransmitted


def test_rtt_estimator_rfc6298():
    r = RttEstimator(1.0, 0.2, 60.0)
    assert r.rto == 1.0
    r.sample(0.5)
    assert r.srtt == 0.5 and r.rttvar == 0.25 and r.rto == pytest.approx(1.5)
    r.sample(0.5)
    assert r.rttvar == pytest.approx(0.1875) and r.rto == pytest.approx(1.25)
    r.backoff()
    r.backoff()
    assert r.rto == pytest.approx(5.0)
    r.reset_backoff()
    assert r.rto == pytest.approx(1.25)
    for _ in range(50):
        r.backoff()
    assert r.rto == 60.0


def test_newreno_slow_start_avoidance_and_recovery():
    cc = NewReno(1000, 10)
    assert cc.cwnd == 10000 and cc.ssthresh > 1 << 29
    cc.on_ack(5000, 1000)
    assert cc.cwnd == 11000                           # slow start: at most one SMSS per ACK
    cc.on_enter_recovery(20000, 1000)
    assert cc.ssthresh == 10000 and cc.cwnd == 13000
    cc.on_partial_ack(3000, 1000)
    assert cc.cwnd == 11000
    cc.on_exit_recovery(8000, 1000)
    assert cc.cwnd == 9000
    cc.cwnd = cc.ssthresh = 10000
    for _ in range(10):
        cc.on_ack(1000, 1000)                         # one cwnd of ACKs in CA: +1 SMSS
    assert cc.cwnd == 11000
    cc.on_timeout(20000, 1000)
    assert cc.cwnd == 1000 and cc.ssthresh == 10000


def test_syn_cookie_round_trip_and_expiry():
    key = (1, 80, 2, 4000)
    secret = b"s" * 16
    cookie, mss = make_cookie(secret, key, 12345, 1460, 100.0)
    assert mss == 1460 and mss in MSS_TABLE
    assert check_cookie(secret, key, 12345, cookie, 130.0) == 1460
    assert check_cookie(secret, key, 12345, cookie, 100.0 + 64 * 3) is None     # stale
    assert check_cookie(secret, key, 12346, cookie, 100.0) is None              # other ISN
    assert check_cookie(secret, (1, 80, 2, 4001), 12345, cookie, 100.0) is None
    assert check_cookie(b"t" * 16, key, 12345, cookie, 100.0) is None
    assert make_cookie(secret, key, 1, 1000, 0.0)[1] == 536       # largest table entry <= 1000


@pytest.mark.parametrize("bad", [dict(mss=10), dict(rto_min=5, rto_max=1), dict(delayed_ack=0.7),
                                 dict(rcvbuf=0), dict(timewait=-1)])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError) as e:
        TcpConfig(**bad)
    assert "TcpConfig" in str(e.value)


def test_scoreboard_add_reports_the_lowest_new_offset():
    sb = Scoreboard()
    assert sb.add(200, 300) == 200
    assert sb.add(250, 400) == 300                   # [250, 300) was known already
    assert sb.add(100, 450) == 100
    assert sb.add(150, 400) == 0


def test_scoreboard_dupthresh_and_rescue_segment():
    sb = Scoreboard()
    sb.add(200, 500)
    assert sb.is_lost(100, 100) and not sb.is_lost(100, 100, dupthresh=5)   # RFC 4653 larger
    assert sb.next_seg(100, 0, 100, True, 5) is None
    assert sb.pipe(100, 600, 100, 100, 5) == 200     # the hole is not lost yet: in flight
    # RFC 6675 rule 4: the highest outstanding un-SACKed octet, at most one SMSS
    assert sb.rescue_seg(100, 800, 100) == (700, 800)
    assert sb.rescue_seg(100, 500, 100) == (100, 200)
    assert Scoreboard().rescue_seg(100, 100, 100) is None


def test_reordering_dupthresh_learns_and_stays_within_the_flight():
    r = Reordering()
    assert r.dupthresh(100 * 1000, 1000) == 3
    r.filled(5000, 20_000, 1000)                     # late by 15 segments, never resent
    assert r.degree == 16
    assert r.dupthresh(100 * 1000, 1000) == 16
    assert r.dupthresh(9 * 1000, 1000) == 6          # RFC 4653: at most 2/3 of the flight
    assert r.dupthresh(3 * 1000, 1000) == 3
    r.retransmitted(30_000, 31_000)
    r.filled(30_000, 90_000, 1000)                   # resent data says nothing about reordering
    assert r.degree == 16


def test_receive_buffer_knows_duplicates():
    r = RecvBuffer(1000)
    r.add(1, memoryview(b"a" * 10))
    r.add(21, memoryview(b"b" * 10))
    assert r.covered(1, 11) and r.covered(23, 28)
    assert not r.covered(11, 21) and not r.covered(25, 35)

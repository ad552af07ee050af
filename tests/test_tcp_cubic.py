"""CUBIC (RFC 9438) against hand-computed values, then in the engine over the simulated link.

The unit tests use MSS 1000 and a loss at cwnd 100 segments, so W_max = 100 segments, the reduced
window 70 and K = cbrt((100 - 70) / 0.4) = cbrt(75) = 4.2172 s; every expected number below is
worked out from the RFC's equations in the comment beside it.  The engine tests reuse the link
model and the bulk-transfer helper of test_tcp_loss.py and assert on the sender's traced cwnd,
never on wall-clock time.
"""

from __future__ import annotations

import pytest

from linkmodel import DropNthData, LinkParams
from mtcp_pair import Pair, write_conf
from p4mtcp.control.config import ConfigError, parse_mtcp_conf
from p4mtcp.control.tcp import TcpConfig
from p4mtcp.control.tcp.congestion import Cubic, NewReno, make
from p4mtcp.control.tcp.congestion.cubic import ALPHA, BETA, C
from p4mtcp.control.tcp.reorder import Reordering
from test_tcp_loss import DATA, MSS, SMALL, Transfer, assert_exact, bulk, reductions
from test_tcp_rfc9293 import NOP, _fast_retransmit
from test_tcp_support import Peer

SEG = 1000
K_75 = 4.217163326508746            # cbrt(75): seconds from the epoch back to W_max
EPOCH = 50.0                         # virtual time of the first ACK after the loss


def after_loss(w_max_segments: int = 100) -> Cubic:
    """A CUBIC sender that lost a segment at cwnd = FlightSize = w_max_segments, with the
    reduction applied as the engine does with SACK (RFC 6675 5: cwnd = ssthresh)."""
    cc = Cubic(SEG, 10)
    cc.cwnd = w_max_segments * SEG
    cc.on_enter_recovery(cc.cwnd, SEG)
    cc.cwnd = cc.ssthresh
    return cc


def in_avoidance() -> Cubic:
    """`after_loss`, then the first ACK of the congestion avoidance stage at EPOCH."""
    cc = after_loss()
    cc.on_ack(SEG, SEG, EPOCH, 0.1)
    return cc


# -- constants and the reduction -----------------------------------------------------------------

def test_constants_are_rfc_9438s() -> None:
    assert (BETA, C) == (0.7, 0.4)
    assert ALPHA == pytest.approx(0.9 / 1.7)          # 3 (1 - 0.7) / (1 + 0.7) = 0.5294


def test_loss_multiplies_by_beta_and_remembers_w_max() -> None:
    """RFC 9438 4.6: ssthresh = FlightSize * 0.7 (not Reno's 0.5); W_max = cwnd at the event;
    without SACK, RFC 6582's three-dupACK inflation is applied on top."""
    cc = Cubic(SEG, 10)
    cc.cwnd = 100_000
    cc.on_enter_recovery(100_000, SEG)
    assert cc.ssthresh == 70_000 and cc.cwnd == 73_000
    assert cc.w_max == 100_000 and cc.cwnd_prior == 100_000 and cc.epoch is None
    small = Cubic(SEG, 10)
    small.on_enter_recovery(2_000, SEG)
    assert small.ssthresh == 2 * SEG                  # RFC 9438 4.6: at least 2 segments


def test_newreno_still_halves() -> None:
    cc = NewReno(SEG, 10)
    cc.on_enter_recovery(100_000, SEG)
    assert cc.ssthresh == 50_000


# -- the window increase function ------------------------------------------------------------------

def test_k_and_w_cubic_follow_equations_1_and_2() -> None:
    """K = cbrt((W_max - cwnd_epoch) / C) = cbrt(W_max (1 - beta) / C) when the stage starts at
    beta * W_max; W_cubic(t) = C (t - K)^3 + W_max, in segments."""
    cc = in_avoidance()
    assert cc.epoch == EPOCH
    assert K_75 == pytest.approx((100 * (1 - 0.7) / 0.4) ** (1 / 3))
    assert cc.k == pytest.approx(K_75)
    expected = {
        0.0: 70_000.0,              # 100 + 0.4 * (-4.2172)^3 = 100 - 30
        1.0: 86_680.76,             # 100 + 0.4 * (-3.2172)^3 = 100 - 13.319
        2.0: 95_640.34,             # 100 + 0.4 * (-2.2172)^3 = 100 - 4.3597
        K_75: 100_000.0,            # the plateau at W_max
        K_75 + 2.0: 103_200.0,      # 100 + 0.4 * 2^3
        10.0: 177_354.0,            # 100 + 0.4 * 5.7828^3 = 100 + 77.354
    }
    for t, window in expected.items():
        assert cc.w_cubic(t, SEG) == pytest.approx(window, abs=0.01), t


def test_reno_friendly_region_wins_at_the_start_of_the_stage() -> None:
    """RFC 9438 4.3: right after the loss W_cubic(t) is still cwnd_epoch, while W_est grows by
    alpha * segments_acked / cwnd: 70000 + 0.5294 * 1000 * 1000 / 70000 = 70007.56."""
    cc = after_loss()
    cc.on_ack(SEG, SEG, EPOCH, 0.001)
    assert cc.w_est == pytest.approx(70_007.563, abs=0.001)
    assert cc.cwnd == 70_007


def test_concave_region_grows_towards_w_cubic_one_rtt_ahead() -> None:
    """RFC 9438 4.2/4.4: at t = 1 s with RTT 100 ms, target = W_cubic(1.1) = 87884.57 and cwnd
    grows by (target - cwnd) / cwnd per segment: 70007 + 17877.57 * 1000 / 70007 = 70262.37."""
    cc = in_avoidance()
    assert cc.cwnd == 70_007
    cc.on_ack(SEG, SEG, EPOCH + 1.0, 0.1)
    assert cc.cwnd == 70_262


def test_convex_region_beyond_w_max() -> None:
    """RFC 9438 4.5: past K the window probes above W_max: at t = K + 1, W_cubic(t + 0.1) =
    100000 + 400 * 1.1^3 = 100532.4, so one segment adds 532.4 * 1000 / 100000 = 5.32 bytes."""
    cc = in_avoidance()
    cc.cwnd = 100_000
    cc.on_ack(SEG, SEG, EPOCH + K_75 + 1.0, 0.1)
    assert cc.cwnd == 100_005
    for _ in range(10):                        # 100 bytes add 0.53 each: kept, not dropped
        cc.on_ack(100, SEG, EPOCH + K_75 + 1.0, 0.1)
    assert cc.cwnd == 100_010                  # 0.32 left over + 10 * 527.4 * 100 / 100005


def test_target_is_clamped_to_one_and_a_half_cwnd() -> None:
    """RFC 9438 4.2: target <= 1.5 cwnd, so a whole window of ACKs at most multiplies cwnd by
    1.5 however far W_cubic has run ahead (t = 30 s: W_cubic = 100000 + 400 * 25.78^3 = 6.96 M)."""
    cc = in_avoidance()
    assert cc.w_cubic(30.1, SEG) > 6_000_000
    cc.on_ack(cc.cwnd, SEG, EPOCH + 30.0, 0.1)
    assert cc.cwnd == 70_007 + 35_003              # + (1.5 * 70007 - 70007) * 70007 / 70007


def test_target_never_below_cwnd() -> None:
    """RFC 9438 4.2: target >= cwnd: a cwnd above W_cubic(t + RTT) is kept, not pulled down."""
    cc = in_avoidance()
    cc.cwnd = 95_000                                # W_cubic(1.1) = 87884.57
    cc.on_ack(SEG, SEG, EPOCH + 1.0, 0.1)
    assert cc.cwnd == 95_000


def test_alpha_becomes_one_once_w_est_regains_cwnd_prior() -> None:
    """RFC 9438 4.3: alpha_cubic until W_est >= cwnd_prior, then 1 (Reno's own increase)."""
    cc = in_avoidance()
    cc.w_est = 100_000.0                            # W_est has caught up with cwnd_prior
    cc.cwnd = 100_000
    cc.on_ack(SEG, SEG, EPOCH + 0.001, 0.001)
    assert cc.w_est == pytest.approx(100_010.0)     # + 1 * 1000 * 1000 / 100000


# -- further congestion events ---------------------------------------------------------------------

def test_fast_convergence_lowers_w_max() -> None:
    """RFC 9438 4.7: a loss before W_max was regained sets W_max = cwnd * (1 + beta) / 2."""
    cc = in_avoidance()
    cc.cwnd = 80_000
    cc.on_enter_recovery(80_000, SEG)
    assert cc.w_max == pytest.approx(68_000.0)       # 80000 * 1.7 / 2
    assert cc.ssthresh == 56_000 and cc.cwnd_prior == 80_000
    cc.cwnd = cc.ssthresh
    cc.on_ack(SEG, SEG, 70.0, 0.1)
    assert cc.k == pytest.approx((12 / 0.4) ** (1 / 3))   # cbrt((68 - 56) / 0.4) = 3.107 s


def test_loss_above_w_max_takes_cwnd_as_w_max() -> None:
    cc = in_avoidance()
    cc.cwnd = 120_000
    cc.on_enter_recovery(120_000, SEG)
    assert cc.w_max == 120_000.0 and cc.ssthresh == 84_000


def test_timeout_loss_window_then_k_zero() -> None:
    """RFC 9438 4.8: ssthresh = 0.7 FlightSize, cwnd = 1 segment; slow start (4.10, RFC 5681)
    back to ssthresh; then K = 0 and W_max = W_est = the window the stage starts with."""
    cc = in_avoidance()
    cc.cwnd = 100_000
    cc.on_timeout(100_000, SEG)
    assert (cc.cwnd, cc.ssthresh) == (SEG, 70_000)
    cc.on_ack(5 * SEG, SEG, 60.0, 0.1)
    assert cc.cwnd == 2 * SEG                        # slow start: at most one SMSS per ACK
    now = 60.0
    while cc.cwnd < cc.ssthresh:
        now += 0.001
        cc.on_ack(SEG, SEG, now, 0.1)
    assert cc.cwnd == 70_000 and cc.epoch is None
    cc.on_ack(SEG, SEG, 61.0, 0.1)
    assert cc.epoch == 61.0 and cc.k == 0.0 and cc.w_max == 70_000.0
    assert cc.w_cubic(2.0, SEG) == pytest.approx(73_200.0)    # 70000 + 400 * 2^3


def test_undo_restores_the_state_before_the_spurious_event() -> None:
    """RFC 9438 4.9 with the engine's RFC 4015 undo (module reorder): cwnd and ssthresh are put
    back by the connection, W_max, K, the epoch and W_est by CUBIC, so the curve carries on."""
    cc = in_avoidance()
    cc.on_ack(SEG, SEG, EPOCH + 1.0, 0.1)
    before = (cc.cwnd, cc.ssthresh, cc.w_max, cc.k, cc.epoch, cc.w_est, cc.cwnd_prior)
    reo = Reordering()
    reo.start(cc, 0, 0, None)
    cc.on_enter_recovery(cc.cwnd, SEG)
    assert cc.w_max != before[2] and cc.epoch is None
    reo.undo(cc, SEG)
    cc.on_undo()
    assert (cc.cwnd, cc.ssthresh, cc.w_max, cc.k, cc.epoch, cc.w_est, cc.cwnd_prior) == before
    cc.on_undo()                                      # nothing left to undo: no change
    assert cc.w_max == before[2]


def test_no_undo_across_a_timeout() -> None:
    cc = in_avoidance()
    cc.on_enter_recovery(cc.cwnd, SEG)
    cc.on_timeout(cc.cwnd, SEG)
    cc.on_undo()
    assert cc.w_max == 0.0 and cc.epoch is None


# -- selection -------------------------------------------------------------------------------------

def test_make_and_config_name_the_algorithm() -> None:
    assert type(make("newreno", SEG, 10)) is NewReno and type(make("cubic", SEG, 10)) is Cubic
    with pytest.raises(ValueError, match="'bbr'"):
        make("bbr", SEG, 10)
    assert TcpConfig().congestion == "newreno"
    with pytest.raises(ValueError, match="TcpConfig.congestion .*'vegas'"):
        TcpConfig(congestion="vegas")


def test_mtcp_conf_key_chooses_the_algorithm(tmp_path) -> None:
    base = "local_ip = 10.0.0.1/24\n"
    assert parse_mtcp_conf(base).congestion_control == "newreno"
    assert parse_mtcp_conf(base + "congestion_control = cubic\n").congestion_control == "cubic"
    with pytest.raises(ConfigError) as ei:
        parse_mtcp_conf(base + "congestion_control = vegas\n", "/etc/mtcp.conf")
    assert str(ei.value).startswith("/etc/mtcp.conf:2: congestion_control: 'vegas' is not one of")
    p = Pair(write_conf(tmp_path / "mtcp.conf", congestion_control="cubic"))
    try:
        c, _ = p.connect()
        assert p.client.stack.config.congestion == "cubic"
        assert type(p.client._socks[c].conn.cc) is Cubic
    finally:
        p.close()


# -- in the engine ---------------------------------------------------------------------------------

SMSS = MSS - 12                              # timestamps take 12 bytes of each segment


def cubic_config(**kw) -> TcpConfig:
    kw = {"rcvbuf": 256 << 10, "sndbuf": 256 << 10, **kw}
    return TcpConfig(mss=MSS, idle_timeout=0, congestion="cubic", **kw)


@pytest.mark.parametrize("loss", [0.01, 0.05])
def test_10mb_random_loss_byte_exact_with_cubic(loss: float) -> None:
    t = bulk(DATA, LinkParams(loss=loss), seed=int(loss * 1000), config=cubic_config())
    assert_exact(t, DATA)
    st, audit = t.sender.stats, t.audit
    assert audit.lost_payload_segments > 0.5 * loss * audit.payload_segments
    assert audit.spurious == 0 and st.fast_retransmits > st.timeouts
    ratios = sorted(ss / flight for flight, ss, _ in reductions(t) if flight > 20 * SMSS)
    assert ratios and 0.65 < ratios[len(ratios) // 2] < 0.75, ratios    # beta 0.7, not 0.5


@pytest.mark.parametrize("sack", [True, False], ids=["sack", "newreno-recovery"])
def test_one_loss_reduces_to_seven_tenths_of_the_flight(sack: bool) -> None:
    drop = DropNthData(100)
    t = bulk(SMALL, LinkParams(), drop=drop, config=cubic_config(sack=sack))
    assert_exact(t, SMALL)
    st = t.sender.stats
    assert (st.retransmits, st.fast_retransmits, st.timeouts) == (1, 1, 0)
    cuts = reductions(t)
    assert len(cuts) == 1, cuts
    flight, ssthresh, index = cuts[0]
    assert flight > 40 * SMSS
    assert abs(ssthresh - 0.7 * flight) < SMSS, (ssthresh, flight)
    epoch = [cwnd for _, cwnd, ss, _ in t.trace[index:] if ss == ssthresh]
    assert min(epoch) > 0.6 * flight, "cwnd came down as far as NewReno's halving"
    assert min(epoch) <= ssthresh + SMSS


def regain(t: Transfer) -> tuple[int, int, float]:
    """(cwnd before the first reduction, ssthresh it set, seconds until cwnd is back)."""
    flight, ssthresh, index = reductions(t)[0]
    pre = max(cwnd for _, cwnd, _, _ in t.trace[:index])
    cut_at = t.trace[index][0]
    back = next(now for now, cwnd, _, _ in t.trace[index:] if cwnd >= pre)
    return pre, ssthresh, back - cut_at


LONG_FAT = LinkParams(delay=0.050, bandwidth=100e6)     # RTT 100 ms, BDP 1.25 MB


def test_cubic_regains_the_window_faster_than_newreno_on_a_long_fat_path() -> None:
    """One loss at ~160 segments, far below the 850-segment pipe.  NewReno halves and adds one
    segment per RTT (~80 RTTs back); CUBIC cuts to 0.7 and is back at W_max after K =
    cbrt(0.3 W_max / 0.4) seconds (~5 s for 160 segments), whatever the RTT."""
    data = (DATA * 3)[:24 << 20]
    rtt = 2 * LONG_FAT.delay
    got = {}
    for name in ("newreno", "cubic"):
        config = TcpConfig(mss=MSS, rcvbuf=4 << 20, sndbuf=4 << 20, idle_timeout=0,
                           congestion=name)
        t = bulk(data, LONG_FAT, drop=DropNthData(300), config=config, time_limit=60.0,
                 max_iterations=1_000_000)
        assert_exact(t, data)
        st = t.sender.stats
        assert (st.retransmits, st.fast_retransmits, st.timeouts) == (1, 1, 0)
        got[name] = regain(t)
    (pre_nr, ss_nr, nr), (pre_cu, ss_cu, cu) = got["newreno"], got["cubic"]
    assert pre_nr == pre_cu > 100 * SMSS             # the same slow start up to the loss
    assert abs(ss_nr - pre_nr / 2) < 2 * SMSS and abs(ss_cu - 0.7 * pre_cu) < 2 * SMSS
    # NewReno: one segment per RTT from ssthresh back to the old window.
    assert nr > 0.9 * (pre_nr - ss_nr) / SMSS * rtt
    # CUBIC: back near K (eq. 2), in well under NewReno's time.
    k = (pre_cu / SMSS * (1 - BETA) / C) ** (1 / 3)
    assert abs(cu - k) < 0.5, (cu, k)
    assert cu < 0.7 * nr, f"cubic {cu / rtt:.0f} RTTs vs newreno {nr / rtt:.0f} RTTs"


def test_spurious_fast_retransmit_undo_restores_cubic_state() -> None:
    """RFC 3708 D-SACK of the only retransmission: the engine undoes the reduction (RFC 4015)
    and CUBIC forgets the congestion event it had recorded (RFC 9438 4.9)."""
    p = Peer(sndbuf=100_000, congestion="cubic")
    conn, sa = p.accept(syn_options=[("MSS", 1460), ("SAckOK", b"")])
    snd = sa.seq + 1
    cc = conn.cc
    assert type(cc) is Cubic
    cwnd0, ss0, w_max0 = cc.cwnd, cc.ssthresh, cc.w_max
    _fast_retransmit(p, conn, snd)
    assert cc.w_max == cwnd0 and cc.ssthresh == int(0.7 * 14600)
    p.send("A", 1001, snd + 14600)
    p.send("A", 1001, snd + 14600, options=[NOP, NOP, ("SAck", (snd, snd + 1460))])
    assert p.stack.stats.spurious_recoveries == 1
    assert cc.cwnd >= cwnd0 and cc.ssthresh == ss0 and cc.w_max == w_max0

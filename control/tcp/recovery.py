"""The sender's loss-recovery state and the rules that only keep books (no segment is sent here).

One LossRecovery per connection holds what RFC 5681/6582/6675 and RFC 8985 section 7 track:
duplicate ACKs, the recovery point, HighRxt and RescueRxt, the SACK scoreboard, the reordering
record, the marks that find lost retransmissions, and the tail loss probe. The connection
decides what to send and sends it; it asks this object when data counts as lost and tells it
what went out. Offsets are the connection's unbounded send offsets.
"""

from __future__ import annotations

from .congestion import CongestionControl
from .reorder import Reordering
from .sack import Scoreboard

WC_DELACK = 0.2     # RFC 8985 7.2 WCDelAckT: the worst-case delayed ACK a probe waits out
PTO_MIN = 0.01      # a floor under 2*SRTT on very short paths (Linux: 10 ms)


class LossRecovery:
    __slots__ = ("dupacks", "point", "recover", "high_rxt", "rescue", "rxt_marks", "sb", "reo",
                 "pto_at", "tlp_end", "tlp_rxt", "tlp_dsack")

    def __init__(self) -> None:
        self.dupacks = 0
        self.point: int | None = None          # RFC 6582 "recover" point while in recovery
        self.recover = 0                       # highest offset sent when the last RTO fired
        self.high_rxt = 0                      # RFC 6675 HighRxt
        self.rescue: int | None = None         # RFC 6675 RescueRxt
        self.rxt_marks: list[list[int]] | None = None   # [lo, hi, SND.MAX then] per resend
        self.sb = Scoreboard()
        self.reo = Reordering()
        self.pto_at: float | None = None       # RFC 8985 7: tail loss probe timeout
        self.tlp_end: int | None = None        # TLP.end_seq of the probe in flight
        self.tlp_rxt = False                   # ... which resent data (else sent new data)
        self.tlp_dsack = False                 # ... and was reported a duplicate (RFC 8985 7.4)

    def dupthresh(self, flight: int, mss: int) -> int:
        return self.reo.dupthresh(flight, mss)

    def on_sack(self, blocks: list[tuple[int, int]], una: int, ack_off: int, snd_max: int,
                mss: int) -> tuple[bool, int, bool]:
        """Record one ACK's SACK blocks (as offsets, RFC 2018, RFC 6675). Returns (new data was
        SACKed, D-SACK blocks in it, every retransmission of the episode is now known to have
        been needless: undo).

        A first block below the cumulative ACK or inside the second block is a D-SACK (RFC 2883
        4). The first other block holds the segment that just arrived (RFC 2018 4): when it
        lands below the highest SACK, its distance measures reordering (module ``reorder``);
        later blocks may be old news the option had no room for before."""
        sb, reo = self.sb, self.reo
        fack = sb.high
        new = undo = False
        dsacks = 0
        newest = True
        for i, (lo, hi) in enumerate(blocks):
            if i == 0 and lo < hi and (hi <= ack_off or len(blocks) > 1 and (
                    blocks[1][0] <= lo and hi <= blocks[1][1])):
                dsacks += 1
                if self.tlp_end is not None and self.tlp_rxt and hi >= self.tlp_end - 1:
                    self.tlp_dsack = True          # RFC 8985 7.4.1: the probe was needless
                if reo.dsack(lo, hi):
                    undo = True                    # RFC 3708 3: every retransmission was needless
                continue
            if una < lo < hi <= snd_max:
                low = sb.add(lo, hi)
                if low:
                    if newest and low < fack:
                        reo.filled(low, fack, mss)
                    new = True
            newest = False
        return new, dsacks, undo

    def on_cumulative_ack(self, una: int, ack_off: int, fack: int, mss: int) -> None:
        """SND.UNA moved from ``una`` to ``ack_off``; ``fack`` was the highest SACK before."""
        if self.sb.starts:
            # RFC 8985 6.2 step 3 (RFC 4653 3): reordering is a never-retransmitted segment
            # delivered below what an earlier ACK had already SACKed. A SACK arriving in this
            # same ACK (after a delayed or lost ACK) says nothing about order.
            self.reo.filled(una, fack, mss)
            self.sb.prune(ack_off)

    def start(self, cc: CongestionControl, una: int, snd_max: int, ts: int | None) -> None:
        """Fast recovery begins (RFC 6675 5 step 3, RFC 6582 3.2); before the cwnd response, so
        that an undo can restore it (RFC 4015)."""
        self.point = snd_max
        self.rescue = None                         # RescueRxt undefined
        self.rxt_marks = []
        self.pto_at = self.tlp_end = None          # fast recovery repairs what TLP probed for
        self.reo.start(cc, una, self.sb.high, ts)
        self.high_rxt = una

    def finish(self) -> None:
        """The recovery point was acknowledged (RFC 6582 3.2 step 6, RFC 6675 full ACK)."""
        self.point = None
        self.rxt_marks = None
        self.dupacks = 0

    def on_timeout(self, snd_max: int) -> None:
        """RFC 6298 5.4-5.7: recovery by timeout replaces fast recovery and the probe."""
        self.point = None
        self.rxt_marks = None
        self.pto_at = self.tlp_end = None          # RFC 8985 7.3: the RTO takes over
        self.dupacks = 0
        self.recover = snd_max                     # RFC 6582 3.2 step 1 (after a timeout)
        self.reo.timeout(snd_max)
        self.sb.clear()                            # RFC 2018 8: the receiver may renege

    def retransmitted(self, lo: int, hi: int, snd_max: int) -> None:
        """[lo, hi) went out again at SND.MAX ``snd_max``: told to the reordering record, and in
        recovery marked so that its own loss can be seen (``lost_retransmissions``)."""
        self.reo.retransmitted(lo, hi)
        marks = self.rxt_marks
        if self.point is not None and hi > lo and marks is not None:
            marks.append([lo, hi, snd_max])

    def lost_retransmissions(self, una: int, snd_max: int, mss: int) -> list[tuple[int, int]]:
        """Retransmissions now lost: DupThresh worth of data first sent after one has been
        SACKed while its own range is still missing. (RFC 6675 cannot see a lost retransmission;
        RFC 8985 6.2 sees it by send time, this by send order, which the SND.MAX mark records.)
        Their marks are dropped; resending them marks them again."""
        sb = self.sb
        dt = self.reo.dupthresh(snd_max - una, mss)
        lost: list[tuple[int, int]] = []
        keep: list[list[int]] = []
        for lo, hi, mark in self.rxt_marks or []:
            lo = max(lo, una)
            if hi <= lo or sb.skip(lo) >= hi:      # delivered: acked or SACKed
                continue
            if sb.is_lost(mark, mss, dt):
                lost.append((lo, hi))
            else:
                keep.append([lo, hi, mark])
        self.rxt_marks = keep
        return lost

    def pto(self, srtt: float, one_segment: bool) -> float:
        """RFC 8985 7.2: PTO = 2*SRTT, + WCDelAckT when FlightSize is one segment (the peer may
        hold its ACK for the delayed-ACK timer)."""
        pto = max(2 * srtt, PTO_MIN)
        return pto + WC_DELACK if one_segment else pto

    def probe_sent(self, snd_max: int, resent: bool) -> None:
        """RFC 8985 7.3: a probe went out (``resent``: old data, else new); the episode lasts
        until SND.UNA passes ``snd_max``."""
        self.pto_at = None
        self.tlp_end = snd_max
        self.tlp_rxt = resent
        self.tlp_dsack = False

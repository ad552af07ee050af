"""Reordering tolerance for the sender: an adaptive DupThresh and the undo of spurious recoveries.

Reordering looks like loss to RFC 6675's fixed DupThresh of 3, so every reordered segment would
cost a retransmission and a halved cwnd. This keeps (like Linux's reordering metric) the largest
reordering distance seen, in segments, and uses it as DupThresh within RFC 4653's bound; and it
remembers the congestion state before each fast recovery so that one found spurious, by timestamps
(RFC 3522) or by D-SACK (RFC 3708), is undone (RFC 4015).
"""

from __future__ import annotations

from .congestion import CongestionControl
from .seq import seq_lt

DUP_THRESH = 3          # RFC 5681 3.2 / RFC 6675 2: the floor
MAX_REORDER = 300       # segments (Linux tcp_max_reordering): bounds the wait before recovery


class Reordering:
    """Per-connection reordering degree and the undo record of the last fast recovery."""

    __slots__ = ("degree", "rxt_top", "_cwnd", "_ssthresh", "_ts", "_lo", "_hi", "_bytes",
                 "_fack", "_first_ack", "_fresh", "undone")

    def __init__(self) -> None:
        self.degree = DUP_THRESH
        self.rxt_top = 0           # nothing below is known never to have been retransmitted
        self._cwnd = 0
        self._ssthresh = 0
        self._ts: int | None = None    # TSval of the episode's first retransmission (RFC 3522)
        self._lo = self._hi = 0        # retransmitted range of the episode
        self._bytes = -1               # retransmitted bytes not yet D-SACKed; -1: no episode
        self._fack = 0
        self._first_ack = False
        self._fresh = False            # SND.UNA was first retransmitted by this episode
        self.undone = False            # the last episode was found spurious and undone

    def dupthresh(self, flight: int, mss: int) -> int:
        """RFC 6675 2 DupThresh raised to the reordering seen, but (RFC 4653 3, "careful" limited
        transmit) never beyond 2/3 of the flight, so a small window still detects loss by SACK."""
        degree = self.degree
        if degree == DUP_THRESH:
            return DUP_THRESH
        return max(DUP_THRESH, min(degree, 2 * flight // (3 * mss)))

    def filled(self, lo: int, fack: int, mss: int) -> None:
        """[lo, ...) was delivered below the highest SACKed offset ``fack``. If it was never
        retransmitted it arrived late, not lost: reordering of (fack - lo) / mss segments."""
        if lo >= self.rxt_top and fack > lo:
            self._raise(fack - lo, mss)

    def _raise(self, distance: int, mss: int) -> None:
        degree = min(MAX_REORDER, -(-distance // mss) + 1)
        if degree > self.degree:
            self.degree = degree

    def start(self, cc: CongestionControl, una: int, fack: int, ts: int | None) -> None:
        """Before the congestion response of a fast retransmit: keep what an undo restores
        (RFC 4015 3.2 step 1: pipe_prev / SSThresh_prev)."""
        self._cwnd, self._ssthresh = cc.cwnd, cc.ssthresh
        self._ts = ts
        self._lo = self._hi = una
        self._bytes = 0
        self._fack = fack
        self._first_ack = True
        self._fresh = una >= self.rxt_top
        self.undone = False

    def retransmitted(self, lo: int, hi: int) -> None:
        """Count one retransmission of [lo, hi) into the episode (RFC 3708 3: retransmits sent)."""
        if hi > self.rxt_top:
            self.rxt_top = hi
        if self._bytes >= 0 and hi > lo:
            self._bytes += hi - lo
            self._lo = min(self._lo, lo)
            self._hi = max(self._hi, hi)

    def timeout(self, snd_max: int) -> None:
        """After an RTO everything outstanding may be resent (go-back-N): no undo, no inference."""
        self.rxt_top = max(self.rxt_top, snd_max)
        self._bytes = -1
        self.undone = False

    def first_ack_spurious(self, tsecr: int | None) -> bool:
        """RFC 3522 3.2 (Eifel detection): the first ACK for the retransmitted SND.UNA echoes a
        timestamp older than the retransmission, so the original arrived: spurious. One test
        per episode; the echo of later ACKs says nothing about the first retransmission."""
        if not self._first_ack:
            return False
        self._first_ack = False
        ts = self._ts
        return ts is not None and tsecr is not None and self._bytes > 0 and seq_lt(tsecr, ts)

    def dsack(self, lo: int, hi: int) -> bool:
        """RFC 3708 3: a D-SACK for retransmitted data of the episode; True once every
        retransmitted byte has been reported as a duplicate (then all were spurious)."""
        if self._bytes <= 0 or hi <= self._lo or lo >= self._hi:
            return False
        self._bytes -= min(hi, self._hi) - max(lo, self._lo)
        return self._bytes <= 0

    def undo(self, cc: CongestionControl, mss: int) -> None:
        """RFC 4015 3.2: restore cwnd and ssthresh from before the spurious fast retransmit, and
        learn the reordering that fooled it (distance from SND.UNA to the highest SACK then),
        unless SND.UNA had been resent before: then a stale scoreboard fooled it, not reordering."""
        cc.cwnd = max(cc.cwnd, self._cwnd)
        cc.ssthresh = max(cc.ssthresh, self._ssthresh)
        if self._fresh:
            self._raise(self._fack - self._lo, mss)
        self._bytes = -1
        self._first_ack = False
        self.undone = True

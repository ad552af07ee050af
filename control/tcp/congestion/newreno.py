"""NewReno: RFC 5681 slow start and congestion avoidance, RFC 6582 fast recovery."""

from __future__ import annotations

from . import CongestionControl


class NewReno(CongestionControl):
    __slots__ = ("_acc",)

    def __init__(self, mss: int, initial_window: int) -> None:
        super().__init__(mss, initial_window)
        self._acc = 0

    def on_ack(self, acked: int, mss: int, now: float = 0.0, srtt: float | None = None) -> None:
        if self.cwnd < self.ssthresh:     # RFC 5681 3.1: slow start, cwnd += min(N, SMSS)
            self.cwnd += min(acked, mss)
        else:                             # RFC 5681 3.1 eq. 3 via byte counting (RFC 3465)
            self._acc += acked
            if self._acc >= self.cwnd:
                self._acc -= self.cwnd
                self.cwnd += mss

    def _reduce(self, flight: int, mss: int) -> int:
        """The ssthresh after a congestion event; subclasses also note the event here."""
        return max(flight // 2, 2 * mss)              # RFC 5681 3.2 eq. 4

    def on_enter_recovery(self, flight: int, mss: int) -> None:
        self.ssthresh = self._reduce(flight, mss)
        self.cwnd = self.ssthresh + 3 * mss            # RFC 6582 3.2 step 2 (inflate by 3 dupacks)
        self._acc = 0

    def on_dupack_in_recovery(self, mss: int) -> None:
        self.cwnd += mss                               # RFC 6582 3.2 step 3

    def on_partial_ack(self, acked: int, mss: int) -> None:
        # RFC 6582 3.2 step 5: deflate by the amount acked, add back one SMSS if acked >= SMSS.
        self.cwnd = max(mss, self.cwnd - acked + (mss if acked >= mss else 0))

    def on_exit_recovery(self, flight: int, mss: int) -> None:
        self.cwnd = min(self.ssthresh, max(flight, mss) + mss)   # RFC 6582 3.2 step 6 option 1

    def on_timeout(self, flight: int, mss: int) -> None:
        self.ssthresh = self._reduce(flight, mss)     # RFC 5681 3.1 eq. 4
        self.cwnd = mss                                # RFC 5681 3.1: loss window = 1 SMSS
        self._acc = 0

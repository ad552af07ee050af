"""Congestion control: one small class per algorithm behind one interface (RFC 5681, RFC 6582).

The connection owns loss detection and recovery bookkeeping; the algorithm only decides
cwnd and ssthresh at the moments the connection reports.
"""

from __future__ import annotations


class CongestionControl:
    """Interface. Sizes in bytes; ``mss`` is the sender's effective MSS."""

    cwnd: int
    ssthresh: int

    def on_ack(self, acked: int, mss: int) -> None: ...
    def on_enter_recovery(self, flight: int, mss: int) -> None: ...
    def on_partial_ack(self, acked: int, mss: int) -> None: ...
    def on_exit_recovery(self, flight: int, mss: int) -> None: ...
    def on_timeout(self, flight: int, mss: int) -> None: ...


class NewReno(CongestionControl):
    __slots__ = ("cwnd", "ssthresh", "_acc")

    def __init__(self, mss: int, initial_window: int) -> None:
        # RFC 6928: IW = min(10*MSS, max(2*MSS, 14600)) for 10 segments.
        self.cwnd = min(initial_window * mss, max(2 * mss, 14600)) if initial_window == 10 \
            else initial_window * mss
        self.ssthresh = 1 << 30          # RFC 5681 3.1: arbitrarily high, so we start in slow start
        self._acc = 0

    def on_ack(self, acked: int, mss: int) -> None:
        if self.cwnd < self.ssthresh:     # RFC 5681 3.1: slow start, cwnd += min(N, SMSS)
            self.cwnd += min(acked, mss)
        else:                             # RFC 5681 3.1 eq. 3 via byte counting (RFC 3465)
            self._acc += acked
            if self._acc >= self.cwnd:
                self._acc -= self.cwnd
                self.cwnd += mss

    def on_enter_recovery(self, flight: int, mss: int) -> None:
        self.ssthresh = max(flight // 2, 2 * mss)     # RFC 5681 3.2 eq. 4
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
        self.ssthresh = max(flight // 2, 2 * mss)     # RFC 5681 3.1 eq. 4
        self.cwnd = mss                                # RFC 5681 3.1: loss window = 1 SMSS
        self._acc = 0

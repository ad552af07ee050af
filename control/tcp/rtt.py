"""Retransmission timeout estimator (RFC 6298)."""

from __future__ import annotations


class RttEstimator:
    __slots__ = ("srtt", "rttvar", "rto", "_min", "_max", "_base_rto")

    def __init__(self, initial: float, rto_min: float, rto_max: float) -> None:
        self.srtt: float | None = None
        self.rttvar = 0.0
        self._min = rto_min
        self._max = rto_max
        self.rto = initial          # RFC 6298 2.1: initial RTO
        self._base_rto = initial

    def sample(self, r: float) -> None:
        """Fold in one measurement (callers apply Karn's rule: never from retransmitted data)."""
        if r < 0:
            return
        if self.srtt is None:                     # RFC 6298 2.2: first measurement
            self.srtt = r
            self.rttvar = r / 2
        else:                                     # RFC 6298 2.3: beta = 1/4, alpha = 1/8
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - r)
            self.srtt = 0.875 * self.srtt + 0.125 * r
        rto = self.srtt + max(0.001, 4 * self.rttvar)     # G = 1 ms clock granularity
        self._base_rto = self.rto = min(self._max, max(self._min, rto))   # RFC 6298 2.4, 2.5

    def backoff(self) -> None:
        """RFC 6298 5.5: double the RTO on expiry, bounded by the maximum."""
        self.rto = min(self._max, self.rto * 2)

    def reset_backoff(self) -> None:
        """Undo backoff once new data is acknowledged (RFC 6298 5.7 / Karn's algorithm)."""
        self.rto = self._base_rto

    def after_syn_timeout(self) -> None:
        """RFC 6298 5.7: a SYN (or SYN-ACK) timed out and no RTT is known: data starts at 3 s."""
        if self.srtt is None:
            self._base_rto = self.rto = min(self._max, max(3.0, self._base_rto))

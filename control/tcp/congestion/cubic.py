"""CUBIC (RFC 9438): the window grows as a cubic function of the time since the last congestion
event, so a long fat path regains its window in seconds rather than in one MSS per round trip.

Slow start and fast recovery are Reno's (RFC 9438 4.10, 4.6), so this extends `NewReno` and
changes only what CUBIC changes: growth in congestion avoidance, the reduction factor, and the
state kept about the last congestion event. Windows are kept in bytes; the cubic function is
evaluated in segments, the unit its constant C is defined in.
"""

from __future__ import annotations

from .newreno import NewReno

BETA = 0.7                               # RFC 9438 4.1.1 beta_cubic: multiplicative decrease
C = 0.4                                  # RFC 9438 4.1.1: segments / second^3
ALPHA = 3 * (1 - BETA) / (1 + BETA)      # RFC 9438 4.3 alpha_cubic: Reno-friendly AIMD step
_MAX_GROWTH = 1.5                        # RFC 9438 4.2: target <= 1.5 * cwnd per RTT


class Cubic(NewReno):
    __slots__ = ("w_max", "k", "epoch", "w_est", "cwnd_prior", "_frac", "_saved")

    def __init__(self, mss: int, initial_window: int) -> None:
        super().__init__(mss, initial_window)
        self.w_max = 0.0                 # bytes: cwnd before the last reduction; 0 = none known
        self.k = 0.0                     # seconds from the epoch until W_cubic reaches W_max
        self.epoch: float | None = None  # t_epoch: start of this avoidance stage; None = not begun
        self.w_est = 0.0                 # bytes: Reno's window over the same ACKs (RFC 9438 4.3)
        self.cwnd_prior = 0              # cwnd at the last congestion event
        self._frac = 0.0                 # growth below one byte, carried to the next ACK
        self._saved: tuple[float, float, float | None, float, int] | None = None

    def w_cubic(self, t: float, mss: int) -> float:
        """RFC 9438 4.2 eq. 1, W_cubic(t) = C*(t-K)^3 + W_max, in bytes."""
        return C * (t - self.k) ** 3 * mss + self.w_max

    def on_ack(self, acked: int, mss: int, now: float = 0.0, srtt: float | None = None) -> None:
        cwnd = self.cwnd
        if cwnd < self.ssthresh:          # RFC 9438 4.10: slow start as RFC 5681 3.1
            super().on_ack(acked, mss, now, srtt)
            return
        if self.epoch is None:            # RFC 9438 4.2: t counts from the stage's first ACK
            self.epoch = now
            if self.w_max <= cwnd:
                # RFC 9438 4.8 (first stage after a timeout, or no event known): K = 0 and
                # W_max = the window at the start of the stage.
                self.w_max = float(cwnd)
                self.k = 0.0
            else:                         # RFC 9438 4.2 eq. 2: K = cbrt((W_max - cwnd_epoch)/C)
                self.k = ((self.w_max - cwnd) / mss / C) ** (1 / 3)
            self.w_est = float(cwnd)      # RFC 9438 4.3: W_est starts at cwnd_epoch
        # RFC 9438 4.3: W_est += alpha * segments_acked / cwnd, with alpha 1 once W_est has
        # regained the window of the last congestion event.
        alpha = 1.0 if self.w_est >= self.cwnd_prior else ALPHA
        self.w_est += alpha * mss * acked / cwnd
        t = now - self.epoch
        if self.w_cubic(t, mss) < self.w_est:
            # RFC 9438 4.3: Reno-friendly region, cwnd = W_est (never shrunk by an ACK).
            self.cwnd = max(cwnd, int(self.w_est))
            return
        # RFC 9438 4.4 concave (cwnd < W_max) and 4.5 convex region: move towards
        # target = W_cubic(t + RTT), clamped to [cwnd, 1.5 cwnd] (4.2), by (target - cwnd) / cwnd
        # per segment acknowledged.
        target = min(max(self.w_cubic(t + (srtt or 0.0), mss), cwnd), _MAX_GROWTH * cwnd)
        grow = (target - cwnd) * acked / cwnd + self._frac
        step = int(grow)
        self._frac = grow - step
        self.cwnd = cwnd + step

    def _reduce(self, flight: int, mss: int) -> int:
        cwnd = self.cwnd
        self._saved = (self.w_max, self.k, self.epoch, self.w_est, self.cwnd_prior)
        if cwnd < self.w_max:
            # RFC 9438 4.7 fast convergence: a loss before regaining W_max means the share is
            # shrinking (a new flow arrived); release more by remembering a lower W_max.
            self.w_max = cwnd * (1 + BETA) / 2
        else:
            self.w_max = float(cwnd)
        self.cwnd_prior = cwnd            # RFC 9438 4.6
        self.epoch = None                 # RFC 9438 4.2: a new avoidance stage follows
        self._frac = 0.0
        return max(int(flight * BETA), 2 * mss)   # RFC 9438 4.6: ssthresh = flight * beta_cubic

    def on_timeout(self, flight: int, mss: int) -> None:
        # RFC 9438 4.8: ssthresh as for a loss (4.6), cwnd as Reno's loss window; the next stage
        # starts with K = 0 and W_max = its first window (see on_ack).
        super().on_timeout(flight, mss)
        self.w_max = 0.0
        self._saved = None                # an RTO episode is never undone (module reorder)

    def on_undo(self) -> None:
        # RFC 9438 4.9: a spurious congestion event restores the state from before it; the
        # connection has put back cwnd and ssthresh.
        if self._saved is not None:
            self.w_max, self.k, self.epoch, self.w_est, self.cwnd_prior = self._saved
            self._saved = None

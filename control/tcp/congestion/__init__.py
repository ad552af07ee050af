"""Congestion control: one small module per algorithm behind one interface.

The connection owns loss detection and recovery bookkeeping; an algorithm only decides cwnd and
ssthresh at the moments the connection reports. `TcpConfig.congestion` names the algorithm and
`make` builds it for each connection.
"""

from __future__ import annotations


class CongestionControl:
    """Interface, and the initial state every algorithm shares. Sizes are bytes; ``mss`` is the
    sender's effective MSS; ``now`` is seconds on the caller's clock (the engine owns none)."""

    __slots__ = ("cwnd", "ssthresh")

    def __init__(self, mss: int, initial_window: int) -> None:
        # RFC 6928: IW = min(10*MSS, max(2*MSS, 14600)) for 10 segments.
        self.cwnd = min(initial_window * mss, max(2 * mss, 14600)) if initial_window == 10 \
            else initial_window * mss
        self.ssthresh = 1 << 30          # RFC 5681 3.1: arbitrarily high, so we start in slow start

    def on_ack(self, acked: int, mss: int, now: float = 0.0, srtt: float | None = None) -> None:
        """``acked`` new bytes acknowledged outside recovery, at time ``now``; ``srtt`` is the
        smoothed RTT in seconds (None before the first sample). Time-based algorithms need both;
        the defaults serve those that count bytes only."""

    def on_enter_recovery(self, flight: int, mss: int) -> None:
        """Fast retransmit: a congestion event with ``flight`` bytes outstanding."""

    def on_dupack_in_recovery(self, mss: int) -> None:
        """A further duplicate ACK during non-SACK fast recovery (RFC 6582 3.2 step 4)."""

    def on_partial_ack(self, acked: int, mss: int) -> None:
        """A partial ACK during non-SACK fast recovery (RFC 6582 3.2 step 5)."""

    def on_exit_recovery(self, flight: int, mss: int) -> None:
        """The recovery point was acknowledged with ``flight`` bytes still outstanding."""

    def on_timeout(self, flight: int, mss: int) -> None:
        """The retransmission timer expired with ``flight`` bytes outstanding."""

    def on_undo(self) -> None:
        """The connection has just restored cwnd and ssthresh from before the last fast recovery,
        found spurious (RFC 4015 3.2): put back whatever else the algorithm changed then."""


from .newreno import NewReno  # noqa: E402  (the algorithms subclass the interface above)
from .cubic import Cubic  # noqa: E402

ALGORITHMS: dict[str, type[CongestionControl]] = {"newreno": NewReno, "cubic": Cubic}


def make(name: str, mss: int, initial_window: int) -> CongestionControl:
    """A fresh instance of the algorithm called ``name`` (a key of ``ALGORITHMS``)."""
    try:
        algorithm = ALGORITHMS[name]
    except KeyError:
        raise ValueError(f"unknown congestion control {name!r} "
                         f"(one of {', '.join(ALGORITHMS)})") from None
    return algorithm(mss, initial_window)


__all__ = ["ALGORITHMS", "CongestionControl", "Cubic", "NewReno", "make"]

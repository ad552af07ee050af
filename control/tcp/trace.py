"""Per-connection congestion traces: what the sender's state was after each ACK that changed it.

A :class:`ConnTrace` is attached to a :class:`~p4mtcp.control.tcp.connection.Connection` by the
application (``conn.trace = ConnTrace()``); the engine then calls :meth:`ConnTrace.sample` at the
end of ACK processing and after a retransmission timeout. With no trace attached (the default)
the engine pays one ``is None`` test per ACK.

A sample is kept only when something other than the time changed, and at most ``limit`` are
kept (the oldest go first; ``dropped`` counts them), so a long transfer cannot exhaust memory.
Sans-IO like the engine: times are the ``now`` the engine was given; :meth:`jsonl` yields the
text lines of the file format, which apps write (``p4mtcp perf client --trace FILE``).

File format (JSON lines): a header object ``{"p4mtcp_trace": 1, "local": "ip:port", "remote":
"ip:port", "fields": [...], "dropped": n}``, then one object per sample with these fields:

==============  ==================================================================
t               seconds since the first sample
event           ``ack``, ``rto``, ``recovery_start`` or ``recovery_end`` (this ACK
                started / ended a fast-recovery episode)
state           TCP state name
cwnd            congestion window, bytes
ssthresh        slow-start threshold, bytes (null while still "infinite")
in_flight       bytes sent and not cumulatively acknowledged (SND.MAX - SND.UNA)
srtt, rttvar    smoothed RTT and its variation, seconds (null before the first sample)
rto             retransmission timeout, seconds
delivered       bytes cumulatively acknowledged so far
retransmits     segments retransmitted so far
==============  ==================================================================
"""

from __future__ import annotations

import json
import socket
from collections import deque
from collections.abc import Iterator
from typing import Any, NamedTuple

DEFAULT_LIMIT = 200_000
_INFINITE_SSTHRESH = 1 << 29     # congestion modules start ssthresh "arbitrarily high"


class SenderState(NamedTuple):
    """A connection's sender as ``p4mtcp ss`` and the traces show it."""

    state: str
    cwnd: int
    ssthresh: int | None
    in_flight: int
    srtt: float | None
    rttvar: float | None
    rto: float
    delivered: int
    retransmits: int


def sender_state(conn: Any) -> SenderState:
    """``conn``'s sender state now (public attributes of the Connection only)."""
    cc, rtt = conn.cc, conn.rtt
    srtt = rtt.srtt
    return SenderState(conn.state.name, cc.cwnd,
                       cc.ssthresh if cc.ssthresh < _INFINITE_SSTHRESH else None,
                       conn.snd_max - conn.una, srtt, rtt.rttvar if srtt is not None else None,
                       rtt.rto, _delivered(conn), conn.retransmits)


class Sample(NamedTuple):
    """One trace record: seconds since the first sample, what happened, the sender then."""

    t: float
    event: str
    sender: SenderState


FIELDS = ["t", "event", *SenderState._fields]
"""A sample's fields in the file (the sender's are flattened into it)."""


class ConnTrace:
    """The samples of one connection, bounded by ``limit``."""

    __slots__ = ("samples", "dropped", "local", "remote", "_last", "_t0", "_recovering")

    def __init__(self, limit: int = DEFAULT_LIMIT):
        if limit < 1:
            raise ValueError(f"trace limit {limit} must be >= 1")
        self.samples: deque[Sample] = deque(maxlen=limit)
        self.dropped = 0
        self.local: tuple[int, int] | None = None
        self.remote: tuple[int, int] | None = None
        self._last: SenderState | None = None
        self._t0: float | None = None
        self._recovering = False

    def sample(self, now: float, conn: Any, recovering: bool, timeout: bool = False) -> None:
        """Record ``conn``'s sender state at ``now`` if it changed. ``recovering``: the
        connection is in fast recovery after this ACK; ``timeout``: an RTO just fired."""
        values = sender_state(conn)
        if timeout:
            event = "rto"
        elif recovering != self._recovering:
            event = "recovery_start" if recovering else "recovery_end"
        elif values == self._last:
            return
        else:
            event = "ack"
        self._recovering = recovering and not timeout
        self._last = values
        if self._t0 is None:
            self._t0 = now
            self.local, self.remote = conn.local, conn.remote
        if len(self.samples) == self.samples.maxlen:
            self.dropped += 1
        self.samples.append(Sample(now - self._t0, event, values))

    def jsonl(self) -> Iterator[str]:
        """The trace file's lines (without newlines): the header, then one per sample."""
        yield json.dumps({"p4mtcp_trace": 1, "local": _addr(self.local),
                          "remote": _addr(self.remote), "fields": FIELDS,
                          "dropped": self.dropped})
        for s in self.samples:
            yield json.dumps({"t": s.t, "event": s.event, **s.sender._asdict()})


def _delivered(conn: Any) -> int:
    """Data bytes cumulatively acknowledged: SND.UNA less the SYN (offset 0) and, once it is
    acknowledged, the FIN."""
    una = conn.una
    if conn.fin_off is not None and una > conn.fin_off:
        una = conn.fin_off
    return max(una - 1, 0)


def _addr(pair: tuple[int, int] | None) -> str | None:
    if pair is None:
        return None
    return f"{socket.inet_ntoa(pair[0].to_bytes(4, 'big'))}:{pair[1]}"


def read_jsonl(lines: Iterator[str] | list[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(header, samples) of a trace file's lines; ValueError naming the line that is wrong."""
    it = iter(lines)
    try:
        header = json.loads(next(it))
    except StopIteration:
        raise ValueError("trace: empty file") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"trace line 1: not JSON ({exc})") from None
    if not isinstance(header, dict) or header.get("p4mtcp_trace") != 1:
        raise ValueError("trace line 1: not a p4mtcp trace header")
    samples = []
    for n, line in enumerate(it, start=2):
        if not line.strip():
            continue
        try:
            s = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"trace line {n}: not JSON ({exc})") from None
        if not isinstance(s, dict) or not set(FIELDS) <= set(s):
            raise ValueError(f"trace line {n}: a sample needs the fields {FIELDS}")
        samples.append(s)
    return header, samples

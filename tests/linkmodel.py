"""A deterministic simulated link between two sans-IO TCP endpoints, on a virtual clock.

Loss-recovery tests need many round trips with exactly reproducible loss, reordering and
duplication, and must not sleep.  Each direction is a serialising queue (bandwidth), a propagation
delay, and seeded random impairments; the clock jumps straight to the next event (a segment
arriving or an endpoint's timer), so a 10 MB transfer over a 10 ms link costs CPU, not waiting.
"""

from __future__ import annotations

import heapq
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

Segment = tuple[int, int, bytes]        # (src_ip, dst_ip, tcp_bytes), as TcpStack.poll returns
DropRule = Callable[[int, bytes], bool]  # (index of the segment in its direction, tcp_bytes)
Observer = Callable[[bytes, bool], None]  # (tcp_bytes, whether the link will deliver it)

_SEQ = struct.Struct("!I")


class Endpoint(Protocol):
    """The part of the TcpStack facade the link drives."""

    def receive(self, src_ip: int, dst_ip: int, tcp_bytes: bytes, now: float) -> None: ...

    def poll(self, now: float) -> list[Segment]: ...

    def next_deadline(self) -> float | None: ...


class SimulationError(AssertionError):
    """The simulation hit its virtual-time limit or iteration cap, or stalled with no event."""


@dataclass(frozen=True)
class LinkParams:
    """One direction of the link.  Probabilities are per segment."""

    delay: float = 0.010                # one-way propagation, seconds
    bandwidth: float | None = 100e6     # bits per second on the wire; None: unlimited
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0                # chance a segment is held back by reorder_delay
    reorder_delay: float = 0.002
    queue_limit: int | None = None      # bytes waiting for the wire; more is tail-dropped

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"LinkParams.{name} must be in [0, 1], got {value}")
        if self.delay < 0 or self.reorder_delay < 0:
            raise ValueError("LinkParams delays must be >= 0")
        if self.bandwidth is not None and self.bandwidth <= 0:
            raise ValueError(f"LinkParams.bandwidth must be > 0 or None, got {self.bandwidth}")


@dataclass
class DirectionStats:
    """What one direction did to the segments offered to it."""

    offered: int = 0
    lost: int = 0
    queue_dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    delivered: int = 0


#: Bytes a segment occupies on the wire besides its TCP bytes: IPv4 header + Ethernet framing.
WIRE_OVERHEAD = 20 + 38


class Direction:
    """A one-way pipe: serialise, impair, delay; segments come out in arrival-time order."""

    def __init__(self, params: LinkParams, rng: random.Random, drop: DropRule | None = None,
                 observe: Observer | None = None) -> None:
        self.params = params
        self.stats = DirectionStats()
        self._rng = rng
        self._drop = drop
        self._observe = observe
        self._wire_free = 0.0                       # when the serialiser is next idle
        self._heap: list[tuple[float, int, Segment]] = []
        self._order = 0                             # tie-breaker: FIFO among equal times

    def send(self, seg: Segment, now: float) -> None:
        """Offer one segment to the link at time now."""
        delivered = self._send(seg, now)
        if self._observe is not None:
            self._observe(seg[2], delivered)

    def _send(self, seg: Segment, now: float) -> bool:
        p = self.params
        index = self.stats.offered
        self.stats.offered += 1
        if self._drop is not None and self._drop(index, seg[2]):
            self.stats.lost += 1
            return False
        if p.loss and self._rng.random() < p.loss:
            self.stats.lost += 1
            return False
        start = max(now, self._wire_free)
        if p.bandwidth is None:
            done = start
        else:
            if p.queue_limit is not None and (start - now) * p.bandwidth / 8 > p.queue_limit:
                self.stats.queue_dropped += 1
                return False
            done = start + (len(seg[2]) + WIRE_OVERHEAD) * 8 / p.bandwidth
        self._wire_free = done
        arrival = done + p.delay
        if p.reorder and self._rng.random() < p.reorder:
            self.stats.reordered += 1
            arrival += p.reorder_delay
        self._push(arrival, seg)
        if p.duplicate and self._rng.random() < p.duplicate:
            self.stats.duplicated += 1
            self._push(arrival, seg)
        return True

    def _push(self, arrival: float, seg: Segment) -> None:
        self._order += 1
        heapq.heappush(self._heap, (arrival, self._order, seg))

    def next_arrival(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[Segment]:
        """Segments that have arrived by now, in arrival order."""
        out = []
        while self._heap and self._heap[0][0] <= now:
            out.append(heapq.heappop(self._heap)[2])
        self.stats.delivered += len(out)
        return out

    @property
    def in_flight(self) -> int:
        return len(self._heap)


@dataclass
class LinkModel:
    """Two endpoints joined by two Directions, and the virtual clock that drives them.

    Everything `a` transmits goes to `b` and vice versa.  `run` delivers due segments, calls the
    application hook, polls both endpoints, then jumps the clock to the earliest next event.
    """

    a: Endpoint
    b: Endpoint
    ab: LinkParams = field(default_factory=LinkParams)
    ba: LinkParams | None = None            # None: same as ab
    seed: int = 0
    drop_ab: DropRule | None = None
    drop_ba: DropRule | None = None
    observe_ab: Observer | None = None
    observe_ba: Observer | None = None
    now: float = 0.0
    iterations: int = 0

    def __post_init__(self) -> None:
        self.a_to_b = Direction(self.ab, random.Random(f"{self.seed}:ab"), self.drop_ab,
                                self.observe_ab)
        self.b_to_a = Direction(self.ba or self.ab, random.Random(f"{self.seed}:ba"),
                                self.drop_ba, self.observe_ba)

    def _next_event(self, wake: Callable[[], float | None] | None) -> float | None:
        times = [t for t in (self.a_to_b.next_arrival(), self.b_to_a.next_arrival(),
                             self.a.next_deadline(), self.b.next_deadline(),
                             wake() if wake is not None else None) if t is not None]
        return min(times) if times else None

    def step(self, app: Callable[[float], None] | None = None) -> None:
        """One round at the current time: deliver, let the app act, transmit."""
        now = self.now
        for src, dst, seg in self.a_to_b.pop_due(now):
            self.b.receive(src, dst, seg, now)
        for src, dst, seg in self.b_to_a.pop_due(now):
            self.a.receive(src, dst, seg, now)
        if app is not None:
            app(now)
        for seg in self.a.poll(now):
            self.a_to_b.send(seg, now)
        for seg in self.b.poll(now):
            self.b_to_a.send(seg, now)

    def run(self, done: Callable[[], bool], app: Callable[[float], None] | None = None,
            time_limit: float = 60.0, max_iterations: int = 1_000_000,
            wake: Callable[[], float | None] | None = None) -> None:
        """Step until done() holds; SimulationError past time_limit (virtual seconds from now),
        past max_iterations, or when nothing is left to happen.  `wake()` is the application's
        own next timer (e.g. a reader that reads at intervals), or None."""
        deadline = self.now + time_limit
        for _ in range(max_iterations):
            self.iterations += 1
            self.step(app)
            if done():
                return
            nxt = self._next_event(wake)
            if nxt is None:
                raise SimulationError(f"stalled at t={self.now:.6f}: no segment in flight and "
                                      "no timer pending, but the run is not done")
            self.now = max(self.now, nxt)
            if self.now > deadline:
                raise SimulationError(f"virtual time limit {time_limit} s exceeded "
                                      f"(t={self.now:.3f})")
        raise SimulationError(f"iteration cap {max_iterations} reached at t={self.now:.3f}")


# Small read-only views of a TCP segment, for drop rules and assertions.

def tcp_seq(seg: bytes) -> int:
    return _SEQ.unpack_from(seg, 4)[0]


def tcp_payload_len(seg: bytes) -> int:
    return len(seg) - (seg[12] >> 4) * 4


class DropNthData:
    """Drop rule: lose the n-th (0-based) payload-carrying segment, and each listed one, once.

    Counting transmissions (not sequence numbers) means a retransmission is never dropped."""

    def __init__(self, *nths: int) -> None:
        self._targets = frozenset(nths)
        self._count = 0
        self.dropped: list[int] = []       # sequence numbers that were lost

    def __call__(self, index: int, seg: bytes) -> bool:
        if tcp_payload_len(seg) == 0:
            return False
        hit = self._count in self._targets
        self._count += 1
        if hit:
            self.dropped.append(tcp_seq(seg))
        return hit

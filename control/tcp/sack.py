"""SACK scoreboard and the RFC 6675 loss-recovery queries, over unbounded send offsets."""

from __future__ import annotations

import bisect

from .reorder import DUP_THRESH


class Scoreboard:
    """Sorted, disjoint [start, end) ranges the peer has SACKed above SND.UNA."""

    __slots__ = ("starts", "ends")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def __bool__(self) -> bool:
        return bool(self.starts)

    def clear(self) -> None:
        self.starts.clear()
        self.ends.clear()

    @property
    def high(self) -> int:
        """One past the highest SACKed offset (RFC 6675 HighSACK + 1), or 0 when empty."""
        return self.ends[-1] if self.ends else 0

    def add(self, start: int, end: int) -> int:
        """Record one SACK block; return the lowest offset it newly covered, 0 if none (offsets
        above SND.UNA are positive)."""
        starts, ends = self.starts, self.ends
        i = bisect.bisect_left(ends, start)          # first range that ends at/after start
        j = i
        new_s, new_e = start, end
        while j < len(starts) and starts[j] <= end:
            new_s = min(new_s, starts[j])
            new_e = max(new_e, ends[j])
            j += 1
        if j == i + 1 and starts[i] <= start and end <= ends[i]:
            return 0
        low = ends[i] if j > i and starts[i] <= start else start
        starts[i:j] = [new_s]
        ends[i:j] = [new_e]
        return low

    def prune(self, una: int) -> None:
        """Drop everything below the cumulative ACK."""
        starts, ends = self.starts, self.ends
        i = bisect.bisect_right(ends, una)
        if i:
            del starts[:i], ends[:i]
        if starts and starts[0] < una:
            starts[0] = una

    def skip(self, off: int) -> int:
        """``off``, or the end of the SACKed range holding it: where go-back-N resumes."""
        i = bisect.bisect_right(self.starts, off) - 1
        return self.ends[i] if i >= 0 and off < self.ends[i] else off

    def sacked_above(self, off: int) -> tuple[int, int]:
        """(SACKed bytes, SACKed ranges) strictly above ``off``; a range holding ``off``
        counts with its part above it."""
        starts, ends = self.starts, self.ends
        i = bisect.bisect_right(ends, off)          # first range ending above off
        nbytes = sum(ends[k] - starts[k] for k in range(i, len(starts)))
        if i < len(starts) and starts[i] <= off:
            nbytes -= off + 1 - starts[i]
        return nbytes, len(starts) - i

    def is_lost(self, off: int, mss: int, dupthresh: int = DUP_THRESH) -> bool:
        """RFC 6675 IsLost: DupThresh ranges or more than (DupThresh-1)*SMSS bytes SACKed above."""
        nbytes, nranges = self.sacked_above(off)
        return nranges >= dupthresh or nbytes > (dupthresh - 1) * mss

    def pipe(self, una: int, high_data: int, high_rxt: int, mss: int,
             dupthresh: int = DUP_THRESH) -> int:
        """RFC 6675 SetPipe, per hole rather than per octet: IsLost is constant inside a hole,
        so one pass from the top keeps the SACKed bytes/ranges above each hole."""
        starts, ends = self.starts, self.ends
        n = len(starts)
        pipe = 0
        top = max(ends[-1] if n else 0, una)
        if high_data > top:
            pipe += high_data - top
            if high_rxt > top:
                pipe += min(high_data, high_rxt) - top
        limit = (dupthresh - 1) * mss
        above = 0
        for k in range(n - 1, -1, -1):
            above += ends[k] - starts[k]
            lo = max(ends[k - 1] if k else una, una)
            hi = starts[k]
            if hi > lo:
                if n - k < dupthresh and above <= limit:    # not IsLost: still in flight
                    pipe += hi - lo
                if high_rxt > lo:                           # retransmitted: counted again
                    pipe += min(hi, high_rxt) - lo
        return pipe

    def next_seg(self, una: int, high_rxt: int, mss: int, lost_only: bool,
                 dupthresh: int = DUP_THRESH) -> tuple[int, int] | None:
        """RFC 6675 NextSeg rules 1 (``lost_only``) and 3: the first un-SACKed range above
        HighRxt and below the highest SACK, one SMSS at most."""
        starts, ends = self.starts, self.ends
        n = len(starts)
        limit = (dupthresh - 1) * mss
        above = sum(ends[k] - starts[k] for k in range(n))
        prev = una
        for k in range(n):
            lo = max(prev, high_rxt)
            hi = starts[k]
            if hi > lo and (not lost_only or n - k >= dupthresh or above > limit):
                return lo, min(hi, lo + mss)
            above -= ends[k] - starts[k]
            prev = max(prev, ends[k])
        return None

    def rescue_seg(self, una: int, high_data: int, mss: int) -> tuple[int, int] | None:
        """RFC 6675 4 NextSeg rule 4: up to one SMSS ending at the highest outstanding
        un-SACKed octet (above the highest SACK, else the top of the last hole)."""
        starts, ends = self.starts, self.ends
        top = ends[-1] if ends else una
        if high_data > top:
            return max(top, una, high_data - mss), high_data
        if not starts:
            return None
        lo = max(ends[-2] if len(ends) > 1 else una, una)
        hi = starts[-1]
        return (max(lo, hi - mss), hi) if hi > lo else None

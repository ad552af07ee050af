"""SACK scoreboard and the RFC 6675 loss-recovery queries, over unbounded send offsets."""

from __future__ import annotations

import bisect

DUP_THRESH = 3   # RFC 6675 section 2 / RFC 5681 3.2


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

    def add(self, start: int, end: int) -> bool:
        """Record one SACK block; return True if it covered anything new."""
        starts, ends = self.starts, self.ends
        i = bisect.bisect_left(ends, start)          # first range that ends at/after start
        j = i
        new_s, new_e = start, end
        while j < len(starts) and starts[j] <= end:
            new_s = min(new_s, starts[j])
            new_e = max(new_e, ends[j])
            j += 1
        if j == i + 1 and starts[i] <= start and end <= ends[i]:
            return False
        starts[i:j] = [new_s]
        ends[i:j] = [new_e]
        return True

    def prune(self, una: int) -> None:
        """Drop everything below the cumulative ACK."""
        starts, ends = self.starts, self.ends
        i = bisect.bisect_right(ends, una)
        if i:
            del starts[:i], ends[:i]
        if starts and starts[0] < una:
            starts[0] = una

    def sacked_above(self, off: int) -> tuple[int, int]:
        """(SACKed bytes, SACKed ranges) strictly above ``off``."""
        i = bisect.bisect_right(self.starts, off)
        nbytes = sum(self.ends[k] - self.starts[k] for k in range(i, len(self.starts)))
        return nbytes, len(self.starts) - i

    def is_lost(self, off: int, mss: int) -> bool:
        """RFC 6675 IsLost: DupThresh ranges or more than (DupThresh-1)*SMSS bytes SACKed above."""
        nbytes, nranges = self.sacked_above(off)
        return nranges >= DUP_THRESH or nbytes > (DUP_THRESH - 1) * mss

    def holes(self, una: int) -> list[tuple[int, int]]:
        """Un-SACKed gaps between ``una`` and the highest SACKed byte."""
        out = []
        prev = una
        for s, e in zip(self.starts, self.ends):
            if s > prev:
                out.append((prev, s))
            prev = max(prev, e)
        return out

    def pipe(self, una: int, high_data: int, high_rxt: int, mss: int) -> int:
        """RFC 6675 SetPipe, computed per hole rather than per octet (IsLost is constant in a hole)."""
        pipe = 0
        for s, e in self.holes(una):
            if not self.is_lost(s, mss):
                pipe += e - s
            if high_rxt > s:
                pipe += min(e, high_rxt) - s
        top = max(self.high, una)
        if high_data > top:
            pipe += high_data - top
            if high_rxt > top:
                pipe += min(high_data, high_rxt) - top
        return pipe

    def next_seg(self, una: int, high_rxt: int, mss: int, lost_only: bool) -> tuple[int, int] | None:
        """RFC 6675 NextSeg rules 1 and 3: the first un-SACKed range above HighRxt to resend."""
        for s, e in self.holes(una):
            if e <= high_rxt:
                continue
            s = max(s, high_rxt)
            if not lost_only or self.is_lost(s, mss):
                return s, min(e, s + mss)
        return None

"""Sequence-number arithmetic modulo 2**32 (RFC 9293 section 3.4).

The engine keeps its own positions as unbounded integers (offsets from ISS/IRS) so that buffers
never see wrap-around; these helpers convert at the wire edge.
"""

from __future__ import annotations

MASK = 0xFFFFFFFF
HALF = 0x80000000


def seq_diff(a: int, b: int) -> int:
    """Signed distance a - b in sequence space, in [-2**31, 2**31)."""
    d = (a - b) & MASK
    return d - 0x100000000 if d >= HALF else d


def seq_lt(a: int, b: int) -> bool:
    return ((a - b) & MASK) >= HALF

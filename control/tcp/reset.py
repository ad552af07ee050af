"""The reset that answers a segment no connection can take (RFC 9293 3.10.7.1), as a function
of that segment alone: the same rule serves CLOSED ports, LISTEN, and an unacceptable ACK in
SYN-SENT or SYN-RECEIVED (3.10.7.3, 3.10.7.4)."""

from __future__ import annotations

from .seq import MASK
from .wire import ACK, FIN, RST, SYN, Segment


def reset_for(seg: Segment) -> tuple[int, int, int]:
    """(SEQ, ACK, flags) of the RST answering ``seg`` (never itself a RST: a RST is not answered).

    With an ACK: <SEQ=SEG.ACK><CTL=RST>. Without: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>,
    SEG.LEN counting SYN and FIN."""
    flags = seg.flags
    if flags & ACK:
        return seg.ack, 0, RST
    seg_len = len(seg.payload) + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
    return 0, (seg.seq + seg_len) & MASK, RST | ACK

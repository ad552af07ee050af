"""Stateless SYN cookies for when a listener's SYN backlog is full.

Cookie (our ISN) layout: 5-bit time counter (64 s ticks) | 3-bit MSS index | 24-bit keyed MAC
over the 4-tuple, the peer's ISN, the counter and the index. A cookie is valid for the current
and the previous tick. Window scaling, SACK and timestamps are not encoded: the SYN-ACK of a
cookie connection offers only MSS, so the peer never uses them (RFC 7323 / RFC 2018 need both
sides to offer them).
"""

from __future__ import annotations

import hashlib
import struct

MSS_TABLE = (536, 1024, 1220, 1360, 1440, 1460, 4312, 8960)
_TICK = 64.0
_FIELDS = struct.Struct("!IHIHIBB")


def _mac(secret: bytes, key: tuple[int, int, int, int], peer_isn: int, tick: int, idx: int) -> int:
    data = _FIELDS.pack(key[0], key[1], key[2], key[3], peer_isn, tick, idx)
    return int.from_bytes(hashlib.blake2s(data, key=secret[:32], digest_size=3).digest(), "big")


def make_cookie(secret: bytes, key: tuple[int, int, int, int], peer_isn: int, mss: int,
                now: float) -> tuple[int, int]:
    """Return (cookie ISN, the MSS it encodes: the largest table entry <= ``mss``)."""
    idx = 0
    for i, m in enumerate(MSS_TABLE):
        if m <= mss:
            idx = i
    tick = int(now // _TICK) & 31
    return (tick << 27) | (idx << 24) | _mac(secret, key, peer_isn, tick, idx), MSS_TABLE[idx]


def check_cookie(secret: bytes, key: tuple[int, int, int, int], peer_isn: int, cookie: int,
                 now: float) -> int | None:
    """The MSS encoded in ``cookie`` if it is authentic and fresh, else None."""
    tick = cookie >> 27
    idx = (cookie >> 24) & 7
    if (int(now // _TICK) - tick) & 31 > 1:
        return None
    if _mac(secret, key, peer_isn, tick, idx) != cookie & 0xFFFFFF:
        return None
    return MSS_TABLE[idx]

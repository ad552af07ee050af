"""Initial sequence numbers (RFC 6528): ISN = M + F(localip, localport, remoteip, remoteport, key)."""

from __future__ import annotations

import hashlib
import struct

_TUPLE = struct.Struct("!IHIH")


def initial_seq(secret: bytes, local_ip: int, local_port: int, remote_ip: int, remote_port: int,
                now: float) -> int:
    """M is a 4-microsecond clock derived from ``now`` (RFC 6528 section 3); F is keyed BLAKE2s."""
    f = hashlib.blake2s(_TUPLE.pack(local_ip, local_port, remote_ip, remote_port),
                        key=secret[:32], digest_size=4).digest()
    return (int(now * 250_000) + int.from_bytes(f, "big")) & 0xFFFFFFFF

"""Ethernet/IPv4 framing of TCP segments for a core port.

The TCP engine speaks ``(src_ip, dst_ip, tcp_bytes)``; a core port carries Ethernet frames. This
module is the edge between the two: it wraps outgoing segments in Ethernet + IPv4 headers and
validates incoming frames once, handing the engine a zero-copy view of the TCP bytes.

MAC addresses are left zero: the NIC's ``ipv4_lpm``/``neighbor``/``port_mac`` tables fill them
in (docs/ARCHITECTURE.md). With checksum offload the IPv4 checksum is left zero for the NIC too;
without it the header checksum is computed here and verified on receive.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from p4mtcp.hashing import csum16, ones_sum

ETHERTYPE_IPV4 = 0x0800
IPPROTO_TCP = 6
IPPROTO_ICMP = 1
ETH_LEN = 14
IPV4_LEN = 20
TTL = 64
_FLAG_DF = 0x4000
_FRAG_MASK = 0x3FFF  # MF flag + fragment offset

# Ethernet (dst, src, type) followed by a 20-byte IPv4 header, packed in one call.
_ETH_IPV4 = struct.Struct("!6s6sHBBHHHBBHII")
_ETHERTYPE = struct.Struct("!H")
_IPV4 = struct.Struct("!BBHHHBBHII")
_ZERO_MAC = bytes(6)

Segment = tuple[int, int, memoryview]
"""(src_ip, dst_ip, tcp_bytes) as the TCP engine's ``receive`` takes it."""


@dataclass
class RxDrops:
    """Frames refused on receive, by reason (mTCP counts these as drops in its statistics)."""

    short: int = 0  # shorter than Ethernet + minimal IPv4 header
    not_ipv4: int = 0  # other EtherType (ARP is the NIC's business)
    bad_header: int = 0  # IPv4 version/IHL/total length inconsistent with the frame
    bad_checksum: int = 0  # IPv4 header checksum wrong (only checked without offload)
    fragment: int = 0  # IPv4 fragments: the stack does not reassemble (DF is always set)
    not_tcp: int = 0  # other IP protocol

    def total(self) -> int:
        return (self.short + self.not_ipv4 + self.bad_header + self.bad_checksum
                + self.fragment + self.not_tcp)


@dataclass
class NetIf:
    """Frames TCP segments for one core port; counts what it refuses."""

    offload_checksum: bool = True
    drops: RxDrops = field(default_factory=RxDrops)
    _ip_id: int = 0
    icmp: list[Segment] = field(default_factory=list)
    """(src_ip, dst_ip, ICMP message) received, for the stack's ``receive_icmp``: the NIC agent
    forwards fragmentation-needed messages to the core owning the flow (RFC 1191)."""

    def encode(self, src_ip: int, dst_ip: int, tcp_bytes: bytes) -> bytes:
        """One Ethernet frame carrying ``tcp_bytes`` from ``src_ip`` to ``dst_ip``."""
        self._ip_id = (self._ip_id + 1) & 0xFFFF
        total = IPV4_LEN + len(tcp_bytes)
        header = _ETH_IPV4.pack(_ZERO_MAC, _ZERO_MAC, ETHERTYPE_IPV4, 0x45, 0, total,
                                self._ip_id, _FLAG_DF, TTL, IPPROTO_TCP, 0, src_ip, dst_ip)
        if not self.offload_checksum:
            hdr = bytearray(header)
            struct.pack_into("!H", hdr, ETH_LEN + 10, csum16(memoryview(hdr)[ETH_LEN:]))
            header = bytes(hdr)
        return header + tcp_bytes

    def encode_batch(self, segments: Iterable[tuple[int, int, bytes]]) -> list[bytes]:
        """``encode`` for a loop step's segments; with offload (the NIC fills the IPv4
        checksum) one pack and one concatenation per frame, without a call each."""
        if not self.offload_checksum:
            encode = self.encode
            return [encode(s, d, t) for s, d, t in segments]
        pack = _ETH_IPV4.pack
        ip_id = self._ip_id
        out = []
        for src, dst, tcp in segments:
            ip_id = (ip_id + 1) & 0xFFFF
            out.append(pack(_ZERO_MAC, _ZERO_MAC, ETHERTYPE_IPV4, 0x45, 0, IPV4_LEN + len(tcp),
                            ip_id, _FLAG_DF, TTL, IPPROTO_TCP, 0, src, dst) + tcp)
        self._ip_id = ip_id
        return out

    def decode(self, frame: bytes) -> Segment | None:
        """``(src_ip, dst_ip, tcp view)`` or None (and a drop counted) when not IPv4/TCP for us."""
        n = len(frame)
        if n < ETH_LEN + IPV4_LEN:
            self.drops.short += 1
            return None
        mv = memoryview(frame)
        if _ETHERTYPE.unpack_from(mv, 12)[0] != ETHERTYPE_IPV4:
            self.drops.not_ipv4 += 1
            return None
        vihl, _tos, total, _id, frag, _ttl, proto, _csum, src, dst = _IPV4.unpack_from(mv, ETH_LEN)
        ihl = (vihl & 0x0F) * 4
        # RFC 791: version 4, IHL >= 5 words, total length covers the header and fits the frame
        # (anything beyond total length is Ethernet padding and is cut off).
        if vihl >> 4 != 4 or ihl < IPV4_LEN or total < ihl or ETH_LEN + total > n:
            self.drops.bad_header += 1
            return None
        if not self.offload_checksum and ones_sum(mv[ETH_LEN:ETH_LEN + ihl]) != 0xFFFF:
            self.drops.bad_checksum += 1
            return None
        if frag & _FRAG_MASK:
            self.drops.fragment += 1
            return None
        if proto != IPPROTO_TCP:
            if proto == IPPROTO_ICMP:
                self.icmp.append((src, dst, mv[ETH_LEN + ihl:ETH_LEN + total]))
            else:
                self.drops.not_tcp += 1
            return None
        return src, dst, mv[ETH_LEN + ihl:ETH_LEN + total]

    def take_icmp(self) -> list[Segment]:
        """The ICMP messages received since the last call (drained)."""
        icmp, self.icmp = self.icmp, []
        return icmp

    def decode_batch(self, frames: Iterable[bytes]) -> list[Segment]:
        decode = self.decode
        return [seg for seg in map(decode, frames) if seg is not None]

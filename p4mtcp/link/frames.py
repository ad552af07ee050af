"""Frame fix-ups at the AF_PACKET edge: undo what the kernel did to a frame before the pipeline
sees it, so that it sees the frame as it was on the wire (as BMv2 does through libpcap)."""

from __future__ import annotations

import struct

from p4mtcp.hashing import ones_sum

ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8      # the outer (service) tag of QinQ
ETH_HLEN = 14
VLAN_HLEN = 4
_U16 = struct.Struct("!H")
_TAG = struct.Struct("!HH")


def finish_checksum(frame: bytes) -> bytes:
    """The frame with its IPv4 TCP checksum computed in full (RFC 9293 3.1: pseudo-header,
    header, options and data). A frame that is not IPv4/TCP, or too short, comes back unchanged:
    the pipeline drops and counts malformed frames itself. A local kernel peer on a veth leaves
    the checksum to the device (CHECKSUM_PARTIAL, TP_STATUS_CSUMNOTREADY)."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
        return frame
    ihl = (frame[14] & 0xF) * 4
    total = _U16.unpack_from(frame, 16)[0]
    l4 = 14 + ihl
    end = 14 + total
    if ihl < 20 or end > len(frame) or end - l4 < 20:
        return frame
    buf = bytearray(frame)
    buf[l4 + 16:l4 + 18] = b"\0\0"
    mv = memoryview(buf)
    pseudo = ones_sum(mv[26:34], 6 + (end - l4))
    _U16.pack_into(buf, l4 + 16, ~ones_sum(mv[l4:end], pseudo) & 0xFFFF)
    return bytes(buf)


def insert_vlan(frame: bytes, tpid: int, tci: int) -> bytes:
    """The frame with the VLAN tag the kernel moved into packet metadata put back after the
    MAC addresses (IEEE 802.1Q 9.3: TPID then TCI, before the original EtherType). tpid 0
    means the kernel did not say (no TP_STATUS_VLAN_TPID_VALID): 802.1Q."""
    return frame[:12] + _TAG.pack(tpid or ETH_P_8021Q, tci) + frame[12:]

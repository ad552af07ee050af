"""TCP segment codec: header and options parsed from / built into bytes (RFC 9293 3.1, RFC 7323,
RFC 2018). Parsing validates lengths once and never raises: malformed input yields an error string.
"""

from __future__ import annotations

import struct

from p4mtcp.hashing import ones_sum

HEADER = struct.Struct("!HHIIBBHHH")
_U16 = struct.Struct("!H")
_U32X2 = struct.Struct("!II")
TS_OPTION = struct.Struct("!HBBII")  # NOP NOP kind=8 len=10 val ecr: every data segment's option
HEADER_TS = struct.Struct("!HHIIBBHHHHBBII")   # HEADER + TS_OPTION: a data segment's 32 bytes
_NOP_NOP = 0x0101

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
BAD_CHECKSUM = "bad TCP checksum"
OPT_EOL, OPT_NOP, OPT_MSS, OPT_WS, OPT_SACK_OK, OPT_SACK, OPT_TS = 0, 1, 2, 3, 4, 5, 8
_OPT_LEN = {OPT_MSS: 4, OPT_WS: 3, OPT_SACK_OK: 2, OPT_TS: 10}


class Segment:
    """A parsed segment. ``payload`` is a memoryview into the received buffer (no copy)."""

    __slots__ = ("sport", "dport", "seq", "ack", "flags", "window", "urp", "payload",
                 "mss", "wscale", "sack_ok", "sack", "tsval", "tsecr")

    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    window: int
    urp: int
    payload: memoryview

    def __init__(self) -> None:
        self.mss: int | None = None
        self.wscale: int | None = None
        self.sack_ok = False
        self.sack: list[tuple[int, int]] | None = None
        self.tsval: int | None = None
        self.tsecr = 0


def pseudo_sum(src_ip: int, dst_ip: int, tcp_len: int) -> int:
    """Unfolded one's-complement sum of the IPv4 pseudo-header (RFC 9293 3.1)."""
    return (src_ip >> 16) + (src_ip & 0xFFFF) + (dst_ip >> 16) + (dst_ip & 0xFFFF) + 6 + tcp_len


def parse(data: bytes | bytearray | memoryview, src_ip: int, dst_ip: int,
          verify_checksum: bool) -> Segment | str:
    """Parse one TCP segment; on malformed input return a short reason instead of raising."""
    mv = memoryview(data)
    n = len(mv)
    if n < 20:
        return f"segment of {n} bytes is shorter than the 20-byte TCP header"
    sport, dport, seq, ack, off, flags, window, _csum, urp = HEADER.unpack_from(mv)
    hlen = (off >> 4) << 2
    if hlen < 20 or hlen > n:
        return f"data offset {hlen} outside 20..{n}"
    if verify_checksum and ones_sum(mv, pseudo_sum(src_ip, dst_ip, n)) != 0xFFFF:
        return BAD_CHECKSUM
    seg = Segment()
    seg.sport = sport
    seg.dport = dport
    seg.seq = seq
    seg.ack = ack
    seg.flags = flags
    seg.window = window
    seg.urp = urp
    seg.payload = mv[hlen:]
    if hlen == 32:                                 # timestamps alone: the common data segment
        nops, kind, size, tsval, tsecr = TS_OPTION.unpack_from(mv, 20)
        if nops == _NOP_NOP and kind == OPT_TS and size == 10:
            seg.tsval = tsval
            seg.tsecr = tsecr
            return seg
    if hlen > 20:
        err = _parse_options(mv, hlen, seg)
        if err:
            return err
    return seg


def _parse_options(mv: memoryview, hlen: int, seg: Segment) -> str | None:
    """Fill option fields; unknown kinds are skipped by their length (RFC 9293 3.2, MUST-68)."""
    i = 20
    while i < hlen:
        kind = mv[i]
        if kind == OPT_EOL:
            break
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= hlen:
            return f"option kind {kind} at offset {i} has no length byte"
        olen = mv[i + 1]
        if olen < 2 or i + olen > hlen:
            return f"option kind {kind} at offset {i} has bad length {olen}"
        want = _OPT_LEN.get(kind)
        if want is not None and olen != want:
            return f"option kind {kind} at offset {i} has length {olen}, expected {want}"
        if kind == OPT_MSS:
            seg.mss = _U16.unpack_from(mv, i + 2)[0]
        elif kind == OPT_WS:
            seg.wscale = min(mv[i + 2], 14)       # RFC 7323 2.3: clamp shifts above 14
        elif kind == OPT_SACK_OK:
            seg.sack_ok = True
        elif kind == OPT_TS:
            seg.tsval, seg.tsecr = _U32X2.unpack_from(mv, i + 2)
        elif kind == OPT_SACK:
            if (olen - 2) % 8 or olen == 2:
                return f"SACK option at offset {i} has bad length {olen}"
            seg.sack = [_U32X2.unpack_from(mv, j) for j in range(i + 2, i + olen, 8)]
        i += olen
    return None


def syn_options(mss: int, wscale: int | None, sack_ok: bool, ts: tuple[int, int] | None) -> bytes:
    """Options for a SYN or SYN-ACK, laid out like Linux (MSS, SACK-permitted+TS, NOP+WS)."""
    out = bytearray(struct.pack("!BBH", OPT_MSS, 4, mss))
    if sack_ok and ts is not None:
        out += struct.pack("!BBBBII", OPT_SACK_OK, 2, OPT_TS, 10, ts[0], ts[1])
    elif ts is not None:
        out += struct.pack("!BBBBII", OPT_NOP, OPT_NOP, OPT_TS, 10, ts[0], ts[1])
    elif sack_ok:
        out += bytes((OPT_NOP, OPT_NOP, OPT_SACK_OK, 2))
    if wscale is not None:
        out += bytes((OPT_NOP, OPT_WS, 3, wscale))
    return bytes(out)


def data_options(ts: tuple[int, int] | None, sack: list[tuple[int, int]] | None) -> bytes:
    """Options for a non-SYN segment: NOP NOP TS, then NOP NOP SACK blocks (RFC 7323, 2018)."""
    out = b""
    if ts is not None:
        out = TS_OPTION.pack(_NOP_NOP, OPT_TS, 10, ts[0], ts[1])
    if sack:
        out += struct.pack(f"!BBBB{2 * len(sack)}I", OPT_NOP, OPT_NOP, OPT_SACK, 2 + 8 * len(sack),
                           *[x for block in sack for x in block])
    return out


def build(src_ip: int, dst_ip: int, sport: int, dport: int, seq: int, ack: int, flags: int,
          window: int, options: bytes = b"", payload: bytes | memoryview = b"",
          checksum: bool = True) -> bytes:
    """Serialise a segment; the checksum is computed when ``checksum`` (else left zero for the NIC)."""
    hlen = 20 + len(options)
    if not checksum:                               # the NIC fills the checksum: one join, no copy
        return b"".join((HEADER.pack(sport, dport, seq, ack, hlen << 2, flags, window, 0, 0),
                         options, payload))
    hdr = bytearray(hlen)
    HEADER.pack_into(hdr, 0, sport, dport, seq, ack, hlen << 2, flags, window, 0, 0)
    if options:
        hdr[20:] = options
    s = ones_sum(hdr, pseudo_sum(src_ip, dst_ip, hlen + len(payload)))
    if payload:
        s = ones_sum(payload, s)
    _U16.pack_into(hdr, 16, ~s & 0xFFFF)
    return b"".join((hdr, payload)) if payload else bytes(hdr)


def build_run(src_ip: int, dst_ip: int, sport: int, dport: int, seq: int, ack: int, window: int,
              ts: tuple[int, int] | None, payload: memoryview, mss: int,
              checksum: bool = True) -> list[bytes]:
    """Consecutive ACK segments carrying ``payload`` in ``mss``-byte pieces from ``seq`` on, with
    the same ACK, window and timestamps (one output call's burst of full segments): one
    precompiled header pack and one concatenation per segment, the payload sliced from one view."""
    n = len(payload)
    if checksum or ts is None:
        opts = b"" if ts is None else TS_OPTION.pack(_NOP_NOP, OPT_TS, 10, ts[0], ts[1])
        return [build(src_ip, dst_ip, sport, dport, (seq + i) & 0xFFFFFFFF, ack, ACK, window,
                      opts, payload[i:i + mss], checksum) for i in range(0, n, mss)]
    pack = HEADER_TS.pack
    tsval, tsecr = ts
    return [pack(sport, dport, (seq + i) & 0xFFFFFFFF, ack, 0x80, ACK, window, 0, 0, _NOP_NOP,
                 OPT_TS, 10, tsval, tsecr) + payload[i:i + mss] for i in range(0, n, mss)]

"""Segment codec: options (RFC 9293 3.2 MUST-4..7, 64, 68, 69; RFC 7323; RFC 2018) and checksums
(MUST-2, MUST-3), checked against scapy."""

from __future__ import annotations

import struct

import pytest
from scapy.layers.inet import IP, TCP

from p4mtcp.control.tcp import wire
from test_tcp_support import ENGINE_IP, ENGINE_IP_S, PEER_IP, PEER_IP_S, Peer, flags, tcp_bytes


def _raw_with_options(opt_bytes: bytes, payload: bytes = b"") -> bytes:
    opt_bytes += b"\x00" * (-len(opt_bytes) % 4)
    hlen = 20 + len(opt_bytes)
    hdr = struct.pack("!HHIIBBHHH", 1, 2, 3, 4, (hlen // 4) << 4, 0x10, 5, 0, 0)
    return hdr + opt_bytes + payload


def test_parse_all_known_options_from_scapy():
    seg = tcp_bytes("S", 7, sport=1, dport=2, options=[
        ("MSS", 1400), ("NOP", None), ("WScale", 9), ("SAckOK", b""),
        ("Timestamp", (111, 222)), ("NOP", None), ("NOP", None), ("EOL", None)])
    s = wire.parse(seg, PEER_IP, ENGINE_IP, True)
    assert not isinstance(s, str)
    assert (s.mss, s.wscale, s.sack_ok, s.tsval, s.tsecr) == (1400, 9, True, 111, 222)
    assert s.seq == 7 and s.flags == wire.SYN


def test_parse_sack_blocks():
    seg = tcp_bytes("A", 1, 2, sport=1, dport=2, options=[
        ("NOP", None), ("NOP", None), ("SAck", (100, 200, 300, 400))])
    s = wire.parse(seg, PEER_IP, ENGINE_IP, True)
    assert s.sack == [(100, 200), (300, 400)]


def test_wscale_above_14_is_clamped():
    """RFC 7323 2.3: a shift above 14 is treated as 14."""
    s = wire.parse(_raw_with_options(bytes((3, 3, 20, 0))), 0, 0, False)
    assert s.wscale == 14


def test_unknown_option_skipped_by_length():
    """MUST-6, MUST-68: an unknown kind with a length is skipped and later options still parse."""
    s = wire.parse(_raw_with_options(bytes((99, 6, 1, 2, 3, 4)) + bytes((2, 4, 5, 0xB4))), 0, 0, False)
    assert not isinstance(s, str) and s.mss == 1460


def test_options_parsed_without_word_alignment():
    """MUST-64: an MSS option starting at an odd offset."""
    s = wire.parse(_raw_with_options(bytes((1, 2, 4, 2, 0x18, 0, 0, 0))), 0, 0, False)
    assert s.mss == 0x218


@pytest.mark.parametrize("opt, why", [
    (bytes((2, 0, 0, 0)), "length 0"),
    (bytes((2, 1, 0, 0)), "length 1"),
    (bytes((2, 3, 5, 0)), "MSS with length 3"),
    (bytes((8, 40, 0, 0)), "length past the header"),
    (bytes((1, 1, 1, 2)), "kind without a length byte"),
    (bytes((5, 2, 0, 0)), "empty SACK"),
    (bytes((5, 7, 0, 0, 0, 0, 0, 0)), "SACK not a multiple of 8"),
    (bytes((3, 4, 0, 0)), "window scale with length 4"),
])
def test_malformed_options_rejected_with_reason(opt, why):
    """MUST-7: illegal option lengths are rejected, reported as a string, never raised."""
    result = wire.parse(_raw_with_options(opt), 0, 0, False)
    assert isinstance(result, str) and "option" in result, why


@pytest.mark.parametrize("data", [b"", b"\x00" * 19, _raw_with_options(b"")[:12] + bytes((0x40,)) + b"\x00" * 7,
                                  _raw_with_options(b"")[:12] + bytes((0xF0,)) + b"\x00" * 7])
def test_short_or_bad_offset_rejected(data):
    assert isinstance(wire.parse(data, 0, 0, False), str)


def test_built_checksum_matches_scapy():
    """MUST-2: the sender computes the checksum over the pseudo-header."""
    built = wire.build(ENGINE_IP, PEER_IP, 80, 40000, 123, 456, wire.ACK | wire.PSH, 1000,
                       wire.data_options((5, 6), None), b"hello world")
    pkt = IP(src=ENGINE_IP_S, dst=PEER_IP_S, proto=6) / TCP(built)
    got = pkt[TCP].chksum
    del pkt[TCP].chksum
    assert IP(bytes(pkt))[TCP].chksum == got
    assert bytes(pkt[TCP].payload) == b"hello world"


def test_offloaded_checksum_is_zero():
    built = wire.build(ENGINE_IP, PEER_IP, 80, 40000, 1, 2, wire.ACK, 1000, b"", b"x", checksum=False)
    assert TCP(built).chksum == 0


def test_syn_options_padded_to_words():
    """MUST-69: options are padded so the header ends on a 32-bit boundary."""
    for ws in (None, 7):
        for sack in (False, True):
            for ts in (None, (1, 0)):
                opts = wire.syn_options(1460, ws, sack, ts)
                assert len(opts) % 4 == 0
                parsed = TCP(wire.build(1, 2, 3, 4, 0, 0, wire.SYN, 0, opts))
                names = {k for k, _ in parsed.options}
                assert ("WScale" in names) == (ws is not None)
                assert ("SAckOK" in names) == sack
                assert ("Timestamp" in names) == (ts is not None)


def test_receiver_drops_bad_checksum():
    """MUST-3: a corrupted segment is dropped (no RST, no state) and counted."""
    p = Peer()
    p.stack.listen(0, 80, 4)
    seg = bytearray(tcp_bytes("S", 1, sport=40000, dport=80, options=[("MSS", 1460)]))
    seg[16] ^= 0xFF
    p.stack.receive(PEER_IP, ENGINE_IP, bytes(seg), p.now)
    p.none()
    assert p.stack.stats.bad_checksums == 1 and p.stack.connections == 0


def test_offload_mode_trusts_received_checksum_and_emits_zero():
    p = Peer(offload_checksum=True)
    p.stack.listen(0, 80, 4)
    seg = bytearray(tcp_bytes("S", 1, sport=40000, dport=80, options=[("MSS", 1460)]))
    seg[16:18] = b"\x00\x00"                 # the NIC verified it; the engine must not
    p.stack.receive(PEER_IP, ENGINE_IP, bytes(seg), p.now)
    synack = p.one()
    assert flags(synack) == "SA" and synack.chksum == 0


def test_malformed_segment_counted_not_raised():
    """MUST-7, MUST-47: a SYN whose checksum is right but whose MSS option has length 1 gets
    past checksum verification to the option parser; it is dropped and counted as malformed,
    with the reason kept, and nothing is raised or sent."""
    p = Peer()                                  # checksums are verified (no NIC offload)
    p.stack.listen(ENGINE_IP, 80, 4)
    seg = wire.build(PEER_IP, ENGINE_IP, 40000, 80, 1, 0, wire.SYN, 1000, bytes((2, 1, 0, 0)))
    p.stack.receive(PEER_IP, ENGINE_IP, seg, p.now)
    assert (p.stack.stats.bad_segments, p.stack.stats.bad_checksums) == (1, 0)
    assert p.stack.last_error.startswith("option kind 2 at offset 20 has bad length 1")
    p.none()
    assert p.stack.connections == 0


def test_truncated_segment_counted_not_raised():
    """MUST-47: two bytes are no TCP header: counted as malformed, the reason says so."""
    p = Peer()
    p.stack.receive(PEER_IP, ENGINE_IP, b"\x01\x02", p.now)
    assert (p.stack.stats.bad_segments, p.stack.stats.bad_checksums) == (1, 0)
    assert "shorter than the 20-byte TCP header" in p.stack.last_error
    p.none()


@pytest.mark.parametrize("ts, blocks",
                         [(None, n) for n in range(5)] + [((5, 6), n) for n in range(4)])
def test_data_options_padded_to_words(ts, blocks):
    """MUST-69 on non-SYN segments: timestamps and 1-4 SACK blocks (3 beside timestamps, the
    40-byte limit) end the header on a 32-bit boundary, so the data starts where the offset says."""
    sack = [(1000 * i, 1000 * i + 500) for i in range(1, blocks + 1)]
    options = wire.data_options(ts, sack or None)
    assert len(options) % 4 == 0 and len(options) <= 40
    raw = wire.build(ENGINE_IP, PEER_IP, 80, 40000, 1, 2, wire.ACK, 1000, options, b"payload")
    seg = TCP(raw)
    assert seg.dataofs * 4 == len(raw) - 7 and seg.reserved == 0
    assert bytes(seg.payload) == b"payload"
    got = {k: v for k, v in seg.options if k not in ("NOP", "EOL")}
    assert got.get("Timestamp") == ts
    assert got.get("SAck", ()) == tuple(x for block in sack for x in block)


def test_engine_data_and_sack_acks_end_on_word_boundaries():
    """MUST-69 on what the engine sends after a handshake with timestamps and SACK: data
    segments, and ACKs carrying timestamps beside one to three SACK blocks."""
    p = Peer()
    conn, synack = p.accept(syn_options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1000, 0)),
                                         ("NOP", None), ("WScale", 7)])
    iss = synack.seq + 1
    ts = [("NOP", None), ("NOP", None), ("Timestamp", (1001, dict(synack.options)["Timestamp"][0]))]
    conn.send(b"d" * 2896)
    sent, raws = p.out(), p.raw
    for hole in range(3):                       # three holes: one more SACK block per ACK
        p.send("A", 1101 + 200 * hole, iss, payload=b"x" * 100, options=ts)
        sent, raws = sent + p.out(), raws + p.raw
    assert [(len(s.payload), len(dict(s.options).get("SAck", ())) // 2) for s in sent] == [
        (1448, 0), (1448, 0), (0, 1), (0, 2), (0, 3)]
    for (_, _, raw), seg in zip(raws, sent):
        assert seg.dataofs * 4 == len(raw) - len(seg.payload) and seg.reserved == 0
        assert "Timestamp" in dict(seg.options)
    assert b"".join(bytes(s.payload) for s in sent) == b"d" * 2896


def test_payload_is_a_view_not_a_copy():
    data = bytearray(_raw_with_options(b"", b"abcdef"))
    s = wire.parse(data, 0, 0, False)
    data[20] = ord("X")
    assert bytes(s.payload) == b"Xbcdef"


@pytest.mark.parametrize("checksum", [False, True])
@pytest.mark.parametrize("ts", [(7, 8), None])
def test_build_run_is_build_segment_by_segment(checksum, ts):
    """A burst built in one run: the same bytes as one build per segment, sequence numbers
    wrapping past 2**32, each checksum verifying when computed."""
    payload = memoryview(bytes(range(256)) * 24)                   # 6144 bytes: 4 x 1536
    seq = 0xFFFFFFFF - 2000
    run = wire.build_run(PEER_IP, ENGINE_IP, 1, 2, seq, 99, 512, ts, payload, 1536, checksum)
    opts = wire.data_options(ts, None)
    one = [wire.build(PEER_IP, ENGINE_IP, 1, 2, (seq + i) & 0xFFFFFFFF, 99, wire.ACK, 512, opts,
                      payload[i:i + 1536], checksum) for i in range(0, len(payload), 1536)]
    assert run == one and len(run) == 4
    for i, seg in enumerate(run):
        s = wire.parse(seg, PEER_IP, ENGINE_IP, checksum)
        assert not isinstance(s, str)
        assert s.seq == (seq + 1536 * i) & 0xFFFFFFFF
        assert bytes(s.payload) == payload[i * 1536:(i + 1) * 1536]
        assert (s.tsval, s.tsecr) == (ts if ts else (None, 0)) and s.flags == wire.ACK

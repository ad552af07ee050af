"""Packet-in and packet-out through the program's controller headers (P4Runtime spec, Packet
I/O): the header's fields, packed MSB first, at the front of a CPU-port frame."""

from __future__ import annotations

from google.rpc import code_pb2
from p4.v1 import p4runtime_pb2 as pb

from p4mtcp.p4info import BytestringError, ControllerHeader, decode_int, encode_int

from .tables import P4Error


def header_bytes(header: ControllerHeader | None) -> int:
    """Bytes the controller header takes at the front of a CPU-port frame."""
    return (sum(f.bitwidth for f in header.fields) + 7) // 8 if header else 0


def parse_packet_in(header: ControllerHeader | None, frame: bytes) -> pb.PacketIn:
    """PacketIn for a frame the program sent to the CPU port: the packet_in header's fields as
    metadata (canonical byte strings), the rest as payload."""
    n = header_bytes(header)
    msg = pb.PacketIn(payload=frame[n:])
    if header is None:
        return msg
    total = n * 8
    value = int.from_bytes(frame[:n], "big")
    for f in header.fields:  # fields are packed MSB first, padding (if any) at the end
        total -= f.bitwidth
        msg.metadata.add(metadata_id=f.id,
                         value=encode_int((value >> total) & ((1 << f.bitwidth) - 1), f.bitwidth))
    return msg


def build_packet_out(header: ControllerHeader | None, msg: pb.PacketOut) -> bytes:
    """The frame the program receives on its CPU port: packet_out header, then the payload.
    Missing metadata are 0; unknown ones are INVALID_ARGUMENT, values too wide OUT_OF_RANGE."""
    if header is None:
        return msg.payload
    values: dict[int, int] = {}
    for md in msg.metadata:
        f = next((f for f in header.fields if f.id == md.metadata_id), None)
        if f is None:
            raise P4Error(code_pb2.INVALID_ARGUMENT,
                          f"packet_out has no metadata with id {md.metadata_id}")
        try:
            values[f.id] = decode_int(md.value, f.bitwidth)
        except BytestringError as e:  # P4Runtime spec, Bytestrings: OUT_OF_RANGE
            raise P4Error(code_pb2.OUT_OF_RANGE, f"packet_out metadata {f.name}: {e}") from None
    n = header_bytes(header)
    word = 0
    for f in header.fields:
        word = (word << f.bitwidth) | values.get(f.id, 0)
    word <<= n * 8 - sum(f.bitwidth for f in header.fields)
    return word.to_bytes(n, "big") + msg.payload

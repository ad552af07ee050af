"""BMv2-compatible hash and checksum algorithms, shared by the embedded pipeline and the control plane.

The control plane must compute exactly the hash the NIC computes (RSS-aware source-port selection),
so both import this module. Facts matched from BMv2: a field list is packed most-significant bit
first into whole bytes (the concatenation is left-aligned, zero-padded at the end); ``crc32`` is
zlib's CRC-32; ``crc16`` is CRC-16/ARC; ``csum16`` is the RFC 1071 Internet checksum; and
``hash(out, algo, base, data, max)`` yields ``base + (H % max)``.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from typing import Final


_FROM_BYTES: Final = int.from_bytes  # bound once: compiled code then calls it without a lookup

try:  # the compiled build's C loop for ones_sum (p4mtcp.accel.NATIVE); found only while current
    from p4mtcp._csum import ones_sum as _c_ones_sum
except ImportError:
    _c_ones_sum = None
_C_ONES_SUM: Final = _c_ones_sum


def pack_fields(fields: Iterable[tuple[int, int]]) -> bytes:
    """Concatenate (value, bitwidth) pairs MSB-first and pad on the right to a whole byte."""
    acc = 0
    width = 0
    for value, bits in fields:
        acc = (acc << bits) | (value & ((1 << bits) - 1))
        width += bits
    pad = -width % 8
    return (acc << pad).to_bytes((width + pad) // 8, "big")


def ones_sum(data: bytes | bytearray | memoryview, start: int = 0) -> int:
    """One's-complement sum of big-endian 16-bit words (RFC 1071), folded to 16 bits, no complement.

    ``ones_sum_py`` below defines it; the compiled build's C loop (p4mtcp/csum.c, loaded with
    ``P4MTCP_ACCEL=1`` while its source is current) gives the same results some 20x faster on a
    full-size frame, where the Python formula's big-integer modulo is most of a NIC's work.
    """
    if _C_ONES_SUM is not None and start >= 0:
        return _C_ONES_SUM(data, start)
    return ones_sum_py(data, start)


def ones_sum_py(data: bytes | bytearray | memoryview, start: int = 0) -> int:
    """``ones_sum`` in Python, the reference.

    Runs at C speed with no per-word Python work: read as one big-endian integer, the buffer is
    sum(w_i * 2**(16 i)), and 2**16 = 1 (mod 0xFFFF), so it is congruent to the plain word sum;
    end-around carry (RFC 1071 section 2(C)) is exactly reduction mod 0xFFFF, where a non-zero sum
    is written 0xFFFF rather than 0. An odd trailing byte is padded with a zero byte.
    """
    value = _FROM_BYTES(data, "big")
    if (data.nbytes if isinstance(data, memoryview) else len(data)) & 1:  # bytes, not items
        value <<= 8
    return ones_fold(value + start)


def ones_fold(total: int) -> int:
    """A plain sum of 16-bit words (or of anything congruent to it mod 0xFFFF, such as 32-bit
    words) folded to their one's-complement sum, as ``ones_sum`` returns it: end-around carry is
    reduction mod 0xFFFF, and a non-zero multiple of 0xFFFF is written 0xFFFF."""
    folded = total % 0xFFFF
    return folded if folded or not total else 0xFFFF


def csum16(data: bytes | bytearray | memoryview) -> int:
    """RFC 1071 Internet checksum of ``data`` (BMv2 ``HashAlgorithm.csum16``)."""
    return ~ones_sum(data) & 0xFFFF


def crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def _crc16_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC16 = _crc16_table()


def crc16(data: bytes) -> int:
    """CRC-16/ARC: polynomial 0x8005 reflected (0xA001), init 0, no final xor."""
    crc = 0
    for b in data:
        crc = (crc >> 8) ^ _CRC16[(crc ^ b) & 0xFF]
    return crc


ALGORITHMS = {"crc32": crc32, "crc16": crc16, "csum16": csum16, "identity": lambda d: int.from_bytes(d, "big")}


def bmv2_hash(algo: str, base: int, fields: Iterable[tuple[int, int]], max_: int) -> int:
    """The value v1model's ``hash(out, algo, base, {fields}, max)`` writes into ``out``."""
    h = ALGORITHMS[algo](pack_fields(fields))
    return base + (h % max_) if max_ else base


# --- The NIC's receive-side scaling hash (p4src/ingress.p4, control RssSteering) --------------

RETA_SIZE: Final = 128
"""Buckets in the NIC's redirection table; the P4 program hashes into exactly this many."""
_RSS_FIELDS: Final = struct.Struct("!IIHH").pack  # {lo_ip, hi_ip, lo_port, hi_port}, packed
_CRC32: Final = zlib.crc32


def rss_bucket(ip_a: int, port_a: int, ip_b: int, port_b: int) -> int:
    """Symmetric flow hash: the two endpoints are ordered so both directions give one bucket.

    Mirrors p4src: lo/hi address and lo/hi port, crc32 over {lo_ip, hi_ip, lo_port, hi_port}.
    """
    lo_ip, hi_ip = (ip_a, ip_b) if ip_a <= ip_b else (ip_b, ip_a)
    lo_port, hi_port = (port_a, port_b) if port_a <= port_b else (port_b, port_a)
    return _CRC32(_RSS_FIELDS(lo_ip, hi_ip, lo_port, hi_port)) % RETA_SIZE

"""p4mtcp.hashing.ones_sum (used by the pipeline and the ports) against RFC 1071 word by word."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from p4mtcp.hashing import csum16, ones_sum, ones_sum_py


def reference(data: bytes, start: int = 0) -> int:
    """RFC 1071 section 4.1: add 16-bit words, fold the carries back in; pad an odd byte."""
    if len(data) % 2:
        data += b"\0"
    total = start
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


@given(st.binary(max_size=3000), st.integers(0, 1 << 24))
def test_ones_sum_matches_rfc1071(data, start):
    assert ones_sum(data, start) == reference(data, start)
    assert ones_sum(memoryview(data)[1:], start) == reference(data[1:], start)


def test_ones_sum_zero_and_all_ones():
    assert ones_sum(b"") == ones_sum(bytes(100)) == 0
    assert ones_sum(b"\xff\xff" * 7) == reference(b"\xff\xff" * 7) == 0xFFFF
    assert ones_sum(b"\x00\x01\xff\xfe") == 0xFFFF  # sums to "negative zero", not 0


def test_csum16_of_a_valid_header_is_zero():
    header = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
    c = csum16(header)
    fixed = header[:10] + c.to_bytes(2, "big") + header[12:]
    assert c == 0xB861 and csum16(fixed) == 0  # RFC 1071 style example header


def test_the_checksum_counts_bytes_not_items():
    """A memoryview of two-byte items is summed over its bytes: its odd/even length is in bytes."""
    data = bytes(range(1, 7))
    assert ones_sum_py(memoryview(data).cast("H")) == ones_sum_py(data) == 0x0102 + 0x0304 + 0x0506

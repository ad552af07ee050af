"""The MSS: what each engine announces (its MTU - 40), and the segment size each one sends,
clamped by the peer's MSS option (RFC 9293 3.7.1, RFC 6691: data plus options fit the
smaller MSS, less the 12 bytes of timestamps every data segment carries)."""

from __future__ import annotations

import os

from scapy.layers.inet import TCP

from p4mtcp.control.tcp import TcpConfig, wire

from test_tcp_pair import open_pair, pump
from test_tcp_support import Wire

JUMBO, ETHERNET = 8960, 1460          # mtu 9000 and 1500


def cfg(mss: int, **kw) -> TcpConfig:
    return TcpConfig(mss=mss, rcvbuf=1 << 20, sndbuf=4 << 20, idle_timeout=0, **kw)


def announced(w: Wire, direction: str) -> int:
    """The MSS option of the SYN (or SYN-ACK) that went `direction`."""
    syn = next(t for d, t in w.log if d == direction and t.flags.S)
    return dict(syn.options)["MSS"]


def data_sizes(w: Wire, direction: str) -> list[int]:
    return [len(t.payload) for d, t in w.log if d == direction and len(t.payload)]


def transfer(w: Wire, c, s, n: int) -> None:
    """n bytes from c to s, written at once: the sender is never short of data."""
    data = os.urandom(n)
    assert pump(w, c, s, data, chunk=n, step=0.001, rounds=20_000) == data


def test_jumbo_peers_send_full_8948_byte_segments():
    w = Wire(cfg(JUMBO), cfg(JUMBO))
    w.record = True
    c, s, _ = open_pair(w)
    assert announced(w, "a>b") == announced(w, "b>a") == JUMBO
    assert c.eff_mss == s.eff_mss == JUMBO - 12
    n = 2_000_000
    transfer(w, c, s, n)
    sizes = data_sizes(w, "a>b")
    assert max(sizes) == JUMBO - 12
    assert sum(sizes) == n and len(sizes) == -(-n // (JUMBO - 12))   # all full but the last


def test_larger_mss_is_clamped_by_the_peers_option_both_ways():
    w = Wire(cfg(JUMBO), cfg(ETHERNET))
    w.record = True
    c, s, _ = open_pair(w)
    assert (announced(w, "a>b"), announced(w, "b>a")) == (JUMBO, ETHERNET)
    assert c.mss_peer == ETHERNET and s.mss_peer == JUMBO
    assert c.eff_mss == s.eff_mss == ETHERNET - 12        # the smaller MSS rules both senders
    transfer(w, c, s, 300_000)
    transfer(w, s, c, 300_000)
    assert max(data_sizes(w, "a>b")) == max(data_sizes(w, "b>a")) == ETHERNET - 12


def test_without_timestamps_the_whole_mss_is_data():
    w = Wire(cfg(JUMBO, timestamps=False), cfg(JUMBO))
    w.record = True
    c, s, _ = open_pair(w)
    assert not c.ts_ok and c.eff_mss == s.eff_mss == JUMBO
    transfer(w, c, s, 100_000)
    assert max(data_sizes(w, "a>b")) == JUMBO


def test_syn_without_mss_option_means_536():
    """RFC 9293 3.7.1 (MUST-15): no MSS option -> send at most 536-byte segments."""
    a, b = 0x0A000001, 0x0A000002
    w = Wire(cfg(JUMBO), cfg(JUMBO))
    lst = w.b.listen(b, 80, 8)
    w.b.receive(a, b, wire.build(a, b, 40000, 80, 1000, 0, wire.SYN, 65535), w.now)
    synack = TCP(next(seg for _, _, seg in w.b.poll(w.now)))
    assert dict(synack.options)["MSS"] == JUMBO
    w.b.receive(a, b, wire.build(a, b, 40000, 80, 1001, synack.seq + 1, wire.ACK, 65535), w.now)
    s = lst.accept()
    assert s is not None and s.eff_mss == 536
    assert s.send(os.urandom(5000)) == 5000
    sizes = [len(TCP(seg).payload) for _, _, seg in w.b.poll(w.now)]
    assert sizes and max(sizes) == 536

"""p4mtcp.testing.Host: scapy packets against the real stack in virtual time (docs/testing.md)."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP
from scapy.packet import Raw

from p4mtcp.testing import ANY, Host, Mismatch


def test_passive_open_and_echo(p4mtcp_host):
    """The tutorial's example: handshake, data in, ACK out, data read through the mTCP API."""
    h = p4mtcp_host
    ls = h.listen(8080)
    h.inject(IP() / TCP(dport=8080, flags="S", seq=1000, options=[("MSS", 1000)]))
    h.expect(TCP(flags="SA", seq=0, ack=1001, options=[("MSS", 1460)]))
    h.inject(TCP(flags="A", seq=1001, ack=1))
    s = h.api.accept(ls)
    h.inject(TCP(flags="PA", seq=1001, ack=1) / Raw(b"hello"))
    h.expect(TCP(flags="A", ack=1006), within=(0.0, 0.2))   # a delayed ACK
    assert h.api.read(s, 100) == b"hello"


def test_active_open_data_and_relative_numbers(p4mtcp_host):
    h = p4mtcp_host
    s = h.connect(80)
    syn = h.expect(TCP(dport=80, flags="S", seq=0, options=[("MSS", 1460), ("SAckOK", b""),
                                                                ("Timestamp", (ANY, 0)),
                                                                ("NOP", None), ("WScale", 0)]))
    flow = h.current
    assert syn[TCP].seq == flow.stack_isn and flow.remote_port == 80
    h.inject(TCP(flags="SA", seq=5000, ack=1, options=[("MSS", 500)]))
    h.expect(TCP(flags="A", seq=1, ack=5001))
    assert h.api.write(s, b"x" * 1200) == 1200
    first = h.expect(TCP(flags="A", seq=1) / Raw(b"x" * 500))
    assert first[TCP].seq == (flow.stack_isn + 1) & 0xFFFFFFFF
    h.expect(TCP(seq=501) / Raw(b"x" * 500))


def test_mismatch_names_each_field_and_shows_both_segments(p4mtcp_host):
    h = p4mtcp_host
    h.listen(8080)
    h.inject(TCP(dport=8080, flags="S", seq=0, options=[("MSS", 1000)]))
    with pytest.raises(Mismatch) as info:
        h.expect(TCP(flags="S", seq=0, ack=2, window=1000))
    m = info.value
    assert [d[0] for d in m.diffs] == ["tcp.ack", "tcp.flags", "tcp.window"]
    assert ("tcp.ack", 2, 1) in m.diffs and ("tcp.flags", "S", "S.") in m.diffs
    assert m.actual.startswith("> S. 0:0(0) ack 1 win 8192 <mss 1460>")


def test_expect_times_out_in_virtual_time_and_rto_backs_off(p4mtcp_host_factory):
    h = p4mtcp_host_factory(tcp={"tail_loss_probe": False})
    ls = h.listen(8080)
    h.inject(TCP(dport=8080, flags="S", seq=0, options=[("MSS", 1000)]))
    h.expect(TCP(flags="SA"))
    h.advance(0.05)
    h.inject(TCP(flags="A", seq=1, ack=1))
    s = h.api.accept(ls)
    h.api.write(s, b"a" * 100)
    h.expect(TCP(seq=1) / Raw(b"a" * 100))
    h.expect(TCP(seq=1) / Raw(b"a" * 100), within=(0.2, 0.2))   # RTO floor (RFC 6298 2.4)
    h.expect(TCP(seq=1) / Raw(b"a" * 100), within=(0.4, 0.4))   # doubled (RFC 6298 5.5)
    with pytest.raises(Mismatch, match="no segment sent within 0.500"):
        h.expect(timeout=0.5)
    assert h.now == pytest.approx(0.05 + 0.2 + 0.4 + 0.5)


def test_bad_checksum_is_dropped_by_the_engine(p4mtcp_host):
    h = p4mtcp_host
    h.listen(8080)
    h.inject(TCP(dport=8080, flags="S", seq=0, chksum=0x1234))
    h.expect_silence(3.0)
    assert h.ctx.stack.stats.bad_checksums == 1


def test_nic_mode_checks_checksums_and_fills_macs(p4mtcp_nic_host):
    h = p4mtcp_nic_host
    ls = h.listen(8080)
    h.inject(TCP(dport=8080, flags="S", seq=0, chksum=0x1234))
    assert h.link.drops() == {"bad TCP checksum": 1}
    h.inject(TCP(dport=8080, flags="S", seq=0, options=[("MSS", 1000)]))
    synack = h.expect(TCP(flags="SA", ack=1))
    assert synack.checksum_errors == []     # the pipeline computed both checksums
    h.inject(TCP(flags="A", seq=1, ack=1))
    assert h.api.accept(ls) >= 0


def test_expect_silence_reports_what_was_sent(p4mtcp_host):
    h = p4mtcp_host
    h.connect(80)
    with pytest.raises(Mismatch, match="expected no segment"):
        h.expect_silence(0.1)


def test_inject_and_expect_refuse_what_is_not_a_tcp_packet(p4mtcp_host):
    with pytest.raises(TypeError, match="not a scapy packet with a TCP layer"):
        p4mtcp_host.inject(IP())
    with pytest.raises(TypeError, match="not a scapy packet with a TCP layer"):
        p4mtcp_host.inject(b"\x45\x00")
    with pytest.raises(TypeError, match="has no TCP layer"):
        p4mtcp_host.expect(IP(), timeout=0.1)


def test_tcp_settings_reach_the_engine():
    with Host(tcp={"initial_window": 2, "mss": 536, "tail_loss_probe": False}) as h:
        ls = h.listen(8080)
        h.inject(TCP(dport=8080, flags="S", seq=0, options=[("MSS", 1460)]))
        h.expect(TCP(flags="SA", options=[("MSS", 536)]))
        h.inject(TCP(flags="A", seq=1, ack=1))
        s = h.api.accept(ls)
        h.api.write(s, b"z" * 5000)
        h.expect(TCP(seq=1) / Raw(b"z" * 536))
        h.expect(TCP(seq=537) / Raw(b"z" * 536))
        h.expect_silence(0.1)     # two segments: the initial window

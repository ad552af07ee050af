"""Path MTU discovery end to end: an ICMP fragmentation-needed message from the network crosses
the embedded NIC (packet-in reason 3), the NIC agent over P4Runtime (which finds the core owning
the quoted flow and sends the frame out of that core port) and the core's engine, which then
sends no segment larger than the new path MTU; the bytes still arrive intact."""

from __future__ import annotations

import dataclasses
import ipaddress
import logging

import pytest
from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from p4mtcp.apps.ss import format_rows
from p4mtcp.control.agent import NicAgent
from p4mtcp.control.config import HostConfig
from p4mtcp.control.sockstat import connection_rows
from p4mtcp.dataplane.server import serve
from p4mtcp.p4src import CPU_PORT
from p4mtcp.testing import Host
from p4mtcp.testing.host import LOCAL_IP, PEER_MAC, REMOTE_IP
from p4mtcp.testing.nic import one_core_host
from test_agent import free_port, host_config
from waiting import wait_for

ROUTER_IP = "198.51.100.1"
MTU = 1000
MASK = 0xFFFFFFFF


def frag_needed_frame(host_mac: str, seg: IP, mtu: int) -> bytes:
    """What a router sends back for our segment ``seg`` (RFC 1191 4): type 3 code 4, the
    next-hop MTU, and the segment's IPv4 header plus its first 8 octets (RFC 792)."""
    quoted = bytes(seg)[:28]
    return bytes(Ether(src=PEER_MAC, dst=host_mac) / IP(src=ROUTER_IP, dst=LOCAL_IP)
                 / ICMP(type=3, code=4, nexthopmtu=mtu) / Raw(quoted))


@pytest.fixture
def nic_host():
    """A Host(nic=True) whose NIC is also served over P4Runtime to a real NicAgent: packet-ins
    reach the agent, its packet-outs to the core port reach the context's port."""
    h = Host(nic=True)
    link = h.link
    device = link.device

    def packet_out(frame: bytes) -> None:       # nic.py's job in a NIC process
        for port, out in device.process(CPU_PORT, frame):
            if port == link.core_port:
                link.port.inbox.append(out)

    device.packet_out_handler = packet_out
    address = f"127.0.0.1:{free_port()}"
    server = serve(device, address)
    base = one_core_host(LOCAL_IP, REMOTE_IP, PEER_MAC)
    agent = NicAgent(HostConfig(dataclasses.replace(base.mtcp, p4runtime=address), base.arp,
                                base.routes), backoff=(0.05, 0.3)).start(timeout=10)
    yield h, agent
    agent.stop()
    server.stop(0).wait(5)
    h.close()


def test_fragmentation_needed_lowers_the_mss_of_the_connection_end_to_end(nic_host, caplog):
    h, agent = nic_host
    s = h.connect()
    syn = h.expect(TCP(flags="S"))
    h.inject(TCP(flags="SA", seq=7000, ack=1, options=[("MSS", 1460)]))
    h.expect(TCP(flags="A", ack=7001))
    data = bytes(range(256)) * 40                         # 10240 bytes
    sent = []
    assert h.api.write(s, data[:3 * 1460]) == 3 * 1460
    for _ in range(3):
        sent.append(h.expect(TCP(ack=7001)))
    assert [len(p[TCP].payload) for p in sent] == [1460] * 3

    def logged() -> list[str]:
        return [r.getMessage() for r in caplog.records if "ICMP type 3 code 4" in r.getMessage()]

    with caplog.at_level(logging.WARNING, logger="p4mtcp.control.agent"):
        h.link.to_stack(frag_needed_frame(h.host_mac, sent[0], MTU))
        wait_for(lambda: h.link.port.inbox, 10.0, "the agent to send the message to the core")
        wait_for(logged, 10.0, "the agent's log line")    # written after the packet-out
    assert agent.stats.pmtu_forwarded == 1
    assert f"path MTU {MTU} sent to core port {h.link.core_port}" in logged()[0]

    h.advance(0.0)                                        # the core takes it: flight resent
    stats = h.ctx.stack.stats
    assert (stats.icmp_in, stats.pmtu_lowered) == (1, 1)
    assert h.ctx.connections()[0].eff_mss == MTU - 40
    rows = connection_rows(0, h.ctx.connections())      # what `p4mtcp ss` shows
    assert rows[0]["mss"] == MTU - 40 and f" mss:{MTU - 40} " in format_rows(rows)[1]
    resent = list(h.sent)
    h.sent.clear()
    assert resent and resent[0][TCP].seq == sent[0][TCP].seq
    top = (sent[0][TCP].seq + 3 * 1460) & MASK
    h.inject(TCP(flags="A", seq=7001, ack=(top - syn[TCP].seq) & MASK))
    assert h.api.write(s, data[3 * 1460:]) == len(data) - 3 * 1460
    h.advance(0.0)
    top = max((p[TCP].seq + len(p[TCP].payload)) & MASK for p in h.sent)
    h.inject(TCP(flags="A", seq=7001, ack=(top - syn[TCP].seq) & MASK))   # Nagle's tail next
    h.advance(0.0)
    later = list(h.sent)
    segments = sent + resent + later
    for p in resent + later:                              # on the wire, after the NIC
        assert p[IP].len <= MTU and len(p[TCP].payload) <= MTU - 40, h.show(p)
    stream = bytearray(len(data))
    got = bytearray(len(data))
    for p in segments:
        off = (p[TCP].seq - syn[TCP].seq - 1) & MASK
        body = bytes(p[TCP].payload)
        stream[off:off + len(body)] = body
        got[off:off + len(body)] = b"\x01" * len(body)
    assert got == b"\x01" * len(data) and bytes(stream) == data


def test_agent_finds_the_core_of_a_flow_by_flow_steer_then_rss():
    """The core port a forwarded message goes to is the one the NIC steers the flow's segments
    to: the flow's flow_steer entry first, else the reta bucket of the RSS hash."""
    agent = NicAgent(host_config("127.0.0.1:1"))           # two cores, ports 16 and 17; no NIC
    local, remote = int(ipaddress.IPv4Address("10.0.0.1")), int(ipaddress.IPv4Address("10.0.0.2"))
    by_rss = {agent.core_port_of(local, p, remote, 80) for p in range(40000, 40064)}
    assert by_rss == {16, 17}
    port = next(p for p in range(40000, 40064) if agent.core_port_of(local, p, remote, 80) == 16)
    agent.steer_flow(remote, local, 80, port, 1)          # recorded; written once connected
    assert agent.core_port_of(local, port, remote, 80) == 17

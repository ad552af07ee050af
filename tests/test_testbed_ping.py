"""ICMP against a p4mtcp host: the NIC answers `ping` itself; other ICMP reaches the agent's log.

A kernel in its own network namespace pings a p4mtcp host whose NIC (the embedded target, or
BMv2 when it is installed) reads the other end of the veth: the echo replies come from the data
plane, and the NIC's `icmp_echo` counter says so. A fragmentation-needed message sent to the host
goes to the CPU port and the agent logs its MTU and the flow it quotes.
"""

from __future__ import annotations

import logging
import re
import shutil
import socket
import struct

import pytest

from netns import veth_pair  # noqa: F401  (fixture)
from waiting import wait_for
from p4mtcp.apps.fabric import NETWORK_PORT, Fabric
from p4mtcp.bmv2.launcher import P4C_BM2_SS, SIMPLE_SWITCH_GRPC, have
from p4mtcp.hashing import csum16
from p4mtcp.p4src import ICMP_ECHO

pytestmark = pytest.mark.root

KINDS = ["embedded", pytest.param("bmv2", marks=[pytest.mark.bmv2, pytest.mark.skipif(
    not (have(SIMPLE_SWITCH_GRPC) and have(P4C_BM2_SS)),
    reason="simple_switch_grpc and p4c-bm2-ss must be on PATH (bmv2/README.md)")])]


@pytest.fixture(params=KINDS)
def host(request, veth_pair, tmp_path):  # noqa: F811
    with Fabric(str(tmp_path / "f"), nic=request.param) as fabric:
        h = fabric.add_host("m1", f"{veth_pair.engine_ip}/24", 1, veth_pair.host_if)
        fabric.start()
        yield h, veth_pair


@pytest.mark.skipif(shutil.which("ping") is None, reason="ping not on PATH (iputils-ping)")
def test_ping_from_a_kernel_gets_replies_from_the_nic(host):
    h, net = host
    done = net.run(["ping", "-c", "3", "-i", "0.2", "-W", "5", h.ip], timeout=30, check=False)
    out = done.stdout.decode()
    assert done.returncode == 0, out + done.stderr.decode()
    assert re.search(r"3 packets transmitted, 3 received", out), out
    packets, nbytes = h.agent.read_counter(ICMP_ECHO).get(NETWORK_PORT, (0, 0))
    assert packets == 3 and nbytes >= 3 * 98, (packets, nbytes)


def _frag_needed(src: str, dst: str, mtu: int) -> bytes:
    """ICMP type 3 code 4 (RFC 1191) quoting a TCP segment dst:80 -> src:40000."""
    quoted = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 60, 1, 0, 64, 6, 0,
                         socket.inet_aton(dst), socket.inet_aton(src)) + struct.pack(
        "!HHI", 80, 40000, 12345)
    body = struct.pack("!BBHHH", 3, 4, 0, 0, mtu) + quoted
    return struct.pack("!BBHHH", 3, 4, csum16(body), 0, mtu) + quoted


def test_fragmentation_needed_goes_to_the_agent_log(host, caplog):
    h, net = host
    message = _frag_needed(net.ns_ip, h.ip, 1200)
    sender = ("import socket,sys; s = socket.socket(socket.AF_INET, socket.SOCK_RAW, "
              "socket.IPPROTO_ICMP); s.sendto(sys.stdin.buffer.read(), (sys.argv[1], 0))")
    with caplog.at_level(logging.WARNING, logger="p4mtcp.control.agent"):
        net.run(["python3", "-c", sender, h.ip], input=message)
        # the kernel resolves the host's MAC first (the NIC answers ARP), then sends
        wait_for(lambda: h.agent.stats.icmp, 10.0, "the agent to see the ICMP message")
    assert h.agent.stats.icmp == 1
    logged = [r.getMessage() for r in caplog.records if "ICMP type 3 code 4" in r.getMessage()]
    assert logged and "next-hop MTU 1200" in logged[0], logged
    assert f"{h.ip}:80 -> {net.ns_ip}:40000" in logged[0], logged

"""Path MTU discovery against a real black hole: the kernel peer's link carries 1000-octet
datagrams while the p4mtcp host sends 1500-octet ones, so every full segment is dropped, as a
router with a small next hop drops a DF datagram. A router would answer each drop with ICMP
fragmentation needed (RFC 1191 4); here the test does: it watches the host's outgoing frames on
the veth and sends that message from the peer's namespace. The transfer completes byte-exact only
if the NIC, the agent and the core's engine act on it: without it every full segment, and every
retransmission of it, is lost.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import struct
import subprocess
import threading

import pytest

from netns import VethNetns, veth_pair  # noqa: F401  (fixture)
from p4mtcp.apps import launch, perf
from p4mtcp.apps.fabric import Fabric
from p4mtcp.bmv2.launcher import P4C_BM2_SS, SIMPLE_SWITCH_GRPC, have
from p4mtcp.hashing import csum16
from test_e2e_kernel import ns_mac
from waiting import wait_for

pytestmark = [pytest.mark.root, pytest.mark.skipif(
    shutil.which("nc") is None, reason="nc not on PATH (netcat, the kernel peer's receiver)")]

MTU = 1000
SIZE = 2 * 1000 * 1000
MAX_ICMP = 200                 # messages the emulated router sends at most
ETH_P_ALL, PACKET_OUTGOING = 3, 4
# Reads (length, ICMP message) records on stdin and sends each to argv[1] from a raw socket.
SENDER = ("import socket,struct,sys\n"
          "s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)\n"
          "r = sys.stdin.buffer\n"
          "while (h := r.read(2)):\n"
          "    s.sendto(r.read(struct.unpack('!H', h)[0]), (sys.argv[1], 0))\n")
KINDS = ["embedded", pytest.param("bmv2", marks=[pytest.mark.bmv2, pytest.mark.skipif(
    not (have(SIMPLE_SWITCH_GRPC) and have(P4C_BM2_SS)),
    reason="simple_switch_grpc and p4c-bm2-ss must be on PATH (bmv2/README.md)")])]


def frag_needed(frame: bytes, mtu: int) -> bytes:
    """RFC 1191 4: type 3 code 4, the next-hop MTU, the dropped datagram's header + 8 octets."""
    quoted = frame[14:14 + 28]
    body = struct.pack("!BBHHH", 3, 4, 0, 0, mtu) + quoted
    return struct.pack("!BBHHH", 3, 4, csum16(body), 0, mtu) + quoted


class Router(threading.Thread):
    """Sees the host's frames leave on its veth end; for each IPv4 datagram larger than MTU
    (the peer's link drops it) sends fragmentation needed through `sender`'s stdin."""

    def __init__(self, ifname: str, sender: subprocess.Popen):
        super().__init__(daemon=True, name="pmtu-router")
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind((ifname, ETH_P_ALL))
        self.sock.settimeout(0.1)
        self.sender = sender
        self.stop = threading.Event()
        self.big = self.small = self.sent = 0

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                frame, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            if addr[2] != PACKET_OUTGOING or frame[12:14] != b"\x08\x00" or frame[23] != 6:
                continue
            if struct.unpack_from("!H", frame, 16)[0] <= MTU:
                self.small += 1
            else:
                self.big += 1
                if self.sent < MAX_ICMP:
                    msg = frag_needed(frame, MTU)
                    self.sender.stdin.write(struct.pack("!H", len(msg)) + msg)
                    self.sender.stdin.flush()
                    self.sent += 1

    def close(self) -> None:
        self.stop.set()
        self.join(5)
        self.sock.close()


@pytest.mark.parametrize("nic", KINDS)
def test_transfer_through_a_small_mtu_completes_after_fragmentation_needed(
        nic, veth_pair: VethNetns, tmp_path):  # noqa: F811
    net = veth_pair
    net.run(["ip", "link", "set", "dev", net.ns_if, "mtu", str(MTU)])
    # The peer still offers MSS 1460, as a host behind a smaller hop does.
    net.run(["ip", "route", "replace", f"{net.engine_ip.rsplit('.', 1)[0]}.0/{net.prefix}",
             "dev", net.ns_if, "advmss", "1460"])
    data = hashlib.shake_128(b"through a small hop").digest(SIZE)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    out = tmp_path / "nc_out.bin"
    with Fabric(str(tmp_path / "f"), nic=nic) as fab:
        host = fab.add_host("p4m", f"{net.engine_ip}/24", 1, net.host_if,
                            {net.ns_ip: ns_mac(net)})
        fab.start(timeout=60)
        with (open(out, "wb") as sink,
              net.popen(["nc", "-l", "-d", "5003"], stdout=sink, stderr=subprocess.DEVNULL) as nc,
              net.popen(["python3", "-c", SENDER, net.engine_ip],
                        stdin=subprocess.PIPE) as sender):
            from netns import wait_for_listener
            wait_for_listener(net.ns, 5003, timeout=20)
            router = Router(net.host_if, sender)
            router.start()
            try:
                args = perf.PerfArgs("client", host.conf, 1, net.ns_ip, 5003, None, 0.0,
                                     str(src), None, 0, True)
                msgs: list[dict] = []
                with launch.CoreWorkers(perf.perf_core, [0], args) as w:
                    assert w.pump(msgs.append, lambda: None, timeout=90), msgs[-3:]
                nc.wait(timeout=30)
            finally:
                router.close()
        wait_for(lambda: host.agent.stats.pmtu_forwarded, 5.0, "the agent's count")
        forwarded = host.agent.stats.pmtu_forwarded
    result = [m for m in msgs if m["kind"] == "result"][0]["connections"][0]
    assert result["error"] == "" and result["bytes"] == SIZE
    assert out.read_bytes() == data
    assert router.sent >= 1 and forwarded >= 1, (router.sent, forwarded)
    # 2 MB is ~1400 full segments: all but the first flight (and any timer's resend) were small.
    assert router.big < MAX_ICMP and router.small > 0, (router.big, router.small)

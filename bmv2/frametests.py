"""PTF-style frame tests of the NIC program that run unchanged against any switch class.

A `Fabric` is a started switch with one tester host per port: frames go in through real
interfaces (AF_PACKET sockets opened inside each tester's network namespace) and whatever comes
out of every port is collected. The cases below send the same scapy frames and expect the same
outputs whichever target runs the program, so BMv2 and the embedded target are held to one
standard. Each case raises AssertionError saying what differed.
"""

from __future__ import annotations

import ctypes
import os
import random
import select
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import ARP, Ether

from p4mtcp.hashing import RETA_SIZE, rss_bucket
from p4mtcp.p4src import P4INFO
from p4mtcp.bmv2.controller import Controller

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


@contextmanager
def in_netns(ns_file: str) -> Iterator[None]:
    """Run the block with this thread in the network namespace `ns_file` names
    (/proc/PID/ns/net, /run/netns/NAME); sockets opened there stay there after the thread
    returns home."""
    with open(ns_file) as target, open("/proc/thread-self/ns/net") as home:
        if _libc.setns(target.fileno(), CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into the namespace {ns_file}: {os.strerror(err)}")
        try:
            yield
        finally:
            if _libc.setns(home.fileno(), CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns back home: {os.strerror(err)}")


def raw_socket(ifname: str, ns_file: str | None = None) -> socket.socket:
    """A non-blocking AF_PACKET socket bound to `ifname` (in namespace `ns_file` if given)."""
    def make() -> socket.socket:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.bind((ifname, 0))
        s.setblocking(False)
        return s
    if ns_file is None:
        return make()
    with in_netns(ns_file):
        return make()


def mac_int(mac: str) -> int:
    return int(mac.replace(":", ""), 16)


def ip_int(ip: str) -> int:
    return int(IPv4Address(ip))


@dataclass(frozen=True)
class Plan:
    """Ports and addresses of the frame tests (the same for every target)."""

    network_port: int = 1
    core_ports: tuple[int, ...] = (16, 17)
    nic_mac: str = "02:00:0a:00:00:64"
    local_ips: tuple[str, ...] = ("10.0.0.100", "10.0.0.101")
    peer_ip: str = "10.0.0.1"
    peer_mac: str = "02:00:00:00:00:01"

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.network_port, *self.core_ports)

    def core_for_bucket(self, bucket: int) -> int:
        """The reta programming: bucket b -> core port b mod cores."""
        return self.core_ports[bucket % len(self.core_ports)]

    def rss_port(self, src: str, dst: str, sport: int, dport: int) -> int:
        return self.core_for_bucket(rss_bucket(ip_int(src), sport, ip_int(dst), dport))


def program(ctrl: Controller, plan: Plan) -> None:
    """Write the tables the frame tests rely on (the agent's job in a real deployment)."""
    e = ctrl.table_entry
    entries = [e("NicIngress.port_role", [plan.network_port], "NicIngress.set_network_port")]
    entries += [e("NicIngress.port_role", [port], "NicIngress.set_core_port", [core])
                for core, port in enumerate(plan.core_ports)]
    for ip in plan.local_ips:
        entries.append(e("NicIngress.arp_responder", [ip_int(ip)], "NicIngress.arp_reply",
                         [mac_int(plan.nic_mac)]))
        entries.append(e("NicIngress.local_ipv4", [ip_int(ip)], "NicIngress.set_local"))
    entries += [e("NicIngress.reta", [b], "NicIngress.steer_to_core", [plan.core_for_bucket(b)])
                for b in range(RETA_SIZE)]
    entries.append(e("NicIngress.ipv4_lpm", [(ip_int(plan.peer_ip), 32)], "NicIngress.set_next_hop",
                     [ip_int(plan.peer_ip), plan.network_port]))
    entries.append(e("NicIngress.neighbor", [ip_int(plan.peer_ip)], "NicIngress.set_dst_mac",
                     [mac_int(plan.peer_mac)]))
    entries.append(e("NicIngress.port_mac", [plan.network_port], "NicIngress.set_src_mac",
                     [mac_int(plan.nic_mac)]))
    ctrl.write(entries)


@dataclass
class Fabric:
    """A programmed switch: `sockets[port]` is the tester's end of that switch port."""

    ctrl: Controller
    sockets: dict[int, socket.socket]
    plan: Plan = field(default_factory=Plan)

    def send(self, port: int, frame: bytes) -> None:
        self.sockets[port].send(frame)

    def drain(self) -> None:
        self.collect(0.0, quiet=0.05)
        while not self.ctrl.packet_ins.empty():
            self.ctrl.packet_ins.get_nowait()

    def collect(self, expected: int, timeout: float = 3.0, quiet: float = 0.3
                ) -> dict[int, list[bytes]]:
        """Frames out of every port: waits for `expected` frames in total (or `timeout`), then
        `quiet` seconds more so that extra frames are seen too."""
        got: dict[int, list[bytes]] = {p: [] for p in self.sockets}
        by_fd = {s.fileno(): (p, s) for p, s in self.sockets.items()}
        start = time.monotonic()
        deadline = start + timeout
        settle: float | None = start + quiet if expected == 0 else None
        while True:
            now = time.monotonic()
            end = settle if settle is not None else deadline
            if now >= end:
                return got
            ready, _, _ = select.select(list(by_fd), [], [], end - now)
            for fd in ready:
                port, s = by_fd[fd]
                for _ in range(256):          # bounded drain of one socket
                    try:
                        data, addr = s.recvfrom(65535)
                    except BlockingIOError:
                        break
                    if addr[2] != PACKET_OUTGOING:
                        got[port].append(data)
            if settle is None and sum(map(len, got.values())) >= expected:
                settle = time.monotonic() + quiet

    def counter(self, name: str, index: int) -> tuple[int, int]:
        return self.ctrl.read_counter(name, index)


@contextmanager
def frame_fabric(kind: str, workdir: str | Path, plan: Plan = Plan()) -> Iterator[Fabric]:
    """A Mininet network of one `kind` switch and a tester host on each of the plan's ports,
    with the pipeline pushed and programmed; torn down on exit (also on failure)."""
    from p4mtcp.bmv2.launcher import compile_program
    from p4mtcp.bmv2.mininet_switches import SWITCHES  # loads Mininet
    from mininet.net import Mininet

    workdir = Path(workdir)
    device_config = (compile_program(workdir / "build").json.read_bytes() if kind == "bmv2"
                     else b"")
    net = Mininet(topo=None, controller=None, build=False, autoSetMacs=False)
    sockets: dict[int, socket.socket] = {}
    ctrl: Controller | None = None
    try:
        s1 = net.addSwitch("s1", cls=SWITCHES[kind], log_dir=str(workdir))
        testers = {port: net.addHost(f"t{port}", ip=None) for port in plan.ports}
        for port, tester in testers.items():
            net.addLink(tester, s1, port2=port)
        net.build()
        for tester in testers.values():
            tester.cmd("sysctl -qw net.ipv6.conf.all.disable_ipv6=1")
        net.start()
        ctrl = Controller(s1.grpc, P4INFO, device_id=s1.device_id)
        ctrl.set_pipeline(device_config)
        program(ctrl, plan)
        for port, tester in testers.items():
            sockets[port] = raw_socket(tester.defaultIntf().name, f"/proc/{tester.pid}/ns/net")
        yield Fabric(ctrl, sockets, plan)
    finally:
        for s in sockets.values():
            s.close()
        if ctrl is not None:
            ctrl.close()
        net.stop()


# --- frames ----------------------------------------------------------------------------------

def tcp_frame(plan: Plan, src: str, dst: str, sport: int, dport: int, payload: bytes = b"",
              flags: str = "PA", seq: int = 1000) -> Ether:
    return (Ether(src=plan.peer_mac, dst=plan.nic_mac) / IP(src=src, dst=dst, id=7) /
            TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=1, window=8192,
                options=[("MSS", 1460), ("NOP", None), ("NOP", None)]) / payload)


def random_flows(rng: random.Random, n: int) -> list[tuple[int, int]]:
    return [(rng.randrange(1024, 65536), rng.randrange(1, 65536)) for _ in range(n)]


def _only(got: dict[int, list[bytes]], port: int, count: int, what: str) -> list[bytes]:
    summary = {p: len(f) for p, f in got.items() if f}
    assert len(got[port]) == count and sum(map(len, got.values())) == count, (
        f"{what}: expected {count} frame(s) out of port {port} and none elsewhere; got {summary}")
    return got[port]


# --- the cases -------------------------------------------------------------------------------

def arp_request_answered(fab: Fabric) -> None:
    """An ARP request for a local address is answered by the NIC, out of the port it came in."""
    p = fab.plan
    req = Ether(src=p.peer_mac, dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=1, hwsrc=p.peer_mac, psrc=p.peer_ip, pdst=p.local_ips[0])
    fab.send(p.network_port, bytes(req))
    reply = Ether(_only(fab.collect(1), p.network_port, 1, "ARP request")[0])
    assert ARP in reply, f"not an ARP frame: {reply.summary()}"
    a = reply[ARP]
    assert (reply.dst, reply.src) == (p.peer_mac, p.nic_mac), f"Ethernet {reply.src} -> {reply.dst}"
    assert (a.op, a.hwsrc, a.psrc, a.hwdst, a.pdst) == (
        2, p.nic_mac, p.local_ips[0], p.peer_mac, p.peer_ip), f"ARP reply {a.summary()} / {a!r}"


def arp_reply_to_cpu(fab: Fabric) -> None:
    """An ARP reply (a neighbour announcing itself) goes to the controller as a PacketIn."""
    p = fab.plan
    frame = bytes(Ether(src=p.peer_mac, dst=p.nic_mac) / ARP(
        op=2, hwsrc=p.peer_mac, psrc=p.peer_ip, hwdst=p.nic_mac, pdst=p.local_ips[0]))
    fab.send(p.network_port, frame)
    pkt = fab.ctrl.packet_ins.get(timeout=3.0)
    meta = fab.ctrl.packet_in_metadata(pkt)
    assert meta.get("ingress_port") == p.network_port and meta.get("reason") == 1, meta
    assert pkt.payload[:len(frame)] == frame, "PacketIn payload differs from the frame sent"
    _only(fab.collect(0), p.network_port, 0, "ARP reply")


def bad_tcp_checksum_dropped(fab: Fabric) -> None:
    """A TCP segment with a wrong checksum is dropped (drop reason 2) and nothing leaves."""
    p = fab.plan
    bad = tcp_frame(p, p.peer_ip, p.local_ips[0], 40000, 80, b"hello")
    bad[TCP].chksum = Ether(bytes(bad))[TCP].chksum ^ 0x5A5A
    drops0 = fab.counter("NicIngress.drops", 2)
    rx0 = fab.counter("NicIngress.rx_port", p.network_port)
    fab.send(p.network_port, bytes(bad))
    _only(fab.collect(0, quiet=0.5), p.network_port, 0, "bad TCP checksum")
    drops1 = fab.counter("NicIngress.drops", 2)
    rx1 = fab.counter("NicIngress.rx_port", p.network_port)
    assert drops1[0] - drops0[0] == 1, f"drops[2] packets {drops0[0]} -> {drops1[0]}"
    assert rx1[0] - rx0[0] == 1, f"rx_port[{p.network_port}] packets {rx0[0]} -> {rx1[0]}"


def tcp_steered_by_rss(fab: Fabric, flows: int = 24) -> None:
    """Good segments reach exactly the core the shared RSS hash predicts, unchanged, and the
    rx/tx counters read over P4Runtime count exactly those frames and bytes."""
    p = fab.plan
    rng = random.Random(5)
    before = {port: fab.counter("NicEgress.tx_port", port) for port in p.core_ports}
    rx0 = fab.counter("NicIngress.rx_port", p.network_port)
    sent_bytes = 0
    expect_count = {port: 0 for port in p.core_ports}
    for i, (sport, dport) in enumerate(random_flows(rng, flows)):
        frame = bytes(tcp_frame(p, p.peer_ip, p.local_ips[0], sport, dport, b"x" * (i + 1)))
        port = p.rss_port(p.peer_ip, p.local_ips[0], sport, dport)
        fab.send(p.network_port, frame)
        out = _only(fab.collect(1, quiet=0.0), port, 1, f"flow {sport}->{dport}")
        assert out[0] == frame, f"flow {sport}->{dport}: the frame was changed on its way"
        sent_bytes += len(frame)
        expect_count[port] += 1
    _only(fab.collect(0), p.network_port, 0, "after the flows")
    assert all(expect_count.values()), f"the flows did not use every core: {expect_count}"
    rx1 = fab.counter("NicIngress.rx_port", p.network_port)
    assert (rx1[0] - rx0[0], rx1[1] - rx0[1]) == (flows, sent_bytes), (rx0, rx1, flows, sent_bytes)
    for port in p.core_ports:
        after = fab.counter("NicEgress.tx_port", port)
        assert after[0] - before[port][0] == expect_count[port], (
            f"tx_port[{port}] packets {before[port][0]} -> {after[0]}, "
            f"expected +{expect_count[port]}")


def steering_symmetric(fab: Fabric, flows: int = 24) -> None:
    """Both directions of a flow land on the same core (the hash orders the two endpoints)."""
    p = fab.plan
    a, b = p.local_ips[:2]
    rng = random.Random(7)
    cores_used = set()
    for x, y in random_flows(rng, flows):
        ports = []
        for src, dst, sport, dport in ((a, b, x, y), (b, a, y, x)):
            fab.send(p.network_port, bytes(tcp_frame(p, src, dst, sport, dport)))
            got = fab.collect(1, quiet=0.0)
            hit = [port for port, frames in got.items() if frames]
            assert len(hit) == 1 and len(got[hit[0]]) == 1, f"{src}:{sport}->{dst}:{dport}: {got}"
            ports.append(hit[0])
        assert ports[0] == ports[1], f"flow {a}:{x} <-> {b}:{y}: directions on ports {ports}"
        cores_used.add(ports[0])
    assert cores_used == set(p.core_ports), f"only cores {cores_used} used by {flows} flows"


def core_frame_checksums_filled(fab: Fabric) -> None:
    """A core's frame with zero MACs and zero checksums leaves the network port with both
    checksums right (scapy's recomputation agrees) and the neighbour's and port's MACs."""
    p = fab.plan
    payload = bytes(range(256))[:101]            # odd length: the checksum's padding case
    frame = (Ether(src="00:00:00:00:00:00", dst="00:00:00:00:00:00") /
             IP(src=p.local_ips[0], dst=p.peer_ip, id=9, chksum=0) /
             TCP(sport=80, dport=41000, flags="PA", seq=5, ack=6, chksum=0,
                 options=[("NOP", None), ("NOP", None), ("Timestamp", (1, 2))]) / payload)
    fab.send(p.core_ports[0], bytes(frame))
    out = Ether(_only(fab.collect(1), p.network_port, 1, "core frame")[0])
    assert (out.src, out.dst) == (p.nic_mac, p.peer_mac), f"MACs {out.src} -> {out.dst}"
    ref = out.copy()
    del ref[IP].chksum
    del ref[TCP].chksum
    ref = Ether(bytes(ref))
    assert out[IP].chksum == ref[IP].chksum != 0, f"IPv4 checksum {out[IP].chksum:#06x}, " \
                                                   f"expected {ref[IP].chksum:#06x}"
    assert out[TCP].chksum == ref[TCP].chksum != 0, f"TCP checksum {out[TCP].chksum:#06x}, " \
                                                     f"expected {ref[TCP].chksum:#06x}"
    assert bytes(out[TCP].payload) == payload, "payload changed"
    assert (out[IP].src, out[IP].dst, out[TCP].sport, out[TCP].dport) == (
        p.local_ips[0], p.peer_ip, 80, 41000), out.summary()


def flow_steer_overrides_hash(fab: Fabric) -> None:
    """A flow_steer entry sends its 5-tuple to the named core whatever the hash says."""
    p = fab.plan
    rng = random.Random(11)
    src, dst = p.peer_ip, p.local_ips[0]
    sport, dport = next(f for f in random_flows(rng, 1000)
                        if p.rss_port(src, dst, *f) == p.core_ports[0])
    target = p.core_ports[1]
    match = [ip_int(src), ip_int(dst), sport, dport]
    fab.ctrl.insert("NicIngress.flow_steer", match, "NicIngress.steer_to_core", [target])
    try:
        frame = bytes(tcp_frame(p, src, dst, sport, dport, b"steered"))
        fab.send(p.network_port, frame)
        assert _only(fab.collect(1), target, 1, "flow_steer hit")[0] == frame
    finally:
        fab.ctrl.delete("NicIngress.flow_steer", match, "NicIngress.steer_to_core", [target])
    fab.send(p.network_port, frame)
    _only(fab.collect(1), p.core_ports[0], 1, "after the flow_steer entry is deleted")


def packet_out_leaves_unchanged(fab: Fabric) -> None:
    """A PacketOut (the agent's own ARP request, say) leaves its egress_port byte for byte."""
    p = fab.plan
    frame = bytes(Ether(src=p.nic_mac, dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=1, hwsrc=p.nic_mac, psrc=p.local_ips[0], pdst=p.peer_ip))
    fab.ctrl.packet_out(frame, egress_port=p.network_port)
    assert _only(fab.collect(1), p.network_port, 1, "PacketOut")[0] == frame


CASES: Sequence[Callable[[Fabric], None]] = (
    arp_request_answered, arp_reply_to_cpu, packet_out_leaves_unchanged, bad_tcp_checksum_dropped,
    tcp_steered_by_rss, steering_symmetric, core_frame_checksums_filled, flow_steer_overrides_hash)

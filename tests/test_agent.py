"""The agent against the real embedded target over P4Runtime: tables, ARP, restarts, counters."""

from __future__ import annotations

import ipaddress
import logging
import random
import socket
import threading
import time

import grpc
import pytest
from p4.v1 import p4runtime_pb2 as p4r
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import ARP, Ether

from p4mtcp.control.agent import (
    AgentError, Entry, NicAgent, arp_request, entry, parse_arp)
from p4mtcp.control.config import (
    HostConfig, parse_arp_conf, parse_mtcp_conf, parse_route_conf)
from p4mtcp.control.p4rt import Client
from p4mtcp.control.rss import PortSelector
from p4mtcp.dataplane.device import Device
from p4mtcp.dataplane.server import serve
from p4mtcp.p4info import P4Schema
from p4mtcp.p4src import CPU_PORT, FLOW_STEER, P4INFO

from waiting import wait_for

MAC0, MAC1 = "02:00:00:00:01:01", "02:00:00:00:02:01"
PEER_MAC, GW_MAC = "02:00:00:00:01:02", "02:00:00:00:01:fe"
CPU = CPU_PORT
NET0, NET1, CORE0, CORE1 = 1, 2, 16, 17


def ip(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def mac_int(text: str) -> int:
    return int(text.replace(":", ""), 16)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nic:
    """An embedded target behind a P4Runtime server; frames the CPU sends out are collected."""

    def __init__(self, address: str):
        self.address = address
        self.sent: list[tuple[int, bytes]] = []
        self._lock = threading.Lock()
        self.start()

    def start(self, device: Device | None = None) -> None:
        self.device = device or Device(device_id=1, cpu_port=CPU)
        self.device.packet_out_handler = self._packet_out
        self.server = serve(self.device, self.address)

    def stop(self) -> None:
        self.server.stop(0).wait(5)

    def _packet_out(self, frame: bytes) -> None:
        out = self.device.process(CPU, frame)
        with self._lock:
            self.sent.extend(out)

    def take_sent(self) -> list[tuple[int, bytes]]:
        with self._lock:
            out, self.sent = self.sent, []
        return out


def host_config(address: str, **extra: str) -> HostConfig:
    keys = {"num_cores": "2", "port": "net0 net1", "network_ports": f"{NET0} {NET1}",
            "local_ip": "10.0.0.1/24 192.168.5.1/24", "host_mac": f"{MAC0} {MAC1}",
            "p4runtime": address, "p4info": str(P4INFO), "election_id": "10", **extra}
    mtcp = parse_mtcp_conf("".join(f"{k} = {v}\n" for k, v in keys.items()))
    arp = parse_arp_conf(f"ARP_ENTRY 2\n10.0.0.2/32 {PEER_MAC}\n10.0.1.0/24 {GW_MAC}\n")
    routes = parse_route_conf("ROUTES 2\n10.0.1.0/24 net0\n172.20.0.0/16 net1\n")
    return HostConfig(mtcp, arp, routes)


@pytest.fixture
def nic():
    n = Nic(f"127.0.0.1:{free_port()}")
    yield n
    n.stop()


@pytest.fixture
def agent(nic):
    a = NicAgent(host_config(nic.address), backoff=(0.05, 0.3)).start(timeout=10)
    yield a
    a.stop()


def as_map(entries: list[Entry]) -> dict:
    """match -> (action short name, params) with single-field matches unwrapped."""
    out = {}
    for e in entries:
        key = e.match[0][1] if len(e.match) == 1 else tuple(v for _, v in e.match)
        out[key] = (e.action.split(".")[-1], dict(e.params))
    return out


def snapshot(agent: NicAgent) -> dict[str, dict]:
    return {t: as_map(agent.read_table(t)) for t in (
        "NicIngress.port_role", "NicIngress.port_mac", "NicIngress.local_ipv4",
        "NicIngress.arp_responder", "NicIngress.ipv4_lpm", "NicIngress.neighbor",
        "NicIngress.reta", "NicIngress.flow_steer")}


EXPECTED = {
    "NicIngress.port_role": {NET0: ("set_network_port", {}), NET1: ("set_network_port", {}),
                             CORE0: ("set_core_port", {"core": 0}),
                             CORE1: ("set_core_port", {"core": 1})},
    "NicIngress.port_mac": {NET0: ("set_src_mac", {"mac": mac_int(MAC0)}),
                            NET1: ("set_src_mac", {"mac": mac_int(MAC1)})},
    "NicIngress.local_ipv4": {ip("10.0.0.1"): ("set_local", {}),
                              ip("192.168.5.1"): ("set_local", {})},
    "NicIngress.arp_responder": {ip("10.0.0.1"): ("arp_reply", {"mac": mac_int(MAC0)}),
                                 ip("192.168.5.1"): ("arp_reply", {"mac": mac_int(MAC1)})},
    "NicIngress.ipv4_lpm": {
        (ip("10.0.0.0"), 24): ("set_next_hop", {"next_hop": ip("10.0.0.0"), "port": NET0}),
        (ip("192.168.5.0"), 24): ("set_next_hop", {"next_hop": ip("192.168.5.0"), "port": NET1}),
        (ip("10.0.1.0"), 24): ("set_next_hop", {"next_hop": ip("10.0.1.0"), "port": NET0}),
        (ip("172.20.0.0"), 16): ("set_next_hop", {"next_hop": ip("172.20.0.0"), "port": NET1}),
        (ip("10.0.0.2"), 32): ("set_next_hop", {"next_hop": ip("10.0.0.2"), "port": NET0})},
    "NicIngress.neighbor": {ip("10.0.0.2"): ("set_dst_mac", {"mac": mac_int(PEER_MAC)}),
                            ip("10.0.1.0"): ("set_dst_mac", {"mac": mac_int(GW_MAC)})},
    "NicIngress.reta": {b: ("steer_to_core", {"port": CORE0 + b % 2}) for b in range(128)},
    "NicIngress.flow_steer": {},
}


# --- frames --------------------------------------------------------------------------------------

def core_frame(dst: str, src: str = "10.0.0.1", sport: int = 40000, dport: int = 80,
               payload: bytes = b"hello") -> bytes:
    """What a core sends: zero MACs, zero checksums (the NIC fills them in)."""
    return bytes(Ether(src="00:00:00:00:00:00", dst="00:00:00:00:00:00")
                 / IP(src=src, dst=dst, chksum=0) / TCP(sport=sport, dport=dport, chksum=0,
                                                        flags="PA") / payload)


def wire_frame(src: str, sport: int, dst: str = "10.0.0.1", dport: int = 80,
               src_mac: str = PEER_MAC, payload: bytes = b"", bad_tcp: bool = False) -> bytes:
    """What a peer sends: real MACs and checksums."""
    frame = Ether(src=src_mac, dst=MAC0) / IP(src=src, dst=dst) / TCP(
        sport=sport, dport=dport, flags="SA") / payload
    if bad_tcp:
        frame[TCP].chksum = 0x1234
    return bytes(frame)


def arp_frame(op: int, sender: str, sender_mac: str, target: str, dst_mac: str = MAC0) -> bytes:
    return bytes(Ether(src=sender_mac, dst=dst_mac) / ARP(
        op=op, hwsrc=sender_mac, psrc=sender, hwdst=dst_mac if op == 2 else "00:00:00:00:00:00",
        pdst=target)).ljust(60, b"\0")


def checksums_ok(frame: bytes) -> bool:
    pkt = Ether(frame)
    again = Ether(frame)
    del again[IP].chksum
    del again[TCP].chksum
    again = Ether(bytes(again))
    return pkt[IP].chksum == again[IP].chksum and pkt[TCP].chksum == again[TCP].chksum


# --- tests ---------------------------------------------------------------------------------------

def test_setup_installs_exactly_what_the_config_asks_for(nic, agent):
    assert nic.device.pipeline is not None
    assert snapshot(agent) == EXPECTED


def test_programmed_nic_forwards_as_configured(nic, agent):
    # A core's frame to the gateway prefix leaves net0 with the gateway's MAC and our MAC.
    out = nic.device.process(CORE1, core_frame("10.0.1.77", sport=1234))
    assert [p for p, _ in out] == [NET0]
    pkt = Ether(out[0][1])
    assert (pkt.dst, pkt.src) == (GW_MAC, MAC0) and checksums_ok(out[0][1])
    # The data plane answers ARP for our address on the second interface by itself.
    out = nic.device.process(NET1, arp_frame(1, "192.168.5.9", "02:00:00:00:09:09",
                                             "192.168.5.1", dst_mac="ff:ff:ff:ff:ff:ff"))
    assert [p for p, _ in out] == [NET1]
    assert (Ether(out[0][1])[ARP].op, Ether(out[0][1])[ARP].hwsrc) == (2, MAC1)


def test_rss_selected_ports_land_on_their_core(nic, agent):
    reta = [dict(e.params)["port"] for e in sorted(
        agent.read_table("NicIngress.reta"), key=lambda e: e.match[0][1])]
    rng = random.Random(5)
    for core_port in (CORE0, CORE1):
        sel = PortSelector(reta, core_port, rng=rng)
        for _ in range(20):
            lport = sel.pick(ip("10.0.0.1"), ip("10.0.0.2"), 80, lambda p: False)
            out = nic.device.process(NET0, wire_frame("10.0.0.2", 80, dport=lport))
            assert [p for p, _ in out] == [core_port]


def test_flow_steer_overrides_the_hash_and_counts_hits(nic, agent):
    sel = PortSelector([CORE0 + b % 2 for b in range(128)], CORE1)
    lport = sel.pick(ip("10.0.0.1"), ip("10.0.0.2"), 8080, lambda p: False)
    frame = wire_frame("10.0.0.2", 8080, dport=lport, payload=b"x" * 10)
    assert [p for p, _ in nic.device.process(NET0, frame)] == [CORE1]
    agent.steer_flow(ip("10.0.0.2"), ip("10.0.0.1"), 8080, lport, core=0)
    assert as_map(agent.read_table(FLOW_STEER)) == {
        (ip("10.0.0.2"), ip("10.0.0.1"), 8080, lport): ("steer_to_core", {"port": CORE0})}
    for _ in range(3):
        assert [p for p, _ in nic.device.process(NET0, frame)] == [CORE0]
    hits = agent.read_direct_counter(FLOW_STEER)
    assert list(hits.values()) == [(3, 3 * len(frame))]
    agent.unsteer_flow(ip("10.0.0.2"), ip("10.0.0.1"), 8080, lport)
    assert agent.read_table(FLOW_STEER) == []
    assert [p for p, _ in nic.device.process(NET0, frame)] == [CORE1]


def test_bad_flow_steer_request_changes_nothing(nic, agent):
    with pytest.raises(ValueError, match="NicIngress.flow_steer .*port"):
        agent.steer_flow(ip("10.0.0.2"), ip("10.0.0.1"), 80, 5000, core=600)
    assert agent.desired(FLOW_STEER) == [] and agent.read_table(FLOW_STEER) == []


def test_arp_learning_via_packet_in(nic, agent):
    # RFC 826: a reply addressed to us adds the sender ...
    assert nic.device.process(NET0, arp_frame(2, "10.0.0.9", "02:00:00:00:00:09", "10.0.0.1")) == []
    wait_for(lambda: ip("10.0.0.9") in agent.neighbors(), what="10.0.0.9 learned")
    tables = snapshot(agent)
    assert tables["NicIngress.neighbor"][ip("10.0.0.9")] == (
        "set_dst_mac", {"mac": mac_int("02:00:00:00:00:09")})
    assert tables["NicIngress.ipv4_lpm"][(ip("10.0.0.9"), 32)] == (
        "set_next_hop", {"next_hop": ip("10.0.0.9"), "port": NET0})
    out = nic.device.process(CORE0, core_frame("10.0.0.9"))
    assert [(p, Ether(f).dst) for p, f in out] == [(NET0, "02:00:00:00:00:09")]
    # ... a later broadcast from a known sender updates its MAC ...
    nic.device.process(NET0, arp_frame(1, "10.0.0.9", "02:00:00:00:00:99", "10.0.0.77",
                                       dst_mac="ff:ff:ff:ff:ff:ff"))
    wait_for(lambda: agent.neighbors()[ip("10.0.0.9")][0] == bytes.fromhex("020000000099"),
             what="MAC update")
    # ... while strangers' chatter, off-link senders and static entries are left alone.
    before = agent.stats.ignored
    nic.device.process(NET0, arp_frame(1, "10.0.0.33", "02:00:00:00:00:33", "10.0.0.34",
                                       dst_mac="ff:ff:ff:ff:ff:ff"))
    nic.device.process(NET0, arp_frame(2, "172.16.0.1", "02:00:00:00:00:44", "10.0.0.1"))
    nic.device.process(NET0, arp_frame(2, "10.0.0.2", "02:00:00:00:00:55", "10.0.0.1"))
    wait_for(lambda: agent.stats.ignored == before + 3, what="three ignored ARPs")
    assert set(agent.neighbors()) == {ip("10.0.0.9")}
    assert snapshot(agent)["NicIngress.neighbor"][ip("10.0.0.2")] == EXPECTED[
        "NicIngress.neighbor"][ip("10.0.0.2")]


@pytest.mark.parametrize("dst, port, src, src_mac", [
    ("10.0.0.50", NET0, "10.0.0.1", MAC0), ("192.168.5.60", NET1, "192.168.5.1", MAC1),
    ("172.20.3.4", NET1, "192.168.5.1", MAC1)])   # off-subnet route: mTCP ARPs for the host
def test_neighbor_miss_arps_then_releases_the_held_frame(nic, agent, dst, port, src, src_mac):
    frame = core_frame(dst, src=src, payload=b"first")
    assert nic.device.process(CORE0, frame) == []          # went to the CPU: neighbour miss
    sent = wait_for(nic.take_sent, what="ARP request")
    assert len(sent) == 1 and sent[0][0] == port
    req = parse_arp(sent[0][1])
    assert req is not None and sent[0][1][:6] == b"\xff" * 6
    assert (req.oper, req.sha, req.spa, req.tpa) == (
        1, bytes.fromhex(src_mac.replace(":", "")), ip(src), ip(dst))
    assert sent[0][1] == arp_request(bytes.fromhex(src_mac.replace(":", "")), ip(src), ip(dst))
    # A second frame within the retry interval is held without a second request.
    nic.device.process(CORE0, core_frame(dst, src=src, payload=b"second"))
    time.sleep(0.2)
    assert nic.take_sent() == []
    # The reply arrives: both frames leave, in order, with the MACs filled and checksums intact.
    nic.device.process(port, arp_frame(2, dst, "02:00:00:00:00:50", src, dst_mac=src_mac))
    released = wait_for(lambda: nic.sent if len(nic.sent) >= 2 else None, what="released frames")
    assert [p for p, _ in released] == [port, port]
    for (_, f), payload in zip(released, (b"first", b"second")):
        pkt = Ether(f)
        assert (pkt.dst, pkt.src, bytes(pkt[TCP].payload)) == ("02:00:00:00:00:50", src_mac,
                                                               payload)
        assert checksums_ok(f)
    nic.take_sent()
    # From now on the data plane forwards by itself.
    out = nic.device.process(CORE1, core_frame(dst, src=src))
    assert [(p, Ether(f).dst) for p, f in out] == [(port, "02:00:00:00:00:50")]
    assert agent.stats.arp_requests == 1 and agent.stats.frames_released == 2


def test_nic_restart_with_a_fresh_device_reinstalls_everything(nic, agent):
    nic.device.process(NET0, arp_frame(2, "10.0.0.9", "02:00:00:00:00:09", "10.0.0.1"))
    wait_for(lambda: ip("10.0.0.9") in agent.neighbors(), what="learned neighbour")
    agent.steer_flow(ip("10.0.0.2"), ip("10.0.0.1"), 443, 51000, core=1)
    before = snapshot(agent)
    assert before["NicIngress.flow_steer"] and (ip("10.0.0.9"), 32) in before[
        "NicIngress.ipv4_lpm"]
    gen = agent.generation
    nic.stop()
    wait_for(lambda: not agent.connected, what="agent to notice the restart")
    nic.start(Device(device_id=1, cpu_port=CPU))     # a fresh NIC: no pipeline, no entries
    assert agent.wait_generation(gen + 1, 15)
    assert nic.device.pipeline is not None
    assert snapshot(agent) == before
    # The fresh NIC steers and forwards from the re-installed state.
    out = nic.device.process(NET0, wire_frame("10.0.0.2", 443, dport=51000))
    assert [p for p, _ in out] == [CORE1]
    assert [p for p, _ in nic.device.process(CORE0, core_frame("10.0.0.9"))] == [NET0]


def test_requested_stop_is_quiet_but_a_lost_nic_is_reported(nic, caplog):
    caplog.set_level(logging.WARNING, logger="p4mtcp.control")
    first = NicAgent(host_config(nic.address), backoff=(0.05, 0.3)).start(timeout=10)
    first.stop()
    assert not first.connected
    assert [r.getMessage() for r in caplog.records] == []
    second = NicAgent(host_config(nic.address), backoff=(0.05, 0.3)).start(timeout=10)
    try:
        nic.stop()
        wait_for(lambda: not second.connected, what="agent to notice the lost NIC")
        wait_for(lambda: any("NIC stream ended" in r.getMessage() and r.levelno == logging.WARNING
                             for r in caplog.records), what="the loss logged as a warning")
    finally:
        second.stop()


def test_stream_error_is_kept_only_when_the_device_ends_it(nic):
    schema = P4Schema.from_file(P4INFO)
    ours = Client(nic.address, schema, device_id=1, election_id=7)
    ours.open(5.0)
    ours.close()
    assert ours.closed.is_set() and ours.error is None      # we cancelled it: not a failure
    lost = Client(nic.address, schema, device_id=1, election_id=8)
    lost.open(5.0)
    try:
        nic.stop()
        assert lost.closed.wait(5.0)
        assert lost.error is not None and lost.error.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        lost.close()


def test_reconnect_to_a_surviving_device_reconciles_without_repushing(nic, agent):
    agent.steer_flow(ip("10.0.0.2"), ip("10.0.0.1"), 443, 51000, core=1)
    agent.steer_flow(ip("10.0.0.2"), ip("10.0.0.1"), 443, 51001, core=0)
    pipeline = nic.device.pipeline
    gen = agent.generation
    nic.stop()
    wait_for(lambda: not agent.connected, what="disconnect")
    # Changes made while the NIC is unreachable are kept and applied on reconnect.
    agent.unsteer_flow(ip("10.0.0.2"), ip("10.0.0.1"), 443, 51000)
    agent.steer_flow(ip("10.0.0.2"), ip("10.0.0.1"), 443, 51001, core=1)
    nic.start(nic.device)                            # same device: its state survived
    assert agent.wait_generation(gen + 1, 15)
    assert nic.device.pipeline is pipeline           # not pushed again (cookie matched)
    assert snapshot(agent)["NicIngress.flow_steer"] == {
        (ip("10.0.0.2"), ip("10.0.0.1"), 443, 51001): ("steer_to_core", {"port": CORE1})}


def test_counters_match_the_traffic(nic, agent):
    good = [wire_frame("10.0.0.2", 80, dport=30000 + i, payload=b"p" * i) for i in range(7)]
    bad = [wire_frame("10.0.0.2", 80, dport=31000 + i, bad_tcp=True) for i in range(3)]
    outs = []
    for f in good + bad:
        outs += nic.device.process(NET0, f)
    sent = [core_frame("10.0.1.5", sport=20000 + i) for i in range(4)]
    for f in sent:
        outs += nic.device.process(CORE1, f)
    c = agent.nic_counters()
    assert c["rx_port"][NET0] == (10, sum(map(len, good + bad)))
    assert c["rx_port"][CORE1] == (4, sum(map(len, sent)))
    assert c["drops"] == {2: (3, sum(map(len, bad)))}            # reason 2: bad TCP checksum
    by_port: dict[int, list[int]] = {}
    for port, f in outs:
        by_port.setdefault(port, []).append(len(f))
    assert c["tx_port"] == {p: (len(v), sum(v)) for p, v in by_port.items()}
    assert sum(n for n, _ in c["tx_port"].values()) == 11
    assert c["flow_steer_hits"] == {}


def test_write_errors_name_the_update_table_and_code(nic, agent):
    reta0 = entry("NicIngress.reta", {"meta.rss_bucket": 0}, "NicIngress.steer_to_core", port=16)
    ghost = entry("NicIngress.neighbor", {"meta.next_hop": ip("10.9.9.9")},
                  "NicIngress.set_dst_mac", mac=1)
    fresh = entry(FLOW_STEER, {"hdr.ipv4.src_addr": 1, "hdr.ipv4.dst_addr": 2,
                               "hdr.tcp.src_port": 3, "hdr.tcp.dst_port": 4},
                  "NicIngress.steer_to_core", port=16)
    with pytest.raises(AgentError) as info:
        agent._require_session().write([(p4r.Update.INSERT, fresh),
                                         (p4r.Update.INSERT, reta0),
                                         (p4r.Update.DELETE, ghost)])
    err = info.value
    assert (err.call, err.code) == ("Write", "UNKNOWN")
    assert [(u.index, u.update, u.table, u.code) for u in err.updates] == [
        (1, "INSERT", "NicIngress.reta", "ALREADY_EXISTS"),
        (2, "DELETE", "NicIngress.neighbor", "NOT_FOUND")]
    assert "update 1 (INSERT NicIngress.reta): ALREADY_EXISTS" in str(err)
    assert len(agent.read_table(FLOW_STEER)) == 1     # CONTINUE_ON_ERROR: update 0 went in


def test_no_nic_is_a_clear_error():
    address = f"127.0.0.1:{free_port()}"
    agent = NicAgent(host_config(address), backoff=(0.05, 0.2), connect_timeout=0.5)
    with pytest.raises(AgentError, match=address):
        agent.start(timeout=1.0)
    assert agent._thread is None and not agent.connected


def test_second_controller_is_not_primary(nic, agent):
    other = NicAgent(host_config(nic.address, election_id="5"), backoff=(0.05, 0.2),
                     connect_timeout=1.0)
    with pytest.raises(AgentError, match="not primary") as info:
        other.start(timeout=1.5)
    assert info.value.code == "ALREADY_EXISTS"
    assert snapshot(agent) == EXPECTED          # the primary's state is untouched


def test_unresolved_next_hop_gives_up_and_drops_held_frames(nic, agent):
    agent.ARP_GIVE_UP = 0.3
    nic.device.process(CORE0, core_frame("10.0.0.70"))
    nic.device.process(CORE0, core_frame("10.0.0.70"))
    wait_for(nic.take_sent, what="ARP request")
    wait_for(lambda: agent.stats.frames_dropped == 2, what="held frames dropped")
    # A late reply still teaches the neighbour (we are its target) but releases nothing.
    nic.device.process(NET0, arp_frame(2, "10.0.0.70", "02:00:00:00:00:70", "10.0.0.1"))
    wait_for(lambda: ip("10.0.0.70") in agent.neighbors(), what="late reply learned")
    time.sleep(0.1)
    assert nic.take_sent() == [] and agent.stats.frames_released == 0


def test_reply_on_another_port_than_asked_is_ignored(nic, agent):
    nic.device.process(CORE0, core_frame("172.20.9.9", src="192.168.5.1"))
    assert [p for p, _ in wait_for(nic.take_sent, what="ARP request")] == [NET1]
    before = agent.stats.ignored
    nic.device.process(NET0, arp_frame(2, "172.20.9.9", "02:00:00:00:00:99", "10.0.0.1"))
    wait_for(lambda: agent.stats.ignored == before + 1, what="ignored reply")
    assert ip("172.20.9.9") not in agent.neighbors()


def test_malformed_packet_ins_are_counted_not_fatal(nic, agent):
    header = agent.schema.controller_header("packet_in")
    ids = {f.name: f.id for f in header.fields}

    def packet_in(reason: int, port: int, payload: bytes) -> p4r.PacketIn:
        return p4r.PacketIn(payload=payload, metadata=[
            p4r.PacketMetadata(metadata_id=ids["ingress_port"], value=port.to_bytes(2, "big")),
            p4r.PacketMetadata(metadata_id=ids["reason"], value=bytes([reason]))])

    session = agent._require_session()
    before = (agent.stats.ignored, agent.stats.frames_dropped)
    for pkt in (packet_in(1, NET0, b"\x00" * 20),                          # truncated ARP
                packet_in(1, 99, arp_frame(2, "10.0.0.5", "02:00:00:00:00:05", "10.0.0.1")),
                packet_in(9, NET0, b"whatever"),                            # unknown reason
                packet_in(2, CORE0, b"\x00" * 10),                          # truncated IPv4
                packet_in(2, CORE0, core_frame("8.8.8.8"))):                # no route
        agent._on_packet_in(session, pkt)
    assert (agent.stats.ignored, agent.stats.frames_dropped) == (before[0] + 3, before[1] + 2)
    assert agent.connected and agent.neighbors() == {}


def test_pipeline_lost_under_a_live_stream_is_reinstalled(nic, agent):
    agent.HEALTH_INTERVAL = 0.2
    gen = agent.generation
    nic.device.pipeline = None          # the target lost its program but kept the connection
    assert agent.wait_generation(gen + 1, 10)
    assert nic.device.pipeline is not None and snapshot(agent) == EXPECTED


def test_packet_out_leaves_the_named_port_unchanged(nic, agent):
    frame = wire_frame("10.0.0.1", 80, dst="10.0.0.2", src_mac=MAC0, payload=b"raw")
    agent.send_packet(NET1, frame)
    assert wait_for(nic.take_sent, what="packet-out") == [(NET1, frame)]
    # Packets only: like BMv2, the target counts a packet-out's bytes as they entered the
    # pipeline (with the packet_out header), which is the server's business, not the agent's.
    assert {p: n for p, (n, _) in agent.nic_counters()["tx_port"].items()} == {NET1: 1}

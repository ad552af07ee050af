"""The `p4mtcp nic` process: frames through UNIX links, and the P4Runtime server on top."""

from __future__ import annotations

import functools
import queue
import socket
import struct
import threading
import time

import grpc
import pytest
from p4.v1 import p4runtime_pb2 as pb
from p4.v1 import p4runtime_pb2_grpc
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import ARP, Ether

import waiting
from p4mtcp.dataplane import nic as nicmod
from p4mtcp.dataplane.nic import Nic, parse_port_arg
from p4mtcp.link import open_port
from p4mtcp.p4info import P4Schema, encode_int
from p4mtcp.p4src import P4INFO

NET, CORE0, CPU = 1, 16, 255
LOCAL_IP, PEER_IP = "10.0.0.1", "10.0.0.2"
LOCAL_MAC, PEER_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"


drain = functools.partial(waiting.drain, timeout=3.0, interval=0.002)


def ip4(a: str) -> int:
    return int.from_bytes(socket.inet_aton(a), "big")


@pytest.fixture
def dp_wired(tmp_path):
    """A Nic (no gRPC) with a network link and two core links, and the far ends of all three."""
    nic = Nic({NET: f"unix:{tmp_path}/wire", CORE0: f"unix:{tmp_path}/c0",
               CORE0 + 1: f"unix:{tmp_path}/c1"}, grpc_address=None, p4info=str(P4INFO))
    nic.start()
    ends = {n: open_port(f"unix-host:{tmp_path}/{name}")
            for n, name in ((NET, "wire"), (CORE0, "c0"), (CORE0 + 1, "c1"))}
    yield nic, ends
    for e in ends.values():
        e.close()
    nic.stop()


def program(nic: Nic) -> None:
    tables = nic.device.pipeline.tables
    schema = nic.device.schema

    def add(t, key, a, *params):
        tables[f"NicIngress.{t}"].insert(key, 0, schema.action(f"NicIngress.{a}"), params)
    add("port_role", (NET,), "set_network_port")
    add("port_role", (CORE0,), "set_core_port", 0)
    add("port_role", (CORE0 + 1,), "set_core_port", 1)
    add("local_ipv4", (ip4(LOCAL_IP),), "set_local")
    for b in range(128):
        add("reta", (b,), "steer_to_core", CORE0 + b % 2)
    add("ipv4_lpm", ((ip4("10.0.0.0"), 24),), "set_next_hop", 0, NET)
    add("neighbor", (ip4(PEER_IP),), "set_dst_mac", 0x020000000002)
    add("port_mac", (NET,), "set_src_mac", 0x020000000001)


def test_frames_flow_wire_to_core_and_back(dp_wired):
    nic, ends = dp_wired
    program(nic)
    sent = [bytes(Ether(dst=LOCAL_MAC, src=PEER_MAC) / IP(src=PEER_IP, dst=LOCAL_IP)
                  / TCP(sport=30000 + i, dport=80) / (b"d" * i)) for i in range(50)]
    for f in sent:
        ends[NET].send(f)
    got = drain(ends[CORE0], 50, timeout=0.5) + drain(ends[CORE0 + 1], 50, timeout=0.5)
    assert sorted(got) == sorted(sent)
    reply = bytes(Ether(dst="00:00:00:00:00:00", src="00:00:00:00:00:00")
                  / IP(src=LOCAL_IP, dst=PEER_IP, chksum=0) / TCP(sport=80, dport=30000, chksum=0))
    ends[CORE0 + 1].send(reply)
    (out,) = drain(ends[NET], 1)
    assert Ether(out).dst == PEER_MAC and Ether(out)[TCP].chksum != 0
    assert nic.stats.frames_in == 51 and nic.stats.frames_out == 51


def test_packet_out_handler_runs_on_the_dataplane_thread(dp_wired):
    nic, ends = dp_wired
    arp = bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=LOCAL_MAC) / ARP(op=1, psrc=LOCAL_IP, pdst=PEER_IP))
    nic.device.packet_out_handler(struct.pack("!H", NET << 7) + arp)
    assert drain(ends[NET], 1) == [arp]


def test_frames_to_unattached_ports_are_counted(dp_wired):
    nic, ends = dp_wired
    nic.device.packet_out_handler(struct.pack("!H", 9 << 7) + b"x" * 60)
    end = time.monotonic() + 2
    while nic.stats.no_such_port == 0 and time.monotonic() < end:
        time.sleep(0.005)
    assert nic.stats.no_such_port == 1


@pytest.mark.parametrize("arg,msg", [("1", "NUM@SPEC"), ("x@veth0", "not an integer"),
                                     ("511@veth0", "outside"), ("1@", "NUM@SPEC")])
def test_port_arguments_are_checked(arg, msg):
    with pytest.raises(ValueError, match=msg):
        parse_port_arg(arg)


def test_cli_rejects_bad_arguments_with_a_message(capsys):
    assert nicmod.main(["--grpc", "127.0.0.1:0", "-i", "1@unix:/tmp/a", "-i", "1@unix:/tmp/b"]) == 2
    assert "already" in capsys.readouterr().err
    assert nicmod.main(["--cpu-port", "511"]) == 2


def test_no_flow_cache_reaches_the_device():
    """`p4mtcp nic --no-flow-cache` (and launcher.embedded_argv(flow_cache=False), which the
    benchmark uses) build the NIC's Device without the flow cache; the default builds it with."""
    from p4mtcp.bmv2.launcher import embedded_argv

    seen = []
    for flow_cache in (False, True):
        argv = embedded_argv({1: "veth0"}, "127.0.0.1:0", flow_cache=flow_cache)
        assert ("--no-flow-cache" in argv) is not flow_cache
        nic = nicmod.from_args(nicmod.parse_args(argv[argv.index("nic") + 1:]))
        seen.append(nic.device.flow_cache)
    assert seen == [False, True]


def test_cpu_port_cannot_be_a_frame_port():
    with pytest.raises(ValueError, match="CPU port"):
        Nic({255: "unix:/tmp/never"}, grpc_address=None)


# --- through the real P4Runtime server ----------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    """A bare P4Runtime client (master, election id 1)."""

    def __init__(self, address: str, schema: P4Schema):
        self.schema = schema
        self.channel = grpc.insecure_channel(address)
        grpc.channel_ready_future(self.channel).result(timeout=10)
        self.stub = p4runtime_pb2_grpc.P4RuntimeStub(self.channel)
        self.requests: queue.Queue = queue.Queue()
        self.replies: queue.Queue = queue.Queue()
        self.stream = self.stub.StreamChannel(iter(self.requests.get, None))
        threading.Thread(target=self._read, daemon=True).start()
        req = pb.StreamMessageRequest()
        req.arbitration.device_id = 1
        req.arbitration.election_id.low = 1
        self.requests.put(req)
        assert self.replies.get(timeout=5).arbitration.status.code == 0

    def _read(self) -> None:
        try:
            for reply in self.stream:
                self.replies.put(reply)
        except grpc.RpcError:
            pass  # the channel was closed at the end of the test

    def set_pipeline(self) -> None:
        req = pb.SetForwardingPipelineConfigRequest(device_id=1, action=pb.SetForwardingPipelineConfigRequest.VERIFY_AND_COMMIT)
        req.election_id.low = 1
        req.config.p4info.CopyFrom(self.schema.p4info)
        self.stub.SetForwardingPipelineConfig(req, timeout=10)

    def insert(self, table: str, match: list, action: str, *params: int) -> None:
        t = self.schema.table(f"NicIngress.{table}")
        a = self.schema.action(f"NicIngress.{action}")
        req = pb.WriteRequest(device_id=1)
        req.election_id.low = 1
        u = req.updates.add(type=pb.Update.INSERT)
        e = u.entity.table_entry
        e.table_id = t.id
        for f, m in zip(t.match_fields, match):
            fm = e.match.add(field_id=f.id)
            if f.match_type == "lpm":
                fm.lpm.value, fm.lpm.prefix_len = encode_int(m[0], f.bitwidth), m[1]
            else:
                fm.exact.value = encode_int(m, f.bitwidth)
        e.action.action.action_id = a.id
        for p, v in zip(a.params, params):
            e.action.action.params.add(param_id=p.id, value=encode_int(v, p.bitwidth))
        self.stub.Write(req, timeout=10)

    def counter(self, name: str, index: int) -> tuple[int, int]:
        req = pb.ReadRequest(device_id=1)
        c = req.entities.add().counter_entry
        c.counter_id = self.schema.counter(name).id
        c.index.index = index
        for resp in self.stub.Read(req, timeout=10):
            for ent in resp.entities:
                d = ent.counter_entry.data
                return d.packet_count, d.byte_count
        raise AssertionError("no counter entry read")

    def close(self) -> None:
        self.requests.put(None)
        self.channel.close()


def test_p4runtime_programs_the_nic_and_carries_packet_in_and_out(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    nic = Nic({NET: f"unix:{tmp_path}/wire", CORE0: f"unix:{tmp_path}/c0"}, grpc_address=address)
    nic.start()
    wire = open_port(f"unix-host:{tmp_path}/wire")
    core = open_port(f"unix-host:{tmp_path}/c0")
    client = Client(address, P4Schema.from_file(P4INFO))
    try:
        client.set_pipeline()
        client.insert("port_role", [NET], "set_network_port")
        client.insert("local_ipv4", [ip4(LOCAL_IP)], "set_local")
        for b in range(128):
            client.insert("reta", [b], "steer_to_core", CORE0)
        frames = [bytes(Ether(dst=LOCAL_MAC, src=PEER_MAC) / IP(src=PEER_IP, dst=LOCAL_IP)
                        / TCP(sport=20000 + i) / (b"z" * i * 10)) for i in range(20)]
        for f in frames:
            wire.send(f)
        assert len(drain(core, 20)) == 20
        assert client.counter("NicIngress.rx_port", NET) == (20, sum(map(len, frames)))
        assert client.counter("NicEgress.tx_port", CORE0) == (20, sum(map(len, frames)))
        # an ARP reply from the wire reaches the controller as a PacketIn
        arp = bytes(Ether(dst=LOCAL_MAC, src=PEER_MAC) / ARP(op=2, psrc=PEER_IP, pdst=LOCAL_IP))
        wire.send(arp)
        msg = client.replies.get(timeout=5)
        assert msg.packet.payload == arp
        meta = {m.metadata_id: int.from_bytes(m.value, "big") for m in msg.packet.metadata}
        assert meta[1] == NET and meta[3] == 1
        # a PacketOut leaves the wire port unchanged
        out = pb.StreamMessageRequest()
        out.packet.payload = arp[::-1]
        out.packet.metadata.add(metadata_id=1, value=encode_int(NET, 9))
        client.requests.put(out)
        assert drain(wire, 1) == [arp[::-1]]
    finally:
        client.close()
        wire.close()
        core.close()
        nic.stop()


def test_the_nic_command_runs_as_a_process_and_stops_on_sigterm(tmp_path):
    import signal
    import subprocess
    import sys

    address = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen([sys.executable, "-m", "p4mtcp.cli", "nic", "--grpc", address,
                             "-i", f"{NET}@unix:{tmp_path}/wire", "-i", f"{CORE0}@unix:{tmp_path}/c0"],
                            stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 20
        while not (tmp_path / "c0").exists() and time.monotonic() < end and proc.poll() is None:
            time.sleep(0.05)
        wire = open_port(f"unix-host:{tmp_path}/wire", connect_timeout=5)
        core = open_port(f"unix-host:{tmp_path}/c0", connect_timeout=5)
        client = Client(address, P4Schema.from_file(P4INFO))
        client.set_pipeline()
        client.insert("port_role", [NET], "set_network_port")
        client.insert("local_ipv4", [ip4(LOCAL_IP)], "set_local")
        client.insert("flow_steer", [ip4(PEER_IP), ip4(LOCAL_IP), 7, 80], "steer_to_core", CORE0)
        frame = bytes(Ether(dst=LOCAL_MAC, src=PEER_MAC) / IP(src=PEER_IP, dst=LOCAL_IP) / TCP(sport=7, dport=80))
        wire.send(frame)
        assert drain(core, 1) == [frame]
        client.close()
        wire.close()
        core.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert not (tmp_path / "c0").exists()  # the NIC removed its sockets
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

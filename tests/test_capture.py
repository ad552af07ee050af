"""Packet capture in the embedded NIC (dataplane/capture.py): the exact frames per port and
direction, read back with scapy (and tcpdump when installed); rotation bound; drops counted."""

from __future__ import annotations

import shutil
import struct
import subprocess
import time

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import ARP, Ether
from scapy.utils import RawPcapReader

import waiting
from p4mtcp.dataplane.capture import (LINKTYPE_ETHERNET, LINKTYPE_PACKET_IN,
                                      LINKTYPE_PACKET_OUT, Capture, CapturedDevice)
from p4mtcp.dataplane.nic import Nic
from p4mtcp.link import open_port
from p4mtcp.p4src import P4INFO
from test_dataplane_nic import CORE0, CPU, LOCAL_IP, LOCAL_MAC, NET, PEER_IP, PEER_MAC, program


def read(path) -> tuple[int, list[tuple[int, bytes]]]:
    """(link type, [(timestamp ns, frame)]) of a nanosecond pcap file."""
    with RawPcapReader(str(path)) as r:
        frames = [(meta.sec * 1_000_000_000 + meta.usec, data) for data, meta in r]
        return r.linktype, frames


@pytest.fixture
def captured_nic(tmp_path):
    cap = Capture(tmp_path / "pcap", CPU, {NET: "wire", CORE0: "c0", CORE0 + 1: "c1"})
    nic = Nic({NET: f"unix:{tmp_path}/wire", CORE0: f"unix:{tmp_path}/c0",
               CORE0 + 1: f"unix:{tmp_path}/c1"}, grpc_address=None, p4info=str(P4INFO),
              device=CapturedDevice(cap), capture=cap)
    nic.start()
    ends = {n: open_port(f"unix-host:{tmp_path}/{name}")
            for n, name in ((NET, "wire"), (CORE0, "c0"), (CORE0 + 1, "c1"))}
    yield nic, ends, cap
    for e in ends.values():
        e.close()
    nic.stop()


def test_every_port_and_direction_is_captured_exactly(captured_nic, tmp_path):
    nic, ends, cap = captured_nic
    program(nic)
    packet_ins: list[bytes] = []
    nic.device.packet_in_handler = packet_ins.append     # as the P4Runtime server sets it
    t0 = time.time_ns()
    inbound = [bytes(Ether(dst=LOCAL_MAC, src=PEER_MAC) / IP(src=PEER_IP, dst=LOCAL_IP)
                     / TCP(sport=30000 + i, dport=80) / (b"d" * i)) for i in range(20)]
    for f in inbound:
        ends[NET].send(f)
    to_cores = (waiting.drain(ends[CORE0], 20, timeout=0.5)
                + waiting.drain(ends[CORE0 + 1], 20, timeout=0.5))
    assert sorted(to_cores) == sorted(inbound)
    reply = bytes(Ether(dst="00:00:00:00:00:00", src="00:00:00:00:00:00")
                  / IP(src=LOCAL_IP, dst=PEER_IP, chksum=0) / TCP(sport=80, dport=30000, chksum=0))
    ends[CORE0].send(reply)
    (on_wire,) = waiting.drain(ends[NET], 1, timeout=3)
    arp = bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=PEER_MAC)
                / ARP(op=1, hwsrc=PEER_MAC, psrc=PEER_IP, pdst="10.0.0.77"))
    ends[NET].send(arp)                                   # nobody's address: a packet-in
    waiting.wait_for(lambda: packet_ins, what="the packet-in")
    out_frame = bytes(Ether(dst=PEER_MAC, src=LOCAL_MAC) / IP(src=LOCAL_IP, dst=PEER_IP))
    packet_out = struct.pack("!H", NET << 7) + out_frame
    nic.device.packet_out_handler(packet_out)
    assert waiting.drain(ends[NET], 1, timeout=3) == [out_frame]
    nic.stop()                                            # writes what is queued, closes files
    t1 = time.time_ns()

    d = tmp_path / "pcap"
    files = {p.name: read(p) for p in d.glob("*.pcap")}
    assert set(files) == {"port1-wire-rx.pcap", "port1-wire-tx.pcap", "port16-c0-rx.pcap",
                          "port16-c0-tx.pcap", "port17-c1-tx.pcap", "port255-cpu-rx.pcap",
                          "port255-cpu-tx.pcap"}

    def frames(name):
        return [f for _, f in files[name][1]]

    assert frames("port1-wire-rx.pcap") == inbound + [arp]
    assert sorted(frames("port16-c0-tx.pcap") + frames("port17-c1-tx.pcap")) == sorted(inbound)
    assert frames("port16-c0-rx.pcap") == [reply]
    assert frames("port1-wire-tx.pcap") == [on_wire, out_frame]
    assert frames("port255-cpu-tx.pcap") == packet_ins and len(packet_ins) == 1
    assert packet_ins[0].endswith(arp)                    # controller header, then the frame
    assert frames("port255-cpu-rx.pcap") == [packet_out]
    assert files["port255-cpu-tx.pcap"][0] == LINKTYPE_PACKET_IN
    assert files["port255-cpu-rx.pcap"][0] == LINKTYPE_PACKET_OUT
    assert files["port1-wire-rx.pcap"][0] == LINKTYPE_ETHERNET
    stamps = [ts for _, recs in files.values() for ts, _ in recs]
    assert all(t0 <= ts <= t1 for ts in stamps)           # nanosecond wall-clock stamps
    assert cap.stats.frames == sum(len(recs) for _, recs in files.values())
    assert cap.stats.dropped == 0


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump is not installed")
def test_tcpdump_reads_the_capture(tmp_path):
    cap = Capture(tmp_path, CPU, {NET: "wire"})
    frame = bytes(Ether(dst=LOCAL_MAC, src=PEER_MAC) / IP(src=PEER_IP, dst=LOCAL_IP)
                  / TCP(sport=4242, dport=80, flags="S"))
    cap.received(NET, [frame, frame])
    cap.close()
    out = subprocess.run(["tcpdump", "-nn", "--nano", "-r", str(tmp_path / "port1-wire-rx.pcap")],
                         capture_output=True, timeout=30, check=True).stdout.decode()
    lines = out.strip().splitlines()
    assert len(lines) == 2 and all(f"{PEER_IP}.4242 > {LOCAL_IP}.80: Flags [S]" in ln
                                   for ln in lines)


def test_rotation_keeps_at_most_files_of_max_bytes(tmp_path):
    max_bytes, files = 300_000, 3
    cap = Capture(tmp_path, CPU, {NET: "wire"}, max_bytes=max_bytes, files=files)
    sent = [i.to_bytes(4, "big") * 250 for i in range(2000)]     # 1000-byte frames, 2 MB
    for i in range(0, len(sent), 50):
        cap.sent(NET, sent[i:i + 50])
        waiting.wait_for(lambda: cap.stats.frames >= i + 50, what="the writer")  # no drops
    cap.close()
    kept = sorted(tmp_path.glob("port1-wire-tx.pcap*"))
    assert [p.name for p in kept] == ["port1-wire-tx.pcap", "port1-wire-tx.pcap.1",
                                      "port1-wire-tx.pcap.2"]
    assert all(p.stat().st_size <= max_bytes for p in kept)
    # oldest kept file first: the frames they hold are the newest ones, in order, none missing
    order = [tmp_path / "port1-wire-tx.pcap.2", tmp_path / "port1-wire-tx.pcap.1",
             tmp_path / "port1-wire-tx.pcap"]
    got = [f for p in order for _, f in read(p)[1]]
    assert got == sent[-len(got):] and len(got) > 2 * (max_bytes // 1016) - 2
    assert cap.stats.rotations == -(-len(sent) // (max_bytes // 1016)) - 1


def test_drops_are_counted_when_the_writer_lags(tmp_path):
    cap = Capture(tmp_path, CPU, {NET: "wire"}, queue_size=1)
    batch = [bytes(1500)] * 64
    for _ in range(300):                                  # far faster than one writer thread
        cap.received(NET, batch)
    cap.close()
    written = read(tmp_path / "port1-wire-rx.pcap")[1]
    assert cap.stats.dropped > 0
    assert cap.stats.frames == len(written)
    assert cap.stats.frames + cap.stats.dropped == 300 * 64


@pytest.mark.slow
def test_fabric_nics_capture_from_mtcp_conf(tmp_path):
    """nic_pcap in each host's mtcp.conf -> `p4mtcp nic --pcap`: after an asyncio echo, what the
    client's NIC sent on its network port is exactly what the server's NIC received there."""
    from p4mtcp.aio.worker import AioArgs, core_main
    from p4mtcp.apps import launch
    from p4mtcp.apps.fabric import Fabric, two_hosts
    from test_aio_fabric import run_until_result

    with Fabric() as fab:
        server, client = two_hosts(fab, 1, 1)
        fab.start(timeout=60, nic_pcap=str(tmp_path / "pcap"))
        srv = launch.CoreWorkers(core_main, [0], AioArgs(server.conf,
                                                         "test_aio_fabric:echo_server",
                                                         {"port": 7000}))
        cli = launch.CoreWorkers(core_main, [0], AioArgs(client.conf,
                                                         "test_aio_fabric:echo_client",
                                                         {"host": server.ip, "port": 7000,
                                                          "size": 200_000}))
        with srv, cli:
            result = run_until_result(cli, timeout=120)
    assert result["result"] == {"bytes": 200_000, "exact": True}
    # the NICs are stopped: their captures are complete
    sent = [f for _, f in read(next((tmp_path / "pcap" / "client").glob("port1-*-tx.pcap")))[1]]
    got = [f for _, f in read(next((tmp_path / "pcap" / "server").glob("port1-*-rx.pcap")))[1]]
    assert len(sent) > 200_000 // 1500 and got == sent     # the data segments, at least
    core_tx = read(next((tmp_path / "pcap" / "server").glob("port16-*-tx.pcap")))[1]
    assert len(core_tx) == len(got)           # every frame in went on to the server's core


def test_capture_options_are_checked_and_passed_on(tmp_path, capsys):
    from p4mtcp.bmv2.launcher import embedded_argv
    from p4mtcp.dataplane import nic as nicmod

    assert nicmod.main(["--grpc", "127.0.0.1:0", "--pcap", str(tmp_path), "--pcap-max-mb",
                        "0.01", "-i", f"1@unix:{tmp_path}/w"]) == 2
    assert "max_bytes 10000 is below one full record" in capsys.readouterr().err
    assert nicmod.main(["--grpc", "127.0.0.1:0", "--pcap", str(tmp_path), "--pcap-files", "0",
                        "-i", f"1@unix:{tmp_path}/w"]) == 2
    assert "files 0 must be >= 1" in capsys.readouterr().err
    argv = embedded_argv({1: "veth0"}, "127.0.0.1:9559", pcap_dir=str(tmp_path))
    assert argv[argv.index("nic") + 1:][-1] == f"--pcap={tmp_path}"   # the testbed's switch

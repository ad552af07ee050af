"""Frame ports: UNIX links (no root) and AF_PACKET on a veth (root, in a netns made here)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import uuid

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from p4mtcp.dataplane import ports
from p4mtcp.dataplane.ports import PacketPort, UnixHostPort, UnixNicPort, finish_checksum, open_port


def drain(port, want: int, timeout: float = 2.0) -> list[bytes]:
    got: list[bytes] = []
    end = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < end:
        batch = port.recv_batch()
        got += batch
        if not batch:
            time.sleep(0.001)
    return got


@pytest.fixture
def dp_link(tmp_path):
    nic = open_port(f"unix:{tmp_path}/core0")
    host = open_port(f"unix-host:{tmp_path}/core0")
    yield nic, host
    host.close()
    nic.close()


@pytest.mark.parametrize("spec,msg", [("bogus:/x", "unknown kind"), ("unix:", "empty socket path"),
                                      ("a/b", "not an interface"), ("x" * 20, "not an interface"),
                                      ("unix:/" + "p" * 120, "longer than 107")])
def test_bad_specs_say_what_is_wrong(spec, msg):
    with pytest.raises(ValueError, match=msg):
        open_port(spec)


def test_spec_kinds(tmp_path):
    nic = open_port(f"unix:{tmp_path}/s")
    host = open_port(f"unix-host:{tmp_path}/s")
    assert isinstance(nic, UnixNicPort) and isinstance(host, UnixHostPort)
    host.close()
    nic.close()
    assert not os.path.exists(f"{tmp_path}/s")


def test_host_without_a_nic_is_refused_clearly(tmp_path):
    with pytest.raises(ConnectionRefusedError, match="no NIC is listening"):
        open_port(f"unix-host:{tmp_path}/nobody")


def test_burst_beyond_max_dgram_qlen_arrives_whole_and_in_order(dp_link):
    nic, host = dp_link
    frames = [i.to_bytes(4, "big") * 375 for i in range(2000)]  # 1500-byte frames
    assert all(host.send(f) for f in frames)  # nobody reads meanwhile
    assert drain(nic, 2000) == frames
    back = [bytes([i % 256]) * 60 for i in range(500)]
    assert all(nic.send(f) for f in back)
    assert drain(host, 500) == back
    assert host.stats.tx_dropped == nic.stats.tx_dropped == 0


def test_recv_batch_never_blocks_and_is_bounded(dp_link):
    nic, host = dp_link
    t = time.monotonic()
    assert nic.recv_batch() == [] and host.recv_batch() == []
    for _ in range(ports.BATCH + 10):
        host.send(b"f" * 64)
    assert len(drain(nic, 1)) == ports.BATCH
    assert len(nic.recv_batch()) == 10
    assert time.monotonic() - t < 1.0


def test_a_full_peer_costs_drops_not_a_stalled_nic(dp_link):
    nic, host = dp_link
    t = time.monotonic()
    sent = sum(nic.send(bytes(1500)) for _ in range(20000))  # the host never reads
    assert time.monotonic() - t < 5.0
    assert nic.stats.tx_dropped == 20000 - sent > 0
    assert len(drain(host, sent, timeout=5)) == sent  # what was accepted is delivered


def test_a_reconnecting_core_replaces_the_old_one(tmp_path):
    nic = open_port(f"unix:{tmp_path}/c")
    first = open_port(f"unix-host:{tmp_path}/c")
    first.send(b"one")
    assert drain(nic, 1) == [b"one"]
    first.close()
    assert drain(nic, 1, timeout=0.2) == [] and not nic.connected
    assert nic.send(b"lost") is False and nic.stats.tx_dropped == 1
    second = open_port(f"unix-host:{tmp_path}/c")
    assert nic.send(b"two")
    assert drain(second, 1) == [b"two"]
    second.close()
    nic.close()


def test_nic_close_is_seen_by_the_host(dp_link):
    nic, host = dp_link
    drain(nic, 0)
    nic.close()
    assert host.recv_batch() == [] and host.closed_by_peer
    assert host.send(b"x") is False


def partial_checksum_frame(payload: bytes) -> tuple[bytes, bytes]:
    """(what the kernel hands AF_PACKET for a CHECKSUM_PARTIAL segment, the finished frame)."""
    pkt = Ether() / IP(src="10.9.0.2", dst="10.9.0.1") / TCP(sport=5555, dport=80, flags="PA") / payload
    done = bytes(Ether(bytes(pkt)))
    pseudo = sum(int.from_bytes(b, "big") for b in (done[26:28], done[28:30], done[30:32], done[32:34]))
    pseudo += 6 + len(done) - 34
    while pseudo >> 16:
        pseudo = (pseudo & 0xFFFF) + (pseudo >> 16)
    partial = bytearray(done)
    partial[50:52] = pseudo.to_bytes(2, "big")  # the kernel stores the folded pseudo-header sum
    return bytes(partial), done


@pytest.mark.parametrize("payload", [b"", b"a", b"hello world" * 50])
def test_finish_checksum_completes_a_partial_checksum(payload):
    partial, done = partial_checksum_frame(payload)
    assert partial != done or not payload
    assert finish_checksum(partial) == done


@pytest.mark.parametrize("frame", [b"", b"\x08\x00" * 10, bytes(Ether() / IP() / b"short"),
                                   bytes(Ether(type=0x0806)) + bytes(28)])
def test_finish_checksum_leaves_other_frames_alone(frame):
    assert finish_checksum(frame) == frame


# --- AF_PACKET on a veth, the peer a kernel in a namespace of our own --------------------------

def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=10)


@contextlib.contextmanager
def veth_netns():
    """(root-side ifname, netns name): the netns end has 10.9.0.2/24 and tx checksum offload on."""
    tag = uuid.uuid4().hex[:6]
    ns, outer, inner = f"dpports{tag}", f"dpv{tag}", f"dpn{tag}"
    _run("ip", "netns", "add", ns)
    try:
        _run("ip", "link", "add", outer, "type", "veth", "peer", "name", inner, "netns", ns)
        _run("ip", "link", "set", outer, "up")
        _run("ip", "netns", "exec", ns, "ip", "addr", "add", "10.9.0.2/24", "dev", inner)
        _run("ip", "netns", "exec", ns, "ip", "link", "set", inner, "up")
        _run("ip", "netns", "exec", ns, "ethtool", "-K", inner, "tx", "on")
        _run("ip", "netns", "exec", ns, "ip", "neigh", "add", "10.9.0.1", "lladdr",
             "02:00:00:00:09:01", "dev", inner)
        yield outer, ns
    finally:
        subprocess.run(["ip", "link", "del", outer], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None
                                or shutil.which("ethtool") is None,
                                reason="needs root, iproute2 and ethtool (netns + veth)")


@pytest.mark.root
@needs_root
def test_af_packet_finishes_checksums_the_kernel_left_partial():
    with veth_netns() as (ifname, ns):
        port = PacketPort(ifname)
        try:
            connect = ("import socket\ntry:\n socket.create_connection(('10.9.0.1', 80), timeout=1)\n"
                       "except OSError:\n pass\n")
            with subprocess.Popen(["ip", "netns", "exec", ns, "python3", "-c", connect]) as proc:
                syns = []
                end = time.monotonic() + 5
                while not syns and time.monotonic() < end:
                    syns = [f for f in port.recv_batch()
                            if len(f) >= 54 and f[12:14] == b"\x08\x00" and f[23] == 6]
                    time.sleep(0.01)
                proc.wait(timeout=10)
            assert syns, "no TCP SYN seen on the veth"
            assert port.stats.csum_finished >= 1  # the kernel did leave it to us
            got = Ether(syns[0])
            ref = Ether(syns[0])
            del ref[TCP].chksum
            assert got[TCP].flags.S and got[TCP].chksum == Ether(bytes(ref))[TCP].chksum
            # sending out of the port works too
            assert port.send(bytes(Ether(dst="ff:ff:ff:ff:ff:ff") / IP(dst="10.9.0.2") / TCP()))
            assert port.stats.tx_frames == 1
        finally:
            port.close()


@pytest.mark.root
@needs_root
def test_af_packet_on_a_missing_interface_says_so():
    with pytest.raises(OSError, match="dpnosuch0"):
        PacketPort("dpnosuch0")

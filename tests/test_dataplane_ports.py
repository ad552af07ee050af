"""Frame ports: UNIX links (no root) and AF_PACKET on a veth (root, in a netns made here).
Shared-memory links: test_link_shm.py; PACKET_MMAP and VLAN tags: test_link_afpacket.py."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import socket
import struct
import subprocess
import time
import uuid

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

import waiting
from p4mtcp.link import open_port, unix
from p4mtcp.link.afpacket import MmapPacketPort, PacketPort
from p4mtcp.link.frames import finish_checksum
from p4mtcp.link.unix import UnixHostPort, UnixNicPort
from test_dataplane_nic import (  # noqa: F401  (dp_wired is a fixture)
    CORE0, LOCAL_IP, LOCAL_MAC, NET, PEER_IP, PEER_MAC, dp_wired, program)


drain = functools.partial(waiting.drain, timeout=2.0)


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
    for _ in range(unix.BATCH + 10):
        host.send(b"f" * 64)
    first = drain(nic, 1)
    # whole messages are read while one more still fits: a batch ends within MSG_FRAMES of BATCH
    assert unix.BATCH - unix.MSG_FRAMES < len(first) <= unix.BATCH
    assert len(first) + len(nic.recv_batch()) == unix.BATCH + 10
    assert host.send_batch([b"g" * 64] * (2 * unix.BATCH)) == 2 * unix.BATCH
    sizes = [len(nic.recv_batch()) for _ in range(3)]
    assert all(s <= unix.BATCH for s in sizes) and sum(sizes) == 2 * unix.BATCH
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
@pytest.mark.parametrize("kind", [MmapPacketPort, PacketPort])
def test_af_packet_finishes_checksums_the_kernel_left_partial(kind):
    with veth_netns() as (ifname, ns):
        port = kind(ifname)
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


# --- batches on UNIX links ---------------------------------------------------------------------

def raw_peer(path) -> socket.socket:
    """A peer that writes raw SOCK_SEQPACKET messages, bypassing the batch framing."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(str(path))
    return s


def test_a_batch_round_trips_in_order_both_ways(dp_link):
    nic, host = dp_link
    frames = [bytes([i]) * n for i, n in enumerate([60, 1, 1514, 9000, 64, 0x10000 + 64, 60])]
    assert host.send_batch(frames) == len(frames)
    assert drain(nic, len(frames)) == frames
    assert nic.send_batch(frames[::-1]) == len(frames)
    assert drain(host, len(frames)) == frames[::-1]
    assert host.send_batch([]) == 0 and nic.recv_batch() == []
    assert nic.stats.rx_frames == host.stats.tx_frames == len(frames)
    assert host.stats.rx_frames == nic.stats.tx_frames == len(frames)
    assert nic.stats.rx_malformed == host.stats.rx_malformed == 0


def test_a_batch_is_split_at_the_message_limits(tmp_path):
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(str(tmp_path / "raw"))
    listener.listen(1)
    host = open_port(f"unix-host:{tmp_path}/raw")
    conn, _ = listener.accept()
    try:
        big = [i.to_bytes(2, "big") * 757 for i in range(100)]  # 1514-byte frames
        small = [i.to_bytes(2, "big") * 30 for i in range(150)]  # 60-byte frames
        huge = [b"h" * unix.MAX_FRAME]
        assert host.send_batch(big + huge + small) == 251
        conn.settimeout(2)
        messages = [conn.recv(2 * unix.MAX_MESSAGE) for _ in range(7)]
        conn.setblocking(False)
        with pytest.raises(BlockingIOError):
            conn.recv(10)
        counts = [struct.unpack_from("=I", m)[0] for m in messages]
        assert counts == [43, 43, 14, 1, 64, 64, 22]  # 43 x 1514 fill 64 KiB; <= 64 frames each
        assert all(len(m) <= unix.MSG_BYTES for m in messages if len(m) != unix.MAX_MESSAGE)
        assert len(messages[3]) == unix.MAX_MESSAGE  # the jumbo frame travelled alone
        got: list[bytes] = []
        for m in messages:
            assert unix._unpack(m, got)
        assert got == big + huge + small
    finally:
        conn.close()
        host.close()
        listener.close()


def test_a_frame_above_max_frame_drops_itself_and_the_rest_of_the_batch(dp_link):
    nic, host = dp_link
    frames = [b"a" * 60, b"b" * (unix.MAX_FRAME + 1), b"c" * 60]
    assert host.send_batch(frames) == 1
    assert host.stats.tx_frames == 1 and host.stats.tx_dropped == 2
    assert drain(nic, 2, timeout=0.2) == [b"a" * 60]


@pytest.mark.parametrize("message", [
    b"", b"\x01\x00\x00", struct.pack("=I", 0) + b"x" * 10,                 # short, count 0
    struct.pack("=II", 1, 10) + b"x" * 9,                                    # length too long
    struct.pack("=II", 1, 10) + b"x" * 11,                                   # bytes left over
    struct.pack("=III", 2, 3, 3) + b"x" * 5,                                 # lengths overrun
    struct.pack("=I", 2) + b"x" * 4,                                         # table cut short
    struct.pack("=I", unix.MSG_FRAMES + 1) + b"\0" * 4 * (unix.MSG_FRAMES + 1),  # too many
    struct.pack("=II", 1, unix.MAX_FRAME + 60) + b"x" * (unix.MAX_FRAME + 60),   # truncated
])
def test_a_malformed_message_is_dropped_and_counted(tmp_path, message):
    nic = open_port(f"unix:{tmp_path}/m")
    peer = raw_peer(tmp_path / "m")
    try:
        if message:  # an empty SEQPACKET message would read as the peer's close
            peer.send(message)
        peer.send(struct.pack("=III", 2, 2, 3) + b"okyes")  # a good batch after it
        assert drain(nic, 2) == [b"ok", b"yes"]
        assert nic.stats.rx_malformed == (1 if message else 0)
        assert nic.stats.rx_frames == 2 and nic.connected
    finally:
        peer.close()
        nic.close()


def test_a_full_peer_drops_whole_batches_counted_and_never_blocks(dp_link):
    nic, host = dp_link
    t = time.monotonic()
    batch = [bytes(1500)] * 40
    sent = sum(nic.send_batch(batch) for _ in range(2000))  # the host never reads
    assert time.monotonic() - t < 5.0
    assert 0 < sent < 80000
    assert nic.stats.tx_frames == sent and nic.stats.tx_dropped == 80000 - sent
    assert len(drain(host, sent, timeout=5)) == sent
    assert host.stats.rx_frames == sent


def test_the_nic_forwards_batches_and_counts_every_frame(dp_wired):
    """Batches in, grouped batches out: per-port, NIC and P4 counters agree frame for frame."""
    nic, ends = dp_wired
    program(nic)
    rx = [bytes(Ether(dst=LOCAL_MAC, src=PEER_MAC) / IP(src=PEER_IP, dst=LOCAL_IP)
                / TCP(sport=30000 + i, dport=80) / (b"d" * i)) for i in range(100)]
    bad = bytearray(rx[0])
    bad[-1] ^= 0xFF  # the TCP checksum no longer matches: the pipeline drops it (reason 2)
    assert ends[NET].send_batch(rx + [bytes(bad)]) == 101
    to_core = {n: drain(ends[n], 100, timeout=0.5) for n in (CORE0, CORE0 + 1)}
    assert sorted(to_core[CORE0] + to_core[CORE0 + 1]) == sorted(rx)
    assert all(to_core.values())  # RSS spread the flows over both cores
    tx = [bytes(Ether(dst="00:00:00:00:00:00", src="00:00:00:00:00:00")
                / IP(src=LOCAL_IP, dst=PEER_IP, chksum=0) / TCP(sport=80, dport=30000 + i, chksum=0)
                / (b"r" * 1400)) for i in range(80)]
    assert ends[CORE0].send_batch(tx) == 80
    out = drain(ends[NET], 80)
    assert [Ether(f)[TCP].dport for f in out] == [30000 + i for i in range(80)]  # order kept
    counters = nic.device.pipeline.counters
    rx_port, tx_port = counters["NicIngress.rx_port"], counters["NicEgress.tx_port"]
    assert rx_port.read(NET)[0] == 101 and rx_port.read(CORE0)[0] == 80
    assert counters["NicIngress.drops"].read(2)[0] == 1
    for n in (CORE0, CORE0 + 1):
        assert tx_port.read(n)[0] == nic.ports[n].stats.tx_frames == len(to_core[n])
        assert ends[n].stats.rx_frames == len(to_core[n])
    assert tx_port.read(NET)[0] == nic.ports[NET].stats.tx_frames == ends[NET].stats.rx_frames == 80
    assert nic.stats.frames_in == 181 and nic.stats.frames_out == 180
    assert sum(p.stats.tx_dropped + p.stats.rx_malformed for p in nic.ports.values()) == 0

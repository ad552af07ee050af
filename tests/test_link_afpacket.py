"""AF_PACKET ports on a veth whose peer is a kernel in a namespace made here (root): PACKET_MMAP
rings and the plain-socket fallback, byte-exact both ways, VLAN tags as they were on the wire."""

from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
import time

import pytest

import waiting
from netns import netns_unavailable_reason, ns_argv, veth_netns
from p4mtcp.link import open_port
from p4mtcp.link import afpacket
from p4mtcp.link.afpacket import MmapPacketPort, PacketPort

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(netns_unavailable_reason() is not None,
                                 reason=str(netns_unavailable_reason()))]

MARK = b"P4MTLINK"
EXPERIMENTAL = 0x88B5  # IEEE 802 local experimental EtherType: nothing else on the veth uses it
PEER_TIMEOUT = 20.0

# The kernel side: sends the frames in a file with one raw `send` each (tags and all, as they
# are), or captures frames carrying MARK into a file (through the plain port, which puts back the
# tags the receiving kernel strips). Frames in files: u32 length + bytes.
_PEER = """
import struct, sys, time
from p4mtcp.link.afpacket import PacketPort
mode, ifname, path = sys.argv[1:4]
port = PacketPort(ifname)
if mode == "send":
    data = open(path, "rb").read()
    at = 0
    while at < len(data):
        (n,) = struct.unpack_from("=I", data, at)
        port._sock.send(data[at + 4:at + 4 + n])
        at += 4 + n
else:
    want = int(sys.argv[4])
    got = []
    print("ready", flush=True)
    end = time.monotonic() + 15
    while len(got) < want and time.monotonic() < end:
        got += [f for f in port.recv_batch() if b"%s" in f]
        time.sleep(0.001)
    open(path, "wb").write(b"".join(struct.pack("=I", len(f)) + f for f in got))
""" % MARK.decode()


def _frame(seq: int, size: int, tags: tuple[int, ...] = ()) -> bytes:
    """Broadcast frame of `size` bytes (before tags) carrying MARK and seq; `tags` are TPIDs of
    VLAN tags (VID seq % 4000 + 1), outermost first."""
    head = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x07"
    tag_bytes = b"".join(struct.pack("!HH", tpid, (seq % 4000) + 1 + (5 << 13)) for tpid in tags)
    body = MARK + struct.pack("!I", seq) + bytes(random.Random(seq).randbytes(size - 26))
    return head + tag_bytes + struct.pack("!H", EXPERIMENTAL) + body


def _write(path: str, frames: list[bytes]) -> None:
    with open(path, "wb") as f:
        f.write(b"".join(struct.pack("=I", len(x)) + x for x in frames))


def _read(path: str) -> list[bytes]:
    data, out, at = open(path, "rb").read(), [], 0
    while at < len(data):
        (n,) = struct.unpack_from("=I", data, at)
        out.append(data[at + 4:at + 4 + n])
        at += 4 + n
    return out


def _peer(net, mode: str, path: str, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.Popen(ns_argv(net.ns, [sys.executable, "-c", _PEER, mode, net.ns_if, path,
                                             *extra]), stdout=subprocess.PIPE, env=env)


def _marked(frames: list[bytes]) -> list[bytes]:
    return [f for f in frames if MARK in f]


@pytest.fixture
def net():
    with veth_netns(subnet=77) as n:
        yield n


@pytest.mark.parametrize("kind", [MmapPacketPort, PacketPort])
def test_frames_from_a_kernel_peer_arrive_byte_exact(net, tmp_path, kind):
    frames = [_frame(i, random.Random(i).randrange(60, 1515)) for i in range(300)]
    _write(f"{tmp_path}/frames", frames)
    port = kind(net.host_if)
    try:
        peer = _peer(net, "send", f"{tmp_path}/frames")
        assert peer.wait(PEER_TIMEOUT) == 0
        got = _marked(waiting.drain(port, len(frames), timeout=PEER_TIMEOUT))
        assert got == frames
        assert port.stats.rx_truncated == 0 and port.stats.vlan_restored == 0
    finally:
        port.close()


@pytest.mark.parametrize("kind", [MmapPacketPort, PacketPort])
def test_frames_to_a_kernel_peer_leave_byte_exact(net, tmp_path, kind):
    frames = [_frame(i, random.Random(i).randrange(60, 1515)) for i in range(300)]
    frames[100] = _frame(100, 1514, (0x8100,))  # a tagged frame goes on the wire as it is
    frames[200] = _frame(200, 200, (0x88A8, 0x8100))
    port = kind(net.host_if)
    try:
        peer = _peer(net, "recv", f"{tmp_path}/got", str(len(frames)))
        assert peer.stdout.readline() == b"ready\n"
        sent = sum(port.send_batch(frames[i:i + 50]) for i in range(0, len(frames), 50))
        assert sent == len(frames) and port.stats.tx_dropped == 0
        assert peer.wait(PEER_TIMEOUT) == 0
        assert _read(f"{tmp_path}/got") == frames
    finally:
        port.close()


@pytest.mark.parametrize("kind", [MmapPacketPort, PacketPort])
@pytest.mark.parametrize("tags", [(0x8100,), (0x88A8,), (0x88A8, 0x8100)],
                         ids=["802.1Q", "802.1ad", "QinQ"])
def test_a_vlan_tag_the_kernel_strips_is_put_back(net, tmp_path, kind, tags):
    frames = [_frame(i, 100, tags) for i in range(3)]
    _write(f"{tmp_path}/frames", frames)
    port = kind(net.host_if)
    try:
        assert _peer(net, "send", f"{tmp_path}/frames").wait(PEER_TIMEOUT) == 0
        got = _marked(waiting.drain(port, len(frames), timeout=PEER_TIMEOUT))
        assert got == frames  # tag(s) where they were on the wire, TPID and TCI included
        assert port.stats.vlan_restored == len(frames)
    finally:
        port.close()


def test_an_interface_spec_opens_the_rings(net):
    port = open_port(net.host_if)
    try:
        assert isinstance(port, MmapPacketPort)
    finally:
        port.close()


def _mtu(net, host: int, peer: int) -> None:
    subprocess.run(["ip", "link", "set", net.host_if, "mtu", str(host)], check=True)
    subprocess.run(ns_argv(net.ns, ["ip", "link", "set", net.ns_if, "mtu", str(peer)]),
                   check=True)


def test_a_port_opened_inside_a_namespace_reads_that_namespace_s_mtu(net):
    """The bench's tester opens its ports after setns(): /sys shows the root namespace there,
    where the far end of the veth does not exist."""
    from p4mtcp.bmv2.frametests import in_netns

    _mtu(net, 1500, 1400)
    with in_netns(f"/run/netns/{net.ns}"):
        port = MmapPacketPort(net.ns_if)
    try:
        assert port.mtu == 1400 and afpacket.interface_mtu(net.host_if) == 1500
    finally:
        port.close()


@pytest.mark.parametrize("kind", [MmapPacketPort, PacketPort])
def test_jumbo_frames_leave_and_arrive_byte_exact(net, tmp_path, kind):
    _mtu(net, 9000, 9000)
    frames = [_frame(i, random.Random(i).randrange(1515, 9015)) for i in range(40)]
    frames[7] = _frame(7, 9014, (0x8100,))      # MTU + Ethernet header + a tag
    port = kind(net.host_if)
    try:
        peer = _peer(net, "recv", f"{tmp_path}/got", str(len(frames)))
        assert peer.stdout.readline() == b"ready\n"
        assert sum(port.send_batch(frames[i:i + 8]) for i in range(0, len(frames), 8)) == 40
        assert peer.wait(PEER_TIMEOUT) == 0
        assert _read(f"{tmp_path}/got") == frames
        _write(f"{tmp_path}/frames", frames)
        assert _peer(net, "send", f"{tmp_path}/frames").wait(PEER_TIMEOUT) == 0
        assert _marked(waiting.drain(port, len(frames), timeout=PEER_TIMEOUT)) == frames
    finally:
        port.close()


def test_frames_longer_than_the_mtu_are_counted_and_the_ring_goes_on(net, tmp_path):
    _mtu(net, 1000, 1500)
    frames = [_frame(i, 1014 if i % 3 else 1200) for i in range(30)]   # every third too long
    port = MmapPacketPort(net.host_if)
    try:
        peer = _peer(net, "recv", f"{tmp_path}/got", "20")
        assert peer.stdout.readline() == b"ready\n"
        assert port.send_batch(frames) == 30
        assert peer.wait(PEER_TIMEOUT) == 0
        assert _read(f"{tmp_path}/got") == [f for i, f in enumerate(frames) if i % 3]
        assert (port.stats.tx_frames, port.stats.tx_oversize) == (20, 10)
    finally:
        port.close()


def test_a_frame_the_far_end_refuses_does_not_stop_the_ring(net, tmp_path):
    """The veth's far end has the smaller MTU: the kernel answers the long frame's slot with
    ENOBUFS at every flush; the port drops it and goes on by plain send, in order."""
    _mtu(net, 1500, 1000)
    port = MmapPacketPort(net.host_if)
    try:
        peer = _peer(net, "recv", f"{tmp_path}/got", "40")
        assert peer.stdout.readline() == b"ready\n"
        first = [_frame(0, 100), _frame(1, 1400), _frame(2, 200)]
        assert port.send_batch(first) == 3
        sent, seq, deadline = [first[0], first[2]], 3, time.monotonic() + PEER_TIMEOUT
        while len(sent) < 40:                       # small frames, until well past the stall
            assert time.monotonic() < deadline
            frame = _frame(seq, 100 + seq)
            assert port.send_batch([frame]) == 1
            sent.append(frame)
            seq += 1
            time.sleep(2 * afpacket.STALL_SECONDS / 38)
        assert peer.wait(PEER_TIMEOUT) == 0
        assert _read(f"{tmp_path}/got") == sent     # every frame but the refused one, in order
        assert port.stats.tx_dropped == 1 and port.stats.tx_frames == 40
    finally:
        port.close()

"""Per-core context: framing (netif), the run-to-completion loop, the socket-id pool, buffers."""

from __future__ import annotations

import errno
import time

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether

from p4mtcp import mtcp
from p4mtcp.control.netif import NetIf

from mtcp_pair import Pair, connected_pair, pair, write_conf  # noqa: F401  (fixtures)

SRC, DST = 0x0A000001, 0x0A000002
TCP_BYTES = bytes(TCP(sport=1234, dport=80, flags="S", seq=7))


# ------------------------------------------------------------------- netif


def test_encode_builds_ipv4_df_ttl64_with_zero_macs_and_a_valid_checksum():
    nif = NetIf(offload_checksum=False)
    f1 = nif.encode(SRC, DST, TCP_BYTES)
    f2 = nif.encode(SRC, DST, TCP_BYTES)
    pkt = Ether(f1)
    assert pkt.src == pkt.dst == "00:00:00:00:00:00" and pkt.type == 0x0800
    ip = pkt[IP]
    assert (ip.src, ip.dst, ip.ttl, ip.proto, ip.flags, ip.len) == (
        "10.0.0.1", "10.0.0.2", 64, 6, "DF", 20 + len(TCP_BYTES))
    recomputed = IP(bytes(IP(src=ip.src, dst=ip.dst, ttl=64, flags="DF", id=ip.id, proto=6)
                          / bytes(ip.payload)))
    assert ip.chksum == recomputed.chksum != 0
    assert Ether(f2)[IP].id == (ip.id + 1) & 0xFFFF
    assert bytes(ip.payload) == TCP_BYTES


def test_encode_with_offload_leaves_the_checksum_to_the_nic():
    frame = NetIf(offload_checksum=True).encode(SRC, DST, TCP_BYTES)
    assert Ether(frame)[IP].chksum == 0


def test_decode_round_trip_and_ethernet_padding_is_cut():
    nif = NetIf(offload_checksum=False)
    frame = nif.encode(SRC, DST, b"\x01" * 20) + b"\x00" * 6  # padded to the Ethernet minimum
    src, dst, tcp = nif.decode(frame)
    assert (src, dst, bytes(tcp)) == (SRC, DST, b"\x01" * 20)


@pytest.mark.parametrize("frame, reason", [
    (bytes(Ether() / ARP()), "not_ipv4"),
    (bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP()), "not_tcp"),
    (bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2", flags="MF") / TCP()), "fragment"),
    (bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2", chksum=0x1234) / TCP()), "bad_checksum"),
    (bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2", len=200) / TCP()), "bad_header"),
    (bytes(Ether() / IP(version=6) / TCP()), "bad_header"),
    (b"\x00" * 20, "short"),
])
def test_decode_drops_and_counts_what_is_not_ipv4_tcp(frame, reason):
    nif = NetIf(offload_checksum=False)
    assert nif.decode(frame) is None
    assert getattr(nif.drops, reason) == 1 and nif.drops.total() == 1


def test_decode_batch_keeps_good_frames_in_order():
    nif = NetIf(offload_checksum=True)
    good = [nif.encode(SRC, DST, bytes([i]) * 20) for i in range(3)]
    got = nif.decode_batch([good[0], b"junk", good[1], good[2]])
    assert [bytes(t)[0] for _, _, t in got] == [0, 1, 2]
    assert nif.drops.short == 1


# ------------------------------------------------------------------- the loop


def test_loop_moves_frames_and_counts_them(connected_pair):
    p = connected_pair
    before_tx, before_rx = p.client.stats.tx_packets, p.server.stats.rx_packets
    assert mtcp.mtcp_write(p.client, p.c, b"x" * 3000) == 3000
    p.pump_until(lambda: mtcp.mtcp_socket_ioctl(p.server, p.s, mtcp.FIONREAD) == 3000)
    assert p.client.stats.tx_packets - before_tx >= 3  # 3000 bytes at MSS 1460
    assert p.server.stats.rx_packets - before_rx >= 3
    assert p.server.stats.rx_bytes >= 3000 + 3 * 54
    assert p.server.stats.accepts == 1 and p.client.stats.connects == 1


def test_step_blocks_until_the_next_timer_not_longer(pair):
    """A SYN to nobody: the client's step wakes up for the retransmission timer by itself."""
    ctx = pair.client
    c = mtcp.mtcp_socket(ctx, mtcp.AF_INET, mtcp.SOCK_STREAM, 0)
    mtcp.mtcp_connect(ctx, c, ("10.0.0.99", 80))
    ctx.flush()
    sent = ctx.stats.tx_packets
    deadline = ctx.stack.next_deadline()
    assert deadline is not None
    end = time.monotonic() + 3.0
    while ctx.stats.tx_packets == sent and time.monotonic() < end:
        ctx.step(0.5)
    assert ctx.stats.tx_packets == sent + 1  # the SYN retransmission
    assert time.monotonic() >= deadline - 0.01


def test_write_goes_out_at_the_next_loop_step(connected_pair):
    p = connected_pair
    sent = p.client.stats.tx_packets
    mtcp.mtcp_write(p.client, p.c, b"queued")
    assert p.client.stats.tx_packets == sent  # not yet: run-to-completion
    p.client.flush()
    assert p.client.stats.tx_packets == sent + 1


def test_offloaded_checksums_work_back_to_back(tmp_path):
    p = Pair(write_conf(tmp_path / "mtcp.conf"), offload_checksum=True)
    try:
        c, s = p.connect()
        mtcp.mtcp_write(p.client, c, b"offloaded")
        assert p.pump_until(lambda: _try_read(p.server, s)) == b"offloaded"
    finally:
        p.close()


def _try_read(ctx, s):
    try:
        return mtcp.mtcp_read(ctx, s, 100)
    except BlockingIOError:
        return None


# ------------------------------------------------------------------- pool and buffers


def test_pool_exhaustion_gives_enfile_and_recovers(pair):
    ctx = pair.client
    ids = []
    while True:
        try:
            ids.append(mtcp.mtcp_socket(ctx, mtcp.AF_INET, mtcp.SOCK_STREAM, 0))
        except OSError as e:
            assert e.errno == errno.ENFILE and "mtcp_socket" in str(e)
            break
    assert len(ids) == 64 and sorted(ids) == list(range(64))
    with pytest.raises(OSError) as ei:
        mtcp.mtcp_epoll_create(ctx, 1)
    assert ei.value.errno == errno.ENFILE
    with pytest.raises(OSError) as ei:
        mtcp.mtcp_pipe(ctx)
    assert ei.value.errno == errno.ENFILE
    mtcp.mtcp_close(ctx, ids[10])
    assert mtcp.mtcp_socket(ctx, mtcp.AF_INET, mtcp.SOCK_STREAM, 0) == 10
    for i in ids:
        mtcp.mtcp_close(ctx, i)
    assert ctx.free_ids() == 64


def test_stream_id_returns_only_when_the_tcb_is_freed(connected_pair):
    p = connected_pair
    free = p.client.free_ids()
    mtcp.mtcp_close(p.client, p.c)
    assert p.client.free_ids() == free  # FIN sent, TCB alive: id still held
    with pytest.raises(OSError) as ei:
        mtcp.mtcp_write(p.client, p.c, b"x")
    assert ei.value.errno == errno.EBADF  # but the application cannot use it any more
    mtcp.mtcp_close(p.server, p.s)
    p.pump_until(lambda: p.client.free_ids() == free + 1)


def test_receive_buffers_run_out_enomem_on_connect(tmp_path):
    p = Pair(write_conf(tmp_path / "mtcp.conf", max_num_buffers=2))
    try:
        p.connect()
        c2, s2 = p.connect()
        assert p.client.buffers_in_use() == (0, 2)  # a receive buffer per connection
        with pytest.raises(OSError) as ei:
            p.connect()
        assert ei.value.errno == errno.ENOMEM and "mtcp_connect" in str(ei.value)
        mtcp.mtcp_write(p.client, c2, b"bye")
        mtcp.mtcp_close(p.client, c2)
        assert p.client.buffers_in_use() == (1, 1)  # closed: the receive buffer is back
        mtcp.mtcp_close(p.server, s2)
        p.pump_until(lambda: p.client.buffers_in_use() == (0, 1))  # TCB freed: send buffer too
        p.connect()  # the freed buffers are reused
    finally:
        p.close()


def test_send_buffers_run_out_enomem_on_write(tmp_path):
    """Half-closed connections keep their send buffers; new writers find none left."""
    p = Pair(write_conf(tmp_path / "mtcp.conf", max_num_buffers=2))
    try:
        old = [p.connect() for _ in range(2)]
        for c, s in old:
            assert mtcp.mtcp_write(p.client, c, b"w") == 1  # takes a send buffer
            p.pump_until(lambda: mtcp.mtcp_socket_ioctl(p.server, s, mtcp.FIONREAD))
            assert mtcp.mtcp_read(p.server, s, 10) == b"w"
            mtcp.mtcp_close(p.server, s)  # the server closes: the client gets EOF
        for c, _s in old:
            assert _read_until_eof(p, c) == b""
        assert p.client.buffers_in_use() == (2, 0)  # EOF consumed: receive buffers returned
        c3, _s3 = p.connect()
        with pytest.raises(OSError) as ei:
            mtcp.mtcp_write(p.client, c3, b"x")
        assert ei.value.errno == errno.ENOMEM and "mtcp_write" in str(ei.value)
        mtcp.mtcp_close(p.client, old[0][0])  # CLOSE_WAIT -> FIN -> TCB freed
        p.pump_until(lambda: p.client.buffers_in_use()[0] == 1)
        assert mtcp.mtcp_write(p.client, c3, b"x") == 1
    finally:
        p.close()


def _read_until_eof(p, c):
    def attempt():
        try:
            return (mtcp.mtcp_read(p.client, c, 100),)
        except BlockingIOError:
            return None
    return p.pump_until(attempt)[0]


def test_closing_everything_returns_every_id_and_buffer(pair):
    p = pair
    conns = [p.connect() for _ in range(5)]
    ep_c = mtcp.mtcp_epoll_create(p.client, 8)
    r, w = mtcp.mtcp_pipe(p.client)
    for c, s in conns:
        mtcp.mtcp_write(p.client, c, b"req")
        mtcp.mtcp_epoll_ctl(p.client, ep_c, mtcp.EPOLL_CTL_ADD, c, (mtcp.EPOLLIN, c))
    p.pump(0.05)
    for c, s in conns:
        assert mtcp.mtcp_read(p.server, s, 10) == b"req"
        mtcp.mtcp_write(p.server, s, b"resp")
    assert p.client.buffers_in_use() == (5, 5) and p.server.buffers_in_use() == (5, 5)
    for c, s in conns:
        mtcp.mtcp_close(p.client, c)
        mtcp.mtcp_close(p.server, s)
    for sid in (ep_c, r, w):
        mtcp.mtcp_close(p.client, sid)
    mtcp.mtcp_close(p.server, p.listener)
    p.pump_until(lambda: p.client.free_ids() == 64 and p.server.free_ids() == 64)
    assert p.client.buffers_in_use() == (0, 0) and p.server.buffers_in_use() == (0, 0)
    assert p.client.stats.flows_freed == 5 and p.server.stats.flows_freed == 5


def test_flows_freed_after_reset_and_late_close(connected_pair):
    """The TCB can go first (peer RST); the id comes back when the application closes."""
    p = connected_pair
    free = p.server.free_ids()
    mtcp.mtcp_abort(p.client, p.c)
    p.pump_until(lambda: p.server.stats.flows_freed == 1)
    assert p.server.free_ids() == free and p.server.buffers_in_use() == (0, 0)
    mtcp.mtcp_close(p.server, p.s)
    assert p.server.free_ids() == free + 1


def test_destroy_context_sends_fin_and_closes_the_port(connected_pair):
    p = connected_pair
    mtcp.mtcp_destroy_context(p.client)
    assert p.client.done
    assert p.pump_until(lambda: _try_read(p.server, p.s) == b"", 3.0)  # the FIN arrived
    with pytest.raises(OSError) as ei:
        mtcp.mtcp_socket(p.client, mtcp.AF_INET, mtcp.SOCK_STREAM, 0)
    assert ei.value.errno == errno.EPERM


def test_stats_snapshot_is_a_plain_dict(connected_pair):
    snap = connected_pair.client.stats.snapshot()
    assert snap["connects"] == 1 and snap["tx_packets"] >= 2
    assert set(snap) >= {"rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "flows_freed"}

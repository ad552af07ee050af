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


@pytest.mark.parametrize("offload", [True, False])
def test_a_batch_is_framed_exactly_as_one_by_one(offload):
    one, batch = NetIf(offload_checksum=offload), NetIf(offload_checksum=offload)
    segs = [(SRC, DST, TCP_BYTES), (DST, SRC, b"\x02" * 40), (SRC, DST, b"")]
    assert batch.encode_batch(segs) == [one.encode(*s) for s in segs]
    assert [Ether(f)[IP].id for f in batch.encode_batch(segs[:1])] == [4]


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
    mtcp.mtcp_socket_ioctl(p.client, p.c, mtcp.FIONBIO, 0)  # blocking: the write flushes itself
    mtcp.mtcp_setsockopt(p.client, p.c, mtcp.IPPROTO_TCP, mtcp.TCP_NODELAY, 1)  # Nagle would hold it
    mtcp.mtcp_write(p.client, p.c, b"now")
    assert p.client.stats.tx_packets == sent + 2


class _FullRing:
    """A port whose transmit ring is full: it takes no frame; everything else is the port's.
    (A wrapper, not a patched method: the link classes may be compiled, P4MTCP_ACCEL=1.)"""

    def __init__(self, port):
        self._port = port

    def send_batch(self, frames):
        return 0

    def __getattr__(self, name):
        return getattr(self._port, name)


def test_frames_the_port_refuses_count_as_drops_and_tcp_recovers(connected_pair):
    p = connected_pair
    port = p.client.port
    sent = p.client.stats.tx_packets
    p.client.port = _FullRing(port)
    mtcp.mtcp_write(p.client, p.c, b"lost once")
    p.client.flush()
    assert p.client.stats.tx_dropped == 1 and p.client.stats.tx_packets == sent
    p.client.port = port  # the ring drains; the retransmission timer resends
    assert p.pump_until(lambda: _try_read(p.server, p.s)) == b"lost once"
    assert p.client.stack.stats.as_dict()["retransmits"] >= 1


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


# ------------------------------------------------------------------- through the embedded NIC

ECHO_PORT = 7


def echo_core(core, args, reporter, stop):
    """A server core's process: echo every connection; report the peers it accepted."""
    from p4mtcp import mtcp as m

    m.mtcp_init(args["conf"])
    ctx = m.mtcp_create_context(core)
    lst = m.mtcp_socket(ctx, m.AF_INET, m.SOCK_STREAM, 0)
    m.mtcp_bind(ctx, lst, ("0.0.0.0", ECHO_PORT))
    m.mtcp_listen(ctx, lst, 64)
    ep = m.mtcp_epoll_create(ctx, 64)
    m.mtcp_epoll_ctl(ctx, ep, m.EPOLL_CTL_ADD, lst, m.MtcpEpollEvent(m.EPOLLIN, lst))
    reporter.send("ready")
    peers = []
    end = time.monotonic() + 60
    while not stop.is_set() and time.monotonic() < end:
        for ev in m.mtcp_epoll_wait(ctx, ep, 64, 20):
            if ev.data == lst:
                while True:
                    try:
                        s = m.mtcp_accept(ctx, lst)
                    except BlockingIOError:
                        break
                    peers.append(m.mtcp_getpeername(ctx, s))
                    m.mtcp_epoll_ctl(ctx, ep, m.EPOLL_CTL_ADD, s, m.MtcpEpollEvent(m.EPOLLIN, s))
                continue
            try:
                data = m.mtcp_read(ctx, ev.data, 4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                m.mtcp_write(ctx, ev.data, data)
            else:
                m.mtcp_epoll_ctl(ctx, ep, m.EPOLL_CTL_DEL, ev.data, None)
                m.mtcp_close(ctx, ev.data)
    reporter.send("peers", peers=peers, rx=ctx.stats.rx_packets)
    m.mtcp_destroy_context(ctx)
    return 0


def test_two_hosts_through_the_embedded_nic_blocking_clients_and_rss():
    """Client core 0 of a 2-core host talks to a 2-core echo server over two embedded NICs.

    The client's source ports must make its NIC steer the replies back to core 0 (no context is
    attached to its core 1 link), and each connection must be served by the server core the
    server NIC's RSS hash picked. Blocking sockets: connect/write/read run the context loop.
    """
    from p4mtcp.apps import launch
    from p4mtcp.apps.fabric import Fabric, steered_core, two_hosts

    with Fabric() as fab:
        server, client = two_hosts(fab, 2, 2)
        fab.start(timeout=60)
        workers = launch.CoreWorkers(echo_core, [0, 1], {"conf": server.conf}, name="echo")
        msgs = []
        with workers:
            ready = set()
            end = time.monotonic() + 60
            while ready != {0, 1}:
                assert time.monotonic() < end, msgs
                for msg in workers.poll(0.1):
                    msgs.append(msg)
                    assert msg["kind"] != "exit", msg
                    if msg["kind"] == "ready":
                        ready.add(msg["core"])
            mtcp.mtcp_init(client.conf)
            try:
                ctx = mtcp.mtcp_create_context(0)
                sent = []
                for i in range(12):
                    s = mtcp.mtcp_socket(ctx, mtcp.AF_INET, mtcp.SOCK_STREAM, 0)
                    mtcp.mtcp_socket_ioctl(ctx, s, mtcp.FIONBIO, 0)
                    assert mtcp.mtcp_connect(ctx, s, (server.ip, ECHO_PORT)) == 0
                    msg = f"hello {i} ".encode() * 50
                    assert mtcp.mtcp_write(ctx, s, msg) == len(msg)
                    got = b""
                    while len(got) < len(msg):
                        got += mtcp.mtcp_read(ctx, s, 65536)
                    assert got == msg
                    sent.append(mtcp.mtcp_getsockname(ctx, s))
                    mtcp.mtcp_close(ctx, s)
                ctx.step(0.2)
            finally:
                mtcp.mtcp_destroy()
            workers.finish(msgs.append)
    peers = {m["core"]: [tuple(p) for p in m["peers"]] for m in msgs if m["kind"] == "peers"}
    assert sorted(p for ps in peers.values() for p in ps) == sorted(sent)
    for core, ps in peers.items():
        for peer in ps:
            assert steered_core(server, (server.ip, ECHO_PORT), peer) == core
    # Both NICs hash the same 4-tuple symmetrically into equally laid-out retas, so a flow the
    # client placed on its core 0 is served by server core 0 as well.
    assert len(peers[0]) == 12 and peers[1] == []


# ------------------------------------------------------------------- NIC restart


def test_core_link_reconnects_after_the_nic_restarts(tmp_path):
    """The NIC side of a core link goes away and comes back: the context re-opens its link and
    an established connection carries on (TCP retransmits what was lost meanwhile)."""
    from functools import partial

    from p4mtcp.control.config import MtcpConf
    from p4mtcp.control.context import Context
    from p4mtcp.link import open_port

    conf = MtcpConf(1, 16, 16, 8192, 8192, 0, 30)
    paths = {side: str(tmp_path / side) for side in ("a", "b")}
    nic = {side: open_port(f"unix:{path}") for side, path in paths.items()}
    ctxs = {side: Context(0, conf, open_port(f"unix-host:{path}"), [ip], offload_checksum=False,
                          reopen=partial(open_port, f"unix-host:{path}"))
            for (side, path), ip in zip(paths.items(), (0x0A000001, 0x0A000002))}

    def step():
        for side, other in (("a", "b"), ("b", "a")):
            for frame in nic[side].recv_batch():
                nic[other].send(frame)
        for ctx in ctxs.values():
            ctx.step(0.001)

    def until(cond, timeout=10.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            step()
            if cond():
                return True
        raise AssertionError("condition not met")

    a, b = ctxs["a"], ctxs["b"]
    lst = mtcp.mtcp_socket(b, mtcp.AF_INET, mtcp.SOCK_STREAM, 0)
    mtcp.mtcp_bind(b, lst, ("10.0.0.2", 80))
    mtcp.mtcp_listen(b, lst, 4)
    c = mtcp.mtcp_socket(a, mtcp.AF_INET, mtcp.SOCK_STREAM, 0)
    mtcp.mtcp_connect(a, c, ("10.0.0.2", 80))
    until(lambda: b._socks[lst].listener.pending)
    s = mtcp.mtcp_accept(b, lst)
    until(lambda: a._socks[c].conn.state.name == "ESTABLISHED")

    nic["a"].close()  # the NIC restarts: a's link is hung up ...
    mtcp.mtcp_write(a, c, b"across the restart")
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        a.step(0.01)  # ... the write's frames are lost, the loop does not spin
    nic["a"] = open_port(f"unix:{paths['a']}")  # ... and the NIC is back
    until(lambda: mtcp.mtcp_socket_ioctl(b, s, mtcp.FIONREAD) == 18)
    assert mtcp.mtcp_read(b, s, 100) == b"across the restart"
    assert a.stats.reconnects == 1
    for ctx in ctxs.values():
        ctx.destroy()
    for port in nic.values():
        port.close()

"""Two engines back to back (h11-style): what one sends, the other receives, with the exact
events on both sides."""

from __future__ import annotations

import errno
import os
import random
import socket

import pytest

from p4mtcp.control.tcp import EventKind, State, TcpConfig, TcpStack
from scapy.layers.inet import TCP

from linkmodel import LinkModel, LinkParams
from test_tcp_support import Wire, flags

A, B = 0x0A000001, 0x0A000002


def kinds(stack):
    return [e.kind for e in stack.events()]


def open_pair(w: Wire):
    lst = w.b.listen(B, 80, 8)
    c = w.a.connect(A, 40000, B, 80, w.now)
    w.run()
    s = lst.accept()
    assert s is not None
    w.a.events()
    w.b.events()
    return c, s, lst


def pump(w: Wire, c, s, data: bytes, chunk: int, step: float, rounds: int) -> bytes:
    """Write `data` on `c` `chunk` bytes at a time as space allows, run the wire `step`
    seconds a round, and read everything `s` gets; stops when all arrived or after `rounds`."""
    view = memoryview(data)
    sent, got = 0, bytearray()
    for _ in range(rounds):
        if sent < len(data):
            sent += c.send(view[sent:sent + chunk])
        w.run(until=w.now + step)
        got += s.recv(1 << 20)
        if len(got) == len(data):
            break
    return bytes(got)


def test_handshake_events_on_both_sides():
    w = Wire()
    lst = w.b.listen(B, 80, 8)
    c = w.a.connect(A, 40000, B, 80, w.now)
    w.run()
    assert kinds(w.a) == [EventKind.CONNECTED, EventKind.WRITABLE]
    evs = w.b.events()
    assert [e.kind for e in evs] == [EventKind.ACCEPTABLE] and evs[0].sock is lst
    s = lst.accept()
    assert c.state is s.state is State.ESTABLISHED
    assert s.local == (B, 80) and s.remote == (A, 40000) and c.remote == (B, 80)
    assert lst.accept() is None and lst.pending == 0


def test_options_negotiated_between_engines():
    w = Wire(TcpConfig(rcvbuf=1 << 20, idle_timeout=0), TcpConfig(rcvbuf=1 << 18, idle_timeout=0))
    c, s, _ = open_pair(w)
    assert c.sack_ok and s.sack_ok and c.ts_ok and s.ts_ok
    assert c.rcv_wscale == 5 and s.snd_wscale == 5 and s.rcv_wscale == 3 and c.snd_wscale == 3
    assert c.eff_mss == s.eff_mss == 1448


def test_options_off_on_one_side_are_off():
    w = Wire(TcpConfig(sack=False, timestamps=False, window_scaling=False, idle_timeout=0),
             TcpConfig(rcvbuf=1 << 20, idle_timeout=0))
    c, s, _ = open_pair(w)
    assert not (c.sack_ok or s.sack_ok or c.ts_ok or s.ts_ok)
    assert c.snd_wscale == s.snd_wscale == s.rcv_wscale == 0 and c.eff_mss == 1460


@pytest.mark.parametrize("size", [1, 1460, 100_000, 3_000_000])
def test_bulk_transfer_byte_exact(size):
    cfg = TcpConfig(rcvbuf=256 * 1024, sndbuf=256 * 1024, idle_timeout=0)
    w = Wire(cfg, cfg)
    c, s, _ = open_pair(w)
    data = os.urandom(size)
    got = pump(w, c, s, data, chunk=65536, step=0.001, rounds=100_000)
    assert bytes(got) == data
    assert w.a.stats.retransmits == 0


def test_both_directions_at_once():
    w = Wire()
    c, s, _ = open_pair(w)
    a_data, b_data = os.urandom(50_000), os.urandom(70_000)
    got_a, got_b = bytearray(), bytearray()
    sa = sb = 0
    for _ in range(10_000):
        sa += c.send(a_data[sa:sa + 4096])
        sb += s.send(b_data[sb:sb + 4096])
        w.run(until=w.now + 0.001)
        got_b += s.recv(1 << 20)
        got_a += c.recv(1 << 20)
        if len(got_a) == len(b_data) and len(got_b) == len(a_data):
            break
    assert bytes(got_b) == a_data and bytes(got_a) == b_data


def test_orderly_close_both_sides_freed():
    w = Wire()
    c, s, _ = open_pair(w)
    c.send(b"request")
    c.close()
    w.run()
    assert s.recv(100) == b"request" and s.eof and s.state is State.CLOSE_WAIT
    assert [e for e in kinds(w.b) if e is EventKind.EOF]
    s.send(b"late reply")                    # half-closed peer may still send
    s.close()
    w.run(until=w.now + 1)
    assert c.state is State.CLOSED and s.state is State.CLOSED
    assert w.a.connections == 0 and w.b.connections == 0
    assert EventKind.CLOSED in kinds(w.a) and EventKind.CLOSED in kinds(w.b)


def test_half_close_reply_after_shutdown():
    w = Wire()
    c, s, _ = open_pair(w)
    c.send(b"question")
    c.shutdown(socket.SHUT_WR)
    w.run()
    assert s.recv(100) == b"question" and s.eof
    assert c.state is State.FIN_WAIT_2
    s.send(b"answer after your FIN")
    w.run(until=w.now + 0.5)
    assert c.recv(100) == b"answer after your FIN"
    s.close()
    w.run(until=w.now + 1)
    assert c.eof and c.recv(10) == b"" and w.a.connections == w.b.connections == 0


def test_simultaneous_open_between_engines():
    """MUST-10: both sides connect to each other at once."""
    w = Wire()
    c1 = w.a.connect(A, 5000, B, 6000, w.now)
    c2 = w.b.connect(B, 6000, A, 5000, w.now)
    syn_a, syn_b = w.a.poll(w.now), w.b.poll(w.now)         # both SYNs leave before either lands
    assert [flags(TCP(x[2])) for x in syn_a + syn_b] == ["S", "S"]
    for src, dst, seg in syn_a:
        w.b.receive(src, dst, seg, w.now)
    for src, dst, seg in syn_b:
        w.a.receive(src, dst, seg, w.now)
    assert c1.state is State.SYN_RECEIVED and c2.state is State.SYN_RECEIVED
    w.record = True
    w.run(until=w.now + 0.1)
    assert c1.state is State.ESTABLISHED and c2.state is State.ESTABLISHED
    assert flags(w.log[0][1]) == "SA" and all("S" not in flags(s) for _, s in w.log[2:])
    c1.send(b"ping")
    w.run()
    assert c2.recv(10) == b"ping"


def test_simultaneous_close_between_engines():
    w = Wire(TcpConfig(timewait=5.0, idle_timeout=0), TcpConfig(timewait=5.0, idle_timeout=0))
    c, s, _ = open_pair(w)
    c.close()
    s.close()
    w.run()
    assert c.state is State.TIME_WAIT and s.state is State.TIME_WAIT
    w.run(until=w.now + 6)
    assert w.a.connections == 0 and w.b.connections == 0


def test_reset_reaches_the_peer():
    w = Wire()
    c, s, _ = open_pair(w)
    c.abort()
    w.run()
    assert s.state is State.CLOSED and s.error == errno.ECONNRESET
    assert kinds(w.b) == [EventKind.RESET, EventKind.CLOSED]


def test_connect_to_closed_port_refused():
    w = Wire()
    c = w.a.connect(A, 40000, B, 81, w.now)
    w.run()
    assert c.error == errno.ECONNREFUSED and kinds(w.a) == [EventKind.RESET, EventKind.CLOSED]


def test_lost_syn_retransmitted():
    w = Wire()
    lst = w.b.listen(B, 80, 8)
    dropped = []
    w.drop = lambda d, seg: not dropped and flags(seg) == "S" and not dropped.append(seg)
    c = w.a.connect(A, 40000, B, 80, w.now)
    w.run(until=w.now + 5)
    assert dropped and c.state is State.ESTABLISHED and lst.accept() is not None
    assert w.now >= 1.0
    assert c.rtt.rto == 3.0                     # RFC 6298 5.7: no RTT sample after a lost SYN


@pytest.mark.parametrize("loss, sack", [(0.02, True), (0.02, False), (0.1, True)])
def test_lossy_link_byte_exact(loss, sack):
    rng = random.Random(7)
    cfg = TcpConfig(rcvbuf=65536, sndbuf=65536, sack=sack, idle_timeout=0)
    w = Wire(cfg, cfg)
    c, s, _ = open_pair(w)
    w.drop = lambda d, seg: rng.random() < loss
    data = os.urandom(300_000)
    got = pump(w, c, s, data, chunk=16384, step=0.01, rounds=200_000)
    assert bytes(got) == data
    assert w.a.stats.retransmits > 0 and w.a.stats.fast_retransmits > 0


def test_single_loss_costs_one_fast_retransmit_not_a_timeout():
    cfg = TcpConfig(rcvbuf=131072, sndbuf=131072, idle_timeout=0)
    w = Wire(cfg, cfg)
    c, s, _ = open_pair(w)
    seen = []

    def drop(d, seg):
        if d == "a>b" and len(seg.payload) and not seen and seg.seq > c.iss + 30_000:
            seen.append(seg.seq)
            return True
        return False
    w.drop = drop
    data = os.urandom(200_000)
    got = pump(w, c, s, data, chunk=65536, step=0.001, rounds=10_000)
    assert bytes(got) == data and seen
    assert w.a.stats.fast_retransmits == 1 and w.a.stats.timeouts == 0
    assert w.a.stats.retransmits == 1


@pytest.mark.parametrize("seed", range(12))
def test_random_links_buffers_and_readers_always_finish(seed):
    """Liveness: lossy, reordering, duplicating links, tiny or large buffers, a reader that drains
    at random: every transfer completes byte-exact with an orderly half-close (no stall from a
    lost window update, zero window or SWS avoidance)."""
    import heapq
    rng = random.Random(seed)

    def cfg():
        return TcpConfig(rcvbuf=rng.choice([1000, 4096, 65536, 1 << 20]),
                         sndbuf=rng.choice([2000, 8192, 65536]), sack=rng.random() < 0.6,
                         timestamps=rng.random() < 0.6, window_scaling=rng.random() < 0.7,
                         mss=rng.choice([536, 1460]), delayed_ack=rng.choice([0, 0.04, 0.2]),
                         idle_timeout=0)
    w = Wire(cfg(), cfg())
    loss, reorder, dup = rng.choice([0, 0.01, 0.05]), rng.choice([0, 0.05]), rng.choice([0, 0.02])
    lst = w.b.listen(B, 80, 4)
    c = w.a.connect(A, 1234, B, 80, 0.0)
    data = rng.randbytes(rng.choice([1, 5000, 60_000]))
    queue, n, now, sent, got, srv = [], 0, 0.0, 0, bytearray(), None
    for _ in range(200_000):
        if c.state is State.ESTABLISHED:
            if sent < len(data):
                sent += c.send(data[sent:sent + rng.randrange(1, 20000)])
            else:
                c.shutdown(socket.SHUT_WR)
        for src, dst in ((w.a, w.b), (w.b, w.a)):
            for s_ip, d_ip, seg in src.poll(now):
                if rng.random() < loss:
                    continue
                at = now + 0.01 + (rng.random() * 0.02 if rng.random() < reorder else 0)
                for k in range(2 if rng.random() < dup else 1):
                    n += 1
                    heapq.heappush(queue, (at + k * 0.001, n, dst, s_ip, d_ip, seg))
        srv = srv or lst.accept()
        if srv is not None and rng.random() < 0.7:
            got += srv.recv(rng.randrange(1, 30000))
            if srv.eof and not srv.readable_bytes:
                break
        ds = [d for d in (w.a.next_deadline(), w.b.next_deadline()) if d is not None]
        if queue:
            ds.append(queue[0][0])
        now = max(now, min(min(ds, default=now + 0.05), now + 0.05))
        while queue and queue[0][0] <= now:
            _, _, dst, s_ip, d_ip, seg = heapq.heappop(queue)
            dst.receive(s_ip, d_ip, seg, now)
        assert now < 3000, f"stalled: {len(got)} of {len(data)} bytes"
    assert bytes(got) == data and srv.eof


@pytest.mark.parametrize("sack", [True, False])
def test_two_losses_in_one_window_one_recovery_episode(sack):
    """RFC 6675 / RFC 6582: both holes are repaired in one fast recovery, without a timeout."""
    cfg = TcpConfig(rcvbuf=131072, sndbuf=131072, idle_timeout=0, sack=sack)
    w = Wire(cfg, cfg)
    c, s, _ = open_pair(w)
    lost = []

    def drop(d, seg):
        off = (seg.seq - c.iss) & 0xFFFFFFFF
        if d == "a>b" and len(seg.payload) and off in (40 * 1448 + 1, 43 * 1448 + 1) \
                and off not in lost:
            lost.append(off)
            return True
        return False
    w.drop = drop
    mss = c.eff_mss
    assert mss == 1448
    data = os.urandom(200_000)
    got = pump(w, c, s, data, chunk=65536, step=0.001, rounds=10_000)
    assert bytes(got) == data and len(lost) == 2
    st = w.a.stats
    assert (st.fast_retransmits, st.timeouts, st.retransmits) == (1, 0, 2)


# -- reordering tolerance (RFC 2883, RFC 3522, RFC 3708, RFC 4015, RFC 4653) on a simulated link --

def _bulk_over(ab, size: int = 4_000_000, seed: int = 1):
    """4 MB from a to b over a linkmodel link impaired by ``ab`` (ACK path clean); returns
    (sender connection, sender stack, link) after a byte-exact check."""
    cfg = TcpConfig(rcvbuf=1 << 20, sndbuf=1 << 20, idle_timeout=0)
    a = TcpStack(cfg, isn_secret=b"reordering-key-a")
    b = TcpStack(cfg, isn_secret=b"reordering-key-b")
    lst = b.listen(B, 80, 4)
    c = a.connect(A, 40000, B, 80, 0.0)
    data = random.Random(seed).randbytes(size)
    st = {"sent": 0, "srv": None}
    got = bytearray()

    def app(now):
        if c.state is State.ESTABLISHED and st["sent"] < size:
            st["sent"] += c.send(memoryview(data)[st["sent"]:st["sent"] + 65536])
        st["srv"] = st["srv"] or lst.accept()
        if st["srv"] is not None:
            got.extend(st["srv"].recv(1 << 22))

    link = LinkModel(a, b, ab, LinkParams(), seed=seed)
    link.run(lambda: len(got) == size, app, time_limit=300)
    assert bytes(got) == data
    return c, a, link


def test_reordering_without_loss_is_not_treated_as_loss():
    """5% of segments held back 2 ms (~17 segments overtake each): DupThresh learns the
    distance, the few early fast retransmits are found spurious and undone, cwnd never ends
    up reduced (ssthresh is still the initial one)."""
    c, a, link = _bulk_over(LinkParams(reorder=0.05, reorder_delay=0.002))
    st = a.stats
    assert link.a_to_b.stats.reordered > 100 and link.a_to_b.stats.lost == 0
    assert c.lr.reo.degree > 3
    assert st.retransmits <= 10 and st.timeouts == 0               # 58 with DupThresh fixed at 3
    assert st.spurious_recoveries == st.fast_retransmits > 0
    assert c.cc.ssthresh == 1 << 30
    assert st.dsacks_in > 0


def test_reordering_with_loss_recovers_every_hole():
    """Reordering and 1% loss: byte-exact, fast retransmit does the work, and retransmissions
    stay close to the losses (DupThresh 3 resends ~3x as much). A late original can still meet
    PAWS behind a newer retransmission (RFC 7323 5.3) and, its own resend lost, an RTO."""
    c, a, link = _bulk_over(LinkParams(reorder=0.10, reorder_delay=0.002, loss=0.01))
    st, lost = a.stats, link.a_to_b.stats.lost
    assert lost > 10 and st.timeouts <= 1 < st.fast_retransmits
    assert lost <= st.retransmits < 2 * lost
    assert st.fast_retransmits < lost                    # holes of one window share a recovery
    assert c.lr.reo.degree > 3

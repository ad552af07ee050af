"""The engine's application-facing facade: errors, options, listener queues, timeouts, events."""

from __future__ import annotations

import errno
import socket

import pytest

from p4mtcp.control.tcp import ACCELERATED, EventKind, State, TcpConfig, TcpStack
from test_tcp_support import ENGINE_IP, PEER_IP, Peer, Wire, flags, payload


def kinds(stack):
    return [e.kind for e in stack.events()]


def test_isn_secret_required():
    with pytest.raises(ValueError):
        TcpStack(TcpConfig(), isn_secret=b"short")


def test_connect_on_used_tuple_is_eaddrinuse():
    stack = TcpStack(TcpConfig(), isn_secret=b"0123456789abcdef")
    stack.connect(ENGINE_IP, 5000, PEER_IP, 80, 0.0)
    assert stack.in_use(ENGINE_IP, 5000, PEER_IP, 80)
    assert not stack.in_use(ENGINE_IP, 5001, PEER_IP, 80)
    with pytest.raises(OSError) as e:
        stack.connect(ENGINE_IP, 5000, PEER_IP, 80, 0.0)
    assert e.value.errno == errno.EADDRINUSE


@pytest.mark.parametrize("args", [(ENGINE_IP, 0, PEER_IP, 80), (ENGINE_IP, 70000, PEER_IP, 80),
                                  (-1, 5, PEER_IP, 80), ("10.0.0.1", 5, PEER_IP, 80)])
def test_connect_rejects_bad_endpoints(args):
    stack = TcpStack(TcpConfig(), isn_secret=b"0123456789abcdef")
    # The compiled engine (accel.py) checks argument types itself: TypeError for the str.
    with pytest.raises(TypeError if ACCELERATED and isinstance(args[0], str) else ValueError):
        stack.connect(*args, 0.0)


def test_listen_rejects_bad_backlog():
    stack = TcpStack(TcpConfig(), isn_secret=b"0123456789abcdef")
    with pytest.raises(OSError) as e:
        stack.listen(ENGINE_IP, 80, 0)
    assert e.value.errno == errno.EINVAL


def test_send_before_established_is_queued_and_sent_after_handshake():
    p = Peer()
    p.eport, p.pport = 50000, 80
    conn = p.stack.connect(ENGINE_IP, 50000, PEER_IP, 80, p.now)
    assert conn.send(b"early data") == 10
    syn = p.one()
    assert payload(syn) == b""
    p.send("SA", 9000, syn.seq + 1, options=[("MSS", 1460)])
    seg = p.one()
    assert payload(seg) == b"early data" and seg.ack == 9001


def test_send_returns_partial_count_and_writable_follows():
    p, conn = Peer(sndbuf=1000), None
    conn, sa = p.accept()
    p.stack.events()
    assert conn.send(b"x" * 1500) == 1000 and conn.send_space == 0 and conn.send(b"y") == 0
    segs = p.out()
    p.send("A", 1001, sa.seq + 1 + sum(len(payload(s)) for s in segs))
    assert EventKind.WRITABLE in kinds(p.stack) and conn.send_space == 1000


def test_recv_peek_and_eof():
    p = Peer()
    conn, sa = p.accept()
    p.send("PA", 1001, sa.seq + 1, payload=b"abcdef")
    assert conn.recv(3, peek=True) == b"abc" and conn.readable_bytes == 6
    assert conn.recv(4) == b"abcd" and conn.recv(10) == b"ef" and conn.recv(10) == b""
    assert not conn.eof
    p.send("FA", 1007, sa.seq + 1)
    assert conn.eof and conn.recv(10) == b""
    with pytest.raises(ValueError):
        conn.recv(-1)


def test_set_option_validation():
    p = Peer()
    conn, _ = p.accept()
    with pytest.raises(OSError) as e:
        conn.set_option("bogus", 1)
    assert e.value.errno == errno.ENOPROTOOPT
    for name, bad in (("rcvbuf", 0), ("sndbuf", -5), ("linger", -1), ("rcvbuf", "big")):
        with pytest.raises(ValueError):
            conn.set_option(name, bad)
    conn.set_option("sndbuf", 100)
    assert conn.send(b"z" * 500) == 100
    with pytest.raises(ValueError):
        conn.shutdown(7)


def test_send_on_closed_or_shut_connection_errors():
    p = Peer()
    conn, _ = p.accept()
    conn.shutdown(socket.SHUT_WR)
    with pytest.raises(OSError) as e:
        conn.send(b"x")
    assert e.value.errno == errno.EPIPE


def test_shut_rd_discards_input_but_acknowledges_it():
    p = Peer()
    conn, sa = p.accept()
    conn.shutdown(socket.SHUT_RD)
    p.send("PA", 1001, sa.seq + 1, payload=b"ignored")
    assert p.one().ack == 1008 and conn.readable_bytes == 0


def test_data_before_accept_is_reported_on_accept():
    p = Peer()
    lst = p.stack.listen(ENGINE_IP, 80, 4)
    p.send("S", 1000, options=[("MSS", 1460)])
    sa = p.one()
    p.send("A", 1001, sa.seq + 1)
    p.send("PA", 1001, sa.seq + 1, payload=b"hello")
    p.send("FA", 1006, sa.seq + 1)
    assert kinds(p.stack) == [EventKind.ACCEPTABLE]
    conn = lst.accept()
    assert kinds(p.stack) == [EventKind.READABLE, EventKind.EOF]
    assert conn.recv(10) == b"hello" and conn.eof and conn.state is State.CLOSE_WAIT


def test_accept_queue_full_drops_syn():
    p = Peer()
    lst = p.stack.listen(ENGINE_IP, 80, 1)
    p.send("S", 1000, sport=1111, options=[("MSS", 1460)])
    sa = p.one()
    p.send("A", 1001, sa.seq + 1, sport=1111)
    assert lst.pending == 1
    p.send("S", 1000, sport=3333, options=[("MSS", 1460)])
    p.none()                                           # the peer will retry its SYN
    assert p.stack.stats.syn_dropped == 1 and p.stack.connections == 1
    assert lst.accept() is not None
    p.send("S", 1000, sport=3333, options=[("MSS", 1460)])
    assert flags(p.one()) == "SA"


def test_listener_close_resets_unaccepted_connections():
    p = Peer()
    lst = p.stack.listen(ENGINE_IP, 80, 4)
    p.send("S", 1000, options=[("MSS", 1460)])
    sa = p.one()
    p.send("A", 1001, sa.seq + 1)
    lst.close()
    r = p.one()
    assert flags(r) == "R" and p.stack.connections == 0
    p.send("S", 5000, sport=4444, options=[("MSS", 1460)])
    assert flags(p.one()) == "RA"                      # nobody listens any more


def test_idle_timeout_resets_quiet_connection():
    """mTCP's tcp_timeout: an ESTABLISHED connection idle that long is reset (ETIMEDOUT)."""
    p = Peer(idle_timeout=30.0)
    conn, sa = p.accept()
    p.stack.events()
    assert p.run_timers(p.now + 29.9) == []
    sent = p.run_timers(p.now + 0.2)
    assert [flags(s) for s in sent] == ["R"]
    assert conn.error == errno.ETIMEDOUT and kinds(p.stack) == [EventKind.ERROR, EventKind.CLOSED]


def test_orphaned_fin_wait_2_times_out():
    p = Peer(fin_timeout=10.0)
    conn, sa = p.accept()
    conn.close()
    p.one()
    p.send("A", 1001, sa.seq + 2)
    assert conn.state is State.FIN_WAIT_2
    sent = p.run_timers(p.now + 11)
    assert [flags(s) for s in sent] == ["R"] and p.stack.connections == 0


def test_timer_heap_stays_bounded_under_churn():
    cfg = TcpConfig(idle_timeout=30.0, nodelay=True)
    w = Wire(cfg, cfg)
    lst = w.b.listen(0x0A000002, 80, 64)
    for i in range(1500):
        c = w.a.connect(0x0A000001, 2000 + i, 0x0A000002, 80, w.now)
        w.run()
        s = lst.accept()
        c.send(b"q")
        w.run()
        s.recv(10)
        c.close()
        s.close()
        w.run()
    assert w.a.connections == w.b.connections == 0
    assert len(w.a._timers) <= 1024 + 8 and len(w.b._timers) <= 1024 + 8


def test_next_deadline_tracks_pending_output_and_timers():
    stack = TcpStack(TcpConfig(idle_timeout=0), isn_secret=b"0123456789abcdef")
    assert stack.next_deadline() is None
    stack.connect(ENGINE_IP, 5000, PEER_IP, 80, 5.0)
    assert stack.next_deadline() <= 5.0                 # the SYN is waiting: poll now
    assert len(stack.poll(5.0)) == 1
    assert stack.next_deadline() == pytest.approx(6.0)  # RFC 6298 2.1 initial RTO


def test_unanswered_synack_gives_up_and_frees_the_slot():
    p = Peer(synack_retries=2)
    lst = p.stack.listen(ENGINE_IP, 80, 4)
    p.send("S", 1000, options=[("MSS", 1460)])
    sent = p.run_timers(p.now + 100)
    assert [flags(s) for s in sent] == ["SA", "SA", "SA"]
    assert p.stack.connections == 0 and lst._half_open == set() and p.stack.events() == []


def test_rcvbuf_set_before_syn_sets_window_scale():
    p = Peer()
    p.eport, p.pport = 50000, 80
    conn = p.stack.connect(ENGINE_IP, 50000, PEER_IP, 80, p.now)
    conn.set_option("rcvbuf", 1 << 20)
    syn = p.one()
    assert dict((k, v) for k, v in syn.options)["WScale"] == 5
    p.send("SA", 9000, syn.seq + 1, options=[("MSS", 1460), ("WScale", 2)])
    ack = p.one()
    assert ack.window == (1 << 20) >> 5 and conn.rcv.capacity == 1 << 20


def test_cookie_ack_with_full_accept_queue_is_dropped_not_reset():
    """The client already thinks it is connected: drop its ACK (it retransmits), never RST."""
    p = Peer(syn_backlog=1)
    lst = p.stack.listen(ENGINE_IP, 80, 1)
    p.send("S", 1000, sport=1111, options=[("MSS", 1460)])
    first = p.one()
    p.send("S", 5000, sport=2222, options=[("MSS", 1460)])
    cookie = p.one()
    p.send("A", 1001, first.seq + 1, sport=1111)             # fills the accept queue
    p.send("A", 5001, cookie.seq + 1, sport=2222)
    p.send("PA", 5001, cookie.seq + 1, sport=2222, payload=b"req")
    assert p.out() == [] and p.stack.stats.listen_overflows == 2
    assert lst.accept() is not None
    p.send("PA", 5001, cookie.seq + 1, sport=2222, payload=b"req")   # the client's retransmission
    conn = lst.accept()
    assert conn is not None and conn.recv(10) == b"req"

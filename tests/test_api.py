"""The mTCP API on real contexts: every function of DESIGN.md section 7 and every errno."""

from __future__ import annotations

import errno
import os
import signal
import struct
import threading
import time

import pytest

from p4mtcp import mtcp
from p4mtcp.control.config import ConfigError
from p4mtcp.control.rss import PortSelector
from p4mtcp.control.tcp import State

from mtcp_pair import CLIENT_IP, PORT, SERVER_IP, Pair, connected_pair, pair, write_conf  # noqa: F401
from waiting import wait_for


def err(exc_info) -> int:
    return exc_info.value.errno


def raises(code: int, fn, *args):
    """Call ``fn(*args)``; assert it raised OSError ``code`` with the call's name in the text."""
    with pytest.raises(OSError) as ei:
        fn(*args)
    assert ei.value.errno == code, f"{fn.__name__}: {ei.value}"
    assert fn.__name__ in str(ei.value)
    return ei.value


def read_when_ready(p: Pair, ctx, s, n=65536):
    def attempt():
        try:
            return mtcp.mtcp_read(ctx, s, n) or b"<eof>"
        except BlockingIOError:
            return None
    data = p.pump_until(attempt)
    return b"" if data == b"<eof>" else data


class Pumper:
    """Runs one context's loop in a thread while the test blocks on the other one."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        end = time.monotonic() + 20
        while not self.stop.is_set() and time.monotonic() < end:
            self.ctx.step(0.005)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)


# ------------------------------------------------------------------- process setup


def test_init_reports_config_errors_with_file_and_line(tmp_path):
    bad = tmp_path / "bad.conf"
    bad.write_text("local_ip = 10.0.0.1/24\nmax_concurrency = lots\n")
    with pytest.raises(ConfigError) as ei:
        mtcp.mtcp_init(str(bad))
    assert "bad.conf:2" in str(ei.value)


def test_getconf_setconf(tmp_path):
    mtcp.mtcp_init(write_conf(tmp_path / "mtcp.conf"))
    try:
        conf = mtcp.mtcp_getconf()
        assert (conf.num_cores, conf.max_concurrency, conf.rcvbuf_size, conf.tcp_timewait) == (
            2, 64, 8192, 0)
        conf.max_concurrency = 8
        conf.sndbuf_size = 4096
        assert mtcp.mtcp_setconf(conf) == 0
        assert mtcp.mtcp_getconf().max_concurrency == 8
        from mtcp_pair import frame_pipe

        end1, end2 = frame_pipe()
        ctx = mtcp.mtcp_create_context(0, end1)
        assert ctx.max_concurrency == 8 and ctx.stack.config.sndbuf == 4096
        conf.max_concurrency = 0
        raises(errno.EINVAL, mtcp.mtcp_setconf, conf)
        raises(errno.EINVAL, mtcp.mtcp_setconf, {"max_concurrency": 5})
        end2.close()
    finally:
        mtcp.mtcp_destroy()
    raises(errno.EINVAL, mtcp.mtcp_getconf)  # after mtcp_destroy: not initialised


def test_core_affinitize_pins_the_process():
    before = os.sched_getaffinity(0)
    cpu = min(before)
    try:
        assert mtcp.mtcp_core_affinitize(cpu) == 0
        assert os.sched_getaffinity(0) == {cpu}
    finally:
        os.sched_setaffinity(0, before)
    raises(errno.EINVAL, mtcp.mtcp_core_affinitize, 100000)


def test_create_context_errors(tmp_path):
    from mtcp_pair import frame_pipe

    raises(errno.EINVAL, mtcp.mtcp_create_context, 0)  # before mtcp_init
    mtcp.mtcp_init(write_conf(tmp_path / "mtcp.conf"))
    try:
        a, b = frame_pipe()
        raises(errno.EINVAL, mtcp.mtcp_create_context, 2, a)  # num_cores = 2
        raises(errno.EINVAL, mtcp.mtcp_create_context, 0)  # no core_links in the conf
        conf = mtcp.mtcp_getconf()
        conf.rcvbuf_size = 1 << 31  # more than a TCP window can ever cover (RFC 7323)
        mtcp.mtcp_setconf(conf)
        raises(errno.EINVAL, mtcp.mtcp_create_context, 1, frame_pipe()[0])
        conf.rcvbuf_size = 8192
        mtcp.mtcp_setconf(conf)
        ctx = mtcp.mtcp_create_context(0, a)
        raises(errno.EEXIST, mtcp.mtcp_create_context, 0, b)
        raises(errno.EBUSY, mtcp.mtcp_init, str(tmp_path / "mtcp.conf"))
        mtcp.mtcp_destroy_context(ctx)
        raises(errno.EPERM, mtcp.mtcp_socket, ctx, mtcp.AF_INET, mtcp.SOCK_STREAM, 0)
        raises(errno.EPERM, mtcp.mtcp_destroy_context, ctx)
        raises(errno.EINVAL, mtcp.mtcp_socket, "not a context", mtcp.AF_INET, mtcp.SOCK_STREAM, 0)
        b.close()
    finally:
        mtcp.mtcp_destroy()


def test_register_signal_interrupts_a_blocked_wait(pair):
    got = []
    handler = got.append
    prev = mtcp.mtcp_register_signal(signal.SIGALRM, handler)
    try:
        assert prev is None
        ep = mtcp.mtcp_epoll_create(pair.server, 4)
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        t0 = time.monotonic()
        with pytest.raises(InterruptedError) as ei:
            mtcp.mtcp_epoll_wait(pair.server, ep, 4, 60_000)
        assert ei.value.errno == errno.EINTR
        assert got == [signal.SIGALRM] and time.monotonic() - t0 < 30  # not the 60 s timeout
        assert mtcp.mtcp_register_signal(signal.SIGALRM, None) is handler
        raises(errno.EINVAL, mtcp.mtcp_register_signal, 12345, handler)
        raises(errno.EINVAL, mtcp.mtcp_register_signal, signal.SIGALRM, "not callable")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)


# ------------------------------------------------------------------- mtcp_socket (seed page)


def test_socket_errnos_and_ids(pair):
    ctx = pair.client
    s = mtcp.mtcp_socket(ctx, mtcp.AF_INET, mtcp.SOCK_STREAM, 0)
    assert isinstance(s, int) and 0 <= s < 64
    raises(errno.EAFNOSUPPORT, mtcp.mtcp_socket, ctx, 10, mtcp.SOCK_STREAM, 0)  # AF_INET6
    raises(errno.EINVAL, mtcp.mtcp_socket, ctx, mtcp.AF_INET, 2, 0)  # SOCK_DGRAM
    tcp = mtcp.mtcp_socket(ctx, mtcp.AF_INET, mtcp.SOCK_STREAM, mtcp.IPPROTO_TCP)  # the idiom
    assert tcp != s and mtcp.mtcp_getsockname(ctx, tcp) == ("0.0.0.0", 0)  # a stream socket
    raises(errno.EPROTONOSUPPORT, mtcp.mtcp_socket, ctx, mtcp.AF_INET, mtcp.SOCK_STREAM, 17)


def test_each_context_has_its_own_pool(pair):
    a = mtcp.mtcp_socket(pair.client, mtcp.AF_INET, mtcp.SOCK_STREAM, 0)
    b = mtcp.mtcp_socket(pair.server, mtcp.AF_INET, mtcp.SOCK_STREAM, 0)
    assert pair.client.free_ids() == 63 and pair.server.free_ids() == 62  # + the listener
    assert a == 0 and b == 1


def test_sockets_are_nonblocking_by_default(pair):
    raises(errno.EAGAIN, mtcp.mtcp_accept, pair.server, pair.listener)


def test_bad_ids_are_ebadf_everywhere(pair):
    ctx = pair.client
    closed = mtcp.mtcp_socket(ctx, mtcp.AF_INET, mtcp.SOCK_STREAM, 0)
    mtcp.mtcp_close(ctx, closed)
    calls = [
        (mtcp.mtcp_bind, ("10.0.0.1", 1)), (mtcp.mtcp_listen, 1), (mtcp.mtcp_accept,),
        (mtcp.mtcp_connect, (SERVER_IP, PORT)), (mtcp.mtcp_close,), (mtcp.mtcp_abort,),
        (mtcp.mtcp_shutdown, mtcp.SHUT_WR), (mtcp.mtcp_getsockname,), (mtcp.mtcp_getpeername,),
        (mtcp.mtcp_read, 10), (mtcp.mtcp_recv, 10, 0), (mtcp.mtcp_readv, [bytearray(4)]),
        (mtcp.mtcp_write, b"x"), (mtcp.mtcp_writev, [b"x"]), (mtcp.mtcp_setsock_nonblock,),
        (mtcp.mtcp_socket_ioctl, mtcp.FIONREAD), (mtcp.mtcp_getsockopt, mtcp.SOL_SOCKET, mtcp.SO_ERROR),
        (mtcp.mtcp_setsockopt, mtcp.IPPROTO_TCP, mtcp.TCP_NODELAY, 1),
        (mtcp.mtcp_epoll_wait, 4, 0),
    ]
    for bad in (-1, 64, 10**9, closed, "3", None):
        for fn, *args in calls:
            raises(errno.EBADF, fn, ctx, bad, *args)


# ------------------------------------------------------------------- bind / listen / accept


def test_bind_errnos(pair):
    ctx = pair.client
    s = mtcp.mtcp_socket(ctx, mtcp.AF_INET, mtcp.SOCK_STREAM, 0)
    raises(errno.EINVAL, mtcp.mtcp_bind, ctx, s, None)
    raises(errno.EINVAL, mtcp.mtcp_bind, ctx, s, ("10.0.0.1",))
    raises(errno.EINVAL, mtcp.mtcp_bind, ctx, s, ("not an address", 80))
    raises(errno.EINVAL, mtcp.mtcp_bind, ctx, s, ("10.0.0.1", 70000))
    raises(errno.EADDRNOTAVAIL, mtcp.mtcp_bind, ctx, s, ("192.168.1.1", 80))
    assert mtcp.mtcp_bind(ctx, s, (CLIENT_IP, 9000)) == 0
    raises(errno.EINVAL, mtcp.mtcp_bind, ctx, s, (CLIENT_IP, 9001))  # already bound
    ep = mtcp.mtcp_epoll_create(ctx, 1)
    raises(errno.ENOTSOCK, mtcp.mtcp_bind, ctx, ep, (CLIENT_IP, 9002))
    assert mtcp.mtcp_getsockname(ctx, s) == (CLIENT_IP, 9000)


def test_listen_errnos(pair):
    ctx = pair.server
    s = mtcp.mtcp_socket(ctx, mtcp.AF_INET, mtcp.SOCK_STREAM, 0)
    raises(errno.EINVAL, mtcp.mtcp_listen, ctx, s, 4)  # not bound
    mtcp.mtcp_bind(ctx, s, ("", PORT))
    raises(errno.EINVAL, mtcp.mtcp_listen, ctx, s, 0)
    raises(errno.EINVAL, mtcp.mtcp_listen, ctx, s, 65)  # > max_concurrency
    raises(errno.EADDRINUSE, mtcp.mtcp_listen, ctx, s, 4)  # the pair's listener has PORT
    ep = mtcp.mtcp_epoll_create(ctx, 1)
    raises(errno.ENOTSOCK, mtcp.mtcp_listen, ctx, ep, 4)
    assert mtcp.mtcp_listen(ctx, pair.listener, 4) == 0  # already listening: no-op


def test_listen_on_a_busy_port_needs_so_reuseaddr(connected_pair):
    p = connected_pair
    mtcp.mtcp_close(p.server, p.listener)  # the accepted connection still uses PORT
    s = mtcp.mtcp_socket(p.server, mtcp.AF_INET, mtcp.SOCK_STREAM, 0)
    mtcp.mtcp_bind(p.server, s, ("0.0.0.0", PORT))
    raises(errno.EADDRINUSE, mtcp.mtcp_listen, p.server, s, 4)
    mtcp.mtcp_setsockopt(p.server, s, mtcp.SOL_SOCKET, mtcp.SO_REUSEADDR, 1)
    assert mtcp.mtcp_getsockopt(p.server, s, mtcp.SOL_SOCKET, mtcp.SO_REUSEADDR) == 1
    assert mtcp.mtcp_listen(p.server, s, 4) == 0


def test_accept_errnos_and_enfile_then_recovery(tmp_path):
    p = Pair(write_conf(tmp_path / "mtcp.conf", max_concurrency=4))
    try:
        stream = mtcp.mtcp_socket(p.server, mtcp.AF_INET, mtcp.SOCK_STREAM, 0)
        raises(errno.EINVAL, mtcp.mtcp_accept, p.server, stream)  # not listening
        raises(errno.EAGAIN, mtcp.mtcp_accept, p.server, p.listener)
        fill = [mtcp.mtcp_socket(p.server, mtcp.AF_INET, mtcp.SOCK_STREAM, 0) for _ in range(2)]
        c = mtcp.mtcp_socket(p.client, mtcp.AF_INET, mtcp.SOCK_STREAM, 0)
        mtcp.mtcp_connect(p.client, c, (SERVER_IP, PORT))
        p.pump_until(lambda: p.server._socks[p.listener].listener.pending)
        raises(errno.ENFILE, mtcp.mtcp_accept, p.server, p.listener)  # the pool is full
        mtcp.mtcp_close(p.server, fill[0])
        s = mtcp.mtcp_accept(p.server, p.listener)  # the connection waited in the backlog
        assert s == fill[0]
        assert mtcp.mtcp_getpeername(p.server, s) == mtcp.mtcp_getsockname(p.client, c)
    finally:
        p.close()


def test_blocking_accept_and_connect(pair):
    p = pair
    mtcp.mtcp_socket_ioctl(p.server, p.listener, mtcp.FIONBIO, 0)
    c = mtcp.mtcp_socket(p.client, mtcp.AF_INET, mtcp.SOCK_STREAM, 0)
    mtcp.mtcp_socket_ioctl(p.client, c, mtcp.FIONBIO, 0)
    with Pumper(p.server):
        assert mtcp.mtcp_connect(p.client, c, (SERVER_IP, PORT)) == 0  # blocks to ESTABLISHED
    assert p.client._socks[c].conn.state is State.ESTABLISHED
    with Pumper(p.client):
        s = mtcp.mtcp_accept(p.server, p.listener)  # blocks (already queued here)
    assert mtcp.mtcp_getsockname(p.server, s) == (SERVER_IP, PORT)


def test_blocking_connect_refused(pair):
    c = mtcp.mtcp_socket(pair.client, mtcp.AF_INET, mtcp.SOCK_STREAM, 0)
    mtcp.mtcp_socket_ioctl(pair.client, c, mtcp.FIONBIO, 0)
    with Pumper(pair.server):
        with pytest.raises(ConnectionRefusedError):
            mtcp.mtcp_connect(pair.client, c, (SERVER_IP, PORT + 1))


# ------------------------------------------------------------------- connect


def test_connect_errnos(connected_pair):
    p = connected_pair
    ctx = p.client
    raises(errno.ENOTSOCK, mtcp.mtcp_connect, p.server, p.listener, (CLIENT_IP, 1))
    s = mtcp.mtcp_socket(ctx, mtcp.AF_INET, mtcp.SOCK_STREAM, 0)
    raises(errno.EFAULT, mtcp.mtcp_connect, ctx, s, None)
    raises(errno.EAFNOSUPPORT, mtcp.mtcp_connect, ctx, s, ("::1", 80))
    raises(errno.EAFNOSUPPORT, mtcp.mtcp_connect, ctx, s, "10.0.0.2:80")
    raises(errno.ECONNREFUSED, mtcp.mtcp_connect, ctx, s, (SERVER_IP, 0))  # as Linux
    raises(errno.EINVAL, mtcp.mtcp_connect, ctx, s, ("0.0.0.0", 80))
    raises(errno.EISCONN, mtcp.mtcp_connect, ctx, p.c, (SERVER_IP, PORT))
    assert mtcp.mtcp_connect(ctx, s, ("10.0.0.99", 80)) == mtcp.EINPROGRESS
    raises(errno.EALREADY, mtcp.mtcp_connect, ctx, s, ("10.0.0.99", 80))


def test_connect_without_a_route_is_einval(tmp_path):
    conf = write_conf(tmp_path / "mtcp.conf")
    (tmp_path / "route.conf").write_text("ROUTES 1\n192.168.7.0/24 net1\n")
    p = Pair(conf)
    try:
        s = mtcp.mtcp_socket(p.client, mtcp.AF_INET, mtcp.SOCK_STREAM, 0)
        raises(errno.EINVAL, mtcp.mtcp_connect, p.client, s, ("172.16.0.1", 80))
        assert mtcp.mtcp_connect(p.client, s, ("192.168.7.9", 80)) == mtcp.EINPROGRESS
        s2 = mtcp.mtcp_socket(p.client, mtcp.AF_INET, mtcp.SOCK_STREAM, 0)
        assert mtcp.mtcp_connect(p.client, s2, ("10.0.0.77", 80)) == mtcp.EINPROGRESS  # on-link
    finally:
        p.close()
    (tmp_path / "route.conf").write_text("ROUTES 2\n192.168.7.0/24 net1\n")
    with pytest.raises(ConfigError) as ei:
        mtcp.mtcp_init(conf)
    assert "route.conf:1" in str(ei.value)


def test_connect_bound_tuple_steered_to_another_core_is_einval(pair):
    ctx = pair.client  # core 0
    sel = ctx.selector
    port = next(pt for pt in range(20000, 30000)
                if not sel.steers_here(int_ip(CLIENT_IP), pt, int_ip(SERVER_IP), PORT))
    s = mtcp.mtcp_socket(ctx, mtcp.AF_INET, mtcp.SOCK_STREAM, 0)
    mtcp.mtcp_bind(ctx, s, (CLIENT_IP, port))
    raises(errno.EINVAL, mtcp.mtcp_connect, ctx, s, (SERVER_IP, PORT))
    good = next(pt for pt in range(20000, 30000)
                if sel.steers_here(int_ip(CLIENT_IP), pt, int_ip(SERVER_IP), PORT))
    s2 = mtcp.mtcp_socket(ctx, mtcp.AF_INET, mtcp.SOCK_STREAM, 0)
    mtcp.mtcp_bind(ctx, s2, (CLIENT_IP, good))
    assert mtcp.mtcp_connect(ctx, s2, (SERVER_IP, PORT)) == mtcp.EINPROGRESS
    assert mtcp.mtcp_getsockname(ctx, s2) == (CLIENT_IP, good)
    # a port-only bind keeps the port and takes the configured source address
    good2 = next(pt for pt in range(good + 1, 30000)
                 if sel.steers_here(int_ip(CLIENT_IP), pt, int_ip(SERVER_IP), PORT))
    s3 = mtcp.mtcp_socket(ctx, mtcp.AF_INET, mtcp.SOCK_STREAM, 0)
    mtcp.mtcp_bind(ctx, s3, ("", good2))
    mtcp.mtcp_connect(ctx, s3, (SERVER_IP, PORT))
    assert mtcp.mtcp_getsockname(ctx, s3) == (CLIENT_IP, good2)
    assert ((int_ip(CLIENT_IP), good2), (int_ip(SERVER_IP), PORT)) in ctx.flows()


def int_ip(text: str) -> int:
    return int.from_bytes(bytes(map(int, text.split("."))), "big")


def test_connect_picks_rss_ports_for_its_core(pair):
    ctx = pair.client
    for _ in range(5):
        s = mtcp.mtcp_socket(ctx, mtcp.AF_INET, mtcp.SOCK_STREAM, 0)
        mtcp.mtcp_connect(ctx, s, (SERVER_IP, PORT))
        ip, port = mtcp.mtcp_getsockname(ctx, s)
        assert ctx.selector.steers_here(int_ip(ip), port, int_ip(SERVER_IP), PORT)


def test_connect_without_a_source_port_is_eagain_unless_flow_steer_helps(pair):
    ctx = pair.client
    other = ctx.selector.reta
    ctx.selector = PortSelector(tuple(p for p in other), core_port=99)  # no bucket is ours
    s = mtcp.mtcp_socket(ctx, mtcp.AF_INET, mtcp.SOCK_STREAM, 0)
    raises(errno.EAGAIN, mtcp.mtcp_connect, ctx, s, (SERVER_IP, PORT))
    steered = []
    ctx.steer_flow = lambda *flow: steered.append(flow) or True
    assert mtcp.mtcp_connect(ctx, s, (SERVER_IP, PORT)) == mtcp.EINPROGRESS
    ip, port = mtcp.mtcp_getsockname(ctx, s)
    assert steered == [(0, int_ip(ip), port, int_ip(SERVER_IP), PORT)]


def test_init_rss_source_addresses(pair):
    ctx = pair.client
    raises(errno.EACCES, mtcp.mtcp_init_rss, None, CLIENT_IP, 1, SERVER_IP, PORT)
    raises(errno.EINVAL, mtcp.mtcp_init_rss, ctx, CLIENT_IP, 0, SERVER_IP, PORT)
    raises(errno.EINVAL, mtcp.mtcp_init_rss, ctx, "bogus", 1, SERVER_IP, PORT)
    assert mtcp.mtcp_init_rss(ctx, "10.0.0.2", 2**31, SERVER_IP, PORT) == 0  # lazy: no 2^31 list
    assert mtcp.mtcp_init_rss(ctx, "10.0.0.2", 1, SERVER_IP, PORT) == 0
    s = mtcp.mtcp_socket(ctx, mtcp.AF_INET, mtcp.SOCK_STREAM, 0)
    mtcp.mtcp_connect(ctx, s, (SERVER_IP, PORT))
    assert mtcp.mtcp_getsockname(ctx, s)[0] == "10.0.0.2"  # from the pool, not local_ip[0]


# ------------------------------------------------------------------- data


def test_read_write_errnos(connected_pair):
    p = connected_pair
    ctx = p.client
    fresh = mtcp.mtcp_socket(ctx, mtcp.AF_INET, mtcp.SOCK_STREAM, 0)
    raises(errno.ENOTCONN, mtcp.mtcp_read, ctx, fresh, 10)
    raises(errno.ENOTCONN, mtcp.mtcp_write, ctx, fresh, b"x")
    raises(errno.ENOTSOCK, mtcp.mtcp_read, p.server, p.listener, 10)
    raises(errno.ENOTSOCK, mtcp.mtcp_write, p.server, p.listener, b"x")
    raises(errno.EAGAIN, mtcp.mtcp_read, ctx, p.c, 10)
    raises(errno.EINVAL, mtcp.mtcp_read, ctx, p.c, -1)
    raises(errno.EFAULT, mtcp.mtcp_write, ctx, p.c, "text, not bytes")
    assert mtcp.mtcp_write(ctx, p.c, b"") == 0
    assert mtcp.mtcp_read(ctx, p.c, 0) == b""


def test_write_read_bytes_arrive_exactly(connected_pair):
    p = connected_pair
    payload = os.urandom(100_000)
    sent = 0
    got = bytearray()
    end = time.monotonic() + 20
    while len(got) < len(payload) and time.monotonic() < end:
        if sent < len(payload):
            try:
                sent += mtcp.mtcp_write(p.client, p.c, payload[sent:sent + 16384])
            except BlockingIOError:
                pass
        p.step(0.0005)
        try:
            got += mtcp.mtcp_read(p.server, p.s, 65536)
        except BlockingIOError:
            pass
    assert bytes(got) == payload


def test_write_eagain_when_the_send_buffer_is_full(connected_pair):
    p = connected_pair
    n = mtcp.mtcp_write(p.client, p.c, b"z" * 100_000)
    assert n == 8192  # sndbuf
    raises(errno.EAGAIN, mtcp.mtcp_write, p.client, p.c, b"z")


def test_recv_peek_readv_writev(connected_pair):
    p = connected_pair
    assert mtcp.mtcp_writev(p.client, p.c, [b"abc", bytearray(b"def"), memoryview(b"ghij")]) == 10
    p.pump_until(lambda: mtcp.mtcp_socket_ioctl(p.server, p.s, mtcp.FIONREAD) == 10)
    assert mtcp.mtcp_recv(p.server, p.s, 4, mtcp.MSG_PEEK) == b"abcd"
    assert mtcp.mtcp_socket_ioctl(p.server, p.s, mtcp.FIONREAD) == 10  # peek kept it
    raises(errno.EINVAL, mtcp.mtcp_recv, p.server, p.s, 4, 0x40)  # MSG_DONTWAIT unsupported
    a, b = bytearray(3), bytearray(5)
    assert mtcp.mtcp_readv(p.server, p.s, [a, b]) == 8
    assert (bytes(a), bytes(b)) == (b"abc", b"defgh")
    assert mtcp.mtcp_recv(p.server, p.s, 10, 0) == b"ij"
    raises(errno.EFAULT, mtcp.mtcp_readv, p.server, p.s, [b"read-only"])
    raises(errno.EFAULT, mtcp.mtcp_writev, p.server, p.s, [b"ok", "not bytes"])


def test_blocking_write_waits_for_room(connected_pair):
    p = connected_pair
    mtcp.mtcp_socket_ioctl(p.client, p.c, mtcp.FIONBIO, 0)
    assert mtcp.mtcp_write(p.client, p.c, b"a" * 8192) == 8192  # fills the send buffer
    got = bytearray()

    def drain():
        end = time.monotonic() + 10
        while len(got) < 8192 + 100 and time.monotonic() < end:
            p.server.step(0.002)
            try:
                got.extend(mtcp.mtcp_read(p.server, p.s, 65536))
            except BlockingIOError:
                pass

    t = threading.Thread(target=drain, daemon=True)
    t.start()
    assert mtcp.mtcp_write(p.client, p.c, b"b" * 100) == 100  # blocked until ACKs made room
    p.client.flush()
    end = time.monotonic() + 10
    while t.is_alive() and time.monotonic() < end:
        p.client.step(0.002)
    t.join(1)
    assert bytes(got) == b"a" * 8192 + b"b" * 100


def test_epoll_wait_without_limit_returns_when_ready(connected_pair):
    p = connected_pair
    ep = mtcp.mtcp_epoll_create(p.client, 4)
    mtcp.mtcp_epoll_ctl(p.client, ep, mtcp.EPOLL_CTL_ADD, p.c, (mtcp.EPOLLOUT, "out"))
    assert mtcp.mtcp_epoll_wait(p.client, ep, 4, -1) == [mtcp.MtcpEpollEvent(mtcp.EPOLLOUT, "out")]


def test_blocking_read_waits_for_data(connected_pair):
    p = connected_pair
    mtcp.mtcp_socket_ioctl(p.server, p.s, mtcp.FIONBIO, 1)
    mtcp.mtcp_socket_ioctl(p.server, p.s, mtcp.FIONBIO, 0)
    assert not p.server._socks[p.s].nonblock

    reading = threading.Event()
    loops_before = p.server.stats.loops

    def later():  # writes only once the read has been running the server's loop
        reading.wait(10)
        wait_for(lambda: p.server.stats.loops >= loops_before + 3, 10, "the read's loop")
        mtcp.mtcp_write(p.client, p.c, b"worth the wait")

    with Pumper(p.client):
        threading.Thread(target=later, daemon=True).start()
        reading.set()
        assert mtcp.mtcp_read(p.server, p.s, 100) == b"worth the wait"  # it blocked for it


def test_read_returns_empty_at_eof_and_shutdown_half_close(connected_pair):
    p = connected_pair
    raises(errno.EINVAL, mtcp.mtcp_shutdown, p.client, p.c, 7)
    fresh = mtcp.mtcp_socket(p.client, mtcp.AF_INET, mtcp.SOCK_STREAM, 0)
    raises(errno.ENOTCONN, mtcp.mtcp_shutdown, p.client, fresh, mtcp.SHUT_WR)
    raises(errno.ENOTSOCK, mtcp.mtcp_shutdown, p.server, p.listener, mtcp.SHUT_WR)
    mtcp.mtcp_write(p.client, p.c, b"request")
    assert mtcp.mtcp_shutdown(p.client, p.c, mtcp.SHUT_WR) == 0
    raises(errno.EPIPE, mtcp.mtcp_write, p.client, p.c, b"more")
    assert read_when_ready(p, p.server, p.s) == b"request"
    assert read_when_ready(p, p.server, p.s) == b""  # the FIN
    assert mtcp.mtcp_write(p.server, p.s, b"response after FIN") == 18  # half-open still sends
    assert read_when_ready(p, p.client, p.c) == b"response after FIN"
    mtcp.mtcp_close(p.server, p.s)
    assert read_when_ready(p, p.client, p.c) == b""


def test_abort_sends_rst(connected_pair):
    p = connected_pair
    fresh = mtcp.mtcp_socket(p.client, mtcp.AF_INET, mtcp.SOCK_STREAM, 0)
    raises(errno.ENOTCONN, mtcp.mtcp_abort, p.client, fresh)
    raises(errno.ENOTSOCK, mtcp.mtcp_abort, p.server, p.listener)
    assert mtcp.mtcp_abort(p.client, p.c) == 0
    wait_error(p, errno.ECONNRESET)
    raises(errno.EBADF, mtcp.mtcp_abort, p.client, p.c)  # the id is gone for the app


def wait_error(p: Pair, expected: int) -> None:
    """Run both loops until the server's connection has failed with ``expected`` (without
    reporting it to the application, as reading SO_ERROR would)."""
    got = p.pump_until(lambda: p.server._socks[p.s].conn.error)
    assert got == expected


# Linux reports a connection's error once, by the call that raises it or by SO_ERROR (the
# kernel's sock_error() clears it; checked on loopback with SO_LINGER {1, 0} closes): then
# poll shows POLLIN|POLLHUP without POLLERR, reads return b"" and writes EPIPE.


@pytest.mark.parametrize("reporter", ["read", "SO_ERROR"])
def test_reset_is_reported_once_then_reads_eof_and_writes_epipe(connected_pair, reporter):
    p = connected_pair
    ep = mtcp.mtcp_epoll_create(p.server, 4)
    mtcp.mtcp_epoll_ctl(p.server, ep, mtcp.EPOLL_CTL_ADD, p.s, (mtcp.EPOLLIN, "s"))
    mtcp.mtcp_abort(p.client, p.c)
    wait_error(p, errno.ECONNRESET)
    (ev,) = mtcp.mtcp_epoll_wait(p.server, ep, 4, 0)
    assert ev.events & (mtcp.EPOLLERR | mtcp.EPOLLHUP) == mtcp.EPOLLERR | mtcp.EPOLLHUP
    so_error = (mtcp.SOL_SOCKET, mtcp.SO_ERROR)
    if reporter == "read":
        raises(errno.ECONNRESET, mtcp.mtcp_read, p.server, p.s, 10)
    else:
        assert mtcp.mtcp_getsockopt(p.server, p.s, *so_error) == errno.ECONNRESET
    assert mtcp.mtcp_getsockopt(p.server, p.s, *so_error) == 0   # reported: nothing pending
    (ev,) = mtcp.mtcp_epoll_wait(p.server, ep, 4, 0)  # hung up, no error left to report
    err_hup_in = mtcp.EPOLLERR | mtcp.EPOLLHUP | mtcp.EPOLLIN
    assert ev.events & err_hup_in == mtcp.EPOLLHUP | mtcp.EPOLLIN   # Linux: poll 17, not 25
    assert mtcp.mtcp_read(p.server, p.s, 10) == b""
    raises(errno.EPIPE, mtcp.mtcp_write, p.server, p.s, b"x")
    raises(errno.EPIPE, mtcp.mtcp_writev, p.server, p.s, [b"x"])
    assert p.server.buffers_in_use() == (0, 0)  # the end of the stream was read


def reset_by_peer(p: Pair, before: str) -> None:
    """The client resets the connection: at once ("rst"), after data the server has queued
    ("data"), or after closing (FIN) when the server's write reaches its closed socket, which
    answers RST (RFC 2525 2.17) while the server is in CLOSE-WAIT ("fin")."""
    if before == "data":
        mtcp.mtcp_write(p.client, p.c, b"hello")
        p.pump_until(lambda: mtcp.mtcp_socket_ioctl(p.server, p.s, mtcp.FIONREAD) == 5)
    if before == "fin":
        mtcp.mtcp_close(p.client, p.c)
        assert read_when_ready(p, p.server, p.s) == b""  # the FIN
        assert mtcp.mtcp_write(p.server, p.s, b"anyone there?") == 13
        wait_error(p, errno.ECONNRESET)  # reported as EPIPE in CLOSE-WAIT, as Linux's tcp_reset()
        return
    mtcp.mtcp_abort(p.client, p.c)
    wait_error(p, errno.ECONNRESET)


def call_result(p: Pair, call: str) -> bytes | int:
    """The server socket's read (bytes) or 1-byte write (bytes taken), or the errno raised."""
    try:
        if call == "read":
            return mtcp.mtcp_read(p.server, p.s, 10)
        return mtcp.mtcp_write(p.server, p.s, b"x")
    except OSError as exc:
        assert f"mtcp_{call}" in str(exc)
        return exc.errno


@pytest.mark.parametrize("before, calls", [  # what Linux answered, in each order of calls
    ("rst", [("write", errno.ECONNRESET), ("write", errno.EPIPE), ("read", b""), ("read", b"")]),
    ("data", [("read", b"hello"), ("read", errno.ECONNRESET), ("read", b""),
              ("write", errno.EPIPE)]),
    ("data", [("write", errno.ECONNRESET), ("read", b"hello"), ("read", b"")]),
    ("fin", [("write", errno.EPIPE), ("write", errno.EPIPE), ("read", b"")]),
    ("fin", [("read", b""), ("write", errno.EPIPE), ("write", errno.EPIPE)]),
], ids=["rst-write-first", "data-read-first", "data-write-first", "fin-write-first",
        "fin-read-first"])
def test_reset_errors_in_every_order_of_calls_as_linux(connected_pair, before, calls):
    reset_by_peer(connected_pair, before)
    assert [(call, call_result(connected_pair, call)) for call, _ in calls] == calls


def test_close_twice_is_ebadf(connected_pair):
    p = connected_pair
    assert mtcp.mtcp_close(p.client, p.c) == 0
    raises(errno.EBADF, mtcp.mtcp_close, p.client, p.c)


# ------------------------------------------------------------------- names and options


def test_getsockname_getpeername(connected_pair):
    p = connected_pair
    assert mtcp.mtcp_getsockname(p.server, p.listener) == ("0.0.0.0", PORT)
    assert mtcp.mtcp_getsockname(p.server, p.s) == (SERVER_IP, PORT)  # mTCP gives the peer's
    cip, cport = mtcp.mtcp_getsockname(p.client, p.c)
    assert cip == CLIENT_IP and 1024 <= cport <= 65535
    assert mtcp.mtcp_getpeername(p.server, p.s) == (cip, cport)
    assert mtcp.mtcp_getpeername(p.client, p.c) == (SERVER_IP, PORT)
    raises(errno.ENOTCONN, mtcp.mtcp_getpeername, p.server, p.listener)
    fresh = mtcp.mtcp_socket(p.client, mtcp.AF_INET, mtcp.SOCK_STREAM, 0)
    assert mtcp.mtcp_getsockname(p.client, fresh) == ("0.0.0.0", 0)
    ep = mtcp.mtcp_epoll_create(p.client, 1)
    raises(errno.ENOTSOCK, mtcp.mtcp_getsockname, p.client, ep)
    raises(errno.ENOTSOCK, mtcp.mtcp_getpeername, p.client, ep)


def test_setsockopt_really_applies(connected_pair):
    p = connected_pair
    ctx, s = p.client, p.c
    conn = ctx._socks[s].conn
    S, T = mtcp.SOL_SOCKET, mtcp.IPPROTO_TCP
    assert mtcp.mtcp_getsockopt(ctx, s, T, mtcp.TCP_NODELAY) == 0
    mtcp.mtcp_setsockopt(ctx, s, T, mtcp.TCP_NODELAY, 1)
    mtcp.mtcp_setsockopt(ctx, s, S, mtcp.SO_KEEPALIVE, 1)
    mtcp.mtcp_setsockopt(ctx, s, S, mtcp.SO_SNDBUF, 20000)
    mtcp.mtcp_setsockopt(ctx, s, S, mtcp.SO_RCVBUF, 30000)
    mtcp.mtcp_setsockopt(ctx, s, S, mtcp.SO_LINGER, struct.pack("ii", 1, 5))
    assert (conn.nodelay, conn.keepalive, conn.sndbuf.capacity, conn.linger) == (
        True, True, 20000, 5)
    assert conn.rcv.capacity >= 8192
    assert mtcp.mtcp_getsockopt(ctx, s, T, mtcp.TCP_NODELAY) == 1
    assert mtcp.mtcp_getsockopt(ctx, s, S, mtcp.SO_SNDBUF) == 20000
    assert mtcp.mtcp_getsockopt(ctx, s, S, mtcp.SO_LINGER) == (1, 5)
    assert mtcp.mtcp_write(ctx, s, b"q" * 30000) == 20000  # the bigger send buffer is real
    mtcp.mtcp_setsockopt(ctx, s, S, mtcp.SO_LINGER, (0, 0))
    assert conn.linger is None
    raises(errno.ENOPROTOOPT, mtcp.mtcp_setsockopt, ctx, s, S, 99, 1)
    raises(errno.ENOPROTOOPT, mtcp.mtcp_getsockopt, ctx, s, S, 99)
    raises(errno.EINVAL, mtcp.mtcp_setsockopt, ctx, s, S, mtcp.SO_RCVBUF, True)
    raises(errno.EINVAL, mtcp.mtcp_setsockopt, ctx, s, S, mtcp.SO_LINGER, "yes")
    raises(errno.EINVAL, mtcp.mtcp_setsockopt, ctx, s, T, mtcp.TCP_NODELAY, "on")
    ep = mtcp.mtcp_epoll_create(ctx, 1)
    raises(errno.ENOTSOCK, mtcp.mtcp_setsockopt, ctx, ep, T, mtcp.TCP_NODELAY, 1)
    raises(errno.ENOTSOCK, mtcp.mtcp_getsockopt, ctx, ep, S, mtcp.SO_ERROR)


def test_buffer_sizes_out_of_range_are_clamped_as_linux(connected_pair):
    p = connected_pair
    ctx, s, S = p.client, p.c, mtcp.SOL_SOCKET
    for opt in (mtcp.SO_RCVBUF, mtcp.SO_SNDBUF):
        for asked, got in ((0, mtcp.SOCK_BUF_MIN), (1, mtcp.SOCK_BUF_MIN),
                           (1 << 40, mtcp.SOCK_BUF_MAX), (-5, mtcp.SOCK_BUF_MAX)):  # unsigned
            assert mtcp.mtcp_setsockopt(ctx, s, S, opt, asked) == 0
            assert mtcp.mtcp_getsockopt(ctx, s, S, opt) == got, (opt, asked)
    mtcp.mtcp_setsockopt(ctx, s, S, mtcp.SO_SNDBUF, 100)
    assert mtcp.mtcp_write(ctx, s, b"q" * 5000) == mtcp.SOCK_BUF_MIN  # the clamped size is real


def test_options_before_connect_apply_and_accept_inherits(pair):
    p = pair
    mtcp.mtcp_setsockopt(p.server, p.listener, mtcp.IPPROTO_TCP, mtcp.TCP_NODELAY, 1)
    c = mtcp.mtcp_socket(p.client, mtcp.AF_INET, mtcp.SOCK_STREAM, 0)
    mtcp.mtcp_setsockopt(p.client, c, mtcp.SOL_SOCKET, mtcp.SO_KEEPALIVE, 1)
    mtcp.mtcp_connect(p.client, c, (SERVER_IP, PORT))
    assert p.client._socks[c].conn.keepalive is True
    (s,) = p.pump_until(lambda: _accept(p))
    assert p.server._socks[s].conn.nodelay is True


def _accept(p):
    try:
        return (mtcp.mtcp_accept(p.server, p.listener),)  # a tuple: id 0 is falsy
    except BlockingIOError:
        return None


def test_so_linger_zero_close_resets(connected_pair):
    p = connected_pair
    mtcp.mtcp_setsockopt(p.client, p.c, mtcp.SOL_SOCKET, mtcp.SO_LINGER, (1, 0))
    mtcp.mtcp_close(p.client, p.c)
    p.pump_until(lambda: p.server._socks[p.s].conn.error)
    assert mtcp.mtcp_getsockopt(p.server, p.s, mtcp.SOL_SOCKET, mtcp.SO_ERROR) == errno.ECONNRESET


def test_ioctl_and_setsock_nonblock(connected_pair):
    p = connected_pair
    mtcp.mtcp_write(p.client, p.c, b"12345")
    assert p.pump_until(lambda: mtcp.mtcp_socket_ioctl(p.server, p.s, mtcp.FIONREAD)) == 5
    raises(errno.EINVAL, mtcp.mtcp_socket_ioctl, p.server, p.s, 0x1234)
    raises(errno.EFAULT, mtcp.mtcp_socket_ioctl, p.server, p.s, mtcp.FIONBIO)
    raises(errno.EBADF, mtcp.mtcp_socket_ioctl, p.server, p.listener, mtcp.FIONREAD)
    ep = mtcp.mtcp_epoll_create(p.server, 1)
    raises(errno.EBADF, mtcp.mtcp_socket_ioctl, p.server, ep, mtcp.FIONREAD)
    mtcp.mtcp_socket_ioctl(p.server, p.s, mtcp.FIONBIO, 0)
    assert mtcp.mtcp_setsock_nonblock(p.server, p.s) == 0
    assert p.server._socks[p.s].nonblock


# ------------------------------------------------------------------- pipes


def test_pipe(pair):
    ctx = pair.client
    r, w = mtcp.mtcp_pipe(ctx)
    raises(errno.EAGAIN, mtcp.mtcp_read, ctx, r, 10)
    assert mtcp.mtcp_write(ctx, w, b"x" * 20000) == 10240  # mTCP's pipe buffer
    raises(errno.EAGAIN, mtcp.mtcp_write, ctx, w, b"y")
    assert mtcp.mtcp_socket_ioctl(ctx, r, mtcp.FIONREAD) == 10240
    raises(errno.EBADF, mtcp.mtcp_read, ctx, w, 10)
    raises(errno.EBADF, mtcp.mtcp_write, ctx, r, b"z")
    assert mtcp.mtcp_read(ctx, r, 10000) == b"x" * 10000
    assert mtcp.mtcp_read(ctx, r, 10000) == b"x" * 240
    mtcp.mtcp_close(ctx, r)
    raises(errno.EPIPE, mtcp.mtcp_write, ctx, w, b"z")
    mtcp.mtcp_close(ctx, w)
    assert ctx.free_ids() == 64


# ------------------------------------------------------------------- epoll errnos


def test_epoll_errnos(connected_pair):
    p = connected_pair
    ctx = p.server
    raises(errno.EINVAL, mtcp.mtcp_epoll_create, ctx, 0)
    raises(errno.EINVAL, mtcp.mtcp_epoll_create1, ctx, 5)
    ep = mtcp.mtcp_epoll_create(ctx, 8)
    ev = mtcp.MtcpEpollEvent(mtcp.EPOLLIN, p.s)
    raises(errno.EBADF, mtcp.mtcp_epoll_ctl, ctx, 63, mtcp.EPOLL_CTL_ADD, p.s, ev)
    raises(errno.EBADF, mtcp.mtcp_epoll_ctl, ctx, ep, mtcp.EPOLL_CTL_ADD, 63, ev)
    raises(errno.EINVAL, mtcp.mtcp_epoll_ctl, ctx, p.s, mtcp.EPOLL_CTL_ADD, p.listener, ev)
    raises(errno.EINVAL, mtcp.mtcp_epoll_ctl, ctx, ep, mtcp.EPOLL_CTL_ADD, ep, ev)
    raises(errno.EINVAL, mtcp.mtcp_epoll_ctl, ctx, ep, 9, p.s, ev)
    raises(errno.EINVAL, mtcp.mtcp_epoll_ctl, ctx, ep, mtcp.EPOLL_CTL_ADD, p.s, None)
    raises(errno.ENOENT, mtcp.mtcp_epoll_ctl, ctx, ep, mtcp.EPOLL_CTL_MOD, p.s, ev)
    raises(errno.ENOENT, mtcp.mtcp_epoll_ctl, ctx, ep, mtcp.EPOLL_CTL_DEL, p.s, None)
    assert mtcp.mtcp_epoll_ctl(ctx, ep, mtcp.EPOLL_CTL_ADD, p.s, ev) == 0
    raises(errno.EEXIST, mtcp.mtcp_epoll_ctl, ctx, ep, mtcp.EPOLL_CTL_ADD, p.s, ev)
    assert mtcp.mtcp_epoll_ctl(ctx, ep, mtcp.EPOLL_CTL_DEL, p.s, None) == 0
    raises(errno.EBADF, mtcp.mtcp_epoll_wait, ctx, 63, 4, 0)
    raises(errno.EINVAL, mtcp.mtcp_epoll_wait, ctx, p.s, 4, 0)
    raises(errno.EINVAL, mtcp.mtcp_epoll_wait, ctx, ep, 0, 0)
    raises(errno.EINVAL, mtcp.mtcp_epoll_wait, ctx, ep, 4, float("nan"))
    raises(errno.EINVAL, mtcp.mtcp_epoll_wait, ctx, ep, 4, "1000")
    mtcp.mtcp_close(ctx, ep)
    raises(errno.EBADF, mtcp.mtcp_epoll_wait, ctx, ep, 4, 0)


def test_epoll_ctl_ignores_unknown_event_bits(connected_pair):
    p = connected_pair
    ep = mtcp.mtcp_epoll_create(p.server, 4)
    events = mtcp.EPOLLIN | 1 << 20 | 1 << 12  # two bits no epoll defines
    assert mtcp.mtcp_epoll_ctl(p.server, ep, mtcp.EPOLL_CTL_ADD, p.s, (events, 1)) == 0
    assert mtcp.mtcp_epoll_ctl(p.server, ep, mtcp.EPOLL_CTL_MOD, p.s, (events, 2)) == 0
    mtcp.mtcp_write(p.client, p.c, b"data")
    assert p.pump_until(lambda: mtcp.mtcp_epoll_wait(p.server, ep, 4, 0)) == [
        mtcp.MtcpEpollEvent(mtcp.EPOLLIN, 2)]
    raises(errno.EINVAL, mtcp.mtcp_epoll_ctl, p.server, ep, mtcp.EPOLL_CTL_MOD, p.s, ("in", 2))


def test_closed_socket_leaves_every_epoll(connected_pair):
    p = connected_pair
    ep = mtcp.mtcp_epoll_create(p.server, 8)
    mtcp.mtcp_epoll_ctl(p.server, ep, mtcp.EPOLL_CTL_ADD, p.s, (mtcp.EPOLLIN, "gone"))
    mtcp.mtcp_write(p.client, p.c, b"data")
    p.pump(0.05)
    mtcp.mtcp_close(p.server, p.s)
    assert mtcp.mtcp_epoll_wait(p.server, ep, 8, 0) == []
    assert p.s not in p.server._socks[ep].epoll


# ------------------------------------------------------------------- bad input never crashes

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_ANY = st.one_of(st.none(), st.integers(-2, 70), st.integers(-2**40, 2**40), st.text(max_size=4),
                 st.binary(max_size=8), st.tuples(st.text(max_size=9), st.integers(-1, 70000)),
                 st.tuples(st.integers(-1, 2**33), st.integers(-1, 70000)), st.lists(
                     st.binary(max_size=4), max_size=3), st.floats(allow_nan=True))
_FUZZED = [  # every socket-level call that cannot block a non-blocking socket
    (mtcp.mtcp_socket, 3), (mtcp.mtcp_bind, 2), (mtcp.mtcp_listen, 2), (mtcp.mtcp_accept, 1),
    (mtcp.mtcp_connect, 2), (mtcp.mtcp_close, 1), (mtcp.mtcp_abort, 1), (mtcp.mtcp_shutdown, 2),
    (mtcp.mtcp_getsockname, 1), (mtcp.mtcp_getpeername, 1), (mtcp.mtcp_read, 2),
    (mtcp.mtcp_recv, 3), (mtcp.mtcp_readv, 2), (mtcp.mtcp_write, 2), (mtcp.mtcp_writev, 2),
    (mtcp.mtcp_setsockopt, 4), (mtcp.mtcp_getsockopt, 3), (mtcp.mtcp_setsock_nonblock, 1),
    (mtcp.mtcp_pipe, 0), (mtcp.mtcp_epoll_create, 1), (mtcp.mtcp_epoll_create1, 1),
    (mtcp.mtcp_epoll_ctl, 4), (mtcp.mtcp_init_rss, 4),
]


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_random_arguments_raise_oserror_or_succeed(connected_pair, data):
    p = connected_pair
    fn, nargs = data.draw(st.sampled_from(_FUZZED))
    args = [data.draw(_ANY) for _ in range(nargs)]
    try:
        fn(p.client, *args)
    except OSError as exc:
        assert exc.errno and fn.__name__ in str(exc)
    for s in p.client._socks:  # keep every socket non-blocking: nothing may wait here
        if s is not None:
            s.nonblock = True

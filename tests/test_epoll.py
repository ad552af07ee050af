"""mTCP epoll semantics: the Epoll bookkeeping alone, then over two real contexts back to back."""

from __future__ import annotations

import errno

import pytest

from p4mtcp import mtcp
from p4mtcp.control.epoll import (CONDITIONS, EPOLLERR, EPOLLET, EPOLLHUP, EPOLLIN, EPOLLONESHOT,
                                  EPOLLOUT, EPOLLRDHUP, Epoll, MtcpEpollEvent)

from mtcp_pair import Pair, connected_pair, pair  # noqa: F401  (fixtures)


# ------------------------------------------------------------------- the bookkeeping alone


class Sockets:
    """What is true of each socket now, as the context's readiness() would say."""

    def __init__(self):
        self.now: dict[int, int] = {}

    def __call__(self, sockid: int) -> int:
        return self.now.get(sockid, 0)


def make():
    state = Sockets()
    return state, Epoll(state)


def test_mtcp_event_bits_have_mtcp_values():
    assert (mtcp.EPOLLIN, mtcp.EPOLLPRI, mtcp.EPOLLOUT, mtcp.EPOLLERR, mtcp.EPOLLHUP) == (
        0x1, 0x2, 0x4, 0x8, 0x10)
    assert (mtcp.EPOLLRDHUP, mtcp.EPOLLONESHOT, mtcp.EPOLLET) == (0x2000, 1 << 30, 1 << 31)
    assert (mtcp.EPOLL_CTL_ADD, mtcp.EPOLL_CTL_DEL, mtcp.EPOLL_CTL_MOD) == (1, 2, 3)
    assert mtcp.MTCP_EPOLLIN == mtcp.EPOLLIN and mtcp.MTCP_EPOLL_CTL_MOD == 3


def test_level_triggered_reports_while_ready_and_stops_when_not():
    state, ep = make()
    ep.add(5, EPOLLIN, "five")
    assert ep.collect(10) == []  # nothing true yet
    state.now[5] = EPOLLIN
    ep.notify(5, EPOLLIN)
    assert ep.collect(10) == [MtcpEpollEvent(EPOLLIN, "five")]
    assert ep.collect(10) == [MtcpEpollEvent(EPOLLIN, "five")]  # still readable: again
    state.now[5] = 0
    assert ep.collect(10) == []
    assert not ep.pending()  # dropped from the ready list once not ready


def test_edge_triggered_reports_once_per_notification():
    state, ep = make()
    ep.add(3, EPOLLIN | EPOLLET, 3)
    state.now[3] = EPOLLIN
    ep.notify(3, EPOLLIN)
    assert ep.collect(10) == [MtcpEpollEvent(EPOLLIN, 3)]
    assert ep.collect(10) == []  # still readable, but no new edge
    ep.notify(3, EPOLLIN)
    assert ep.collect(10) == [MtcpEpollEvent(EPOLLIN, 3)]


def test_stale_notification_is_not_reported():
    state, ep = make()
    ep.add(1, EPOLLIN, 1)
    ep.notify(1, EPOLLIN)  # data arrived ...
    state.now[1] = 0  # ... and was read before the wait
    assert ep.collect(10) == []


def test_oneshot_disarms_until_mod():
    state, ep = make()
    ep.add(2, EPOLLIN | EPOLLONESHOT, 2)
    state.now[2] = EPOLLIN
    ep.notify(2, EPOLLIN)
    assert ep.collect(10) == [MtcpEpollEvent(EPOLLIN, 2)]
    ep.notify(2, EPOLLIN)
    assert ep.collect(10) == []
    ep.modify(2, EPOLLIN | EPOLLONESHOT, "again")
    assert ep.collect(10) == [MtcpEpollEvent(EPOLLIN, "again")]


def test_err_and_hup_are_always_reported_and_unrequested_bits_are_not():
    state, ep = make()
    ep.add(4, EPOLLIN, 4)
    state.now[4] = EPOLLOUT | EPOLLERR | EPOLLHUP
    ep.notify(4, CONDITIONS)
    assert ep.collect(10) == [MtcpEpollEvent(EPOLLERR | EPOLLHUP, 4)]


def test_registration_reports_what_is_already_true():
    state, ep = make()
    state.now[9] = EPOLLOUT
    ep.add(9, EPOLLOUT | EPOLLET, 9)  # mTCP raises pending events at ADD, even for ET
    assert ep.collect(10) == [MtcpEpollEvent(EPOLLOUT, 9)]


def test_maxevents_limits_and_the_rest_wait_their_turn():
    state, ep = make()
    for i in range(5):
        state.now[i] = EPOLLIN
        ep.add(i, EPOLLIN, i)
    first = [e.data for e in ep.collect(2)]
    second = [e.data for e in ep.collect(2)]
    third = [e.data for e in ep.collect(2)]
    assert first == [0, 1] and second == [2, 3] and third == [4, 0]


def test_remove_forgets_the_socket():
    state, ep = make()
    state.now[7] = EPOLLIN
    ep.add(7, EPOLLIN, 7)
    ep.remove(7)
    assert 7 not in ep and ep.collect(10) == []


# ------------------------------------------------------------------- over real contexts


def events_for(pair: Pair, side: str, epid: int, want: int, timeout: float = 5.0):
    """Pump both contexts until ``side``'s epoll reports something with ``want`` bits."""
    ctx = pair.ctx(side)
    got = pair.pump_until(lambda: [e for e in mtcp.mtcp_epoll_wait(ctx, epid, 16, 0)
                                   if e.events & want], timeout)
    return got


def test_epoll_lt_accept_read_write_close(connected_pair):
    p = connected_pair
    ep = mtcp.mtcp_epoll_create(p.server, 16)
    mtcp.mtcp_epoll_ctl(p.server, ep, mtcp.EPOLL_CTL_ADD, p.s, MtcpEpollEvent(EPOLLIN, "srv"))
    mtcp.mtcp_write(p.client, p.c, b"hello")
    evs = events_for(p, "server", ep, EPOLLIN)
    assert evs == [MtcpEpollEvent(EPOLLIN, "srv")]
    # level-triggered: unread data keeps reporting
    assert mtcp.mtcp_epoll_wait(p.server, ep, 16, 0) == [MtcpEpollEvent(EPOLLIN, "srv")]
    assert mtcp.mtcp_read(p.server, p.s, 100) == b"hello"
    assert mtcp.mtcp_epoll_wait(p.server, ep, 16, 0) == []


def test_epoll_et_reports_new_data_once(connected_pair):
    p = connected_pair
    ep = mtcp.mtcp_epoll_create(p.server, 16)
    mtcp.mtcp_epoll_ctl(p.server, ep, mtcp.EPOLL_CTL_ADD, p.s,
                        MtcpEpollEvent(EPOLLIN | EPOLLET, p.s))
    mtcp.mtcp_write(p.client, p.c, b"abc")
    assert events_for(p, "server", ep, EPOLLIN) == [MtcpEpollEvent(EPOLLIN, p.s)]
    assert mtcp.mtcp_epoll_wait(p.server, ep, 16, 0) == []  # not read, but no new edge
    mtcp.mtcp_write(p.client, p.c, b"def")
    assert events_for(p, "server", ep, EPOLLIN) == [MtcpEpollEvent(EPOLLIN, p.s)]
    assert mtcp.mtcp_read(p.server, p.s, 100) == b"abcdef"


def test_epoll_oneshot_needs_mod(connected_pair):
    p = connected_pair
    ep = mtcp.mtcp_epoll_create1(p.server, 0)
    mtcp.mtcp_epoll_ctl(p.server, ep, mtcp.EPOLL_CTL_ADD, p.s,
                        MtcpEpollEvent(EPOLLIN | EPOLLONESHOT, 1))
    mtcp.mtcp_write(p.client, p.c, b"x")
    assert events_for(p, "server", ep, EPOLLIN) == [MtcpEpollEvent(EPOLLIN, 1)]
    mtcp.mtcp_write(p.client, p.c, b"y")
    p.pump(0.2)
    assert mtcp.mtcp_epoll_wait(p.server, ep, 16, 0) == []
    mtcp.mtcp_epoll_ctl(p.server, ep, mtcp.EPOLL_CTL_MOD, p.s,
                        MtcpEpollEvent(EPOLLIN | EPOLLONESHOT, 2))
    assert mtcp.mtcp_epoll_wait(p.server, ep, 16, 0) == [MtcpEpollEvent(EPOLLIN, 2)]


def test_epoll_rdhup_when_peer_closes(connected_pair):
    p = connected_pair
    ep = mtcp.mtcp_epoll_create(p.server, 16)
    mtcp.mtcp_epoll_ctl(p.server, ep, mtcp.EPOLL_CTL_ADD, p.s,
                        MtcpEpollEvent(EPOLLIN | EPOLLRDHUP, p.s))
    mtcp.mtcp_write(p.client, p.c, b"last words")
    mtcp.mtcp_close(p.client, p.c)
    evs = events_for(p, "server", ep, EPOLLRDHUP)
    assert evs[0].events & (EPOLLIN | EPOLLRDHUP) == EPOLLIN | EPOLLRDHUP
    assert mtcp.mtcp_read(p.server, p.s, 100) == b"last words"
    assert mtcp.mtcp_read(p.server, p.s, 100) == b""


def test_epoll_err_on_reset(connected_pair):
    p = connected_pair
    ep = mtcp.mtcp_epoll_create(p.server, 16)
    mtcp.mtcp_epoll_ctl(p.server, ep, mtcp.EPOLL_CTL_ADD, p.s, MtcpEpollEvent(EPOLLIN, p.s))
    mtcp.mtcp_abort(p.client, p.c)
    evs = events_for(p, "server", ep, EPOLLERR)
    assert evs[0].events & (EPOLLERR | EPOLLHUP) == EPOLLERR | EPOLLHUP
    with pytest.raises(ConnectionResetError):
        mtcp.mtcp_read(p.server, p.s, 10)
    assert mtcp.mtcp_getsockopt(p.server, p.s, mtcp.SOL_SOCKET, mtcp.SO_ERROR) == 0  # reported


def test_epollout_reports_connect_completion(pair):
    p = pair
    ep = mtcp.mtcp_epoll_create(p.client, 16)
    c = mtcp.mtcp_socket(p.client, mtcp.AF_INET, mtcp.SOCK_STREAM, 0)
    assert mtcp.mtcp_connect(p.client, c, (p.server_ip, p.port)) == mtcp.EINPROGRESS
    mtcp.mtcp_epoll_ctl(p.client, ep, mtcp.EPOLL_CTL_ADD, c, MtcpEpollEvent(EPOLLOUT, c))
    assert mtcp.mtcp_epoll_wait(p.client, ep, 16, 0) == []  # handshake not done yet
    assert events_for(p, "client", ep, EPOLLOUT) == [MtcpEpollEvent(EPOLLOUT, c)]
    assert mtcp.mtcp_getsockopt(p.client, c, mtcp.SOL_SOCKET, mtcp.SO_ERROR) == 0


def test_epollerr_reports_refused_connect(pair):
    p = pair
    ep = mtcp.mtcp_epoll_create(p.client, 16)
    c = mtcp.mtcp_socket(p.client, mtcp.AF_INET, mtcp.SOCK_STREAM, 0)
    mtcp.mtcp_connect(p.client, c, (p.server_ip, p.port + 1))  # nobody listens there
    mtcp.mtcp_epoll_ctl(p.client, ep, mtcp.EPOLL_CTL_ADD, c, MtcpEpollEvent(EPOLLOUT, c))
    evs = events_for(p, "client", ep, EPOLLERR)
    assert evs[0].events & EPOLLERR
    assert mtcp.mtcp_getsockopt(p.client, c, mtcp.SOL_SOCKET, mtcp.SO_ERROR) == errno.ECONNREFUSED


def test_listener_in_two_epolls(pair):
    """Several epolls per context (mTCP allows one): both see the pending connection."""
    p = pair
    e1 = mtcp.mtcp_epoll_create(p.server, 4)
    e2 = mtcp.mtcp_epoll_create(p.server, 4)
    for e in (e1, e2):
        mtcp.mtcp_epoll_ctl(p.server, e, mtcp.EPOLL_CTL_ADD, p.listener, MtcpEpollEvent(EPOLLIN, e))
    c = mtcp.mtcp_socket(p.client, mtcp.AF_INET, mtcp.SOCK_STREAM, 0)
    mtcp.mtcp_connect(p.client, c, (p.server_ip, p.port))
    assert events_for(p, "server", e1, EPOLLIN) == [MtcpEpollEvent(EPOLLIN, e1)]
    assert mtcp.mtcp_epoll_wait(p.server, e2, 4, 0) == [MtcpEpollEvent(EPOLLIN, e2)]
    mtcp.mtcp_accept(p.server, p.listener)
    assert mtcp.mtcp_epoll_wait(p.server, e1, 4, 0) == []
    assert mtcp.mtcp_epoll_wait(p.server, e2, 4, 0) == []


def test_pipe_events(pair):
    ctx = pair.server
    ep = mtcp.mtcp_epoll_create(ctx, 4)
    r, w = mtcp.mtcp_pipe(ctx)
    mtcp.mtcp_epoll_ctl(ctx, ep, mtcp.EPOLL_CTL_ADD, r, MtcpEpollEvent(EPOLLIN, "r"))
    mtcp.mtcp_epoll_ctl(ctx, ep, mtcp.EPOLL_CTL_ADD, w, MtcpEpollEvent(EPOLLOUT, "w"))
    assert mtcp.mtcp_epoll_wait(ctx, ep, 4, 0) == [MtcpEpollEvent(EPOLLOUT, "w")]
    mtcp.mtcp_write(ctx, w, b"ping")
    assert sorted(mtcp.mtcp_epoll_wait(ctx, ep, 4, 0)) == sorted(
        [MtcpEpollEvent(EPOLLIN, "r"), MtcpEpollEvent(EPOLLOUT, "w")])
    assert mtcp.mtcp_read(ctx, r, 10) == b"ping"
    mtcp.mtcp_close(ctx, w)
    assert mtcp.mtcp_epoll_wait(ctx, ep, 4, 0) == [MtcpEpollEvent(EPOLLIN | EPOLLHUP, "r")]
    assert mtcp.mtcp_read(ctx, r, 10) == b""


def test_epoll_wait_times_out_after_timeout_ms(pair):
    import time

    ep = mtcp.mtcp_epoll_create(pair.server, 4)
    t0 = time.monotonic()
    assert mtcp.mtcp_epoll_wait(pair.server, ep, 4, 150) == []
    # it waited its timeout, and then returned (the upper bound only catches a wait that never
    # ends; it is loose so that a machine too busy to run us for seconds does not fail it)
    assert 0.14 <= time.monotonic() - t0 < 30.0


def test_et_epollout_fires_again_when_a_full_send_buffer_drains(connected_pair):
    p = connected_pair
    ep = mtcp.mtcp_epoll_create(p.client, 4)
    mtcp.mtcp_epoll_ctl(p.client, ep, mtcp.EPOLL_CTL_ADD, p.c,
                        MtcpEpollEvent(EPOLLOUT | EPOLLET, "w"))
    assert mtcp.mtcp_epoll_wait(p.client, ep, 4, 0) == [MtcpEpollEvent(EPOLLOUT, "w")]
    sent = 0
    while True:
        try:
            sent += mtcp.mtcp_write(p.client, p.c, b"d" * 4096)
        except BlockingIOError:
            break
    assert mtcp.mtcp_epoll_wait(p.client, ep, 4, 0) == []  # full: no edge
    got = bytearray()

    def drained_and_writable():
        try:
            got.extend(mtcp.mtcp_read(p.server, p.s, 65536))
        except BlockingIOError:
            pass
        return mtcp.mtcp_epoll_wait(p.client, ep, 4, 0)

    assert p.pump_until(drained_and_writable) == [MtcpEpollEvent(EPOLLOUT, "w")]
    assert mtcp.mtcp_write(p.client, p.c, b"more") == 4

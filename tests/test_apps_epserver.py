"""epserver's per-core server in-process on a real context: what it keeps per connection."""

from __future__ import annotations

import time

from p4mtcp import mtcp
from p4mtcp.apps.epserver import CoreServer
from p4mtcp.apps.http import ResponseReader, build_request
from p4mtcp.apps.webfiles import FileCache

from mtcp_pair import SERVER_IP, pair  # noqa: F401

HTTP_PORT = 80
BODY = bytes(range(256)) * 8


class Clients:
    """Short HTTP/1.1 connections (Connection: close) from the pair's client context, at most
    `concurrency` at once, driven by one epoll."""

    def __init__(self, ctx, total: int, concurrency: int):
        self.ctx, self.left, self.concurrency = ctx, total, concurrency
        self.ep = mtcp.mtcp_epoll_create(ctx, 64)
        self.open: dict[int, tuple[ResponseReader, bytearray]] = {}  # socket -> (reader, body)
        self.bodies: list[bytes] = []
        self.local_addrs: list[tuple[str, int]] = []

    def fill(self) -> None:
        while self.left and len(self.open) < self.concurrency:
            s = mtcp.mtcp_socket(self.ctx, mtcp.AF_INET, mtcp.SOCK_STREAM, 0)
            assert mtcp.mtcp_connect(self.ctx, s, (SERVER_IP, HTTP_PORT)) == mtcp.EINPROGRESS
            self.local_addrs.append(mtcp.mtcp_getsockname(self.ctx, s))
            mtcp.mtcp_epoll_ctl(self.ctx, self.ep, mtcp.EPOLL_CTL_ADD, s, (mtcp.EPOLLOUT, s))
            self.open[s] = (ResponseReader(), bytearray())
            self.left -= 1

    def step(self) -> None:
        for ev in mtcp.mtcp_epoll_wait(self.ctx, self.ep, 64, 0):
            s = ev.data
            assert not ev.events & mtcp.EPOLLERR, f"socket {s} failed"
            if ev.events & mtcp.EPOLLOUT:
                assert mtcp.mtcp_write(self.ctx, s, build_request(SERVER_IP, "/")) > 0
                mtcp.mtcp_epoll_ctl(self.ctx, self.ep, mtcp.EPOLL_CTL_MOD, s, (mtcp.EPOLLIN, s))
            elif ev.events & (mtcp.EPOLLIN | mtcp.EPOLLHUP):
                self._read(s)

    def _read(self, s: int) -> None:
        reader, body = self.open[s]
        while True:
            try:
                data = mtcp.mtcp_read(self.ctx, s, 65536)
            except BlockingIOError:
                return
            if not data:  # the server closes after answering a Connection: close request
                assert reader.done
                self.bodies.append(bytes(body))
                mtcp.mtcp_epoll_ctl(self.ctx, self.ep, mtcp.EPOLL_CTL_DEL, s, None)
                mtcp.mtcp_close(self.ctx, s)
                del self.open[s]
                return
            body += reader.feed(data)

    @property
    def finished(self) -> bool:
        return not self.left and not self.open


def test_served_connections_leave_nothing_behind_in_the_server(pair, tmp_path):
    """A long-running server must not grow with the connections it has served: once they are
    closed and reported, no session, peer or socket id of theirs is left (the peer list used
    to keep every accepted flow for the whole run)."""
    (tmp_path / "index.html").write_bytes(BODY)
    server = CoreServer(mtcp, pair.server, FileCache(str(tmp_path)), HTTP_PORT, 64)
    ids_before = pair.server.free_ids()
    clients = Clients(pair.client, total=240, concurrency=16)
    reported: list[tuple[str, int]] = []
    end = time.monotonic() + 120
    while not clients.finished and time.monotonic() < end:
        clients.fill()
        pair.client.step(0.0005)
        server.step(0)
        clients.step()
        if len(server.peers) >= 50:  # the statistics sample hands the peers over
            reported += server.take_peers()
    reported += server.take_peers()
    assert clients.bodies == [BODY] * 240
    assert (server.accepted, server.requests, server.errors) == (240, 240, 0)
    assert sorted(reported) == sorted(clients.local_addrs)  # each flow reported exactly once
    assert server.sessions == {} and server.peers == []
    pair.pump_until(lambda: pair.server.free_ids() == ids_before)  # every TCB freed, ids back

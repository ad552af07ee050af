"""Two real per-core contexts wired back to back by an in-process frame pipe (no NIC).

The pipe is a pair of UNIX datagram sockets: each end is a "port" with the dataplane contract
(send / recv_batch / fileno / close), so the contexts exchange real Ethernet/IPv4/TCP frames.
Both contexts live in the test's thread; ``Pair.pump*`` runs their loops in turn, bounded in time.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

import pytest

from p4mtcp import mtcp

T = TypeVar("T")

CLIENT_IP = "10.0.0.1"
SERVER_IP = "10.0.0.2"
PORT = 8080


class PipeEnd:
    """One end of a frame pipe; counts frames it refused to lose silently (none expected)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sent = 0
        self.dropped = 0

    def send(self, frame: bytes) -> None:
        try:
            self.sock.send(frame)
            self.sent += 1
        except BlockingIOError:  # a full link drops, like a real one; TCP recovers
            self.dropped += 1

    def recv_batch(self) -> list[bytes]:
        out = []
        for _ in range(512):
            try:
                out.append(self.sock.recv(65536))
            except BlockingIOError:
                break
        return out

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()


def frame_pipe() -> tuple[PipeEnd, PipeEnd]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    return PipeEnd(a), PipeEnd(b)


def write_conf(path, **overrides) -> str:
    values = {"num_cores": 2, "local_ip": f"{CLIENT_IP}/24 {SERVER_IP}/24", "port": "net0 net1",
              "max_concurrency": 64, "max_num_buffers": 64, "tcp_timeout": 30}
    values.update(overrides)
    path.write_text("".join(f"{k} = {v}\n" for k, v in values.items()))
    return str(path)


class Pair:
    """client = context of core 0, server = context of core 1, a listener on SERVER_IP:PORT."""

    server_ip = SERVER_IP
    client_ip = CLIENT_IP
    port = PORT

    def __init__(self, conf_path: str, offload_checksum: bool = False):
        mtcp.mtcp_init(conf_path)
        try:
            self.client_port, self.server_port = frame_pipe()
            self.client = mtcp.mtcp_create_context(0, self.client_port,
                                                   offload_checksum=offload_checksum)
            self.server = mtcp.mtcp_create_context(1, self.server_port,
                                                   offload_checksum=offload_checksum)
            self.listener = mtcp.mtcp_socket(self.server, mtcp.AF_INET, mtcp.SOCK_STREAM, 0)
            mtcp.mtcp_bind(self.server, self.listener, ("0.0.0.0", PORT))
            mtcp.mtcp_listen(self.server, self.listener, 4)
        except BaseException:
            mtcp.mtcp_destroy()
            raise
        self.c = self.s = -1

    def ctx(self, side: str):
        return self.client if side == "client" else self.server

    def step(self, timeout: float) -> None:
        for ctx in (self.client, self.server):
            if not ctx.done:
                ctx.step(timeout)

    def pump(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.step(0.001)

    def pump_until(self, done: Callable[[], T], timeout: float = 5.0) -> T:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.step(0.0005)
            result = done()
            if result:
                return result
        raise AssertionError(f"condition not met within {timeout} s")

    def connect(self) -> tuple[int, int]:
        """A connected (client socket, accepted server socket)."""
        c = mtcp.mtcp_socket(self.client, mtcp.AF_INET, mtcp.SOCK_STREAM, 0)
        assert mtcp.mtcp_connect(self.client, c, (SERVER_IP, PORT)) == mtcp.EINPROGRESS

        def accepted():
            try:
                return (mtcp.mtcp_accept(self.server, self.listener),)  # a tuple: id 0 is falsy
            except BlockingIOError:
                return None

        (s,) = self.pump_until(accepted)
        cconn = self.client._socks[c].conn
        self.pump_until(lambda: cconn.state.name == "ESTABLISHED")
        return c, s

    def close(self) -> None:
        mtcp.mtcp_destroy()


@pytest.fixture
def pair(tmp_path):
    p = Pair(write_conf(tmp_path / "mtcp.conf"))
    yield p
    p.close()


@pytest.fixture
def connected_pair(pair):
    pair.c, pair.s = pair.connect()
    return pair

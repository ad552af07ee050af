"""Two real per-core contexts wired back to back by an in-process frame pipe (no NIC).

The pipe is a UNIX SOCK_SEQPACKET pair (p4mtcp.link.unix.pipe_pair): each end is a real port,
so the contexts exchange real Ethernet/IPv4/TCP frames.
Both contexts live in the test's thread; ``Pair.pump*`` runs their loops in turn, bounded in time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

from p4mtcp import mtcp
from p4mtcp.link import Port
from p4mtcp.link.unix import pipe_pair

T = TypeVar("T")

CLIENT_IP = "10.0.0.1"
SERVER_IP = "10.0.0.2"
PORT = 8080


def frame_pipe() -> tuple[Port, Port]:
    """Two ports joined back to back: a real link (p4mtcp.link), in this process."""
    return pipe_pair()


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

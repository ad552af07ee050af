"""p4mtcp.aio in one process: stock asyncio streams code on an MtcpEventLoop over one context
whose NIC port is a loopback (every frame it sends comes back), so client and server are two
connections of the same stack, driven by the same loop — as asyncio tests run on 127.0.0.1.

A frame to BLACKHOLE is dropped on the way (a peer that never answers) for the connect timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket

import pytest

from p4mtcp import aio, mtcp
from p4mtcp.link import OneFrameSend

IP = "10.0.0.1"
BLACKHOLE = "10.0.0.9"
_BLACKHOLE = socket.inet_aton(BLACKHOLE)


class LoopbackPort(OneFrameSend):
    """A frame pipe to itself; frames to BLACKHOLE vanish (counted)."""

    def __init__(self) -> None:
        self.tx, self.rx = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        for s in (self.tx, self.rx):
            s.setblocking(False)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.blackholed = 0

    def send(self, frame: bytes) -> bool:
        if frame[30:34] == _BLACKHOLE:  # Ethernet 14 + IPv4 destination at 16
            self.blackholed += 1
            return True
        try:
            self.tx.send(frame)
        except BlockingIOError:
            return False
        return True

    def recv_batch(self) -> list[bytes]:
        out = []
        for _ in range(256):
            try:
                out.append(self.rx.recv(65536))
            except BlockingIOError:
                break
        return out

    def fileno(self) -> int:
        return self.rx.fileno()

    def close(self) -> None:
        self.tx.close()
        self.rx.close()


@pytest.fixture
def ctx(tmp_path):
    conf = tmp_path / "mtcp.conf"
    conf.write_text(f"num_cores = 1\nlocal_ip = {IP}/24\nport = net0\nmax_concurrency = 256\n"
                    "max_num_buffers = 256\ntcp_timeout = 30\nrcvbuf = 65536\nsndbuf = 65536\n")
    mtcp.mtcp_init(str(conf))
    port = LoopbackPort()
    mctx = mtcp.mtcp_create_context(0, port, offload_checksum=False)
    yield mctx
    mtcp.mtcp_destroy()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()
    await writer.wait_closed()


def test_echo_streams_byte_exact(ctx):
    payload = hashlib.shake_128(b"aio").digest(2_000_000)

    async def main():
        server = await asyncio.start_server(echo, IP, 7000)
        reader, writer = await asyncio.open_connection(IP, 7000)
        assert writer.get_extra_info("peername") == (IP, 7000)
        assert writer.get_extra_info("sockname")[0] == IP
        assert writer.get_extra_info("socket").getpeername() == (IP, 7000)

        async def send():
            for i in range(0, len(payload), 100_000):
                writer.write(payload[i:i + 100_000])
                await writer.drain()
            writer.write_eof()

        sender = asyncio.create_task(send())
        got = await reader.read(-1)                # until the echo's FIN
        await sender
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return got

    got = aio.run(main(), ctx)
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    assert ctx.stats.accepts == 1 and ctx.stats.connects == 1


def test_refused_connection_raises_connection_refused(ctx):
    async def main():
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(IP, 7001)    # nothing listens: RST to the SYN

    aio.run(main(), ctx)
    assert ctx.stack.stats.rst_out == 1 and ctx.stack.stats.segs_in == 2   # SYN in, RST in
    assert ctx.free_ids() == ctx.max_concurrency       # the socket (and the loop's epoll) freed


def test_connect_timeout_and_cancel_free_the_socket(ctx):
    async def main():
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.open_connection(BLACKHOLE, 80), 0.3)
        task = asyncio.create_task(asyncio.open_connection(BLACKHOLE, 80))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    aio.run(main(), ctx)
    assert ctx.port.blackholed >= 2                    # two SYNs went out and were lost
    assert ctx.flows() == []                           # both half-open connections are gone


def test_read_timeout_then_data_then_reset(ctx):
    """A read that times out leaves the stream usable; an abort reaches the peer's reader as
    ConnectionResetError."""
    async def main():
        accepted: asyncio.Queue = asyncio.Queue()

        async def keep(reader, writer):
            await accepted.put((reader, writer))

        server = await asyncio.start_server(keep, IP, 7002)
        reader, writer = await asyncio.open_connection(IP, 7002)
        sreader, swriter = await accepted.get()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(10), 0.2)
        swriter.write(b"late")
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"late"
        swriter.transport.abort()
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(10), 5)
        writer.close()
        server.close()
        await server.wait_closed()

    aio.run(main(), ctx)


def test_timers_and_call_soon_run_on_the_mtcp_loop(ctx):
    async def main():
        loop = asyncio.get_running_loop()
        assert isinstance(loop, aio.MtcpEventLoop)
        order = []
        loop.call_later(0.05, order.append, "later")
        loop.call_soon(order.append, "soon")
        t0 = loop.time()
        await asyncio.sleep(0.1)
        fut = loop.run_in_executor(None, sum, [1, 2, 3])   # a thread's result comes back
        return order, loop.time() - t0, await fut

    order, elapsed, total = aio.run(main(), ctx)
    assert order == ["soon", "later"] and elapsed >= 0.1 and total == 6


def test_pause_reading_holds_data_in_the_connection(ctx):
    """A reader that does not read: the StreamReader pauses the transport, the window closes,
    and the writer's drain blocks until reading resumes; then every byte arrives."""
    payload = hashlib.shake_128(b"pause").digest(600_000)

    async def main():
        accepted: asyncio.Queue = asyncio.Queue()
        server = await asyncio.start_server(lambda r, w: accepted.put_nowait((r, w)), IP, 7003,
                                            limit=16 * 1024)
        reader, writer = await asyncio.open_connection(IP, 7003)
        sreader, swriter = await accepted.get()
        writer.write(payload)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(writer.drain(), 0.3)    # peer paused: we are held up
        assert writer.transport.get_write_buffer_size() > 0
        assert not swriter.transport.is_reading()
        got = await sreader.readexactly(len(payload))
        await writer.drain()
        writer.close()
        swriter.close()
        server.close()
        return got

    assert aio.run(main(), ctx) == payload


def test_policy_runs_plain_asyncio_run(ctx):
    async def main():
        server = await asyncio.start_server(echo, IP, 7004)
        reader, writer = await asyncio.open_connection(IP, 7004)
        writer.write(b"ping")
        data = await reader.readexactly(4)
        writer.close()
        server.close()
        return type(asyncio.get_running_loop()), data

    asyncio.set_event_loop_policy(aio.MtcpEventLoopPolicy(ctx))
    try:
        assert asyncio.run(main()) == (aio.MtcpEventLoop, b"ping")
    finally:
        asyncio.set_event_loop_policy(None)


def test_reset_after_eof_reaches_the_half_open_side(ctx):
    """The peer half-closes, then resets: the side that already saw EOF (and keeps its
    transport open, as streams do) learns of the reset, with the errno Linux gives a reset in
    CLOSE-WAIT: EPIPE (BrokenPipeError)."""
    async def main():
        accepted: asyncio.Queue = asyncio.Queue()
        server = await asyncio.start_server(lambda r, w: accepted.put_nowait((r, w)), IP, 7005)
        reader, writer = await asyncio.open_connection(IP, 7005)
        sreader, swriter = await accepted.get()
        writer.write(b"bye")
        writer.write_eof()
        assert await asyncio.wait_for(sreader.read(), 5) == b"bye"     # to EOF
        assert not swriter.transport.is_closing()
        writer.transport.abort()
        with pytest.raises(BrokenPipeError):
            await asyncio.wait_for(swriter.wait_closed(), 5)
        server.close()

    aio.run(main(), ctx)

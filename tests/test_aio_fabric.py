"""Stock asyncio echo server and client, each on its own p4mtcp host of the embedded fabric
(own NIC process, agent, one core process), exchange 10 MB byte-exact."""

from __future__ import annotations

import asyncio
import hashlib
import time

import pytest

from p4mtcp.aio.worker import AioArgs, core_main
from p4mtcp.apps import launch
from p4mtcp.apps.fabric import Fabric, two_hosts

pytestmark = pytest.mark.slow

SIZE = 10 * 1000 * 1000
PORT = 7000


async def echo_server(port: int) -> None:
    async def echo(reader, writer):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(echo, None, port)
    async with server:
        await server.serve_forever()


async def connect_retrying(host: str, port: int, within: float):
    """open_connection, retried while the server is not listening yet (bounded)."""
    end = asyncio.get_running_loop().time() + within
    while True:
        try:
            return await asyncio.open_connection(host, port)
        except ConnectionRefusedError:
            if asyncio.get_running_loop().time() > end:
                raise
            await asyncio.sleep(0.1)


async def echo_client(host: str, port: int, size: int) -> dict:
    payload = hashlib.shake_128(b"echo").digest(size)
    reader, writer = await connect_retrying(host, port, 30)

    async def send():
        view = memoryview(payload)
        for i in range(0, size, 256 * 1024):
            writer.write(view[i:i + 256 * 1024])
            await writer.drain()
        writer.write_eof()

    sender = asyncio.create_task(send())
    got = bytearray()
    while chunk := await reader.read(1 << 20):
        got += chunk
    await sender
    writer.close()
    await writer.wait_closed()
    return {"bytes": len(got), "exact": bytes(got) == payload}


def run_until_result(workers: launch.CoreWorkers, timeout: float) -> dict:
    msgs: list[dict] = []
    assert workers.pump(msgs.append, lambda: None, timeout=timeout), msgs[-3:]
    exits = [m for m in msgs if m["kind"] == "exit"]
    assert exits and exits[0]["rc"] == 0, exits
    return [m for m in msgs if m["kind"] == "result"][0]


def test_asyncio_echo_10mb_over_the_embedded_fabric():
    with Fabric() as fab:
        server, client = two_hosts(fab, 1, 1)
        fab.start(timeout=60, rcvbuf=256 * 1024, sndbuf=256 * 1024)
        srv = launch.CoreWorkers(core_main, [0], AioArgs(server.conf, f"{__name__}:echo_server",
                                                         {"port": PORT}), name="aio-echo")
        cli = launch.CoreWorkers(core_main, [0], AioArgs(client.conf, f"{__name__}:echo_client",
                                                         {"host": server.ip, "port": PORT,
                                                          "size": SIZE}), name="aio-client")
        with srv:
            deadline = time.monotonic() + 60
            while not any(m["kind"] == "ready" for m in srv.poll(0.1)):
                assert time.monotonic() < deadline and srv.running(), srv.results
            with cli:
                result = run_until_result(cli, timeout=240)
        assert result["result"] == {"bytes": SIZE, "exact": True}
        st = result["stats"]
        assert st["connects"] == 1 and st["tx_bytes"] > SIZE and st["rx_bytes"] > SIZE

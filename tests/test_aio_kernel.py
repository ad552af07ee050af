"""A kernel `curl` in a network namespace fetches from an asyncio HTTP server (plain
asyncio.start_server code) running on p4mtcp behind the embedded NIC, whose network port is the
root end of the namespace's veth."""

from __future__ import annotations

import asyncio
import hashlib
import time

import pytest

from netns import VethNetns, veth_pair  # noqa: F401  (fixture)
from p4mtcp.aio.worker import AioArgs, core_main
from p4mtcp.apps import launch
from p4mtcp.apps.fabric import Fabric
from test_e2e_kernel import ns_mac

pytestmark = [pytest.mark.root, pytest.mark.slow]

BODY_SIZE = 3 * 1000 * 1000


def body() -> bytes:
    return hashlib.shake_128(b"aio http").digest(BODY_SIZE)


async def http_server(port: int) -> None:
    """A minimal HTTP/1.1 server: GET /body answers the body, anything else 404; one request
    per connection (Connection: close)."""
    payload = body()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        path = head.split(b" ", 2)[1]
        status, data = (b"200 OK", payload) if path == b"/body" else (b"404 Not Found", b"")
        writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: %d\r\n"
                     b"Connection: close\r\n\r\n" % len(data))
        writer.write(data)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, None, port)
    async with server:
        await server.serve_forever()


def test_kernel_curl_fetches_from_asyncio_http_server(veth_pair: VethNetns, tmp_path):  # noqa: F811
    net = veth_pair
    with Fabric() as fab:
        host = fab.add_host("p4m", f"{net.engine_ip}/24", 1, net.host_if,
                            {net.ns_ip: ns_mac(net)})
        fab.start(timeout=60, rcvbuf=256 * 1024, sndbuf=256 * 1024)
        args = AioArgs(host.conf, f"{__name__}:http_server", {"port": 8080})
        msgs: list[dict] = []
        with launch.CoreWorkers(core_main, [0], args, name="aio-http") as srv:
            deadline = time.monotonic() + 60
            while not any(m["kind"] == "ready" for m in msgs):
                assert time.monotonic() < deadline and srv.running(), msgs
                msgs += srv.poll(0.1)
            url = f"http://{net.engine_ip}:8080"
            out = tmp_path / "got"
            net.run(["curl", "-sS", "--retry", "30", "--retry-connrefused", "--retry-delay", "1",
                     "--max-time", "120", "-o", str(out), f"{url}/body"], timeout=150)
            missing = net.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                               "--max-time", "60", f"{url}/nothing"], timeout=90)
            srv.finish(msgs.append)
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(body()).digest()
    assert missing.stdout == b"404"
    result = [m for m in msgs if m["kind"] == "result"]
    assert result and result[0]["stats"]["accepts"] == 2, msgs[-3:]

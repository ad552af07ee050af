"""asyncio on p4mtcp against asyncio on the kernel: the same echo programs, the same run.

The server is the stock `asyncio.start_server` echo of tests/test_aio_fabric.py; the client opens one connection and does
(1) request/response: ROUNDS round trips of a 64-byte message, (2) bulk: MBYTES sent and read
back while sending (write + drain, then write_eof, read to end of stream). Both programs are
plain asyncio code and run unchanged:

- p4mtcp: on `p4mtcp.aio` loops, the server on host A's core process and the client on host
  B's, two hosts of one embedded fabric (each its own `p4mtcp nic` process and agent, NICs
  joined by a UNIX link), buffers 256 KiB;
- kernel: on the default asyncio loop, server and client in two processes over loopback.

Results (with the p4mtcp/kernel ratios) go to bench/results/aio.json.

    python bench/bench_aio.py [--mbytes 20] [--rounds 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))       # the echo server the fabric test runs

from harness import RESULTS, machine, wait_ready  # noqa: E402
from p4mtcp.aio.worker import AioArgs, core_main, load_app, until_stopped  # noqa: E402
from p4mtcp.apps import launch  # noqa: E402
from p4mtcp.apps.fabric import Fabric, two_hosts  # noqa: E402

PORT = 7000
MSG = 64
CHUNK = 256 * 1024
BUF = 256 * 1024


async def echo_client(host: str, port: int, rounds: int, nbytes: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    end = loop.time() + 30
    while True:  # the server may still be starting
        try:
            reader, writer = await asyncio.open_connection(host, port)
            break
        except ConnectionRefusedError:
            if loop.time() > end:
                raise
            await asyncio.sleep(0.1)
    msg = b"m" * MSG
    t0 = time.perf_counter()
    for _ in range(rounds):
        writer.write(msg)
        await reader.readexactly(MSG)
    rr = time.perf_counter() - t0

    payload = bytes(range(256)) * (nbytes // 256)

    async def send() -> None:
        view = memoryview(payload)
        for i in range(0, len(payload), CHUNK):
            writer.write(view[i:i + CHUNK])
            await writer.drain()
        writer.write_eof()

    t0 = time.perf_counter()
    sender = asyncio.create_task(send())
    got = 0
    while chunk := await reader.read(1 << 20):
        got += len(chunk)
    await sender
    bulk = time.perf_counter() - t0
    writer.close()
    await writer.wait_closed()
    if got != len(payload):
        raise RuntimeError(f"echo returned {got} of {len(payload)} bytes")
    return {"rounds": rounds, "rr_seconds": rr, "round_trips_per_s": rounds / rr,
            "bulk_bytes": got, "bulk_seconds": bulk,
            "bulk_mbit_per_s": 2 * 8 * got / bulk / 1e6}   # both directions carry the bytes


def kernel_main(core: int, args: AioArgs, reporter: launch.Reporter, stop: Any) -> int:
    """`core_main`'s twin for the comparison: the same app on the default asyncio loop."""
    reporter.send("ready")
    result = asyncio.run(until_stopped(load_app(args.app)(**args.kwargs), stop))
    reporter.send("result", result=result)
    return 0


def run_pair(worker: Any, server_conf: str, client_conf: str, host: str, rounds: int,
             nbytes: int) -> dict[str, Any]:
    srv = launch.CoreWorkers(worker, [0], AioArgs(server_conf, "test_aio_fabric:echo_server",
                                                  {"port": PORT}), name="aio-server")
    cli = launch.CoreWorkers(worker, [0], AioArgs(client_conf, f"{__name__}:echo_client",
                                                  {"host": host, "port": PORT,
                                                   "rounds": rounds, "nbytes": nbytes}),
                             name="aio-client")
    msgs: list[dict] = []
    with srv:
        wait_ready(srv, [])
        with cli:
            if not cli.pump(msgs.append, lambda: None, timeout=600):
                raise RuntimeError("the echo client did not finish in 600 s")
    results = [m["result"] for m in msgs if m["kind"] == "result"]
    if not results:
        raise RuntimeError(f"no result: {[m for m in msgs if m['kind'] == 'exit']}")
    return results[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mbytes", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=2000)
    a = ap.parse_args()
    nbytes = int(a.mbytes * 1e6) // 256 * 256
    with Fabric() as fab:
        server, client = two_hosts(fab, 1, 1)
        fab.start(timeout=60, rcvbuf=BUF, sndbuf=BUF)
        p4m = run_pair(core_main, server.conf, client.conf, server.ip, a.rounds, nbytes)
    kernel = run_pair(kernel_main, "", "", "127.0.0.1", a.rounds, nbytes)
    out = {
        "benchmark": "asyncio echo: p4mtcp.aio loop (embedded fabric) vs default loop (kernel "
                     "loopback), same programs, one connection",
        "message_bytes": MSG, "buffer_bytes": BUF, "machine": machine(),
        "p4mtcp_aio": p4m, "kernel_asyncio": kernel,
        "ratio_round_trips": p4m["round_trips_per_s"] / kernel["round_trips_per_s"],
        "ratio_bulk": p4m["bulk_mbit_per_s"] / kernel["bulk_mbit_per_s"],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "aio.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

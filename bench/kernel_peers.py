"""The kernel-side baselines the benchmarks compare against (same bytes, kernel TCP on loopback).

- short connections: an asyncio server and client doing exactly epwget/epserver's exchange
  (connect, one HTTP request, one response, close), one process per core, the servers sharing
  the port with SO_REUSEPORT;
- bulk: one connection, a blocking sender and receiver moving the same number of bytes in the
  same chunk size as `perf`.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import socket
import time
from typing import Any

from p4mtcp.apps.perf import CHUNK   # perf's read and write size, for the kernel's too


async def _serve(port: int, response: bytes, ready: Any, stop: Any) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(response)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, reuse_port=True, backlog=4096)
    ready.set()
    while not stop.is_set():
        await asyncio.sleep(0.05)
    server.close()


def _server_proc(port: int, response: bytes, ready: Any, stop: Any) -> None:
    asyncio.run(_serve(port, response, ready, stop))


async def _client(port: int, request: bytes, expect: int, total: int, concurrency: int
                  ) -> tuple[int, int]:
    left = total
    done = errors = 0

    async def one() -> None:
        nonlocal left, done, errors
        while left > 0:
            left -= 1
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(request)
                data = await reader.read(-1)
                writer.close()
                if len(data) == expect:
                    done += 1
                else:
                    errors += 1
            except OSError:
                errors += 1

    await asyncio.gather(*(one() for _ in range(concurrency)))
    return done, errors


def _client_proc(port: int, request: bytes, expect: int, total: int, concurrency: int,
                 out: Any) -> None:
    t0 = time.monotonic()
    done, errors = asyncio.run(_client(port, request, expect, total, concurrency))
    out.put((done, errors, t0, time.monotonic()))


def short_connections(cores: int, total: int, concurrency: int, request: bytes,
                      response: bytes, timeout: float = 300.0) -> dict[str, Any]:
    """Connections/s of `cores` asyncio server processes + `cores` client processes."""
    ctx = mp.get_context("spawn")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    stop = ctx.Event()
    readies = [ctx.Event() for _ in range(cores)]
    servers = [ctx.Process(target=_server_proc, args=(port, response, r, stop)) for r in readies]
    out = ctx.Queue()
    per_core = [total // cores + (1 if i < total % cores else 0) for i in range(cores)]
    clients = [ctx.Process(target=_client_proc,
                           args=(port, request, len(response), n, max(1, concurrency // cores),
                                 out)) for n in per_core]
    try:
        for p in servers:
            p.start()
        for r in readies:
            if not r.wait(30):
                raise RuntimeError("asyncio server did not start")
        for p in clients:
            p.start()
        results = [out.get(timeout=timeout) for _ in clients]
    finally:
        stop.set()
        for p in clients + servers:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join(2)
    done = sum(r[0] for r in results)
    span = max(r[3] for r in results) - min(r[2] for r in results)
    return {"cores": cores, "completed": done, "errors": sum(r[1] for r in results),
            "seconds": span, "conn_per_s": done / span}


def _receiver(listener: socket.socket, total: int, out: Any) -> None:
    conn, _ = listener.accept()
    buf = bytearray(CHUNK)
    got = 0
    t0 = time.monotonic()       # accepted: the same starting point as perf's receiver
    with conn:
        while got < total:
            n = conn.recv_into(buf)
            if not n:
                break
            got += n
    out.put((got, t0, time.monotonic()))


def _sender(port: int, total: int) -> None:
    data = memoryview(bytes(CHUNK))
    with socket.create_connection(("127.0.0.1", port)) as s:
        sent = 0
        while sent < total:
            n = min(CHUNK, total - sent)
            s.sendall(data[:n])
            sent += n


def bulk(total: int, connections: int = 1, timeout: float = 300.0) -> dict[str, Any]:
    """Mbit/s of `connections` parallel kernel TCP streams of `total` bytes each, on loopback."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    listeners, procs = [], []
    try:
        for _ in range(connections):
            ls = socket.socket()
            ls.bind(("127.0.0.1", 0))
            ls.listen(1)
            listeners.append(ls)
            procs.append(ctx.Process(target=_receiver, args=(ls, total, out)))
            procs.append(ctx.Process(target=_sender, args=(ls.getsockname()[1], total)))
        for p in procs:
            p.start()
        results = [out.get(timeout=timeout) for _ in range(connections)]
    finally:
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
        for ls in listeners:
            ls.close()
    moved = sum(r[0] for r in results)
    span = max(r[2] for r in results) - min(r[1] for r in results)
    return {"connections": connections, "bytes": moved, "seconds": span,
            "mbit_per_s": moved * 8 / span / 1e6}

"""How four ways of building a P4Runtime gRPC server take hostile clients, in the same run.

For each build, in its own process: the RSS growth and log output over N requests whose bytes
do not decode (after 6,000 to warm up: the first few thousand grow any build by ~10 MB, threads
and their malloc arenas; then over the next N again), and the latency of Capabilities while M idle StreamChannels are open (or that it
missed its deadline). The builds: grpcio's threaded server with the generated stubs (the
embedded target's server until now), the same with raw-bytes handlers decoded by the servicer,
grpc.aio with the generated stubs, and the embedded target's server (grpc.aio, raw bytes).

    python bench/bench_p4runtime_hostile.py [--requests 10000] [--streams 500]
                                                            -> bench/results/p4runtime_hostile.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
from google.protobuf.message import DecodeError
from p4.v1 import p4runtime_pb2 as pb
from p4.v1 import p4runtime_pb2_grpc

BUILDS = ("grpcio-threads-stubs", "grpcio-threads-raw", "aio-stubs", "p4mtcp")
GARBAGE = b"\xff" * 64
RESULTS = Path(__file__).parent / "results" / "p4runtime_hostile.json"


# --- the server side (run in a child process) ------------------------------------------------

class _Stubs(p4runtime_pb2_grpc.P4RuntimeServicer):
    """The same minimal behaviour in each build: Write and Capabilities answer, a stream
    waits for its client."""

    def Write(self, request, context):
        return pb.WriteResponse()

    def Capabilities(self, request, context):
        return pb.CapabilitiesResponse(p4runtime_api_version="1.4.1")

    def StreamChannel(self, request_iterator, context):
        for _ in request_iterator:
            pass
        yield from ()


class _AioStubs(p4runtime_pb2_grpc.P4RuntimeServicer):
    async def Write(self, request, context):
        return pb.WriteResponse()

    async def Capabilities(self, request, context):
        return pb.CapabilitiesResponse(p4runtime_api_version="1.4.1")

    async def StreamChannel(self, request_iterator, context):
        async for _ in request_iterator:
            pass
        return
        yield


def _raw_handler() -> grpc.GenericRpcHandler:
    def unary(cls, reply):
        def handle(raw: bytes, context):
            try:
                cls.FromString(raw)
            except DecodeError as e:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"does not decode: {e}")
            return reply
        return grpc.unary_unary_rpc_method_handler(handle, response_serializer=bytes)
    stream = _Stubs().StreamChannel
    return grpc.method_handlers_generic_handler("p4.v1.P4Runtime", {
        "Write": unary(pb.WriteRequest, pb.WriteResponse().SerializeToString()),
        "Capabilities": unary(pb.CapabilitiesRequest, pb.CapabilitiesResponse(
            p4runtime_api_version="1.4.1").SerializeToString()),
        "StreamChannel": grpc.stream_stream_rpc_method_handler(stream, response_serializer=bytes),
    })


def run_server(build: str, address: str) -> None:
    """Serve until stdin closes; the server object is kept referenced (gRPC servers stop when
    they are garbage-collected). Logging as `p4mtcp nic` sets it up: warnings to stderr."""
    logging.basicConfig(level=logging.WARNING)
    if build == "p4mtcp":
        from p4mtcp.dataplane.device import Device
        from p4mtcp.dataplane.server import serve
        server = serve(Device(), address)
    elif build == "aio-stubs":
        loop = asyncio.new_event_loop()

        async def start():
            server = grpc.aio.server()
            p4runtime_pb2_grpc.add_P4RuntimeServicer_to_server(_AioStubs(), server)
            server.add_insecure_port(address)
            await server.start()
            return server
        threading.Thread(target=loop.run_forever, daemon=True).start()
        server = asyncio.run_coroutine_threadsafe(start(), loop).result()
    else:
        server = grpc.server(futures.ThreadPoolExecutor(64))
        if build == "grpcio-threads-stubs":
            p4runtime_pb2_grpc.add_P4RuntimeServicer_to_server(_Stubs(), server)
        else:
            server.add_generic_rpc_handlers((_raw_handler(),))
        server.add_insecure_port(address)
        server.start()
    print("ready", flush=True)
    sys.stdin.read()
    del server
    os._exit(0)


# --- the measuring side -----------------------------------------------------------------------

def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def _garbage(channel: grpc.Channel, n: int) -> dict[str, int]:
    write = channel.unary_unary("/p4.v1.P4Runtime/Write")
    codes: dict[str, int] = {}
    for start in range(0, n, 200):
        for f in [write.future(GARBAGE, timeout=30) for _ in range(min(200, n - start))]:
            name = f.exception().code().name
            codes[name] = codes.get(name, 0) + 1
    return codes


def _idle_latency(address: str, streams: int) -> float | None:
    """Capabilities' latency in ms with `streams` idle streams open, None past a 2 s deadline."""
    channel, other = grpc.insecure_channel(address), grpc.insecure_channel(address)
    never = threading.Event()
    calls = [p4runtime_pb2_grpc.P4RuntimeStub(channel).StreamChannel(iter(never.wait, True))
             for _ in range(streams)]
    time.sleep(2.0)  # let the streams reach the server (a benchmark, not a test)
    start = time.perf_counter()
    try:
        p4runtime_pb2_grpc.P4RuntimeStub(other).Capabilities(pb.CapabilitiesRequest(), timeout=2.0)
        latency = (time.perf_counter() - start) * 1e3
    except grpc.RpcError:
        latency = None
    for c in calls:
        c.cancel()
    never.set()
    channel.close()
    other.close()
    return latency


def measure(build: str, requests: int, streams: int) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    log = tempfile.TemporaryFile()  # a pipe would fill up and stall the server's logging
    proc = subprocess.Popen([sys.executable, __file__, "--server", build, address],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
    channel = grpc.insecure_channel(address)
    try:
        if not select.select([proc.stdout], [], [], 60)[0] or proc.stdout.readline() != b"ready\n":
            raise RuntimeError(f"{build}: server did not start")
        _garbage(channel, 6000)  # warm up: threads, their malloc arenas
        before = _rss(proc.pid)
        start = time.perf_counter()
        codes = _garbage(channel, requests)
        seconds = time.perf_counter() - start
        grown = _rss(proc.pid) - before
        _garbage(channel, requests)
        grown_next = _rss(proc.pid) - before - grown
        latency = _idle_latency(address, streams)
    finally:
        channel.close()
        proc.stdin.close()
        proc.wait(30)
    log.seek(0)
    text = log.read()
    return {"rss_growth_mb": round(grown / 1e6, 2), "rss_growth_per_request_bytes": grown // requests,
            "rss_growth_mb_next_batch": round(grown_next / 1e6, 2),
            "log_kbytes": round(len(text) / 1e3, 1), "log_lines": text.count(b"\n"),
            "codes": codes, "garbage_requests_per_s": round(requests / seconds),
            "capabilities_ms_with_idle_streams": None if latency is None else round(latency, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--streams", type=int, default=500)
    ap.add_argument("--server", nargs=2, metavar=("BUILD", "ADDRESS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.server:
        run_server(*args.server)
        return
    results = {"requests": args.requests, "idle_streams": args.streams,
               "grpcio": grpc.__version__, "python": platform.python_version(),
               "builds": {b: measure(b, args.requests, args.streams) for b in BUILDS}}
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

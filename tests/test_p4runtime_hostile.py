"""The P4Runtime server against clients that try to stall or bloat it: idle streams, request
bytes that do not decode, too many streams. Every RPC that must answer carries a deadline."""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import select
import subprocess
import sys
import tempfile
import threading
import time

import grpc
import pytest
from google.rpc import code_pb2
from p4.v1 import p4runtime_pb2 as pb
from p4.v1 import p4runtime_pb2_grpc

from p4mtcp.dataplane import server as server_module
from p4mtcp.dataplane.server import LOG_BURST
from p4mtcp.ratelimit import RateLimitedLog
from test_p4runtime_server import (INSERT, T_EXACT, exact_entry, free_port, primary,  # noqa: F401
                                   target, update)

GARBAGE = [b"\xff" * 64, b"\x0a\x05abc", bytes(range(256)) * 4, b"\x12\xff\xff\xff\xff\x0f"]


def wait_until(condition, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class IdleStreams:
    """`n` StreamChannels that open and never send anything, from a grpc.aio client on its own
    loop (no thread per stream on the client side either)."""

    def __init__(self, address: str, n: int):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.calls = asyncio.run_coroutine_threadsafe(self._open(address, n), self.loop).result(30)

    async def _open(self, address: str, n: int):
        self.channel = grpc.aio.insecure_channel(address)
        stub = p4runtime_pb2_grpc.P4RuntimeStub(self.channel)
        return [stub.StreamChannel() for _ in range(n)]

    async def _codes(self) -> list:
        return [await c.code() for c in self.calls if c.done()]

    def ended(self) -> list[grpc.StatusCode]:
        """The status codes of the streams the server has ended."""
        return asyncio.run_coroutine_threadsafe(self._codes(), self.loop).result(30)

    async def _close(self):
        for c in self.calls:
            c.cancel()
        await self.channel.close()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_idle_streams_do_not_starve_the_primary(primary, target):
    """Idle streams used to hold one worker thread each; 63 of them stalled every unary RPC."""
    idle = IdleStreams(target.address, 500)
    try:
        assert wait_until(lambda: target.server.open_streams >= 501), target.server.open_streams
        primary.write(update(INSERT, table_entry=exact_entry(b"\x01", b"\x02")), timeout=1.0)
        entries = primary.read(pb.Entity(table_entry=pb.TableEntry(table_id=T_EXACT)),
                               timeout=1.0)
        assert len(entries) == 1 and entries[0].table_entry.match[1].exact.value == b"\x02"
        caps = primary.stub.Capabilities(pb.CapabilitiesRequest(), timeout=1.0)
        assert caps.p4runtime_api_version
    finally:
        idle.close()
    assert wait_until(lambda: target.server.open_streams == 1)  # the primary's own


def test_at_the_stream_limit_idle_streams_make_room_for_controllers(target, monkeypatch):
    """Streams that never arbitrate cannot lock a controller out: at MAX_STREAMS the oldest of
    them is ended with RESOURCE_EXHAUSTED; once every open stream has arbitrated, a new one
    is refused."""
    monkeypatch.setattr(server_module, "MAX_STREAMS", 3)
    idle = IdleStreams(target.address, 3)
    try:
        assert wait_until(lambda: target.server.open_streams == 3)
        for i in range(3):  # one primary, two backups
            status = target.connect().arbitrate(3 - i).arbitration.status.code
            assert status == (code_pb2.OK if i == 0 else code_pb2.ALREADY_EXISTS)
            assert wait_until(lambda: len(idle.ended()) == i + 1)
        assert idle.ended() == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 3
        assert target.server.open_streams == 3
        err = target.connect().receive("arbitration")
        assert isinstance(err, grpc.RpcError)
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "3 streams" in err.details()
    finally:
        idle.close()


def test_undecodable_stream_message_is_a_stream_error_and_the_stream_lives_on(target):
    channel = grpc.insecure_channel(target.address)
    out: queue.Queue = queue.Queue()
    call = channel.stream_stream("/p4.v1.P4Runtime/StreamChannel")(iter(out.get, None))
    try:
        out.put(b"\xff" * 16)
        error = pb.StreamMessageResponse.FromString(next(call))
        assert error.error.canonical_code == code_pb2.INVALID_ARGUMENT
        assert error.error.WhichOneof("details") == "other"
        assert "StreamMessageRequest" in error.error.message
        arbitration = pb.StreamMessageRequest()
        arbitration.arbitration.device_id = 1
        arbitration.arbitration.election_id.low = 1
        out.put(arbitration.SerializeToString())
        reply = pb.StreamMessageResponse.FromString(next(call))
        assert reply.arbitration.status.code == code_pb2.OK
    finally:
        out.put(None)
        call.cancel()
        channel.close()


@pytest.mark.parametrize("method", ["Write", "SetForwardingPipelineConfig", "Capabilities"])
def test_undecodable_request_is_invalid_argument_saying_what(target, method):
    channel = grpc.insecure_channel(target.address)
    try:
        with pytest.raises(grpc.RpcError) as e:
            channel.unary_unary(f"/p4.v1.P4Runtime/{method}")(GARBAGE[0], timeout=5)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"not a valid p4.v1.{method}Request" in e.value.details()
    finally:
        channel.close()


SERVER = """
import logging, sys
from p4mtcp.dataplane.device import Device
from p4mtcp.dataplane.server import serve
logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
server = serve(Device(), sys.argv[1])
print("ready", flush=True)
sys.stdin.read()
"""


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def send_garbage(channel: grpc.Channel, n: int) -> set:
    """`n` undecodable requests over three RPCs, 200 in flight at a time; the codes seen."""
    calls = [channel.unary_unary(f"/p4.v1.P4Runtime/{m}")
             for m in ("Write", "SetForwardingPipelineConfig", "GetForwardingPipelineConfig")]
    codes = set()
    for start in range(0, n, 200):
        pending = [calls[i % 3].future(GARBAGE[i % len(GARBAGE)], timeout=30)
                   for i in range(start, min(n, start + 200))]
        for f in pending:
            codes.add(f.exception().code())
    return codes


def test_undecodable_requests_cost_no_memory_and_little_log():
    """Through grpcio's own deserializers each of these kept ~20 KB and logged a traceback."""
    address = f"127.0.0.1:{free_port()}"
    log = tempfile.TemporaryFile()  # not a pipe: a server logging too much must not stall on it
    proc = subprocess.Popen([sys.executable, "-c", SERVER, address], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=log,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    channel = grpc.insecure_channel(address)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready and proc.stdout.readline() == b"ready\n"
        # warm up: threads and their malloc arenas grow any gRPC server by ~10 MB over the first
        # 5,000 requests, ~1 MB over the next 10,000, then nothing (bench_p4runtime_hostile.py)
        assert send_garbage(channel, 6000) == {grpc.StatusCode.INVALID_ARGUMENT}
        before = rss(proc.pid)
        assert send_garbage(channel, 10_000) == {grpc.StatusCode.INVALID_ARGUMENT}
        grown = rss(proc.pid) - before
    finally:
        channel.close()
        proc.stdin.close()
        proc.wait(30)
    log.seek(0)
    text = log.read().decode()
    assert grown < 5 * 1024 * 1024, f"RSS grew {grown / 1e6:.1f} MB over 10,000 requests"
    lines = text.splitlines()
    assert lines and all("does not decode" in line for line in lines), text[:2000]
    # LOG_BURST lines per minute, 16,000 requests: a few windows at most on a slow machine
    assert len(lines) <= 4 * LOG_BURST, f"{len(lines)} log lines"


def test_rate_limited_log_says_how_many_it_suppressed(caplog):
    now = [0.0]
    limited = RateLimitedLog(logging.getLogger("p4mtcp.p4runtime"), burst=3, window=10.0,
                             clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="p4mtcp.p4runtime"):
        for i in range(50):
            limited.warning("bad request %d", i)
        now[0] = 10.0
        limited.warning("bad request %d", 50)
    assert [r.getMessage() for r in caplog.records] == [
        "bad request 0", "bad request 1", "bad request 2",
        "bad request 50 (47 similar ones suppressed before this)"]


def test_a_read_selecting_too_much_is_resource_exhausted(primary, monkeypatch):
    """Any client may Read, and each wildcard entity selects every entry again."""
    primary.write(*(update(INSERT, table_entry=exact_entry(bytes([i]), b"\x01")) for i in (1, 2)))
    everything = pb.Entity(table_entry=pb.TableEntry())
    assert len(primary.read(everything, everything, timeout=5)) == 4
    monkeypatch.setattr(server_module, "MAX_READ_RESULTS", 3)
    with pytest.raises(grpc.RpcError) as e:
        primary.read(everything, everything, timeout=5)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "more than 3" in e.value.details()
    assert len(primary.read(everything, timeout=5)) == 2

"""connect's flow_steer fallback: core processes ask the agent's process over a UNIX socket.

Unit: `SteeringClient` against `SteeringServer` with a recording agent — install and removal,
and every failure (no server, a slow agent, a refusal, bad requests) ends as connect's documented
errno within the client's timeout. End to end: over the embedded fabric a core whose source port
hashes to the other core still exchanges data byte-exact, because the NIC holds the flow_steer
entry (read back over P4Runtime, its direct counter counting the replies) until the connection
is freed.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import multiprocessing as mp
import os
import random
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest

from p4mtcp import mtcp
from p4mtcp.control.agent import AgentError
from p4mtcp.control.config import ConfigError, format_mtcp_conf, load_mtcp_conf
from p4mtcp.control.rss import FALLBACK, PortSelector
from p4mtcp.control.steering import REPLY, REQUEST, STEER, SteeringClient, SteeringServer
from p4mtcp.p4src import FLOW_STEER

from mtcp_pair import CLIENT_IP, PORT, SERVER_IP, Pair, write_conf
from waiting import wait_for

LIP = int(ipaddress.IPv4Address(CLIENT_IP))
RIP = int(ipaddress.IPv4Address(SERVER_IP))
OTHER_IP = int(ipaddress.IPv4Address("10.9.9.9"))
SERVER_IP_E2E, CLIENT_IP_E2E = "10.0.0.1", "10.0.0.2"


class RecordingAgent:
    """NicAgent's steer_flow/unsteer_flow: records entries; can be held back or refuse."""

    def __init__(self) -> None:
        self.entries: dict[tuple[int, int, int, int], int] = {}  # (rip, lip, rport, lport) -> core
        self.calls: list[tuple] = []
        self.gate = threading.Event()        # cleared: steer_flow waits until the test sets it
        self.gate.set()
        self.refusal: Exception | None = None

    def steer_flow(self, rip: int, lip: int, rport: int, lport: int, core: int) -> None:
        assert self.gate.wait(60), "the test never let the agent answer"
        if self.refusal is not None:
            raise self.refusal
        self.calls.append(("steer", rip, lip, rport, lport, core))
        self.entries[(rip, lip, rport, lport)] = core

    def unsteer_flow(self, rip: int, lip: int, rport: int, lport: int) -> None:
        self.calls.append(("unsteer", rip, lip, rport, lport))
        self.entries.pop((rip, lip, rport, lport), None)


@pytest.fixture
def sockdir():
    d = tempfile.mkdtemp(prefix="p4ms", dir="/tmp")  # UNIX socket paths must stay short
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def agent() -> RecordingAgent:
    return RecordingAgent()


@pytest.fixture
def server(sockdir, agent):
    with SteeringServer(agent, os.path.join(sockdir, "steer.sock"), 2, [LIP, RIP]) as srv:
        yield srv


# ------------------------------------------------------------------- client <-> server


def test_steer_installs_and_unsteer_removes(server, agent):
    client = SteeringClient(server.path)
    assert client.steer(1, LIP, 40000, RIP, 80)
    # the agent takes (remote ip, local ip, remote port, local port, core): the NIC's match order
    assert agent.entries == {(RIP, LIP, 80, 40000): 1}
    assert server.owned() == {(LIP, 40000, RIP, 80): 1}
    assert client.held() == {(LIP, 40000, RIP, 80): 1}
    client.unsteer(1, LIP, 40000, RIP, 80)
    wait_for(lambda: not agent.entries)
    assert server.owned() == {} and client.held() == {}
    client.close()


def test_server_absent_fails_fast(sockdir):
    client = SteeringClient(os.path.join(sockdir, "nobody.sock"), timeout=60.0)
    t0 = time.monotonic()
    assert client.steer(0, LIP, 40000, RIP, 80) is False
    assert time.monotonic() - t0 < 30  # long before the timeout: nobody to wait for
    assert client.last_error.errno == errno.ENOENT and "nobody.sock" in str(client.last_error)


def test_slow_agent_times_out_and_the_late_entry_is_cancelled(server, agent):
    client = SteeringClient(server.path, timeout=0.3)
    agent.gate.clear()                     # the agent cannot answer before the test lets it
    t0 = time.monotonic()
    assert client.steer(0, LIP, 40000, RIP, 80) is False
    assert time.monotonic() - t0 >= 0.3
    assert client.last_error.errno == errno.ETIMEDOUT
    agent.gate.set()
    # the agent installs it late; the client's cancel (queued behind it) removes it again
    wait_for(lambda: [c[0] for c in agent.calls] == ["steer", "unsteer"])
    assert agent.entries == {} and server.owned() == {}
    # the late reply to the first request is skipped by its sequence number
    assert client.steer(0, LIP, 40001, RIP, 80)
    assert agent.entries == {(RIP, LIP, 80, 40001): 0}
    client.close()


def test_agent_refusal_is_reported(server, agent):
    agent.refusal = AgentError("Write", "RESOURCE_EXHAUSTED", "table NicIngress.flow_steer full")
    client = SteeringClient(server.path)
    assert client.steer(0, LIP, 40000, RIP, 80) is False
    assert client.last_error.errno == errno.ENOSPC
    assert server.owned() == {} and server.refused == 1
    agent.refusal = ValueError("port 600 does not fit bit<9>")
    assert client.steer(0, LIP, 40000, RIP, 80) is False
    assert client.last_error.errno == errno.EINVAL
    client.close()


def raw_request(path: str, msg: bytes) -> tuple[int, int]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.settimeout(2.0)
        s.connect(path)
        s.send(msg)
        return REPLY.unpack(s.recv(64))


def test_bad_requests_get_einval_and_the_server_keeps_serving(server, agent):
    assert raw_request(server.path, (7).to_bytes(4, "big") + b"xyz") == (7, errno.EINVAL)
    assert raw_request(server.path, REQUEST.pack(8, 99, 0, LIP, 1, RIP, 2)) == (8, errno.EINVAL)
    assert raw_request(server.path, REQUEST.pack(9, STEER, 2, LIP, 1, RIP, 2)) == (9, errno.EINVAL)
    assert raw_request(server.path, REQUEST.pack(10, STEER, 0, OTHER_IP, 1, RIP, 2)) == \
        (10, errno.EADDRNOTAVAIL)
    assert agent.calls == [] and server.malformed == 2
    client = SteeringClient(server.path)
    assert client.steer(1, LIP, 40000, RIP, 80)
    client.close()


def steer_and_crash(path: str) -> None:
    """A core process that steers two flows and dies without closing anything."""
    client = SteeringClient(path)
    ok = client.steer(0, LIP, 40000, RIP, 80) and client.steer(0, LIP, 40002, RIP, 80)
    os._exit(0 if ok else 3)


def test_a_crashed_core_leaves_no_entries(server, agent):
    proc = mp.get_context("spawn").Process(target=steer_and_crash, args=(server.path,))
    proc.start()
    proc.join(30)
    assert proc.exitcode == 0  # both installed before it died
    wait_for(lambda: not agent.entries)  # removed when the server saw the process's socket close
    assert [c[0] for c in agent.calls] == ["steer", "steer", "unsteer", "unsteer"]
    assert server.owned() == {}


def test_another_cores_flow_is_not_taken_over(server, agent):
    a, b = SteeringClient(server.path), SteeringClient(server.path)
    assert a.steer(0, LIP, 40000, RIP, 80)
    assert b.steer(1, LIP, 40000, RIP, 80) is False
    assert b.last_error.errno == errno.EADDRINUSE
    b.unsteer(1, LIP, 40000, RIP, 80)  # not b's: nothing happens
    assert agent.entries == {(RIP, LIP, 80, 40000): 0}
    a.close()
    b.close()


def test_client_replays_its_flows_to_a_restarted_server(server, agent):
    client = SteeringClient(server.path)
    assert client.steer(0, LIP, 40000, RIP, 80)
    server.stop()  # drops the entries of every client
    assert agent.entries == {}
    agent2 = RecordingAgent()
    with SteeringServer(agent2, server.path, 2, [LIP]):
        assert client.steer(0, LIP, 40001, RIP, 80)  # reconnects, re-sends 40000 first
        assert agent2.entries == {(RIP, LIP, 80, 40000): 0, (RIP, LIP, 80, 40001): 0}
        client.close()
        wait_for(lambda: not agent2.entries)


def test_socket_path_checks(sockdir, agent):
    path = os.path.join(sockdir, "s.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    dead.bind(path)
    dead.close()  # a dead server's file: replaced
    with SteeringServer(agent, path, 1, [LIP]):
        with pytest.raises(OSError) as info:
            SteeringServer(agent, path, 1, [LIP]).start()
        assert info.value.errno == errno.EADDRINUSE
    assert not os.path.exists(path)
    open(path, "w").close()
    with pytest.raises(OSError) as info:
        SteeringServer(agent, path, 1, [LIP]).start()
    assert info.value.errno == errno.EEXIST and path in str(info.value)


# ------------------------------------------------------------------- config


def test_steer_socket_key(tmp_path):
    conf = tmp_path / "mtcp.conf"
    conf.write_text("local_ip = 10.0.0.1/24\nsteer_socket = run/steer.sock\n")
    cfg = load_mtcp_conf(conf)
    assert cfg.steer_socket == str(tmp_path / "run" / "steer.sock")
    assert "steer_socket = " in format_mtcp_conf(cfg)
    assert load_mtcp_conf(conf).steer_socket == cfg.steer_socket
    conf.write_text("local_ip = 10.0.0.1/24\n\nsteer_socket = /" + "x" * 120 + "\n")
    with pytest.raises(ConfigError) as info:
        load_mtcp_conf(conf)
    assert info.value.line == 3 and "longer than a UNIX socket path" in str(info.value)


# ------------------------------------------------------------------- through connect


def other_core_port(ctx, start: int) -> int:
    """A source port whose replies the NIC's hash sends to another core."""
    sel = ctx.selector
    return next(p for p in range(start, start + 1000) if not sel.steers_here(LIP, p, RIP, PORT))


@pytest.fixture
def steer_pair(tmp_path, server):
    p = Pair(write_conf(tmp_path / "mtcp.conf", steer_socket=server.path))
    yield p
    p.close()


def no_rss_port_for(ctx) -> int:
    """Leave the context one port, for hash picks and for the fallback alike, which the hash
    sends to another core (forces the fallback to that port); returns it."""
    port = other_core_port(ctx, 40000)
    ctx.selector = PortSelector(ctx.selector.reta, ctx.selector.core_port, (port, port),
                                fallback_range=(port, port))
    return port


def test_connect_steers_and_the_freed_connection_unsteers(steer_pair, agent, server):
    p = steer_pair
    port = no_rss_port_for(p.client)
    p.c, p.s = p.connect()
    assert agent.entries == {(RIP, LIP, PORT, port): 0}
    assert mtcp.mtcp_write(p.client, p.c, b"ping") == 4
    p.pump_until(lambda: mtcp.mtcp_socket_ioctl(p.server, p.s, mtcp.FIONREAD))
    assert mtcp.mtcp_read(p.server, p.s, 10) == b"ping"
    mtcp.mtcp_close(p.client, p.c)
    mtcp.mtcp_close(p.server, p.s)
    assert agent.entries  # the TCB still lives: FINs are in flight
    p.pump_until(lambda: p.client.stats.flows_freed == 1)
    wait_for(lambda: not agent.entries)
    assert agent.calls[-1] == ("unsteer", RIP, LIP, PORT, port) and server.owned() == {}


class LowestFirst(random.Random):
    """A selector's random start that is always the range's first port."""

    def randrange(self, start, stop=None, step=1):
        return start


def test_fallback_ports_are_apart_from_hash_picks_and_skip_other_cores_tuples(steer_pair,
                                                                               agent, server):
    """The fallback takes its port from FALLBACK, a range no core picks by hash, so it can never
    be another core's RSS choice; a fallback port another core already holds is refused by the
    steering server (EADDRINUSE) and connect moves on to the next one — never asking for the
    refused one again (a random pick did, up to every try, and the connect then fell through to
    the pair's other local address)."""
    p = steer_pair
    sel = p.client.selector
    assert sel.range[1] < FALLBACK[0] and sel.fallback_range == FALLBACK
    hash_port = other_core_port(p.client, 40000)
    held, free = FALLBACK[0], FALLBACK[0] + 1
    p.client.selector = PortSelector(sel.reta, sel.core_port, (hash_port, hash_port),
                                     fallback_range=(held, free), rng=LowestFirst())
    other = SteeringClient(server.path)                       # another core holds `held`
    assert other.steer(1, LIP, held, RIP, PORT)
    try:
        for _ in range(3):              # `held` is asked for first, refused, then `free` used
            s = mtcp.mtcp_socket(p.client, mtcp.AF_INET, mtcp.SOCK_STREAM, 0)
            mtcp.mtcp_bind(p.client, s, (CLIENT_IP, 0))   # this address only, any port
            assert mtcp.mtcp_connect(p.client, s, (SERVER_IP, PORT)) == mtcp.EINPROGRESS
            assert mtcp.mtcp_getsockname(p.client, s) == (CLIENT_IP, free)
            assert agent.entries == {(RIP, LIP, PORT, held): 1, (RIP, LIP, PORT, free): 0}
            mtcp.mtcp_close(p.client, s)
            p.pump_until(lambda: (RIP, LIP, PORT, free) not in agent.entries)
    finally:
        other.close()


def test_bound_port_of_another_core_is_steered(steer_pair, agent):
    p = steer_pair
    port = other_core_port(p.client, 41000)
    s = mtcp.mtcp_socket(p.client, mtcp.AF_INET, mtcp.SOCK_STREAM, 0)
    mtcp.mtcp_bind(p.client, s, (CLIENT_IP, port))
    assert mtcp.mtcp_connect(p.client, s, (SERVER_IP, PORT)) == mtcp.EINPROGRESS
    assert agent.entries == {(RIP, LIP, PORT, port): 0}


def connect_errno(ctx, bind_port: int | None = None) -> tuple[int, str]:
    s = mtcp.mtcp_socket(ctx, mtcp.AF_INET, mtcp.SOCK_STREAM, 0)
    mtcp.mtcp_bind(ctx, s, (CLIENT_IP, bind_port or 0))  # the pair's other address aside
    with pytest.raises(OSError) as info:
        mtcp.mtcp_connect(ctx, s, (SERVER_IP, PORT))
    mtcp.mtcp_close(ctx, s)
    return info.value.errno, str(info.value)


@pytest.mark.parametrize("failure", ["absent", "timeout", "refused"])
def test_fallback_failures_are_connects_errnos(tmp_path, sockdir, agent, failure):
    path = os.path.join(sockdir, "steer.sock")
    srv = None if failure == "absent" else SteeringServer(agent, path, 2, [LIP, RIP]).start()
    if failure == "timeout":
        agent.gate.clear()                 # only the client's timeout (1 s) can end connect
    agent.refusal = AgentError("Write", "RESOURCE_EXHAUSTED", "full") if failure == "refused" \
        else None
    p = Pair(write_conf(tmp_path / "mtcp.conf", steer_socket=path))
    try:
        port = other_core_port(p.client, 42000)
        no_rss_port_for(p.client)
        assert not p.client.selector.steers_here(LIP, port, RIP, PORT)
        code, text = connect_errno(p.client)
        assert code == errno.EAGAIN and "flow_steer fallback failed" in text, text
        code, text = connect_errno(p.client, port)
        assert code == errno.EINVAL and f"bound port {port}" in text, text
        assert p.client.flows() == [] and p.client._steered == set()
    finally:
        p.close()
        agent.gate.set()
        if srv is not None:
            srv.stop()
    assert agent.entries == {}  # late installs were cancelled or dropped with the client


# ------------------------------------------------------------------- end to end, embedded NIC


@dataclass
class ClientArgs:
    conf: str
    server_ip: str
    port: int
    path: str
    mode: str          # "range": no ephemeral port hashes here; "bind": bound to such a port
    closing: Any       # event: close the connection now


def steered_client(core: int, args: ClientArgs, reporter, stop) -> int:
    """One core process: connect from a port the hash sends to another core, fetch, close."""
    from p4mtcp.apps.http import ResponseReader, build_request

    mtcp.mtcp_init(args.conf)
    ctx = mtcp.mtcp_create_context(core)
    try:
        lip, rip = ctx.local_ips[0], int(ipaddress.IPv4Address(args.server_ip))
        sel = ctx.selector
        port = next(p for p in range(20000 if args.mode == "range" else 30000, 65535)
                    if not sel.steers_here(lip, p, rip, args.port))
        s = mtcp.mtcp_socket(ctx, mtcp.AF_INET, mtcp.SOCK_STREAM, 0)
        if args.mode == "bind":
            mtcp.mtcp_bind(ctx, s, (lip, port))
        else:
            ctx.selector = PortSelector(sel.reta, sel.core_port, (port, port),
                                        fallback_range=(port, port))
        mtcp.mtcp_socket_ioctl(ctx, s, mtcp.FIONBIO, 0)  # blocking: calls run the loop
        assert mtcp.mtcp_connect(ctx, s, (args.server_ip, args.port)) == 0
        request = build_request(args.server_ip, args.path)
        assert mtcp.mtcp_write(ctx, s, request) == len(request)
        reader, body = ResponseReader(), bytearray()
        while not reader.done:
            data = mtcp.mtcp_read(ctx, s, 65536)
            if not data:
                reader.eof()
                break
            body += reader.feed(data)
        reporter.send("exchanged", local=mtcp.mtcp_getsockname(ctx, s), status=reader.head.status,
                      body_len=len(body), sha=hashlib.sha256(body).hexdigest(),
                      rx_pkts=ctx.stats.rx_packets)
        end = time.monotonic() + 60
        while not args.closing.is_set() and time.monotonic() < end:
            ctx.step(0.05)
        mtcp.mtcp_close(ctx, s)
        end = time.monotonic() + 10
        while ctx.stats.flows_freed < ctx.stats.connects and time.monotonic() < end:
            ctx.step(0.02)
        reporter.send("freed", flows=ctx.flows(), freed=ctx.stats.flows_freed)
        end = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < end:
            ctx.step(0.05)
    finally:
        mtcp.mtcp_destroy()
    return 0


@pytest.fixture(scope="module")
def fabric():
    from p4mtcp.apps import epserver, launch
    from p4mtcp.apps.fabric import Fabric, two_hosts

    www = tempfile.mkdtemp(prefix="p4mw", dir="/tmp")
    body = os.urandom(300_000)
    with open(os.path.join(www, "blob.bin"), "wb") as fh:
        fh.write(body)
    with Fabric() as fab:
        server, client = two_hosts(fab, 1, 2, SERVER_IP_E2E, CLIENT_IP_E2E)
        fab.start(timeout=60)
        args = epserver.ServerArgs(www, server.conf, 1, 128, 80, 0.0)
        with launch.CoreWorkers(epserver.serve_core, [0], args, name="epserver") as srv:
            msgs: list[dict] = []
            end = time.monotonic() + 60
            while not any(m["kind"] == "ready" for m in msgs):
                assert time.monotonic() < end and not any(m["kind"] == "exit" for m in msgs), msgs
                msgs += srv.poll(0.1)
            yield client, body
    shutil.rmtree(www, ignore_errors=True)


def next_message(workers, kind: str, timeout: float = 60.0) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for m in workers.poll(0.1):
            if m["kind"] == kind:
                return m
            assert m["kind"] != "exit", m
    raise AssertionError(f"no {kind!r} message within {timeout} s")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["range", "bind"])
def test_e2e_fallback_steers_replies_and_is_removed_after_close(fabric, mode):
    from p4mtcp.apps import launch
    from p4mtcp.apps.fabric import steered_core

    client, body = fabric
    closing = mp.get_context("spawn").Event()
    args = ClientArgs(client.conf, SERVER_IP_E2E, 80, "/blob.bin", mode, closing)
    with launch.CoreWorkers(steered_client, [0], args, name="steered") as workers:
        got = next_message(workers, "exchanged")
        assert got["status"] == 200 and got["body_len"] == len(body)
        assert got["sha"] == hashlib.sha256(body).hexdigest()
        local_ip, lport = got["local"]
        # the hash sends this flow's replies to core 1: only the entry brought them to core 0
        assert steered_core(client, (local_ip, lport), (SERVER_IP_E2E, 80)) == 1
        match = {"hdr.ipv4.src_addr": int(ipaddress.IPv4Address(SERVER_IP_E2E)),
                 "hdr.ipv4.dst_addr": int(ipaddress.IPv4Address(local_ip)),
                 "hdr.tcp.src_port": 80, "hdr.tcp.dst_port": lport}
        entries = [e for e in client.agent.read_table(FLOW_STEER) if dict(e.match) == match]
        assert [dict(e.params) for e in entries] == [{"port": client.core_ports[0]}]
        hits = {m: pb for m, pb in client.agent.read_direct_counter(FLOW_STEER).items()
                if dict(m) == match}
        assert len(hits) == 1
        (pkts, nbytes), = hits.values()
        assert pkts >= got["rx_pkts"] > len(body) // 1500 and nbytes > len(body)

        closing.set()
        freed = next_message(workers, "freed")
        assert freed["flows"] == [] and freed["freed"] == 1
        # the core's unsteer needs no reply: the agent's process removes the entry after it
        wait_for(lambda: not [e for e in client.agent.read_table(FLOW_STEER)
                              if dict(e.match) == match], 20, "the flow_steer entry's removal")
        assert client.steering.owned() == {}
        workers.finish(lambda m: None)
    assert workers.exit_code() == 0, workers.results

"""End to end over the embedded NIC: two p4mtcp hosts, one process per core, no root.

Host A (10.0.0.1) serves with epserver on 2 cores; host B (10.0.0.2) loads it with epwget (or
perf) on 2 cores; each host has its own `p4mtcp nic` process and agent, the NICs' network ports
joined by a UNIX link. Checked: bodies arrive byte-exact; every connection was served by the core
the NIC's RSS hash steered it to; each NIC's per-core-port counters, read over P4Runtime, equal
the frames that core's context saw.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from waiting import messages_until
from p4mtcp.apps import epserver, epwget, launch, perf
from p4mtcp.apps.fabric import Fabric, nic_sample, steered_core, two_hosts

pytestmark = pytest.mark.slow

SERVER_IP = "10.0.0.1"


@pytest.fixture(scope="module")
def fabric():
    with Fabric() as fab:
        server, client = two_hosts(fab, 2, 2, SERVER_IP, "10.0.0.2")
        fab.start(timeout=60)
        yield fab, server, client


def run_to_end(workers: launch.CoreWorkers, timeout: float) -> list[dict]:
    """Every message of a group that ends by itself (clients), bounded by `timeout`."""
    msgs: list[dict] = []
    with workers:
        finished = workers.pump(msgs.append, lambda: None, timeout=timeout)
    assert finished, f"{workers.cores} did not finish within {timeout} s: {msgs[-5:]}"
    return msgs


class Servers:
    """epserver cores on host A for the duration of a `with` block; their messages kept."""

    def __init__(self, host, www: Path, port: int = 80):
        args = epserver.ServerArgs(str(www), host.conf, host.cores, 4096, port, 0.0)
        self.workers = launch.CoreWorkers(epserver.serve_core, range(host.cores), args,
                                          name="epserver")
        self.msgs: list[dict] = []

    def __enter__(self) -> "Servers":
        self.workers.start()
        ready: set[int] = set()
        deadline = time.monotonic() + 60
        while ready != set(self.workers.cores):
            assert time.monotonic() < deadline, f"servers not ready: {self.msgs}"
            for m in self.workers.poll(0.1):
                self.msgs.append(m)
                assert m["kind"] != "exit", m
                ready |= {m["core"]} if m["kind"] == "ready" else set()
        return self

    def __exit__(self, *exc) -> None:
        self.workers.finish(self.msgs.append)

    def last(self, kind: str) -> dict[int, dict]:
        return {m["core"]: m for m in self.msgs if m["kind"] == kind}


def counters_match(host, before: tuple, final_stats: dict[int, dict]) -> None:
    """The frames the NIC sent to / took from each core port since `before` equal what that
    core's context (started after `before`) received / sent."""
    rx, tx, drops = nic_sample(host)
    rx0, tx0, drops0 = before
    for core, msg in final_stats.items():
        port = host.core_ports[core]
        ctx = msg["counters"]
        assert tx.get(port, (0, 0))[0] - tx0.get(port, (0, 0))[0] == ctx["rx_pkts"], (core, ctx)
        assert rx.get(port, (0, 0))[0] - rx0.get(port, (0, 0))[0] == ctx["tx_pkts"], (core, ctx)
        assert ctx["rx_pkts"] > 0
    assert drops == drops0, f"NIC drops: {drops0} -> {drops}"


def test_1000_short_http_connections_on_two_cores_byte_exact_and_steered(fabric, tmp_path):
    fab, server, client = fabric
    www = tmp_path / "www"
    www.mkdir()
    body = os.urandom(1500)
    (www / "page.bin").write_bytes(body)
    before = nic_sample(server)
    with Servers(server, www) as srv:
        wargs = epwget.WgetArgs(SERVER_IP, 80, "/page.bin", 1000, 2, 32, client.conf,
                                str(tmp_path / "out"), timeout=120)
        msgs = run_to_end(launch.CoreWorkers(epwget.wget_core, [0, 1], wargs), timeout=150)
    done = {m["core"]: m for m in msgs if m["kind"] == "done"}
    assert {c: (d["done"], d["errors"]) for c, d in done.items()} == {0: (500, 0), 1: (500, 0)}
    outs = sorted(tmp_path.glob("out.*"))
    assert len(outs) == 1000
    assert all(p.read_bytes() == body for p in outs)

    # Steering: every accepted connection was on the core the NIC's hash picked.
    # (each core reports the flows it accepted since its previous report, then forgets them)
    flows = [(m["core"], tuple(p)) for m in srv.msgs if m["kind"] == "peers" for p in m["peers"]]
    assert len(flows) == 1000
    assert all(steered_core(server, (SERVER_IP, 80), peer) == core for core, peer in flows)
    per_core = {core: sum(c == core for c, _ in flows) for core in range(server.cores)}
    assert per_core[0] > 100 and per_core[1] > 100, per_core       # both cores took a share
    assert {c: m["app"]["accepted"] for c, m in srv.last("stats").items()} == per_core

    # The NIC's per-core-port counters agree with each context's own counts.
    counters_match(server, before, srv.last("stats"))
    client_stats = {m["core"]: m for m in msgs if m["kind"] == "stats"}
    rx, tx, _ = nic_sample(client)
    for core, m in client_stats.items():
        # every reply of a client core's connections reached that core (RSS-aware ports)
        assert tx.get(client.core_ports[core], (0, 0))[0] >= m["counters"]["rx_pkts"] > 0


def test_50mb_http_download_is_byte_exact(fabric, tmp_path):
    fab, server, client = fabric
    www = tmp_path / "www"
    www.mkdir()
    data = hashlib.shake_128(b"fifty").digest(50 * 1000 * 1000)
    (www / "big.bin").write_bytes(data)
    with Servers(server, www):
        wargs = epwget.WgetArgs(SERVER_IP, 80, "/big.bin", 1, 1, 1, client.conf,
                                str(tmp_path / "big"), timeout=200)
        msgs = run_to_end(launch.CoreWorkers(epwget.wget_core, [0], wargs), timeout=240)
    done = [m for m in msgs if m["kind"] == "done"]
    assert done and done[0]["errors"] == 0 and done[0]["body_bytes"] == len(data)
    got = (tmp_path / "big.0.0").read_bytes()
    assert len(got) == len(data) and hashlib.sha256(got).digest() == hashlib.sha256(data).digest()


def test_perf_moves_50mb_byte_exact(fabric):
    fab, server, client = fabric
    nbytes = 50 * 1000 * 1000
    sargs = perf.PerfArgs("server", server.conf, 2, "0.0.0.0", perf.PORT, None, 240.0, None,
                          None, 1, True)
    server_msgs: list[dict] = []
    with launch.CoreWorkers(perf.perf_core, [0, 1], sargs) as servers:
        messages_until(servers, server_msgs, "ready", 2, timeout=60)
        cargs = perf.PerfArgs("client", client.conf, 1, SERVER_IP, perf.PORT, nbytes, 0.0, None,
                              None, 0, True)
        msgs = run_to_end(launch.CoreWorkers(perf.perf_core, [0], cargs), timeout=240)
        sent = [m for m in msgs if m["kind"] == "result"][0]["connections"][0]
        # the receiving core (whichever the NIC steered the flow to) reports its connection
        messages_until(servers, server_msgs, "result", 1, timeout=30)
        servers.finish(server_msgs.append)
    got = [c for m in server_msgs if m["kind"] == "result" for c in m["connections"]]
    received = [c for c in got if c["bytes"]]
    assert sent["error"] == "" and sent["bytes"] == nbytes
    assert len(received) == 1 and received[0]["error"] == ""
    assert received[0]["bytes"] == nbytes and received[0]["sha256"] == sent["sha256"]
    assert sent["sha256"] == hashlib.sha256(perf_stream(nbytes)).hexdigest()


def perf_stream(n: int) -> bytes:
    block = perf.pattern()
    return (block * (n // len(block) + 1))[:n]

"""Jumbo frames end to end: two hosts with `mtu = 9000` on one embedded fabric (their NICs
joined by a UNIX link, each core on shared-memory rings), perf moving a stream byte-exact in
segments of the full jumbo MSS (8960 less 12 bytes of timestamps) through both NICs."""

from __future__ import annotations

import hashlib
import time

import pytest

from p4mtcp.apps import launch, perf
from p4mtcp.apps.fabric import NETWORK_PORT, Fabric, nic_sample, two_hosts

pytestmark = pytest.mark.slow

SERVER_IP = "10.0.0.1"
MTU = 9000
SEGMENT = MTU - 40 - 12                # TCP payload per full segment: MSS less timestamps
FRAME = 14 + MTU                       # Ethernet frame of a full segment
NBYTES = 3 * 1000 * 1000


def test_perf_at_mtu_9000_is_byte_exact_in_full_jumbo_segments():
    with Fabric() as fab:
        server, client = two_hosts(fab, 1, 1, SERVER_IP, "10.0.0.2")
        fab.start(timeout=60, rcvbuf=1 << 18, sndbuf=1 << 18, mtu=MTU)
        nic_before = nic_sample(server)
        sargs = perf.PerfArgs("server", server.conf, 1, "0.0.0.0", perf.PORT, None, 120.0, None,
                              None, 1, True)
        cargs = perf.PerfArgs("client", client.conf, 1, SERVER_IP, perf.PORT, NBYTES, 0.0, None,
                              None, 0, True)
        server_msgs: list[dict] = []
        with launch.CoreWorkers(perf.perf_core, [0], sargs) as servers:
            deadline = time.monotonic() + 60
            while not any(m["kind"] == "ready" for m in server_msgs):
                assert time.monotonic() < deadline, server_msgs
                server_msgs += servers.poll(0.1)
            client_msgs: list[dict] = []
            with launch.CoreWorkers(perf.perf_core, [0], cargs) as clients:
                assert clients.pump(client_msgs.append, lambda: None, timeout=120), client_msgs
            deadline = time.monotonic() + 30
            while not any(m["kind"] == "result" for m in server_msgs):
                assert time.monotonic() < deadline, server_msgs[-3:]
                server_msgs += servers.poll(0.1)
            servers.finish(server_msgs.append)
        rx, _, drops = nic_sample(server)

    sent = [m for m in client_msgs if m["kind"] == "result"][0]["connections"][0]
    got = [m for m in server_msgs if m["kind"] == "result"][0]["connections"][0]
    assert sent["error"] == got["error"] == "" and sent["bytes"] == got["bytes"] == NBYTES
    assert got["sha256"] == sent["sha256"] == hashlib.sha256(stream(NBYTES)).hexdigest()

    # What the receiving core took: the data segments (all full but the last) and a few
    # control segments (the handshake's ACK, the FIN, window updates' answers).
    counters = [m for m in server_msgs if m["kind"] == "stats"][-1]["counters"]
    full, rest = divmod(NBYTES, SEGMENT)
    assert full + 1 <= counters["rx_pkts"] <= full + 1 + 8, counters
    assert counters["rx_bytes"] >= full * FRAME, counters       # every full one a 9014-byte frame

    # The server NIC's network port took the same jumbo frames, and dropped nothing.
    rx0, _, drops0 = nic_before
    pkts = rx[NETWORK_PORT][0] - rx0.get(NETWORK_PORT, (0, 0))[0]
    nbytes = rx[NETWORK_PORT][1] - rx0.get(NETWORK_PORT, (0, 0))[1]
    assert full + 1 <= pkts <= full + 1 + 8 and nbytes >= full * FRAME, (pkts, nbytes)
    assert drops == drops0


def stream(n: int) -> bytes:
    block = perf.pattern()
    return (block * (n // len(block) + 1))[:n]

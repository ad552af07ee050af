"""Jumbo frames end to end: two hosts with `mtu = 9000` on one embedded fabric (their NICs
joined by a UNIX link, each core on shared-memory rings), perf moving a stream byte-exact in
segments of the full jumbo MSS (8960 less 12 bytes of timestamps) through both NICs; and a
jumbo host sending to a 1500-byte one in segments the peer's MSS option allows."""

from __future__ import annotations

import hashlib

import pytest

from waiting import messages_until
from p4mtcp.apps import launch, perf
from p4mtcp.apps.fabric import NETWORK_PORT, Fabric, nic_sample, two_hosts

pytestmark = pytest.mark.slow

SERVER_IP = "10.0.0.1"
MTU = 9000
SEGMENT = MTU - 40 - 12                # TCP payload per full segment: MSS less timestamps
FRAME = 14 + MTU                       # Ethernet frame of a full segment
NBYTES = 3 * 1000 * 1000


def run_perf(server, client, nbytes: int) -> tuple[dict, dict, dict]:
    """perf client (1 core) -> perf server (1 core), --verify: (what the client sent, what the
    server got, the server core's last counters)."""
    sargs = perf.PerfArgs("server", server.conf, 1, "0.0.0.0", perf.PORT, None, 120.0, None,
                          None, 1, True)
    cargs = perf.PerfArgs("client", client.conf, 1, SERVER_IP, perf.PORT, nbytes, 0.0, None,
                          None, 0, True)
    server_msgs: list[dict] = []
    with launch.CoreWorkers(perf.perf_core, [0], sargs) as servers:
        messages_until(servers, server_msgs, "ready", 1, timeout=60)
        client_msgs: list[dict] = []
        with launch.CoreWorkers(perf.perf_core, [0], cargs) as clients:
            assert clients.pump(client_msgs.append, lambda: None, timeout=120), client_msgs
        messages_until(servers, server_msgs, "result", 1, timeout=30)
        servers.finish(server_msgs.append)
    sent = [m for m in client_msgs if m["kind"] == "result"][0]["connections"][0]
    got = [m for m in server_msgs if m["kind"] == "result"][0]["connections"][0]
    assert sent["error"] == got["error"] == "" and sent["bytes"] == got["bytes"] == nbytes
    assert got["sha256"] == sent["sha256"] == hashlib.sha256(stream(nbytes)).hexdigest()
    return sent, got, [m for m in server_msgs if m["kind"] == "stats"][-1]["counters"]


def test_perf_at_mtu_9000_is_byte_exact_in_full_jumbo_segments():
    with Fabric() as fab:
        server, client = two_hosts(fab, 1, 1, SERVER_IP, "10.0.0.2")
        fab.start(timeout=60, rcvbuf=1 << 18, sndbuf=1 << 18, mtu=MTU)
        nic_before = nic_sample(server)
        _, _, counters = run_perf(server, client, NBYTES)
        rx, _, drops = nic_sample(server)

    # What the receiving core took: the data segments (all full but the last) and a few
    # control segments (the handshake's ACK, the FIN, window updates' answers).
    full = NBYTES // SEGMENT
    assert full + 1 <= counters["rx_pkts"] <= full + 1 + 8, counters
    assert counters["rx_bytes"] >= full * FRAME, counters       # every full one a 9014-byte frame

    # The server NIC's network port took the same jumbo frames, and dropped nothing.
    rx0, _, drops0 = nic_before
    pkts = rx[NETWORK_PORT][0] - rx0.get(NETWORK_PORT, (0, 0))[0]
    nbytes = rx[NETWORK_PORT][1] - rx0.get(NETWORK_PORT, (0, 0))[1]
    assert full + 1 <= pkts <= full + 1 + 8 and nbytes >= full * FRAME, (pkts, nbytes)
    assert drops == drops0


def test_jumbo_sender_to_a_1500_byte_host_sends_what_its_mss_option_allows():
    """Per-host MTUs: the client (mtu 9000) announces MSS 8960, the server (mtu 1500) 1460; the
    client's segments are clamped to the server's option (RFC 9293 3.7.1): 1448 data bytes."""
    with Fabric() as fab:
        server, client = two_hosts(fab, 1, 1, SERVER_IP, "10.0.0.2")
        server.mtu, client.mtu = 1500, MTU
        fab.start(timeout=60, rcvbuf=1 << 18, sndbuf=1 << 18)
        _, _, counters = run_perf(server, client, NBYTES // 3)
    full = (NBYTES // 3) // (1500 - 40 - 12)
    assert full + 1 <= counters["rx_pkts"] <= full + 1 + 8, counters
    assert counters["rx_bytes"] <= counters["rx_pkts"] * (14 + 1500), counters


def stream(n: int) -> bytes:
    block = perf.pattern()
    return (block * (n // len(block) + 1))[:n]

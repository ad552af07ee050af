"""Short-connection rate: epserver + epwget over the embedded NIC vs asyncio on kernel loopback.

One transaction = connect, a 64-byte HTTP request, a response with a 64-byte body, close (the
server closes after the response; the client closes when the body is complete). Both sides run
the same bytes: the asyncio baseline sends epwget's exact request and answers with epserver's
exact response. For each core count (1 and 2 by default) the p4mtcp run uses two hosts on one
embedded fabric (a NIC process per host, server and client with that many cores each); the
kernel run uses that many asyncio server processes (SO_REUSEPORT) and client processes.

The rate is completed transactions over the span from the first client core's start to the last
one's end (process start-up excluded on both sides). Results and ratios go to
bench/results/short_conn.json; a cProfile of one server core and one client core of a separate
1-core run (the hot loop: mtcp_epoll_wait, the TCP engine, the apps) to
bench/results/short_conn_profile.txt, with a cProfile of the core path alone after them.

The core path alone (`core_path` in the results): epserver's and epwget's per-core code on two
contexts in this one process, joined by an in-memory port pair: no NIC, no link, no waiting, so
its CPU time per connection is what the two core processes must spend whatever the machine's
load, steadier than a rate measured among busy neighbours.

    python bench/bench_short_conn.py [--requests 5000] [--concurrency 64] [--cores 1,2]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import kernel_peers  # noqa: E402
from harness import (  # noqa: E402
    RESULTS, cpu_split, machine, profile_path, serve_and_run, write_profile)

from p4mtcp import mtcp  # noqa: E402
from p4mtcp.apps import epserver, epwget, launch  # noqa: E402
from p4mtcp.apps.fabric import Fabric, two_hosts  # noqa: E402
from p4mtcp.apps.http import build_response_head  # noqa: E402
from p4mtcp.apps.webfiles import FileCache  # noqa: E402
from p4mtcp.link import PortStats  # noqa: E402

SERVER_IP = "10.0.0.1"
REQUEST_SIZE = 64
BODY = b"b" * 64


def p4mtcp_run(cores: int, requests: int, concurrency: int, profile_dir: Path | None = None
               ) -> dict[str, Any]:
    """One epserver/epwget run over a fresh two-host embedded fabric."""
    with Fabric() as fab:
        server, client = two_hosts(fab, cores, cores, SERVER_IP, "10.0.0.2")
        fab.start(timeout=60)
        www = fab.dir / "www"
        www.mkdir()
        (www / "64").write_bytes(BODY)
        sargs = epserver.ServerArgs(str(www), server.conf, cores, 4096, 80, 0.0)
        wargs = epwget.WgetArgs(SERVER_IP, 80, "/64", requests, cores,
                                max(1, concurrency // cores), client.conf, None, 300.0,
                                REQUEST_SIZE)
        srv_msgs, msgs, nic_before, nic_after = serve_and_run(
            launch.CoreWorkers(epserver.serve_core, range(cores), sargs, "epserver",
                               profile_path(profile_dir, "server")),
            lambda: launch.CoreWorkers(epwget.wget_core, range(cores), wargs, "epwget",
                                       profile_path(profile_dir, "client")),
            (server, client), 360, "epwget")
    done = [m for m in msgs if m["kind"] == "done"]
    if len(done) != cores:
        raise RuntimeError(f"epwget cores failed: {[m for m in msgs if m['kind'] == 'exit']}")
    span = max(d["t_end"] for d in done) - min(d["t_start"] for d in done)
    completed = sum(d["done"] - d["errors"] for d in done)
    accepted = {m["core"]: m["app"]["accepted"] for m in srv_msgs if m["kind"] == "stats"}
    return {"cores": cores, "completed": completed, "errors": sum(d["errors"] for d in done),
            "seconds": span, "conn_per_s": completed / span, "server_accepts_per_core": accepted,
            "cpu_seconds": cpu_split(nic_before, nic_after,
                                     {"epserver": srv_msgs, "epwget": msgs})}


class _MemPort:
    """One end of an in-memory frame pipe: what one context sends is the other's next batch."""

    closed_by_peer = False

    def __init__(self) -> None:
        self.stats = PortStats()
        self.inbox: list[bytes] = []
        self.peer: _MemPort = self
        self._rfd, self._wfd = os.pipe()  # the context polls fileno(); nothing ever writes it

    def send(self, frame: bytes) -> bool:
        return self.send_batch((frame,)) == 1

    def send_batch(self, frames: Sequence[bytes]) -> int:
        self.peer.inbox.extend(frames)
        return len(frames)

    def recv_batch(self) -> list[bytes]:
        frames, self.inbox = self.inbox, []
        return frames

    def arm(self) -> bool:
        return True

    def pending(self) -> bool:
        return bool(self.inbox)

    def fileno(self) -> int:
        return self._rfd

    def close(self) -> None:
        if self._rfd >= 0:
            os.close(self._rfd)
            os.close(self._wfd)
            self._rfd = self._wfd = -1


def core_path(requests: int, concurrency: int, profile: Path | None = None) -> float:
    """CPU seconds per connection of epserver's and epwget's per-core code together, in this
    process (see the module docstring); with `profile`, a cProfile of it is written there."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "www").mkdir()
        (d / "www" / "64").write_bytes(BODY)
        conf = d / "mtcp.conf"
        conf.write_text(f"num_cores = 2\nlocal_ip = 10.0.0.2/24 {SERVER_IP}/24\n"
                        "port = net0 net1\nmax_concurrency = 10000\nmax_num_buffers = 10000\n"
                        "rcvbuf = 8192\nsndbuf = 8192\ntcp_timeout = 30\ntcp_timewait = 0\n")
        mtcp.mtcp_init(str(conf))
        try:
            a, b = _MemPort(), _MemPort()
            a.peer, b.peer = b, a
            client_ctx = mtcp.mtcp_create_context(0, a)
            server_ctx = mtcp.mtcp_create_context(1, b)
            server = epserver.CoreServer(mtcp, server_ctx, FileCache(str(d / "www")), 80, 4096)
            wargs = epwget.WgetArgs(SERVER_IP, 80, "/64", requests, 1, concurrency, str(conf),
                                    None, 300.0, REQUEST_SIZE)
            client = epwget.CoreClient(mtcp, client_ctx, 0, wargs, requests)
            prof = cProfile.Profile() if profile else None
            t0 = time.process_time()
            if prof:
                prof.enable()
            client.fill()
            for _ in range(10 * requests):  # bounded: ~12 connections finish per round
                if client.finished:
                    break
                client.step(0)
                server.step(0)
            if prof:
                prof.disable()
            cpu = time.process_time() - t0
            if client.done != requests or client.errors or server.requests != requests:
                raise RuntimeError(f"core path: {client.done} of {requests} done, "
                                   f"{client.errors} errors, {server.requests} served")
            if prof and profile:
                with open(profile, "w") as fh:
                    pstats.Stats(prof, stream=fh).sort_stats("tottime").print_stats(40)
        finally:
            mtcp.mtcp_destroy()
            a.close()
            b.close()
    return cpu / requests


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--cores", default="1,2")
    ap.add_argument("--no-profile", action="store_true")
    args = ap.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    request = epwget.padded_request(SERVER_IP, "/64", REQUEST_SIZE)
    response = build_response_head(200, len(BODY), False) + BODY
    runs = []
    for cores in (int(c) for c in args.cores.split(",")):
        ours = p4mtcp_run(cores, args.requests, args.concurrency)
        kernel = kernel_peers.short_connections(cores, args.requests, args.concurrency,
                                                request, response)
        ratio = ours["conn_per_s"] / kernel["conn_per_s"]
        runs.append({"cores": cores, "p4mtcp_embedded": ours, "kernel_asyncio": kernel,
                     "ratio_p4mtcp_over_kernel": ratio})
        print(f"{cores} core(s): p4mtcp {ours['conn_per_s']:8.0f} conn/s, kernel asyncio "
              f"{kernel['conn_per_s']:8.0f} conn/s, ratio {ratio:.3f}", flush=True)
    result = {
        "benchmark": "short connections: connect, 64-byte request, 64-byte body reply, close",
        "request_bytes": len(request), "response_bytes": len(response),
        "requests": args.requests, "concurrency": args.concurrency,
        "machine": machine(),
        "runs": runs,
    }
    core_path(500, args.concurrency)  # warm-up
    per_conn = [core_path(args.requests, args.concurrency) for _ in range(3)]
    result["core_path"] = {
        "what": "epserver's and epwget's per-core code on two contexts in one process, an "
                "in-memory port pair between them (no NIC, no link): CPU per connection",
        "connections": args.requests, "cpu_us_per_connection": round(min(per_conn) * 1e6, 1),
        "cpu_us_per_connection_runs": [round(c * 1e6, 1) for c in per_conn]}
    print(f"core path alone: {min(per_conn) * 1e6:.1f} us CPU per connection (both cores)")
    (RESULTS / "short_conn.json").write_text(json.dumps(result, indent=2) + "\n")
    if not args.no_profile:

        def profiled(pdir: Path) -> None:
            p4mtcp_run(1, min(args.requests, 2000), args.concurrency, pdir)
            core_path(min(args.requests, 2000), args.concurrency, pdir / "core_path.txt")

        write_profile("short_conn",
                      "cProfile of a 1-core epserver/epwget run over the embedded NIC, then of "
                      "the core path alone (both cores' code in one process, no NIC)",
                      profiled, ("server_core0.txt", "client_core0.txt", "core_path.txt"))
    print(f"wrote {RESULTS / 'short_conn.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

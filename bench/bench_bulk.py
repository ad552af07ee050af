"""Bulk throughput: perf over the embedded NIC at MTU 1500 and 9000 vs the kernel, in one run.

For each core count (1 and 2 by default) and each MTU (1500 and 9000 by default: mtcp.conf
`mtu`, so the engines announce and send an MSS of MTU - 40) the p4mtcp run uses two hosts on one
embedded fabric: `perf server` on that many cores of host A, `perf client` on that many cores of
host B, one connection per client core, each moving `--mbytes` MB; the NIC steers each
connection to one server core. The kernel run moves the same bytes over the same number of
loopback connections (the loopback's own MTU, 65536) with blocking sockets in separate
processes, in the same 256 KiB reads and writes as perf (`perf.CHUNK`).

Throughput is bytes received over the span from the first receiver's accept to the last one's
end of stream. Socket buffers: `--buf` bytes (default 1 MiB) for the p4mtcp hosts (rcvbuf/sndbuf
in mtcp.conf; mTCP's default is 8192); the kernel autotunes its own (up to the maximum of
net.ipv4.tcp_rmem). Each row of bench/results/bulk.json says its MTU; a cProfile of a 1-core
sender and receiver at each MTU goes to bench/results/bulk_profile.txt.

    python bench/bench_bulk.py [--mbytes 50] [--cores 1,2] [--mtus 1500,9000] [--buf 1048576]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import kernel_peers  # noqa: E402
from harness import (  # noqa: E402
    RESULTS, cpu_split, machine, profile_path, serve_and_run, write_profile)

from p4mtcp.apps import launch, perf  # noqa: E402
from p4mtcp.apps.fabric import Fabric, two_hosts  # noqa: E402

SERVER_IP = "10.0.0.1"


def p4mtcp_run(cores: int, nbytes: int, buf: int, mtu: int, profile_dir: Path | None = None
               ) -> dict[str, Any]:
    """One perf transfer per core between two hosts with this MTU; profiles, if asked, are
    named <role>_mtu<MTU>_core<N>.txt."""
    with Fabric() as fab:
        server, client = two_hosts(fab, cores, cores, SERVER_IP, "10.0.0.2")
        fab.start(timeout=60, rcvbuf=buf, sndbuf=buf, mtu=mtu)
        sargs = perf.PerfArgs("server", server.conf, cores, "0.0.0.0", perf.PORT, None, 600.0,
                              None, None, 0, False)
        cargs = perf.PerfArgs("client", client.conf, cores, SERVER_IP, perf.PORT, nbytes,
                              0.0, None, None, 0, False)
        srv_msgs, msgs, nic_before, nic_after = serve_and_run(
            launch.CoreWorkers(perf.perf_core, range(cores), sargs, "perf-server",
                               profile_path(profile_dir, f"receiver_mtu{mtu}")),
            lambda: launch.CoreWorkers(perf.perf_core, range(cores), cargs, "perf-client",
                                       profile_path(profile_dir, f"sender_mtu{mtu}")),
            (server, client), 600, "perf clients")
    sent = [c for m in msgs if m["kind"] == "result" for c in m["connections"]]
    got = [c for m in srv_msgs if m["kind"] == "result" for c in m["connections"]]
    errors = [c["error"] for c in sent + got if c["error"]]
    if errors or len(got) != cores:
        raise RuntimeError(f"transfer failed: {errors or got}")
    moved = sum(c["bytes"] for c in got)
    span = max(c["t_end"] for c in got) - min(c["t_start"] for c in got)
    per_core = {m["core"]: len(m["connections"]) for m in srv_msgs if m["kind"] == "result"}
    return {"mtu": mtu, "cores": cores, "connections": cores, "bytes": moved, "seconds": span,
            "mbit_per_s": moved * 8 / span / 1e6, "connections_per_server_core": per_core,
            "buffer_bytes": buf,
            "cpu_seconds": cpu_split(nic_before, nic_after,
                                     {"perf_server": srv_msgs, "perf_client": msgs})}


def loopback_mtu() -> int | None:
    """The kernel peer's link MTU (lo), for its row."""
    try:
        return int(Path("/sys/class/net/lo/mtu").read_text())
    except (OSError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mbytes", type=int, default=50, help="MB per connection")
    ap.add_argument("--cores", default="1,2")
    ap.add_argument("--mtus", default="1500,9000", help="p4mtcp hosts' MTUs (mtcp.conf mtu)")
    ap.add_argument("--buf", type=int, default=1 << 20, help="p4mtcp rcvbuf/sndbuf bytes")
    ap.add_argument("--no-profile", action="store_true")
    args = ap.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    nbytes = args.mbytes * 1000 * 1000
    mtus = [int(m) for m in args.mtus.split(",")]
    runs = []
    jumbo: dict[int, float] = {}    # cores -> MTU 9000 Mbit/s over MTU 1500, same run
    for cores in (int(c) for c in args.cores.split(",")):
        kernel = {"mtu": loopback_mtu(), **kernel_peers.bulk(nbytes, connections=cores)}
        by_mtu = {}
        for mtu in mtus:
            ours = by_mtu[mtu] = p4mtcp_run(cores, nbytes, args.buf, mtu)
            ratio = ours["mbit_per_s"] / kernel["mbit_per_s"]
            runs.append({"cores": cores, "mtu": mtu, "p4mtcp_embedded": ours,
                         "kernel_loopback": kernel, "ratio_p4mtcp_over_kernel": ratio})
            print(f"{cores} core(s), MTU {mtu}: p4mtcp {ours['mbit_per_s']:7.1f} Mbit/s, kernel "
                  f"{kernel['mbit_per_s']:8.1f} Mbit/s (lo MTU {kernel['mtu']}), ratio "
                  f"{ratio:.4f}", flush=True)
        if 1500 in by_mtu and 9000 in by_mtu:
            jumbo[cores] = by_mtu[9000]["mbit_per_s"] / by_mtu[1500]["mbit_per_s"]
    result = {
        "benchmark": "bulk throughput, one connection per core, per MTU",
        "bytes_per_connection": nbytes,
        "machine": machine(),
        "runs": runs,
        "mtu9000_over_mtu1500": jumbo,
    }
    (RESULTS / "bulk.json").write_text(json.dumps(result, indent=2) + "\n")
    if not args.no_profile:
        size = min(nbytes, 20 * 1000 * 1000)
        write_profile("bulk", "cProfile of a 1-core perf transfer over the embedded NIC, per MTU",
                      lambda pdir: [p4mtcp_run(1, size, args.buf, m, pdir) for m in mtus],
                      [f"{role}_mtu{m}_core0.txt" for m in mtus for role in ("sender", "receiver")])
    print(f"wrote {RESULTS / 'bulk.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

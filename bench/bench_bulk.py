"""Bulk throughput: perf over the embedded NIC vs the same transfer through the kernel.

For each core count (1 and 2 by default) the p4mtcp run uses two hosts on one embedded fabric:
`perf server` on that many cores of host A, `perf client` on that many cores of host B, one
connection per client core, each moving `--mbytes` MB; the NIC steers each connection to one
server core. The kernel run moves the same bytes over the same number of loopback connections
with blocking sockets in separate processes, in the same 64 KiB writes.

Throughput is bytes received over the span from the first receiver's accept to the last one's
end of stream. Socket buffers: `--buf` bytes for the p4mtcp hosts (rcvbuf/sndbuf in mtcp.conf;
mTCP's default is 8192); the kernel autotunes its own. Results and ratios go to
bench/results/bulk.json, a cProfile of a 1-core sender and receiver to
bench/results/bulk_profile.txt.

    python bench/bench_bulk.py [--mbytes 50] [--cores 1,2] [--buf 262144]
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


def p4mtcp_run(cores: int, nbytes: int, buf: int, profile_dir: Path | None = None
               ) -> dict[str, Any]:
    with Fabric() as fab:
        server, client = two_hosts(fab, cores, cores, SERVER_IP, "10.0.0.2")
        fab.start(timeout=60, rcvbuf=buf, sndbuf=buf)
        sargs = perf.PerfArgs("server", server.conf, cores, "0.0.0.0", perf.PORT, None, 600.0,
                              None, None, 0, False)
        cargs = perf.PerfArgs("client", client.conf, cores, SERVER_IP, perf.PORT, nbytes,
                              0.0, None, None, 0, False)
        srv_msgs, msgs, nic_before, nic_after = serve_and_run(
            launch.CoreWorkers(perf.perf_core, range(cores), sargs, "perf-server",
                               profile_path(profile_dir, "receiver")),
            lambda: launch.CoreWorkers(perf.perf_core, range(cores), cargs, "perf-client",
                                       profile_path(profile_dir, "sender")),
            (server, client), 600, "perf clients")
    sent = [c for m in msgs if m["kind"] == "result" for c in m["connections"]]
    got = [c for m in srv_msgs if m["kind"] == "result" for c in m["connections"]]
    errors = [c["error"] for c in sent + got if c["error"]]
    if errors or len(got) != cores:
        raise RuntimeError(f"transfer failed: {errors or got}")
    moved = sum(c["bytes"] for c in got)
    span = max(c["t_end"] for c in got) - min(c["t_start"] for c in got)
    per_core = {m["core"]: len(m["connections"]) for m in srv_msgs if m["kind"] == "result"}
    return {"cores": cores, "connections": cores, "bytes": moved, "seconds": span,
            "mbit_per_s": moved * 8 / span / 1e6, "connections_per_server_core": per_core,
            "buffer_bytes": buf,
            "cpu_seconds": cpu_split(nic_before, nic_after,
                                     {"perf_server": srv_msgs, "perf_client": msgs})}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mbytes", type=int, default=50, help="MB per connection")
    ap.add_argument("--cores", default="1,2")
    ap.add_argument("--buf", type=int, default=256 * 1024, help="p4mtcp rcvbuf/sndbuf bytes")
    ap.add_argument("--no-profile", action="store_true")
    args = ap.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    nbytes = args.mbytes * 1000 * 1000
    runs = []
    for cores in (int(c) for c in args.cores.split(",")):
        ours = p4mtcp_run(cores, nbytes, args.buf)
        kernel = kernel_peers.bulk(nbytes, connections=cores)
        ratio = ours["mbit_per_s"] / kernel["mbit_per_s"]
        runs.append({"cores": cores, "p4mtcp_embedded": ours, "kernel_loopback": kernel,
                     "ratio_p4mtcp_over_kernel": ratio})
        print(f"{cores} core(s): p4mtcp {ours['mbit_per_s']:9.1f} Mbit/s, kernel "
              f"{kernel['mbit_per_s']:9.1f} Mbit/s, ratio {ratio:.4f}", flush=True)
    result = {
        "benchmark": "bulk throughput, one connection per core",
        "bytes_per_connection": nbytes,
        "machine": machine(),
        "runs": runs,
    }
    (RESULTS / "bulk.json").write_text(json.dumps(result, indent=2) + "\n")
    if not args.no_profile:
        write_profile("bulk", "cProfile of a 1-core perf transfer over the embedded NIC",
                      lambda pdir: p4mtcp_run(1, min(nbytes, 20 * 1000 * 1000), args.buf, pdir),
                      ("sender_core0.txt", "receiver_core0.txt"))
    print(f"wrote {RESULTS / 'bulk.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

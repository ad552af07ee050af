"""Idle cost: memory of idle established connections in one engine, and the CPU of an idle host.

For each count N (default 1,000 / 20,000 / 100,000), a fresh process opens N connections to one
listening TcpStack and accepts them all, then measures how much its resident set grew. The peer
is stateless (it answers each SYN-ACK with the ACK that completes the handshake, built from the
SYN-ACK alone), so the growth is the engine's: Connection objects, their buffers and timers, the
stack's tables, plus the accepted list the application keeps (8 bytes a connection). Config:
TcpConfig defaults (mTCP's 8 KiB buffers, 30 s idle timeout: a timer per connection), a Linux
client's SYN options (MSS, SACK, timestamps, window scale).

Then the CPU an idle host uses: an embedded fabric of two hosts, a one-core epserver on one of
them and nothing else running; the CPU share of each NIC process and of the epserver core over
`--seconds` (target: the server host, its NIC plus its epserver, under 1 %). Results go to
bench/results/idle.json.

    python bench/bench_idle.py [--counts 1000,20000,100000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import RESULTS, machine  # noqa: E402

SERVER, PORT = 0x0A000001, 80
BATCH = 500
TARGET_BYTES = 2048          # issue 9: <= 2 KB per idle established connection in the stack
TARGET_IDLE_CPU = 1.0        # issue 8: percent of one CPU for a host with an idle epserver


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def open_idle(count: int) -> dict[str, float]:
    """Open `count` connections into one stack and report the resident-set growth."""
    from p4mtcp.control.tcp import TcpConfig, TcpStack, wire
    from p4mtcp.control.tcp.wire import ACK, SYN

    stack = TcpStack(TcpConfig(), isn_secret=b"bench-idle-secret-key")
    lst = stack.listen(SERVER, PORT, count)
    accepted = []
    syn_opts = wire.syn_options(1460, 7, True, (1, 0))
    now = 1.0
    gc.collect()
    before = _rss()
    for first in range(0, count, BATCH):
        for i in range(first, min(count, first + BATCH)):
            cip, cport = 0x0B000000 + i // 60000, 1024 + i % 60000
            stack.receive(cip, SERVER, wire.build(cip, SERVER, cport, PORT, 1000, 0, SYN, 65535,
                                                  syn_opts), now)
        for src, dst, synack in stack.poll(now):
            seg = wire.parse(synack, src, dst, True)
            assert not isinstance(seg, str) and seg.flags == SYN | ACK, seg
            ack = wire.build(dst, src, seg.dport, seg.sport, 1001, (seg.seq + 1) & 0xFFFFFFFF,
                             ACK, 65535 >> 7, wire.data_options((2, seg.tsval or 0), None))
            stack.receive(dst, src, ack, now)
        stack.poll(now)
        stack.events()
        while True:
            conn = lst.accept()
            if conn is None:
                break
            accepted.append(conn)
    stack.events()
    gc.collect()
    grown = _rss() - before
    if len(accepted) != count or stack.connections != count:
        raise RuntimeError(f"{len(accepted)} accepted, {stack.connections} in the stack, "
                           f"of {count}")
    return {"connections": count, "rss_growth_bytes": grown,
            "bytes_per_connection": round(grown / count, 1)}


def idle_cpu(seconds: float) -> dict[str, float]:
    """CPU percent of each NIC process and of an idle one-core epserver over `seconds`."""
    from harness import wait_ready

    from p4mtcp.apps import epserver, launch
    from p4mtcp.apps.fabric import Fabric, two_hosts

    with Fabric() as fab:
        server, client = two_hosts(fab, 1, 1, "10.0.0.1", "10.0.0.2")
        fab.start(timeout=60)
        www = fab.dir / "www"
        www.mkdir()
        sargs = epserver.ServerArgs(str(www), server.conf, 1, 4096, 80, 0.0,
                                    stat_interval=3600.0)
        with launch.CoreWorkers(epserver.serve_core, [0], sargs, "epserver") as workers:
            wait_ready(workers, [])
            pids = {"nic_server": server.nic.proc.pid, "nic_client": client.nic.proc.pid,
                    "epserver_core": workers.procs[0].pid}
            before = {k: launch.process_cpu_seconds(p) for k, p in pids.items()}
            t0 = time.monotonic()
            time.sleep(seconds)
            span = time.monotonic() - t0
            used = {k: launch.process_cpu_seconds(p) - before[k] for k, p in pids.items()}
    pct = {k: round(100 * v / span, 2) for k, v in used.items()}
    pct["server_host"] = round(pct["nic_server"] + pct["epserver_core"], 2)
    return pct


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", default="1000,20000,100000")
    ap.add_argument("--seconds", type=float, default=10.0, help="idle CPU measuring span")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)   # the per-count child process
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(open_idle(args.one)))
        return 0
    runs = []
    for n in (int(c) for c in args.counts.split(",")):
        proc = subprocess.run([sys.executable, __file__, "--one", str(n)], capture_output=True,
                              text=True, check=True)
        run = json.loads(proc.stdout)
        runs.append(run)
        print(f"{n:7d} idle connections: {run['bytes_per_connection']:7.0f} B each", flush=True)
    cpu = idle_cpu(args.seconds)
    print(f"idle CPU: {cpu}", flush=True)
    from p4mtcp.control.tcp import ACCELERATED
    result = {"benchmark": "resident memory per idle established connection, one TcpStack; "
                           "CPU of an idle host with an idle epserver",
              "target_bytes_per_connection": TARGET_BYTES, "compiled_engine": ACCELERATED,
              "machine": machine(), "runs": runs,
              "target_idle_cpu_percent": TARGET_IDLE_CPU, "idle_cpu_percent": cpu}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "idle.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS / 'idle.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

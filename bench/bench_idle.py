"""Memory of idle established connections in one engine (one core's TcpStack).

For each count N (default 1,000 / 20,000 / 100,000), a fresh process opens N connections to one
listening TcpStack and accepts them all, then measures how much its resident set grew. The peer
is stateless (it answers each SYN-ACK with the ACK that completes the handshake, built from the
SYN-ACK alone), so the growth is the engine's: Connection objects, their buffers and timers, the
stack's tables, plus the accepted list the application keeps (8 bytes a connection). Config:
TcpConfig defaults (mTCP's 8 KiB buffers, 30 s idle timeout: a timer per connection), a Linux
client's SYN options (MSS, SACK, timestamps, window scale). Results go to bench/results/idle.json.

    python bench/bench_idle.py [--counts 1000,20000,100000]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import RESULTS, machine  # noqa: E402

SERVER, PORT = 0x0A000001, 80
BATCH = 500
TARGET_BYTES = 2048          # issue 9: <= 2 KB per idle established connection in the stack


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", default="1000,20000,100000")
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
    from p4mtcp.control.tcp import ACCELERATED
    result = {"benchmark": "resident memory per idle established connection, one TcpStack",
              "target_bytes_per_connection": TARGET_BYTES, "compiled_engine": ACCELERATED,
              "machine": machine(), "runs": runs}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "idle.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS / 'idle.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

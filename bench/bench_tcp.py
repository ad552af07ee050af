"""Benchmark of the sans-IO TCP engine: two engines back to back in one process (no NIC).

Reports bulk-transfer MB/s and segments/s, and short connections per second (connect, 64-byte
request, 64-byte reply, close), for the pure-Python engine and, when a current compiled build
exists (``p4mtcp accel build``), for the compiled one in the same run, each
in its own process, with the speed-ups. Writes bench/results/tcp.json and a cProfile top-25 of
smaller bulk and short-connection runs (the engine this process loaded: pure Python unless
P4MTCP_ACCEL=1) to bench/results/tcp_profile.txt.

    python bench/bench_tcp.py [--mb 50] [--conns 5000]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import subprocess
import sys
import time
from pathlib import Path

from p4mtcp import accel
from p4mtcp.control.tcp import ACCELERATED, TcpConfig, TcpStack

A, B = 0x0A000001, 0x0A000002
RESULTS = Path(__file__).resolve().parent / "results"


def _pump(a: TcpStack, b: TcpStack, now: float) -> int:
    """Move segments both ways until quiet; return how many crossed."""
    moved = 0
    for _ in range(100_000):
        n = 0
        for src, dst in ((a, b), (b, a)):
            out = src.poll(now)
            n += len(out)
            recv = dst.receive
            for s_ip, d_ip, seg in out:
                recv(s_ip, d_ip, seg, now)
        if not n:
            return moved
        moved += n
    raise RuntimeError("engines did not settle")


def bulk(mb: int, cfg: TcpConfig) -> dict:
    a = TcpStack(cfg, isn_secret=b"bench-sender-key")
    b = TcpStack(cfg, isn_secret=b"bench-recver-key")
    lst = b.listen(B, 5001, 8)
    c = a.connect(A, 40000, B, 5001, 0.0)
    now = 0.0
    _pump(a, b, now)
    s = lst.accept()
    total = mb << 20
    chunk = memoryview(os.urandom(1 << 20))
    sent = got = 0
    segs0 = a.stats.segs_out + b.stats.segs_out
    t0 = time.perf_counter()
    while got < total:
        while sent < total:
            n = c.send(chunk[: min(len(chunk), total - sent)])
            if not n:
                break
            sent += n
        now += 0.0005
        _pump(a, b, now)
        while True:
            data = s.recv(1 << 20)
            if not data:
                break
            got += len(data)
    dt = time.perf_counter() - t0
    segs = a.stats.segs_out + b.stats.segs_out - segs0
    return {"bytes": total, "seconds": round(dt, 4), "MB_per_s": round(total / dt / 1e6, 2),
            "segments": segs, "segments_per_s": round(segs / dt),
            "data_segments": a.stats.segs_out, "retransmits": a.stats.retransmits}


def short_connections(count: int, cfg: TcpConfig) -> dict:
    a = TcpStack(cfg, isn_secret=b"bench-client-key")
    b = TcpStack(cfg, isn_secret=b"bench-server-key")
    lst = b.listen(B, 80, 1024)
    req = b"q" * 64
    rep = b"r" * 64
    now = 0.0
    segs0 = 0
    t0 = time.perf_counter()
    for i in range(count):
        now += 0.0001
        c = a.connect(A, 1024 + i % 60000, B, 80, now)
        _pump(a, b, now)
        s = lst.accept()
        c.send(req)
        _pump(a, b, now)
        assert s.recv(100) == req
        s.send(rep)
        _pump(a, b, now)
        assert c.recv(100) == rep
        c.close()
        _pump(a, b, now)
        s.close()
        _pump(a, b, now)
        a.events()
        b.events()
    dt = time.perf_counter() - t0
    assert a.connections == 0 and b.connections == 0, (a.connections, b.connections)
    segs = a.stats.segs_out + b.stats.segs_out - segs0
    return {"connections": count, "seconds": round(dt, 4),
            "connections_per_s": round(count / dt), "segments_per_connection": round(segs / count, 2)}


BULK_CFG = TcpConfig(rcvbuf=256 << 10, sndbuf=256 << 10, idle_timeout=0)
SHORT_CFG = TcpConfig(idle_timeout=0, nodelay=True)


def measure(mb: int, conns: int) -> dict:
    """The three measurements with whichever engine this process loaded."""
    return {
        "compiled": ACCELERATED,
        "bulk_default_checksum": bulk(mb, BULK_CFG),
        "bulk_offload_checksum": bulk(mb, TcpConfig(rcvbuf=256 << 10, sndbuf=256 << 10,
                                                    idle_timeout=0, offload_checksum=True)),
        "short_connections": short_connections(conns, SHORT_CFG),
    }


def in_child(mb: int, conns: int, compiled: bool) -> dict:
    env = dict(os.environ, **{accel.ENV_ENABLE: "1" if compiled else "0"})
    proc = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", __file__, "--mb",
                           str(mb), "--conns", str(conns), "--measure-only"], env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=50, help="bulk transfer size in MiB")
    ap.add_argument("--conns", type=int, default=5000, help="short connections to run")
    ap.add_argument("--measure-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.measure_only:
        print(json.dumps(measure(args.mb, args.conns)))
        return 0
    usable, why = accel.check(accel.build_dir())
    results: dict = {"python": platform.python_version(), "machine": platform.machine(),
                     "pure_python": in_child(args.mb, args.conns, False)}
    if usable:
        comp = results["compiled"] = in_child(args.mb, args.conns, True)
        pure = results["pure_python"]
        results["compiled_speedup"] = {
            "bulk_default_checksum": round(comp["bulk_default_checksum"]["MB_per_s"]
                                           / pure["bulk_default_checksum"]["MB_per_s"], 2),
            "bulk_offload_checksum": round(comp["bulk_offload_checksum"]["MB_per_s"]
                                           / pure["bulk_offload_checksum"]["MB_per_s"], 2),
            "short_connections": round(comp["short_connections"]["connections_per_s"]
                                       / pure["short_connections"]["connections_per_s"], 2)}
    else:
        results["compiled"] = f"not measured: {why}"
    bulk_cfg, short_cfg = BULK_CFG, SHORT_CFG
    prof = cProfile.Profile()
    prof.enable()
    bulk(max(1, args.mb // 5), bulk_cfg)
    short_connections(max(100, args.conns // 5), short_cfg)
    prof.disable()
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(25)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "tcp.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "tcp_profile.txt").write_text(text.getvalue())
    json.dump(results, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

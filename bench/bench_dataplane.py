"""Packets per second through the embedded pipeline (Device.process), both directions.

  receive:  network port -> core port, IPv4 and TCP checksums verified, flow steered by RSS
  transmit: core port -> network port, routed, MACs rewritten, both checksums computed

for 64-byte and 1514-byte frames (a 1500-byte IPv4 datagram), over 1024 flows; then the whole
NIC (UNIX links, data-plane thread, pipeline) network -> cores. Results go to
bench/results/dataplane.json, a cProfile summary of each case to bench/results/dataplane_profile.txt.

    python bench/bench_dataplane.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import random
import sys
import time
from pathlib import Path

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from p4mtcp.dataplane.device import Device
from p4mtcp.p4info import P4Schema
from p4mtcp.p4src import P4INFO

RESULTS = Path(__file__).resolve().parent / "results"
BMV2_KPPS = 80.0  # simple_switch built optimised (DESIGN.md section 10)
NET, CORE0, CORES, FLOWS = 1, 16, 4, 1024
LOCAL, PEER = "10.0.0.1", "10.0.0.2"


def ip4(a: str) -> int:
    return int.from_bytes(bytes(map(int, a.split("."))), "big")


def make_device() -> Device:
    dev = Device()
    schema = P4Schema.from_file(P4INFO)
    dev.set_pipeline(schema.p4info, b"")
    tables = dev.pipeline.tables

    def add(t, key, a, *params):
        tables[f"NicIngress.{t}"].insert(key, 0, schema.action(f"NicIngress.{a}"), params)
    add("port_role", (NET,), "set_network_port")
    for c in range(CORES):
        add("port_role", (CORE0 + c,), "set_core_port", c)
    add("local_ipv4", (ip4(LOCAL),), "set_local")
    for b in range(128):
        add("reta", (b,), "steer_to_core", CORE0 + b % CORES)
    add("ipv4_lpm", ((ip4("10.0.0.0"), 24),), "set_next_hop", 0, NET)
    add("neighbor", (ip4(PEER),), "set_dst_mac", 0x020000000002)
    add("port_mac", (NET,), "set_src_mac", 0x020000000001)
    return dev


def frames(direction: str, frame_len: int) -> list[tuple[int, bytes]]:
    rng = random.Random(1)
    out = []
    for i in range(FLOWS):
        sport = rng.randrange(1024, 65536)
        if direction == "receive":
            pkt = (Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:02")
                   / IP(src=PEER, dst=LOCAL) / TCP(sport=sport, dport=80, flags="A"))
            port = NET
        else:
            pkt = (Ether(dst="00:00:00:00:00:00", src="00:00:00:00:00:00")
                   / IP(src=LOCAL, dst=PEER, chksum=0) / TCP(sport=80, dport=sport, flags="A", chksum=0))
            port = CORE0 + i % CORES
        pkt = pkt / Raw(b"\xa5" * (frame_len - len(pkt)))
        data = bytes(pkt)
        assert len(data) == frame_len
        out.append((port, data))
    return out


def run(dev: Device, batch: list[tuple[int, bytes]], seconds: float) -> tuple[int, float, float]:
    """(packets, elapsed, best rate over one pass of the batch): the CPUs may be shared, and the
    best pass is the closest to what the pipeline does when it has a core to itself."""
    process = dev.process
    n = 0
    best = 0.0
    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        for port, frame in batch:
            if not process(port, frame):
                raise AssertionError("frame dropped: the benchmark set-up is wrong")
        best = max(best, len(batch) / (time.perf_counter() - t))
        n += len(batch)
    return n, time.perf_counter() - start, best


def run_links(seconds: float, frame_len: int) -> dict:
    """Network -> core through the whole NIC: UNIX links, the data-plane thread, the pipeline.
    The sender and receiver share the process (and the GIL) with the NIC, so this is a floor."""
    import tempfile

    from p4mtcp.dataplane.nic import Nic
    from p4mtcp.link import open_port

    with tempfile.TemporaryDirectory() as d:
        dev = make_device()
        nic = Nic({NET: f"unix:{d}/wire", **{CORE0 + c: f"unix:{d}/c{c}" for c in range(CORES)}},
                  grpc_address=None, device=dev).start()
        wire = open_port(f"unix-host:{d}/wire")
        cores = [open_port(f"unix-host:{d}/c{c}") for c in range(CORES)]
        batch = [f for _, f in frames("receive", frame_len)][:256]
        sent = received = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            for f in batch:
                sent += wire.send(f)
            deadline = time.perf_counter() + 1.0
            while received < sent and time.perf_counter() < deadline:
                got = sum(len(c.recv_batch()) for c in cores)
                received += got
                if not got:
                    time.sleep(0.0002)
        elapsed = time.perf_counter() - start
        for p in (wire, *cores):
            p.close()
        nic.stop()
    kpps = received / elapsed / 1000
    return {"direction": "receive via UNIX links (whole NIC)", "frame_bytes": frame_len,
            "packets": received, "sent": sent, "seconds": round(elapsed, 3), "kpps": round(kpps, 1),
            "us_per_packet": round(1e6 * elapsed / max(received, 1), 2),
            "mbit_per_s": round(kpps * 1000 * frame_len * 8 / 1e6, 1),
            "vs_bmv2_80kpps": round(kpps / BMV2_KPPS, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="per case (default %(default)s)")
    args = ap.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    dev = make_device()
    cases = []
    profile_text = io.StringIO()
    for direction in ("receive", "transmit"):
        for frame_len in (64, 1514):
            batch = frames(direction, frame_len)
            run(dev, batch, 0.2)  # warm-up
            n, elapsed, best = run(dev, batch, args.seconds)
            kpps = n / elapsed / 1000
            case = {"direction": direction, "frame_bytes": frame_len, "packets": n,
                    "seconds": round(elapsed, 3), "kpps": round(kpps, 1),
                    "kpps_best_pass": round(best / 1000, 1),
                    "us_per_packet": round(1e6 * elapsed / n, 2),
                    "mbit_per_s": round(kpps * 1000 * frame_len * 8 / 1e6, 1),
                    "vs_bmv2_80kpps": round(kpps / BMV2_KPPS, 2)}
            cases.append(case)
            print(f"{direction:8} {frame_len:5} B: {kpps:7.1f} kpps (best pass {best / 1000:6.1f})"
                  f"  {case['us_per_packet']:6.2f} us/pkt"
                  f"  {case['mbit_per_s']:8.1f} Mbit/s  = {case['vs_bmv2_80kpps']:.2f} x BMv2 (~80 kpps)")
            prof = cProfile.Profile()
            prof.enable()
            run(dev, batch, min(args.seconds, 1.0))
            prof.disable()
            profile_text.write(f"=== {direction}, {frame_len}-byte frames ===\n")
            stats = pstats.Stats(prof, stream=profile_text)
            stats.sort_stats("tottime").print_stats(15)
    for frame_len in (64, 1514):
        case = run_links(args.seconds, frame_len)
        cases.append(case)
        print(f"links    {frame_len:5} B: {case['kpps']:7.1f} kpps  {case['us_per_packet']:6.2f} us/pkt"
              f"  {case['mbit_per_s']:8.1f} Mbit/s  = {case['vs_bmv2_80kpps']:.2f} x BMv2 (~80 kpps)"
              f"  [{case['sent'] - case['packets']} lost]")
    result = {"benchmark": "dataplane", "python": sys.version.split()[0],
              "cpus": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
              "machine": platform.machine(), "processor": platform.processor() or platform.machine(),
              "bmv2_reference_kpps": BMV2_KPPS, "cases": cases}
    (RESULTS / "dataplane.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "dataplane_profile.txt").write_text(profile_text.getvalue())
    print(f"load average {result['load_average_1min']} on {result['cpus']} CPUs "
          "(other processes share the CPUs: compare runs at similar load)")
    print(f"wrote {RESULTS / 'dataplane.json'} and {RESULTS / 'dataplane_profile.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

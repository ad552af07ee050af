"""Packets per second through the embedded pipeline and through the NIC process, pure Python
and compiled (`p4mtcp accel build`, P4MTCP_ACCEL=1) in the same run.

  pipeline alone (in a child process per build), for 64-byte and 1514-byte frames over 1024
  flows, one frame at a time (Device.process: the program's mirror) and in the NIC's batches
  (Device.process_batch: the flow cache when the compiled build has it), and 64-byte frames of
  30 000 flows in turn (more than the cache holds: every frame a miss, as in a flood):
    receive:  network port -> core port, IPv4 and TCP checksums verified, flow steered by RSS
    transmit: core port -> network port, routed, MACs rewritten, both checksums computed
  whole NIC in one process (the same children): a UNIX link in, shared-memory rings out
  NIC process on AF_PACKET veths (root; bench/veth_nic.py): `p4mtcp nic` pure Python and
    compiled, and BMv2 `simple_switch_grpc` when it and p4c-bm2-ss are on PATH, on the same
    veths, same program, same entries, in the same run: lossless kpps of 64-byte frames,
    network->core and core->network, and the NIC's CPU time per frame

Results: bench/results/dataplane.json; cProfile of the pure-Python pipeline cases in
dataplane_profile.txt; a py-spy profile of the NIC processes (when py-spy is installed) in
dataplane_nic_profile.txt.

    python bench/bench_dataplane.py [--seconds 2] [--no-veths]
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
import subprocess
import sys
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from p4mtcp import accel
from p4mtcp.dataplane.device import Device
from p4mtcp.dataplane.nic import FLUSH_EVERY
from p4mtcp.p4info import P4Schema
from p4mtcp.p4src import P4INFO

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))       # namespace helpers
RESULTS = HERE / "results"
PROFILE_SECONDS = 4.0
IDLE_SECONDS = 2.0
NET, CORE0, CORES, FLOWS = 1, 16, 4, 1024
CHURN_FLOWS = 30000   # more flows than the flow cache holds: each frame a miss, as in a flood
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


def new_flows(n: int) -> list[tuple[int, bytes]]:
    """n receive frames of n different flows (source address and port vary, checksums valid):
    a flood of new flows, each frame its flow's first in a pass."""
    from test_dataplane_pipeline import with_flow

    template = frames("receive", 64)[0][1]
    return [(NET, with_flow(template, 0x0B000000 + i, 1024 + i % 60000)) for i in range(n)]


def run(dev: Device, batch: list[tuple[int, bytes]], seconds: float,
        batched: bool = False) -> tuple[int, float, float]:
    """(packets, elapsed, best rate over one pass of the batch): the CPUs may be shared, and the
    best pass is the closest to what the pipeline does when it has a core to itself.
    `batched`: Device.process_batch over FLUSH_EVERY frames of one port at a time, as the NIC
    process calls it (the flow cache's path when the compiled build loaded it); else
    Device.process, one frame at a time through the program's mirror."""
    if batched:
        groups = [(port, [f for p, f in batch[i:i + FLUSH_EVERY] if p == port])
                  for i in range(0, len(batch), FLUSH_EVERY) for port in
                  dict.fromkeys(p for p, _ in batch[i:i + FLUSH_EVERY])]
    n = 0
    best = 0.0
    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        if batched:
            got = 0
            for port, frames_in in groups:
                out: dict[int, list[bytes]] = {}
                dev.process_batch(port, frames_in, out, [])
                got += sum(map(len, out.values()))
            if got != len(batch):
                raise AssertionError("frames dropped: the benchmark set-up is wrong")
        else:
            for port, frame in batch:
                if not dev.process(port, frame):
                    raise AssertionError("frame dropped: the benchmark set-up is wrong")
        best = max(best, len(batch) / (time.perf_counter() - t))
        n += len(batch)
    return n, time.perf_counter() - start, best


def run_links(seconds: float, frame_len: int) -> dict:
    """Network -> core through the whole NIC in this process: a UNIX link from the "wire",
    shared-memory rings to the cores (the default core link), the data-plane thread, the
    pipeline. The sender and receivers share the process (and the GIL) with the NIC."""
    import tempfile

    from p4mtcp.dataplane.nic import Nic
    from p4mtcp.link import open_port

    with tempfile.TemporaryDirectory() as d:
        dev = make_device()
        nic = Nic({NET: f"unix:{d}/wire", **{CORE0 + c: f"shm:{d}/c{c}" for c in range(CORES)}},
                  grpc_address=None, device=dev).start()
        wire = open_port(f"unix-host:{d}/wire")
        cores = [open_port(f"shm-host:{d}/c{c}", connect_timeout=5) for c in range(CORES)]
        batch = [f for _, f in frames("receive", frame_len)][:256]
        sent = received = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            sent += wire.send_batch(batch[:64]) + wire.send_batch(batch[64:128])
            deadline = time.perf_counter() + 1.0
            while received < sent and time.perf_counter() < deadline:
                got = sum(len(c.recv_batch()) for c in cores)
                received += got
                if not got:
                    time.sleep(0.0002)
        elapsed = time.perf_counter() - start
        nic.stop()
        for p in (wire, *cores):
            p.close()
    kpps = received / elapsed / 1000
    return {"direction": "receive via a UNIX link and shm rings (whole NIC, one process)",
            "frame_bytes": frame_len, "packets": received, "sent": sent,
            "seconds": round(elapsed, 3), "kpps": round(kpps, 1),
            "us_per_packet": round(1e6 * elapsed / max(received, 1), 2),
            "mbit_per_s": round(kpps * 1000 * frame_len * 8 / 1e6, 1)}


@contextmanager
def environment(env: dict[str, str]):
    """os.environ with `env` applied, for the processes started meanwhile; restored after."""
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


PURE, COMPILED = {accel.ENV_ENABLE: "0"}, {accel.ENV_ENABLE: "1"}


def run_veths(pipeline_us: dict[str, dict[str, float]], compiled: bool,
              only: set[str] | None = None) -> dict:
    """The NIC process on AF_PACKET veths: `p4mtcp nic` (pure Python, and compiled when a build
    is current), then BMv2 when installed, same veths, program and entries; ratios between them
    and against the pipeline alone of the same build (same run)."""
    import tempfile

    from veth_nic import DIRECTIONS, PLAN, Tester, lossless_rate, veth_ports

    from p4mtcp.apps.launch import process_cpu_seconds
    from p4mtcp.bmv2 import launcher
    from p4mtcp.link import host_side
    from p4mtcp.bmv2.controller import Controller
    from p4mtcp.bmv2.frametests import program

    # (name, switch kind, first rate tried, environment, core link or None for the veth): the
    # embedded NIC with PACKET_MMAP rings, pure Python and compiled; the same with plain
    # per-frame socket calls (its old path); the same with its core port a core process's link
    # (shared-memory rings, the default, and UNIX-socket messages, the old default); BMv2
    targets = [("embedded", "embedded", 20.0, PURE, None)]
    if compiled:
        targets += [("embedded_compiled", "embedded", 40.0, COMPILED, None),
                    ("embedded_compiled_no_flow_cache", "embedded", 40.0, COMPILED, None)]
    targets += [("embedded_plain_socket", "embedded", 20.0,
                 {**PURE, "P4MTCP_PACKET_MMAP": "0"}, None),
                ("embedded_shm_core_link", "embedded", 20.0, PURE, "shm"),
                ("embedded_unix_core_link", "embedded", 20.0, PURE, "unix")]
    if launcher.have(launcher.SIMPLE_SWITCH_GRPC) and launcher.have(launcher.P4C_BM2_SS):
        targets.append(("bmv2", "bmv2", 2.0, PURE, None))
    if only:
        targets = [t for t in targets if t[0] in only]
    out: dict = {"targets": {}, "tester_compiled": compiled}
    profiles = []
    with tempfile.TemporaryDirectory() as d, veth_ports() as (ports, ends):
        # the tester runs compiled when it can, for every target alike: it must outrun them
        with environment(COMPILED if compiled else PURE):
            tester = Tester(ends)
        try:
            for name, kind, start_kpps, env, link in targets:
                grpc = f"127.0.0.1:{launcher.free_port()}"
                core_spec = f"{link}:{d}/{name}" if link else None
                nic_ports = {**ports, PLAN.core_ports[0]: core_spec} if core_spec else ports
                if kind == "bmv2":  # no --log-file: BMv2 logs nothing per frame
                    config = launcher.compile_program(Path(d) / "build").json.read_bytes()
                    argv = launcher.bmv2_argv(nic_ports, grpc)
                else:
                    config, argv = b"", launcher.embedded_argv(
                        nic_ports, grpc, flow_cache=not name.endswith("no_flow_cache"))
                with environment(env):
                    sw = launcher.SwitchProcess(argv, grpc, name, Path(d) / f"{name}.log").start()
                with sw, Controller(grpc, P4INFO) as ctrl:
                    ctrl.set_pipeline(config)
                    program(ctrl, PLAN)
                    tester.use_core(host_side(core_spec) if core_spec else None)
                    cpu = partial(process_cpu_seconds, sw.proc.pid)
                    before = cpu()
                    time.sleep(IDLE_SECONDS)
                    idle = 100 * (cpu() - before) / IDLE_SECONDS
                    print(f"{name:22} idle: {idle:.1f} % of a CPU")
                    rows = [dict(lossless_rate(tester, direction, start_kpps, cpu),
                                 idle_cpu_percent=round(idle, 1)) for direction in DIRECTIONS]
                    for row in rows:
                        print(f"{name:22} {row['direction']:13} 64 B on veths: "
                              f"{row['lossless_kpps']:7.1f} kpps lossless, NIC CPU "
                              f"{row['nic_cpu_us_per_frame']} us/frame")
                    out["targets"][name] = rows
                    if kind == "embedded" and not link and name in ("embedded",
                                                                      "embedded_compiled"):
                        profiles.append(profile_nic(tester, sw.proc.pid, rows[0], cpu, name,
                                                    native=env is COMPILED))
                if env is COMPILED:  # a stale NIC build runs pure Python: say so beside the row
                    log = (Path(d) / f"{name}.log").read_text(errors="replace")
                    stale = [ln for ln in log.splitlines() if "RuntimeWarning" in ln and
                             ("group nic " in ln or "group hashing " in ln or "everything" in ln)]
                    if stale:
                        out[f"{name}_not_compiled"] = stale[0]
        finally:
            tester.close()
    if all(profiles):
        (RESULTS / "dataplane_nic_profile.txt").write_text("\n\n".join(profiles))
        out["profile"] = "dataplane_nic_profile.txt"
    # against the pipeline alone of the same build: frame by frame through the program's
    # mirror, and in the NIC's batches (the flow cache's path, when the build has it)
    for key, batched in (("cpu_per_frame_vs_pipeline_alone", False),
                         ("cpu_per_frame_vs_pipeline_alone_batched", True)):
        out[key] = {}
        for name, build in (("embedded", "pure_python"), ("embedded_compiled", "compiled"),
                            ("embedded_compiled_no_flow_cache", "compiled")):
            if batched and name.endswith("no_flow_cache"):
                continue  # the batches of the compiled build run through the flow cache
            if name in out["targets"] and build in pipeline_us:
                alone = dict(zip(DIRECTIONS, (pipeline_us[build][("receive", batched)],
                                              pipeline_us[build][("transmit", batched)])))
                out[key][name] = {
                    r["direction"]: round(r["nic_cpu_us_per_frame"] / alone[r["direction"]], 2)
                    for r in out["targets"][name] if r["nic_cpu_us_per_frame"]}
    ratios = {"embedded_compiled_vs_embedded": ("embedded_compiled", "embedded"),
              "flow_cache_vs_none_compiled": ("embedded_compiled",
                                              "embedded_compiled_no_flow_cache"),
              "embedded_compiled_vs_bmv2": ("embedded_compiled", "bmv2"),
              "embedded_vs_bmv2": ("embedded", "bmv2"),
              "embedded_vs_embedded_plain_socket": ("embedded", "embedded_plain_socket"),
              "shm_vs_unix_core_link": ("embedded_shm_core_link", "embedded_unix_core_link")}
    for key, (ours, peer) in ratios.items():
        if ours in out["targets"] and peer in out["targets"]:
            mine = {r["direction"]: r["lossless_kpps"] for r in out["targets"][ours]}
            out[f"{key}_lossless"] = {r["direction"]: round(mine[r["direction"]]
                                                            / r["lossless_kpps"], 2)
                                      for r in out["targets"][peer] if r["lossless_kpps"]}
    print(f"NIC CPU per frame / pipeline alone: {out['cpu_per_frame_vs_pipeline_alone']}")
    print("NIC CPU per frame / pipeline alone in batches: "
          f"{out['cpu_per_frame_vs_pipeline_alone_batched']}")
    for key in ratios:
        print(f"{key}_lossless: {out.get(f'{key}_lossless', 'not measured')}")
    return out


def profile_nic(tester, pid: int, row: dict, cpu, name: str, native: bool = False) -> str | None:
    """py-spy samples of the NIC process while the tester offers the lossless rate found,
    summarised (with `native`, C frames too: a compiled module's functions are C functions);
    None when py-spy is not installed."""
    import shutil
    import tempfile

    spy = shutil.which("py-spy")
    if spy is None or not row["lossless_kpps"]:
        return None
    with tempfile.NamedTemporaryFile(suffix=".txt") as raw:
        # native stacks need py-spy to stop the process for each sample: fewer samples then
        how = ["--native", "-r", "200"] if native else ["--nonblocking", "-r", "500"]
        proc = subprocess.Popen([spy, "record", "-p", str(pid), "-d", str(int(PROFILE_SECONDS)),
                                 "-F", "-f", "raw", "-o", raw.name, *how],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.monotonic() + PROFILE_SECONDS
        while time.monotonic() < end:
            tester.offer(row["direction"], row["lossless_kpps"], cpu)
        proc.wait(30)
        return summarize_stacks(Path(raw.name).read_text(),
                                f"=== py-spy of the NIC process ({name}), {row['direction']}, "
                                f"64 B frames offered at {row['lossless_kpps']} kpps"
                                + (", native frames included ===" if native else " ==="),
                                busy_thread="Nic._run" if native else None)


IDLE_LEAVES = ("epoll_wait", "PyThread_acquire_lock_timed", "pthread_cond_timedwait", "0x")
"""Where a thread sleeps: a native stack (py-spy --native counts idle threads too) ending in one
of these is a wait, not work (an unnamed libc address there is its futex wait)."""


def summarize_stacks(raw: str, title: str, top: int = 30, busy_thread: str | None = None) -> str:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks; with
    `busy_thread`, only the stacks through that function that are not waiting (IDLE_LEAVES)."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        if busy_thread is not None and (frames[-1].startswith(IDLE_LEAVES) or
                                        not any(f.startswith(busy_thread) for f in frames)):
            continue
        total += n
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for f in set(frames):
            incl[f] = incl.get(f, 0) + n
    whose = (f"the {busy_thread} thread while busy" if busy_thread else
             "all threads of the process, idle waits excluded")
    lines = [title, f"{total} samples ({whose})", ""]
    for name, table in (("self", own), ("inclusive", incl)):
        lines.append(f"--- {name} ---")
        for f, n in sorted(table.items(), key=lambda kv: -kv[1])[:top]:
            lines.append(f"{100 * n / max(total, 1):6.1f}%  {f}")
        lines.append("")
    return "\n".join(lines)


def measure_pipeline(seconds: float) -> dict:
    """The pipeline alone and the whole NIC in this process, with whichever build it loaded."""
    dev = make_device()
    cases = []
    profile_text = io.StringIO()
    plan = [(d, n, False, FLOWS) for d in ("receive", "transmit") for n in (64, 1514)]
    plan += [(d, 64, True, FLOWS) for d in ("receive", "transmit")]
    plan += [("receive", 64, batched, CHURN_FLOWS) for batched in (False, True)]
    for direction, frame_len, batched, flows in plan:
        batch = frames(direction, frame_len) if flows == FLOWS else new_flows(flows)
        run(dev, batch, 0.2, batched)  # warm-up
        cpu = time.process_time()
        n, elapsed, best = run(dev, batch, seconds, batched)
        cpu = time.process_time() - cpu
        kpps = n / elapsed / 1000
        case = {"direction": direction, "frame_bytes": frame_len, "batched": batched,
                "flows": flows,
                "flow_cache": batched and dev.flow_cache_stats() is not None, "packets": n,
                "seconds": round(elapsed, 3), "kpps": round(kpps, 1),
                "kpps_best_pass": round(best / 1000, 1),
                "us_per_packet": round(1e6 * elapsed / n, 2),
                "cpu_us_per_packet": round(1e6 * cpu / n, 2),
                "us_per_packet_best_pass": round(1e6 / best, 2),
                "mbit_per_s": round(kpps * 1000 * frame_len * 8 / 1e6, 1)}
        cases.append(case)
        if batched or flows != FLOWS:
            continue
        prof = cProfile.Profile()
        prof.enable()
        run(dev, batch, min(seconds, 1.0))
        prof.disable()
        profile_text.write(f"=== {direction}, {frame_len}-byte frames ===\n")
        stats = pstats.Stats(prof, stream=profile_text)
        stats.sort_stats("tottime").print_stats(15)
    for frame_len in (64, 1514):
        cases.append(run_links(seconds, frame_len))
    from p4mtcp.dataplane import pipeline
    return {"compiled": accel.is_compiled(pipeline), "cases": cases,
            "profile": profile_text.getvalue()}


def in_child(seconds: float, env: dict[str, str]) -> dict:
    """measure_pipeline() in a fresh process under `env` (a process runs one build)."""
    proc = subprocess.run([sys.executable, __file__, "--seconds",
                           str(seconds), "--measure-pipeline"], env={**os.environ, **env},
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="per case (default %(default)s)")
    ap.add_argument("--no-veths", action="store_true",
                    help="skip the NIC process on veths (which needs root)")
    ap.add_argument("--targets", default="",
                    help="only these NIC targets on veths, comma-separated (default: all of "
                         "embedded, embedded_compiled, embedded_compiled_no_flow_cache, "
                         "embedded_plain_socket, "
                         "embedded_shm_core_link, embedded_unix_core_link, bmv2)")
    ap.add_argument("--measure-pipeline", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.measure_pipeline:
        print(json.dumps(measure_pipeline(args.seconds)))
        return 0
    RESULTS.mkdir(exist_ok=True)
    usable, refused = accel.usable_groups(accel.build_dir())
    compiled = {"hashing", "nic"} <= set(usable)
    builds = {"pure_python": in_child(args.seconds, PURE)}
    if compiled:
        builds["compiled"] = in_child(args.seconds, COMPILED)
    else:
        print(f"compiled NIC: not measured ({refused.get('nic') or refused.get('hashing') or refused.get('all')})")
    for build, res in builds.items():
        for c in res["cases"]:
            extra = (f"[{c['sent'] - c['packets']} lost]" if "sent" in c else
                     f"(best pass {c['kpps_best_pass']:6.1f})"
                     + (" batches" + (", flow cache" if c.get("flow_cache") else "")
                        if c.get("batched") else "")
                     + (f", {c['flows']} flows in turn" if c.get("flows") == CHURN_FLOWS else ""))
            print(f"{build:11} {c['direction'][:8]:8} {c['frame_bytes']:5} B: {c['kpps']:7.1f} kpps "
                  f"{c['us_per_packet']:6.2f} us/pkt {c['mbit_per_s']:8.1f} Mbit/s  {extra}")
    result = {"benchmark": "dataplane", "python": sys.version.split()[0],
              "cpus": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
              "machine": platform.machine(), "processor": platform.processor() or platform.machine(),
              "cases": builds["pure_python"]["cases"],
              "builds": {b: r["cases"] for b, r in builds.items()},
              "compiled_pipeline_loaded": {b: r["compiled"] for b, r in builds.items()}}
    if compiled:
        result["compiled_speedup_pipeline_alone"] = {
            f"{p['direction']}_{p['frame_bytes']}" + ("_batches" if p.get("batched") else "")
            + ("_new_flows" if p.get("flows") == CHURN_FLOWS else ""):
            round(p["us_per_packet_best_pass"] / c["us_per_packet_best_pass"], 2)
            for p, c in zip(builds["pure_python"]["cases"], builds["compiled"]["cases"])
            if "us_per_packet_best_pass" in p}
    if args.no_veths or os.geteuid() != 0:
        print("NIC process on veths: skipped (" + ("--no-veths" if args.no_veths else "needs root")
              + ")")
    else:
        pipeline_us = {b: {(c["direction"], c.get("batched")): c["us_per_packet_best_pass"]
                           for c in r["cases"] if c.get("frame_bytes") == 64
                           and c.get("flows") == FLOWS and "us_per_packet_best_pass" in c}
                       for b, r in builds.items()}
        result["nic_process"] = run_veths(pipeline_us, compiled,
                                          set(filter(None, args.targets.split(","))))
    result["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    (RESULTS / "dataplane.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "dataplane_profile.txt").write_text(builds["pure_python"]["profile"])
    print(f"load average {result['load_average_1min']} -> {result['load_average_1min_end']} on "
          f"{result['cpus']} CPUs (other processes share the CPUs: compare runs at similar load)")
    print(f"wrote {RESULTS / 'dataplane.json'} and the profiles beside it")
    return 0


if __name__ == "__main__":
    sys.exit(main())

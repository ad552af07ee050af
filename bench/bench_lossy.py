"""Throughput under random loss: the engine's TCP sender against the Linux kernel's, same link.

Root only. A veth pair into a fresh network namespace; the engine sits on the root end behind
the test driver (`tests/enginedriver.py`), which applies the impairment to every TCP frame in
both directions: loss p, and 90% of frames held 5 ms (netem's `loss p delay 5ms reorder 10%`,
for kernels without netem). Over that one link, with the same seeds:

- engine → kernel, once with NewReno and once with CUBIC: the engine sends N bytes to `nc -l`
  in the namespace;
- kernel → engine, once with `cubic` and once with `reno`, each set explicitly on the
  sending socket (TCP_CONGESTION; never the machine's default, which may be e.g. BBR): a
  Python socket in the namespace sends N bytes to the engine.

Each engine algorithm is compared with its like-for-like kernel peer (CUBIC with `cubic`,
NewReno/SACK with `reno`): the ratio of transfer times (engine / kernel, <= 1 means the engine
is as fast) and both sides' retransmission timeouts. Results, with the engine's and the
kernel's recovery counters, go to bench/results/lossy.json.

    sudo python bench/bench_lossy.py [--mbytes 5] [--loss 0.03,0.07] [--seeds 1,2,3]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from statistics import median
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))       # the driver and namespace helpers

from enginedriver import EngineDriver, Impairment, Sinks, StreamApp, ip_to_int  # noqa: E402
from netns import (kernel_counters, netns_unavailable_reason, veth_netns,  # noqa: E402
                   wait_for_listener)

from harness import RESULTS, machine  # noqa: E402
from p4mtcp.control.tcp import TcpConfig, TcpStack  # noqa: E402

CONFIG = TcpConfig(rcvbuf=512 << 10, sndbuf=512 << 10, idle_timeout=0)
ENGINE_CC = ("newreno", "cubic")
KERNEL_PEER = {"cubic": "cubic", "newreno": "reno"}     # like-for-like kernel algorithm
HOLD, HOLD_SHARE = 0.005, 0.9
KERNEL_KEYS = ("TcpRetransSegs", "TcpExtTCPSackRecovery", "TcpExtTCPTimeouts",
               "TcpExtTCPLostRetransmit", "TcpExtTCPDSACKUndo")


def engine_on(net: Any, loss: float, seed: int, config: TcpConfig = CONFIG
              ) -> tuple[TcpStack, EngineDriver]:
    """The engine on the namespace's veth, behind the bench's impairment (same seed, same
    frames lost and held back, whichever side sends)."""
    stack = TcpStack(config, isn_secret=b"bench-lossy-secret-00")
    imp = Impairment(loss=loss, reorder=HOLD_SHARE, reorder_delay=HOLD, seed=seed)
    return stack, EngineDriver(net.host_if, stack, net.engine_ip, impairment=imp)


def engine_sends(data: bytes, loss: float, seed: int, cc: str) -> dict[str, Any]:
    with veth_netns(1) as net:
        stack, driver = engine_on(net, loss, seed, replace(CONFIG, congestion=cc))
        with driver as drv, \
                net.popen(["sh", "-c", "nc -l -d 5002 | wc -c"], stdout=subprocess.PIPE) as nc:
            wait_for_listener(net.ns, 5002, timeout=20)
            start = time.monotonic()
            conn = stack.connect(ip_to_int(net.engine_ip), 40001, ip_to_int(net.ns_ip), 5002,
                                 start)
            app = StreamApp(conn, data, close_when_sent=True)

            def pump(now: float) -> None:
                stack.events()
                app.pump()

            drv.run(lambda: nc.poll() is not None, app=pump, timeout=600)
            seconds = time.monotonic() - start
            got = int(nc.stdout.read().decode().split()[0])
    if got != len(data):
        raise RuntimeError(f"the kernel received {got} of {len(data)} bytes")
    st = stack.stats
    return {"seconds": round(seconds, 3), "MB_per_s": round(len(data) / seconds / 1e6, 3),
            "fast_retransmits": st.fast_retransmits, "lost_retransmits": st.lost_retransmits,
            "timeouts": st.timeouts, "retransmits": st.retransmits,
            "loss_probes": st.loss_probes,
            "spurious_recoveries": st.spurious_recoveries}


# The kernel's sender, run in the namespace: its algorithm set on the socket (TCP_CONGESTION;
# root may pick any available one, where the namespace sysctl only takes the allowed ones).
_SENDER = """
import socket, sys
ip, port, cc, path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = socket.socket()
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())
s.settimeout(60)
s.connect((ip, port))
with open(path, "rb") as f:
    s.sendall(f.read())
s.shutdown(socket.SHUT_WR)
while s.recv(65536):
    pass
print(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\\0").decode())
"""


def kernel_sends(data: bytes, loss: float, seed: int, cc: str) -> dict[str, Any]:
    with veth_netns(1) as net:
        stack, driver = engine_on(net, loss, seed)
        pump = Sinks(stack, stack.listen(ip_to_int(net.engine_ip), 9000, 8))
        apps = pump.apps

        src = RESULTS / ".lossy_blob"
        src.write_bytes(data)
        try:
            with driver as drv, net.popen([sys.executable, "-c", _SENDER, net.engine_ip, "9000",
                                           cc, str(src)], stdout=subprocess.PIPE) as sender:
                start = time.monotonic()
                drv.run(lambda: bool(apps) and apps[0].closed, app=pump, timeout=600)
                seconds = time.monotonic() - start
                drv.run(lambda: sender.poll() is not None, app=pump, timeout=60)
                used = sender.stdout.read().decode().strip()
        finally:
            src.unlink()
        counters = kernel_counters(net.ns)
    if bytes(apps[0].incoming) != data:
        raise RuntimeError("the engine did not receive the kernel's bytes intact")
    return {"congestion_control": used.strip(), "seconds": round(seconds, 3),
            "MB_per_s": round(len(data) / seconds / 1e6, 3),
            **{k: counters.get(k, 0) for k in KERNEL_KEYS}}


def available(cc: str) -> bool:
    """Whether the kernel has `cc` (built in or loaded)."""
    with open("/proc/sys/net/ipv4/tcp_available_congestion_control") as f:
        return cc in f.read().split()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mbytes", type=float, default=5.0)
    p.add_argument("--loss", default="0.03,0.07", help="loss rates, comma separated")
    p.add_argument("--seeds", default="1,2,3", help="impairment seeds; medians are reported")
    args = p.parse_args(argv)
    reason = netns_unavailable_reason()
    if reason:
        print(f"bench_lossy: {reason}", file=sys.stderr)
        return 2
    data = random.Random(7).randbytes(int(args.mbytes * 1e6))
    peers = [cc for cc in KERNEL_PEER.values() if available(cc)]
    results = []
    for loss in (float(x) for x in args.loss.split(",")):
        for seed in (int(s) for s in args.seeds.split(",")):
            row: dict[str, Any] = {"loss": loss, "seed": seed}
            for cc in ENGINE_CC:
                row[f"engine_{cc}_to_kernel"] = engine_sends(data, loss, seed, cc)
            for cc in peers:
                row[f"kernel_{cc}_to_engine"] = kernel_sends(data, loss, seed, cc)
            results.append(row)
            print(json.dumps(row), flush=True)
    summary = []
    for loss in sorted({r["loss"] for r in results}):
        rows = [r for r in results if r["loss"] == loss]
        entry: dict[str, Any] = {"loss": loss}
        for key in [k for k in rows[0] if k.startswith(("engine_", "kernel_"))]:
            entry[f"{key}_MB_per_s"] = median(r[key]["MB_per_s"] for r in rows)
            entry[f"{key}_seconds"] = median(r[key]["seconds"] for r in rows)
            entry[f"{key}_timeouts"] = sum(r[key].get("timeouts", r[key].get(
                "TcpExtTCPTimeouts", 0)) for r in rows)
        for cc, peer in KERNEL_PEER.items():
            if f"kernel_{peer}_to_engine_seconds" in entry:
                entry[f"time_ratio_engine_{cc}_over_kernel_{peer}"] = round(
                    entry[f"engine_{cc}_to_kernel_seconds"]
                    / entry[f"kernel_{peer}_to_engine_seconds"], 3)
        summary.append(entry)
    out = {"benchmark": "bulk under random loss, engine sender vs kernel sender, one link",
           "bytes": len(data), "impairment": f"loss p, {HOLD_SHARE:.0%} of frames held "
           f"{HOLD * 1000:.0f} ms, both directions", "engine_config": asdict(CONFIG),
           "machine": machine(), "summary": summary, "runs": results}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lossy.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

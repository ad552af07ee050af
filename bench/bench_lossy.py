"""Throughput under random loss: the engine's TCP sender against the Linux kernel's, same link.

Root only. A veth pair into a fresh network namespace; the engine sits on the root end behind
the test driver (`tests/enginedriver.py`), which applies the impairment to every TCP frame in
both directions: loss p, and 90% of frames held 5 ms (netem's `loss p delay 5ms reorder 10%`,
for kernels without netem). Over that one link, with the same seeds:

- engine → kernel, once with NewReno and once with CUBIC: the engine sends N bytes to `nc -l`
  in the namespace;
- kernel → engine, once per congestion control the namespace lets us pick (`reno`, and the
  system default, e.g. `bbr` or `cubic`): `nc` sends N bytes to the engine.

Reno is the like-for-like peer of the engine's NewReno with SACK; a loss-agnostic default
such as BBR shows what a different algorithm buys on a randomly lossy link. Results, with the
engine's and the kernel's recovery counters, go to bench/results/lossy.json.

    sudo python bench/bench_lossy.py [--mbytes 5] [--loss 0.01,0.03] [--seeds 1,2]
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
from netns import (kernel_counters, netns_unavailable_reason, sysctl,  # noqa: E402
                   veth_netns, wait_for_listener)

from harness import RESULTS, machine  # noqa: E402
from p4mtcp.control.tcp import TcpConfig, TcpStack  # noqa: E402

CONFIG = TcpConfig(rcvbuf=512 << 10, sndbuf=512 << 10, idle_timeout=0)
ENGINE_CC = ("newreno", "cubic")
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


def kernel_sends(data: bytes, loss: float, seed: int, cc: str | None) -> dict[str, Any]:
    with veth_netns(1) as net:
        if cc is not None:
            sysctl("net.ipv4.tcp_congestion_control", cc, net.ns)
        used = net.run(["cat", "/proc/sys/net/ipv4/tcp_congestion_control"]).stdout.decode()
        stack, driver = engine_on(net, loss, seed)
        pump = Sinks(stack, stack.listen(ip_to_int(net.engine_ip), 9000, 8))
        apps = pump.apps

        src = RESULTS / ".lossy_blob"
        src.write_bytes(data)
        try:
            with driver as drv, open(src, "rb") as stdin, \
                    net.popen(["nc", "-N", "-w", "30", net.engine_ip, "9000"], stdin=stdin) as nc:
                start = time.monotonic()
                drv.run(lambda: nc.poll() is not None and bool(apps) and apps[0].closed,
                        app=pump, timeout=600)
                seconds = time.monotonic() - start
        finally:
            src.unlink()
        counters = kernel_counters(net.ns)
    if bytes(apps[0].incoming) != data:
        raise RuntimeError("the engine did not receive the kernel's bytes intact")
    return {"congestion_control": used.strip(), "seconds": round(seconds, 3),
            "MB_per_s": round(len(data) / seconds / 1e6, 3),
            **{k: counters.get(k, 0) for k in KERNEL_KEYS}}


def allowed(cc: str) -> bool:
    """Whether a fresh namespace lets us select `cc` (some kernels refuse all but a few)."""
    with veth_netns(1) as net:
        try:
            sysctl("net.ipv4.tcp_congestion_control", cc, net.ns)
            return True
        except Exception:                  # the kernel refused: EPERM, ENOENT, I/O error
            return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mbytes", type=float, default=5.0)
    p.add_argument("--loss", default="0.01,0.03", help="loss rates, comma separated")
    p.add_argument("--seeds", default="1,2,3", help="impairment seeds; medians are reported")
    args = p.parse_args(argv)
    reason = netns_unavailable_reason()
    if reason:
        print(f"bench_lossy: {reason}", file=sys.stderr)
        return 2
    data = random.Random(7).randbytes(int(args.mbytes * 1e6))
    peers: list[str | None] = [None] + (["reno"] if allowed("reno") else [])
    results = []
    for loss in (float(x) for x in args.loss.split(",")):
        for seed in (int(s) for s in args.seeds.split(",")):
            row: dict[str, Any] = {"loss": loss, "seed": seed}
            for cc in ENGINE_CC:
                row[f"engine_{cc}_to_kernel"] = engine_sends(data, loss, seed, cc)
            for cc in peers:
                row[f"kernel_{cc or 'default'}_to_engine"] = kernel_sends(data, loss, seed, cc)
            results.append(row)
            print(json.dumps(row), flush=True)
    summary = []
    for loss in sorted({r["loss"] for r in results}):
        rows = [r for r in results if r["loss"] == loss]
        entry: dict[str, Any] = {"loss": loss}
        for key in [k for k in rows[0] if k.startswith(("engine_", "kernel_"))]:
            entry[f"{key}_MB_per_s"] = median(r[key]["MB_per_s"] for r in rows)
        if "kernel_reno_to_engine_MB_per_s" in entry:
            for cc in ENGINE_CC:
                entry[f"ratio_engine_{cc}_over_kernel_reno"] = round(
                    entry[f"engine_{cc}_to_kernel_MB_per_s"]
                    / entry["kernel_reno_to_engine_MB_per_s"], 3)
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

"""Makes cwnd.png: `p4mtcp perf client --trace` over a lossy link, drawn by `p4mtcp plot`.

Two hosts of the embedded fabric (each its own NIC process and agent, one core each); between
their NICs' network ports a relay loses 1% of the frames in each direction and delays the rest
by 5 ms (tests/test_e2e_kernel.py's ImpairedRelay). The client core sends 6 MB with NewReno to
a `perf server` core, tracing its connection; the picture is drawn from that trace.

    python docs/img/make_cwnd.py [--mbytes 6] [--loss 0.01]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tests"))

from test_e2e_kernel import ImpairedRelay  # noqa: E402
from p4mtcp.apps import launch, perf, plot  # noqa: E402
from p4mtcp.apps.fabric import Fabric, mac_for  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mbytes", type=int, default=6)
    ap.add_argument("--loss", type=float, default=0.01)
    a = ap.parse_args()
    trace = HERE / "cwnd.jsonl"
    with Fabric() as fab:
        s_ip, c_ip = "10.0.0.1", "10.0.0.2"
        server = fab.add_host("server", f"{s_ip}/24", 1, f"unix:{fab.dir}/s", {c_ip: mac_for(c_ip)})
        client = fab.add_host("client", f"{c_ip}/24", 1, f"unix:{fab.dir}/c", {s_ip: mac_for(s_ip)})
        fab.start(timeout=60, rcvbuf=512 * 1024, sndbuf=512 * 1024)
        with ImpairedRelay(f"unix-host:{fab.dir}/c", f"unix-host:{fab.dir}/s", seed=3,
                           loss=a.loss, delay=0.005, reorder=0.0) as relay:
            sargs = perf.PerfArgs("server", server.conf, 1, "0.0.0.0", 5001, None, 300, None,
                                  None, 1, False)
            cargs = perf.PerfArgs("client", client.conf, 1, s_ip, 5001, a.mbytes << 20, 0.0,
                                  None, None, 0, False, trace=str(trace))
            with launch.CoreWorkers(perf.perf_core, [0], sargs, name="perf-server") as srv:
                msgs: list[dict] = []
                while not any(m["kind"] == "ready" for m in msgs):
                    msgs += srv.poll(0.2)
                with launch.CoreWorkers(perf.perf_core, [0], cargs, name="perf-client") as cli:
                    if not cli.pump(lambda m: None, lambda: None, timeout=600):
                        raise RuntimeError("the transfer did not finish")
            print(f"relay dropped {relay.dropped}, forwarded {relay.forwarded} frames")
    plot.main([str(trace), "-o", str(HERE / "cwnd.png")])
    trace.unlink()


if __name__ == "__main__":
    main()

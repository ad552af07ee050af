"""`p4mtcp agent -f mtcp.conf [-N cores] [--duration S] [--quiet]`: a host's NIC agent, on its own.

mTCP programs its NIC (through DPDK) when it starts; p4mtcp programs its P4 NIC through
P4Runtime, and this command does it for programs started on their own — `p4mtcp epserver`,
`epwget` or `perf` next to a `p4mtcp nic`, a BMv2 `simple_switch_grpc` or a P4 NIC. It becomes
primary on the `p4runtime` address of mtcp.conf, pushes the pipeline, installs the port, address,
ARP, route and `reta` entries of mtcp.conf and of the arp.conf/route.conf beside it, learns
neighbours from ARP, serves the cores' flow_steer requests on `steer_socket`, re-installs
everything when the NIC restarts, and prints the NIC's per-port counters every second. `-N`
spreads `reta` over the first N cores only: the cores the programs will actually run.
(`p4mtcp demo` and `p4mtcp testbed` run their hosts' agents themselves.)
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading
import time

from p4mtcp.apps import stats
from p4mtcp.control.agent import AgentError, NicAgent, stop_control
from p4mtcp.control.config import ConfigError, HostConfig, load_host_beside
from p4mtcp.control.steering import serve_for


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="p4mtcp agent", description=__doc__.split("\n")[0])
    p.add_argument("-f", dest="conf", required=True, help="mtcp.conf (arp.conf, route.conf beside)")
    p.add_argument("-N", dest="num_cores", type=int,
                   help="cores to steer flows to (default: num_cores of mtcp.conf)")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds to wait for the NIC's P4Runtime server (default 30)")
    p.add_argument("--duration", type=float, default=0.0,
                   help="stop after this many seconds (default: run until Ctrl-C)")
    p.add_argument("--quiet", action="store_true", help="no per-second counters")
    args = p.parse_args(argv)
    if args.num_cores is not None and args.num_cores < 1:
        p.error(f"-N {args.num_cores}: need at least one core")
    return args


def host_config(conf: str, num_cores: int | None) -> HostConfig:
    """The host as mtcp.conf (and its neighbours) describe it, `-N` applied: ConfigError or
    ValueError naming the problem."""
    host = load_host_beside(conf)
    if num_cores is None or num_cores == host.mtcp.num_cores:
        return host
    if num_cores > host.mtcp.num_cores:
        raise ValueError(f"-N {num_cores}: {conf} has only num_cores = {host.mtcp.num_cores}")
    return dataclasses.replace(host, mtcp=dataclasses.replace(host.mtcp, num_cores=num_cores))


def run(host: HostConfig, timeout: float, duration: float, view: stats.Display | None,
        stop: threading.Event) -> NicAgent:
    """Program the NIC and keep it programmed until `stop` is set or `duration` s pass (<= 0:
    no limit); show the NIC's counters each second on `view`. The agent, stopped, for its stats."""
    agent = NicAgent(host).start(timeout)
    steering = None
    try:
        steering = serve_for(agent, host.mtcp)
        cfg = host.mtcp
        ports = {**{p: f"net{i}" for i, p in enumerate(cfg.network_ports)},
                 **{p: f"core{i}" for i, p in enumerate(cfg.core_ports)}}
        nic = stats.NicStats(ports, cfg.core_ports)
        end = time.monotonic() + duration if duration > 0 else float("inf")
        while True:
            if view is not None:
                nic.ingest(time.monotonic(), *stats.counter_sample(agent.nic_counters()))
                view.show(nic.lines() + [f"agent: {agent.stats}"])
            left = end - time.monotonic()
            if left <= 0 or stop.wait(min(1.0, left)):
                break
    finally:
        stop_control(steering, agent)
    return agent


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        host = host_config(args.conf, args.num_cores)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"agent: {exc}", file=sys.stderr)
        return 2
    view = None if args.quiet else stats.Display(f"p4mtcp agent: {host.mtcp.p4runtime}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())      # a clean stop, as on Ctrl-C
    try:
        agent = run(host, args.timeout, args.duration, view, stop)
    except KeyboardInterrupt:
        return 0
    except (AgentError, TimeoutError, OSError) as exc:
        print(f"agent: {host.mtcp.p4runtime}: {exc}", file=sys.stderr)
        return 1
    finally:
        if view is not None:
            view.close()
    print(f"agent: stopped; {agent.stats}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

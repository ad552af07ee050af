"""The main job: two p4mtcp hosts on one embedded fabric, an epserver and an epwget load.

    p4mtcp demo [-N server_cores] [--client-cores N] [-n requests] [-c concurrency]
                [--size bytes] [--duration seconds]

Host A (10.0.0.1) runs `epserver` on N cores, host B (10.0.0.2) runs `epwget` against it; each
host has its own embedded P4 NIC process, programmed over P4Runtime by its agent in this process,
and the two NICs' network ports are joined by a UNIX-socket link. No root, nothing but PyPI.
With `--nic bmv2` each NIC is BMv2 running the program compiled from p4src/, wired by veth pairs
(root, simple_switch_grpc and p4c-bm2-ss); everything else is the same.
Every second it prints mTCP-style statistics — the client's connects/MB/completions/response
times, each server core's RX/TX pps and Gbit/s and open flows, and both NICs' per-port counters
read over P4Runtime — then a final summary that shows how the NIC spread the connections over
the server's cores. The run is bounded (`-n` requests, `--duration` seconds); it exits 0 when
every request completed byte-exact. Ctrl-C stops every process cleanly.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from p4mtcp.apps import epserver, epwget, launch, stats
from p4mtcp.apps.fabric import NIC_KINDS, Fabric, Host, nic_sample, steered_core, two_hosts

SERVER_IP, CLIENT_IP = "10.0.0.1", "10.0.0.2"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="p4mtcp demo", description=__doc__.split("\n")[0])
    p.add_argument("-N", dest="cores", type=int, default=2, help="server cores (default 2)")
    p.add_argument("--client-cores", type=int, default=None,
                   help="client cores (default: as many as the server)")
    p.add_argument("-n", dest="requests", type=int, default=5000,
                   help="HTTP requests, one connection each (default 5000)")
    p.add_argument("-c", dest="concurrency", type=int, default=64,
                   help="concurrent connections over all client cores (default 64)")
    p.add_argument("--size", type=int, default=1024, help="bytes of the served file (default 1024)")
    p.add_argument("--duration", type=float, default=60.0,
                   help="stop after this many seconds even if requests remain (default 60)")
    p.add_argument("--workdir", help="keep configurations and NIC logs here")
    p.add_argument("--plain", action="store_true", help="plain lines instead of a live display")
    p.add_argument("--nic", choices=NIC_KINDS, default="embedded",
                   help="each host's NIC: the embedded target (default) or BMv2 running the "
                        "program compiled from p4src/ (needs root, simple_switch_grpc, p4c)")
    p.add_argument("--pcap", metavar="DIR",
                   help="each host's NIC captures its ports into DIR/<host> (p4mtcp nic --pcap)")
    args = p.parse_args(argv)
    for name in ("cores", "requests", "concurrency", "size"):
        if getattr(args, name) < 1 and not (name == "size" and args.size == 0):
            p.error(f"{name} must be positive")
    if args.client_cores is None:
        args.client_cores = args.cores
    return args


class Dashboard:
    """What the demo shows each second: the load, the server cores, both NICs."""

    def __init__(self, server: Host, client: Host, total: int, live: bool | None):
        self.server, self.client = server, client
        self.wget = epwget.WgetReport(total, client.cores)
        self.srv_stack = stats.StackStats()
        self.srv_app: dict[int, dict[str, int]] = {}
        self.flows = 0           # connections the server cores accepted ...
        self.flows_on_hash_core = 0   # ... and those on the core the NIC's RSS hash chose
        self.nics = {h.name: stats.NicStats(h.port_labels(), h.core_ports)
                     for h in (server, client)}
        self.view = stats.Display("p4mtcp demo: epserver on host A <- epwget on host B",
                                  live=live)
        self.errors: list[str] = []

    def on_server(self, msg: dict[str, Any]) -> None:
        if msg["kind"] == "stats":
            self.srv_stack.ingest(msg)
            self.srv_app[msg["core"]] = msg["app"]
        elif msg["kind"] == "peers":   # flows a core accepted since its previous report
            core = msg["core"]
            self.flows += len(msg["peers"])
            self.flows_on_hash_core += sum(
                steered_core(self.server, (SERVER_IP, 80), tuple(p)) == core for p in msg["peers"])
        elif msg["kind"] == "exit" and msg["error"]:
            self.errors.append(f"server core {msg['core']}: {msg['error']}")

    def on_client(self, msg: dict[str, Any]) -> None:
        self.wget.ingest(msg)
        if msg["kind"] == "exit" and msg["error"]:
            self.errors.append(f"client core {msg['core']}: {msg['error']}")

    def sample_nics(self) -> None:
        t = time.monotonic()
        for host in (self.server, self.client):
            try:
                self.nics[host.name].ingest(t, *nic_sample(host))
            except Exception as exc:         # a statistics read must not stop the run
                self.errors.append(f"reading {host.name}'s NIC counters: {exc}")

    def tick(self) -> None:
        self.sample_nics()
        lines = ["epwget (host B):", self.wget.line(), "epserver (host A):",
                 *self.srv_stack.lines(), "NIC A:", *self.nics["server"].lines("NIC A"),
                 "NIC B:", *self.nics["client"].lines("NIC B")]
        self.view.show(lines, progress=self.wget.progress(), unit="requests")

    def summary(self) -> list[str]:
        out = self.wget.summary()
        for core in sorted(self.srv_app):
            a = self.srv_app[core]
            out.append(f"[server core {core}] accepted {a['accepted']} connections, "
                       f"served {a['requests']} requests, {a['bytes_out'] / 1e6:.2f} MB, "
                       f"errors {a['errors']}")
        if self.flows:
            out.append(f"[steering] {self.flows_on_hash_core} of {self.flows} connections were "
                       f"served by the core the NIC's RSS hash chose")
        try:
            c = self.server.nic_counters()
            for i, port in enumerate(self.server.core_ports):
                pk, by = c["tx_port"].get(port, (0, 0))
                out.append(f"[NIC A] core port {port} (core {i}): {pk} frames, {by} bytes "
                           f"steered to the core")
            drops = {stats.drop_reason(r): pb[0] for r, pb in c["drops"].items()}
            out.append(f"[NIC A] drops: {drops or 'none'}")
        except Exception as exc:
            out.append(f"[NIC A] counters unavailable: {exc}")
        return out


def make_www(root: Path, size: int) -> bytes:
    """The served directory: index.html of `size` deterministic bytes."""
    root.mkdir(parents=True, exist_ok=True)
    body = hashlib.shake_256(b"p4mtcp demo").digest(size) if size else b""
    (root / "index.html").write_bytes(body)
    return body


def wait_ready(workers: launch.CoreWorkers, on_message, timeout: float, what: str) -> None:
    """Until every core said 'ready' (RuntimeError if one exits or time runs out)."""
    ready: set[int] = set()
    deadline = time.monotonic() + timeout
    while ready != set(workers.cores):
        for msg in workers.poll(0.1):
            on_message(msg)
            if msg["kind"] == "ready":
                ready.add(msg["core"])
            elif msg["kind"] == "exit":
                raise RuntimeError(f"{what} core {msg['core']} exited: {msg['error']}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready within {timeout} s (ready: {sorted(ready)})")


def quiet_agent_logs(path: Path) -> None:
    """The agents' reconnect/stream messages go to a file, not over the live display."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger("p4mtcp")
    root.addHandler(handler)
    root.propagate = False


def run(args: argparse.Namespace) -> int:
    fabric = Fabric(args.workdir, nic=args.nic)
    quiet_agent_logs(fabric.dir / "agent.log")
    servers = clients = None
    board = None
    summary: list[str] = []
    try:
        server, client = two_hosts(fabric, args.cores, args.client_cores, SERVER_IP, CLIENT_IP)
        fabric.start(**({"nic_pcap": os.path.abspath(args.pcap)} if args.pcap else {}))
        www = fabric.dir / "www"
        make_www(www, args.size)
        board = Dashboard(server, client, args.requests, False if args.plain else None)
        sargs = epserver.ServerArgs(str(www), server.conf, server.cores, 4096, 80, 0.0)
        servers = launch.CoreWorkers(epserver.serve_core, range(server.cores), sargs,
                                     name="epserver").start()
        wait_ready(servers, board.on_server, 60, "epserver")
        ncores = min(client.cores, args.requests)
        wargs = epwget.WgetArgs(SERVER_IP, 80, "/index.html", args.requests, ncores,
                                max(1, args.concurrency // ncores), client.conf, None,
                                args.duration)
        clients = launch.CoreWorkers(epwget.wget_core, range(ncores), wargs,
                                     name="epwget").start()
        board.wget.t0 = time.monotonic()
        deadline = time.monotonic() + args.duration + 10
        next_tick = time.monotonic() + 1.0
        while clients.running() and time.monotonic() < deadline:
            for msg in clients.poll(0.05):
                board.on_client(msg)
            for msg in servers.poll(0.0):
                board.on_server(msg)
            fabric.check()
            if not servers.running():
                raise RuntimeError("epserver stopped during the run")
            if time.monotonic() >= next_tick:
                next_tick += 1.0
                board.tick()
        for msg in clients.poll(0.2):
            board.on_client(msg)
        clients.finish(board.on_client)
        servers.finish(board.on_server)
        board.tick()
    except KeyboardInterrupt:
        print("\ninterrupted: stopping every process", file=sys.stderr)
    except Exception as exc:
        print(f"demo: {exc}", file=sys.stderr)
        if board is not None:
            board.errors.append(str(exc))
        else:
            return 1
    finally:
        for group in (clients, servers):
            if group is not None:
                group.stop()
        if board is not None:
            board.view.close()
            summary = board.summary() if fabric.hosts and fabric.hosts[0].agent else []
        fabric.stop()
    if board is None:
        return 1
    for line in summary + [f"error: {e}" for e in board.errors]:
        print(line)
    return 0 if board.wget.ok() and not board.errors else 1


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())

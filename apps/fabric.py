"""An embedded fabric: p4mtcp hosts, each with its own embedded NIC process and agent.

A host here is what a machine with a P4 NIC is: an mtcp.conf (+ arp.conf, route.conf), one
`p4mtcp nic` process serving P4Runtime on a private loopback port, one UNIX-socket link per core
between the NIC and that core's process, and a network port — a UNIX link to another host's NIC
(no root needed) or a Linux interface such as a veth (AF_PACKET, root). The fabric's parent
process runs each host's agent (P4Runtime primary: it pushes the pipeline, programs the tables,
and reads the counters the statistics show) and, beside it, the steering server through which the
host's core processes ask for flow_steer entries (`steer_socket` in mtcp.conf); the applications'
core processes are started by the caller with `launch.CoreWorkers` on `host.conf`.

The NICs are embedded targets (`p4mtcp nic`) by default. `Fabric(nic="bmv2")` makes each one a
BMv2 `simple_switch_grpc` running the program compiled from p4src/ on the fly; a BMv2 port is a
Linux interface, so its links are veth pairs (bmv2/veth.py; root) and its core processes reach it
over AF_PACKET. Agents, steering, configs and statistics are the same for both kinds.

Everything started here is stopped by `Fabric.stop()` (also from `with`), steering servers and
agents first, then NICs in reverse start order, each bounded in time, then any veths.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p4mtcp.apps import launch, stats
from p4mtcp.control.agent import NicAgent, stop_control
from p4mtcp.control.config import DEFAULT_MTU, load_host
from p4mtcp.control.rss import round_robin_reta
from p4mtcp.control.steering import serve_for
from p4mtcp.hashing import rss_bucket

NETWORK_PORT = 1
CORE_PORT_BASE = 16
CPU_PORT = 255
NIC_KINDS = ("embedded", "bmv2")


def mac_for(ip: str) -> str:
    """02:00 + the IPv4 address's four bytes: locally administered and unique per address."""
    return "02:00:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(ip).packed)


@dataclass
class Host:
    name: str
    ip: str                       # dotted address
    prefix: int
    cores: int
    network_spec: str             # the NIC side of the network port
    neighbours: dict[str, str]    # ip -> mac (arp.conf, /32 entries)
    dir: Path
    grpc_port: int
    mac: str
    conf: str = ""                # mtcp.conf path, once written
    arp_conf: str = ""
    route_conf: str = ""
    nic: launch.Service | None = None
    agent: Any = None
    steering: Any = None          # the agent's flow_steer server for the host's core processes
    core_specs: list[str] = field(default_factory=list)       # each core's link (mtcp.conf)
    nic_core_specs: list[str] = field(default_factory=list)   # ... and the NIC's side of it
    mtu: int | None = None        # mtcp.conf mtu; None: the fabric's (start(mtu=...), else 1500)

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def core_ports(self) -> list[int]:
        return [CORE_PORT_BASE + i for i in range(self.cores)]

    def port_labels(self) -> dict[int, str]:
        return {NETWORK_PORT: "net", **{p: f"core{i}" for i, p in enumerate(self.core_ports)}}

    def nic_counters(self) -> dict[str, dict]:
        """The NIC's rx_port/tx_port/drops/flow_steer_hits, read over P4Runtime by the agent."""
        return self.agent.nic_counters()


class Fabric:
    """Hosts and their NICs; `start()` brings them up in the order they were added."""

    def __init__(self, workdir: str | None = None, keep: bool = False, nic: str = "embedded"):
        if nic not in NIC_KINDS:
            raise ValueError(f"NIC kind {nic!r}: expected one of {', '.join(NIC_KINDS)}")
        self.nic = nic
        self._veths: list[tuple[str, str]] = []      # created by start(), removed by stop()
        self._created: list[str] = []
        self._tag = os.urandom(2).hex()
        self.device_config = ""                      # BMv2 JSON, compiled by start()
        # UNIX socket paths are limited to 107 bytes: keep the directory short.
        self.dir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="p4m", dir="/tmp"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self._own_dir = workdir is None and not keep
        self.hosts: list[Host] = []
        self._links = 0

    def add_host(self, name: str, ip_prefix: str, cores: int, network_spec: str,
                 neighbours: dict[str, str] | None = None, mac: str | None = None,
                 mtu: int | None = None) -> Host:
        iface = ipaddress.IPv4Interface(ip_prefix)
        hdir = self.dir / name
        hdir.mkdir(exist_ok=True)
        ip = str(iface.ip)
        host = Host(name, ip, iface.network.prefixlen, cores, network_spec,
                    dict(neighbours or {}), hdir, launch.free_tcp_port(), mac or mac_for(ip),
                    mtu=mtu)
        host.core_specs = [f"shm:{hdir}/c{i}" for i in range(cores)]  # shared-memory rings
        if self.nic == "bmv2":
            n = len(self.hosts)
            pairs = [self._veth(f"h{n}n{i}", f"h{n}c{i}") for i in range(cores)]
            host.nic_core_specs, host.core_specs = [a for a, _ in pairs], [b for _, b in pairs]
        else:
            host.nic_core_specs = list(host.core_specs)
        self.hosts.append(host)
        return host

    def link_spec(self) -> tuple[str, str]:
        """A fresh link between two NICs: (spec for the NIC that listens, for the other); a UNIX
        socket between embedded NICs, a veth pair between BMv2 ones."""
        self._links += 1
        if self.nic == "bmv2":
            return self._veth(f"l{self._links}a", f"l{self._links}b")
        path = self.dir / f"link{self._links}"
        return f"unix:{path}", f"unix-host:{path}"

    def _veth(self, a: str, b: str) -> tuple[str, str]:
        """Names of a veth pair start() creates (at most 15 characters each)."""
        pair = (f"p4m{self._tag}{a}", f"p4m{self._tag}{b}")
        self._veths.append(pair)
        return pair

    def write_configs(self, host: Host, **extra: Any) -> None:
        lines = [
            f"num_cores = {host.cores}",
            f"max_concurrency = {extra.get('max_concurrency', 10000)}",
            f"max_num_buffers = {extra.get('max_num_buffers', 10000)}",
            f"rcvbuf = {extra.get('rcvbuf', 8192)}",
            f"sndbuf = {extra.get('sndbuf', 8192)}",
            f"tcp_timeout = {extra.get('tcp_timeout', 30)}",
            "tcp_timewait = 0",
            f"congestion_control = {extra.get('congestion_control', 'newreno')}",
            f"mtu = {self._mtu(host, extra)}",
            "port = net0",
            f"nic_target = {self.nic}",
            *([f"p4_device_config = {self.device_config}"] if self.nic == "bmv2" else []),
            f"p4runtime = {host.grpc}",
            f"cpu_port = {CPU_PORT}",
            f"core_port_base = {CORE_PORT_BASE}",
            f"network_ports = {NETWORK_PORT}",
            f"local_ip = {host.ip}/{host.prefix}",
            f"host_mac = {host.mac}",
            f"network_links = {host.network_spec}",
            f"core_links = {' '.join(host.core_specs)}",
            f"steer_socket = {host.dir / 'steer.sock'}",
            f"ss_dir = {host.dir / 'ss'}",
            *([f"nic_pcap = {extra['nic_pcap']}/{host.name}"] if extra.get("nic_pcap") else []),
        ]
        conf = host.dir / "mtcp.conf"
        conf.write_text("\n".join(lines) + "\n")
        arp = host.dir / "arp.conf"
        arp.write_text(f"ARP_ENTRY {len(host.neighbours)}\n"
                       + "".join(f"{ip}/32 {mac}\n" for ip, mac in host.neighbours.items()))
        route = host.dir / "route.conf"
        route.write_text("ROUTES 0\n")
        host.conf, host.arp_conf, host.route_conf = str(conf), str(arp), str(route)

    def start(self, timeout: float = 30.0, **conf_extra: Any) -> "Fabric":
        try:
            if self.nic == "bmv2":
                self._prepare_bmv2(max(self._mtu(h, conf_extra) for h in self.hosts))
            for host in self.hosts:
                self.write_configs(host, **conf_extra)
                pcap = load_host(host.conf).mtcp.nic_pcap  # mtcp.conf's nic_pcap
                host.nic = launch.Service(self._nic_argv(host, pcap), f"NIC of {host.name}",
                                          str(host.dir / "nic.log")).start()
                host.nic.wait_ready(lambda h=host: launch.tcp_listening("127.0.0.1", h.grpc_port)
                                    and all(os.path.exists(s.partition(":")[2])
                                            for s in h.core_specs if s.startswith("shm:")),
                                    timeout)
            for host in self.hosts:
                cfg = load_host(host.conf, host.arp_conf, host.route_conf)
                host.agent = NicAgent(cfg).start(timeout)
                host.steering = serve_for(host.agent, cfg.mtcp)
        except BaseException:
            self.stop()
            raise
        return self

    @staticmethod
    def _mtu(host: Host, extra: dict[str, Any]) -> int:
        """The host's mtcp.conf mtu: its own, else the one start() was given, else 1500."""
        return host.mtu or extra.get("mtu", DEFAULT_MTU)

    def _prepare_bmv2(self, mtu: int) -> None:
        """Compile p4src/ for BMv2 and create the veths (needs root, BMv2 and p4c), their MTU
        the largest host's (mtcp.conf mtu), so that every link on the path takes its frames."""
        from p4mtcp.bmv2 import veth
        from p4mtcp.bmv2.launcher import P4C_BM2_SS, SIMPLE_SWITCH_GRPC, compile_program, require
        if os.geteuid() != 0:
            raise RuntimeError("BMv2 NICs need root: their ports are veth interfaces")
        require(SIMPLE_SWITCH_GRPC)
        require(P4C_BM2_SS)
        self.device_config = str(compile_program(self.dir / "build").json)
        for a, b in self._veths:
            veth.create(a, b, mtu)
            self._created.append(a)

    def _nic_argv(self, host: Host, pcap: str | None) -> list[str]:
        """The command line of `host`'s NIC: `p4mtcp nic` or BMv2 on the same ports."""
        ports = {NETWORK_PORT: host.network_spec,
                 **{CORE_PORT_BASE + i: spec for i, spec in enumerate(host.nic_core_specs)}}
        if self.nic == "bmv2":
            from p4mtcp.bmv2.launcher import bmv2_argv
            if pcap:
                os.makedirs(pcap, exist_ok=True)
            return bmv2_argv(ports, host.grpc, cpu_port=CPU_PORT,
                             thrift_port=launch.free_tcp_port(), pcap_dir=pcap)
        return launch.python_cmd("nic", "--grpc", host.grpc, "--cpu-port", str(CPU_PORT),
                                 *[a for num, spec in ports.items()
                                   for a in ("-i", f"{num}@{spec}")],
                                 *(("--pcap", pcap) if pcap else ()))

    def check(self) -> None:
        """RuntimeError if a NIC process died."""
        for host in self.hosts:
            if host.nic is not None:
                host.nic.check_alive()

    def stop(self) -> None:
        for host in reversed(self.hosts):
            stop_control(host.steering, host.agent)
            host.steering = host.agent = None
        for host in reversed(self.hosts):
            if host.nic is not None:
                host.nic.stop()
        if self._created:
            from p4mtcp.bmv2 import veth
            for name in self._created:
                veth.delete(name)
            self._created.clear()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Fabric":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def two_hosts(fabric: Fabric, server_cores: int, client_cores: int,
              server_ip: str = "10.0.0.1", client_ip: str = "10.0.0.2") -> tuple[Host, Host]:
    """A server host and a client host whose NICs' network ports are joined by a UNIX link."""
    listen_side, connect_side = fabric.link_spec()
    server = fabric.add_host("server", f"{server_ip}/24", server_cores, listen_side,
                             {client_ip: mac_for(client_ip)})
    client = fabric.add_host("client", f"{client_ip}/24", client_cores, connect_side,
                             {server_ip: mac_for(server_ip)})
    return server, client


def nic_sample(host: Host) -> tuple[dict[int, tuple[int, int]], dict[int, tuple[int, int]],
                                    dict[int, int]]:
    """(rx_port, tx_port, drops by reason in packets) of `host`'s NIC for `stats.NicStats`."""
    return stats.counter_sample(host.nic_counters())


def steered_core(host: Host, local: tuple[str, int], peer: tuple[str, int]) -> int:
    """The core the host's NIC steers this flow to by RSS: reta[rss_bucket(flow)] (the agent
    installs the round-robin reta over the host's core ports)."""
    reta = round_robin_reta(host.core_ports)
    bucket = rss_bucket(int(ipaddress.IPv4Address(local[0])), local[1],
                        int(ipaddress.IPv4Address(peer[0])), peer[1])
    return host.core_ports.index(reta[bucket])

"""Mininet nodes for a P4 NIC testbed: two interchangeable switch classes and two host classes.

`Bmv2NicSwitch` runs `simple_switch_grpc` on the switch's interfaces, `EmbeddedNicSwitch` runs
`p4mtcp nic` on the same interfaces with the same port numbers; both start with no pipeline and
are ready when their P4Runtime server accepts connections (the p4lang tutorials' pattern: the
switch comes up empty, a controller pushes the pipeline). Neither needs Open vSwitch: build the
network with `controller=None` and every switch one of these classes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from p4mtcp.bmv2 import mn
from p4mtcp.bmv2.launcher import (CPU_PORT, SwitchProcess, accepts_connections, bmv2_argv,
                                     embedded_argv, free_port)

mn.load()
from mininet.node import Host, Node, Switch  # noqa: E402  (needs mn.load() first)

DEFAULT_LOG_DIR = "/tmp/p4mtcp-testbed"


def _disable_ipv6(node: Node, intf: str) -> None:
    """No IPv6 on testbed links: router solicitations and MLD reports would be frames the NIC
    has to drop and count, blurring the counters the tests read."""
    node.cmd(f"sysctl -qw net.ipv6.conf.{intf.replace('.', '/')}.disable_ipv6=1")


class P4NicSwitch(Switch):
    """A switch whose datapath is a P4 target process bound to its interfaces (port N = sN-ethN).

    It runs in the root namespace, so its P4Runtime server is on 127.0.0.1 for controllers and
    for the p4mtcp host's agent alike.
    """

    kind = ""

    def __init__(self, name: str, grpc_port: int | None = None, device_id: int = 1,
                 cpu_port: int = CPU_PORT, log_dir: str = DEFAULT_LOG_DIR,
                 start_timeout: float = 30.0, pcap_dir: str | None = None, **params):
        params.setdefault("inNamespace", False)
        super().__init__(name, **params)
        self.grpc = f"127.0.0.1:{grpc_port or free_port()}"
        self.device_id = device_id
        self.cpu_port = cpu_port
        self.log_dir = Path(log_dir)
        self.start_timeout = start_timeout
        self.pcap_dir = pcap_dir  # capture every port here (`p4mtcp testbed --pcap`)
        self.process: SwitchProcess | None = None

    def port_map(self) -> dict[int, str]:
        """Port number -> interface name, for every data interface (not the loopback)."""
        return {port: intf.name for port, intf in self.intfs.items() if intf.name != "lo"}

    def argv(self, ports: dict[int, str]) -> list[str]:
        raise NotImplementedError

    def start(self, controllers) -> None:
        ports = self.port_map()
        for intf in ports.values():
            _disable_ipv6(self, intf)
        self.process = SwitchProcess(self.argv(ports), self.grpc, f"{self.name}-{self.kind}",
                                     self.log_dir / f"{self.name}.log").start(self.start_timeout)

    def stop(self, deleteIntfs: bool = True) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None
        super().stop(deleteIntfs)

    def connected(self) -> bool:
        return self.process is not None and self.process.running and accepts_connections(self.grpc)


class Bmv2NicSwitch(P4NicSwitch):
    """BMv2 `simple_switch_grpc` (started with `--no-p4`; push p4c's JSON over P4Runtime)."""

    kind = "bmv2"

    def __init__(self, name: str, thrift_port: int | None = None, **params):
        super().__init__(name, **params)
        self.thrift_port = thrift_port or free_port()

    def argv(self, ports: dict[int, str]) -> list[str]:
        return bmv2_argv(ports, self.grpc, device_id=self.device_id, cpu_port=self.cpu_port,
                         log_file=str(self.log_dir / f"{self.name}.bmv2.log"),
                         thrift_port=self.thrift_port, pcap_dir=self.pcap_dir)


class EmbeddedNicSwitch(P4NicSwitch):
    """The embedded target, `p4mtcp nic`, with AF_PACKET ports on the same interfaces."""

    kind = "embedded"

    def argv(self, ports: dict[int, str]) -> list[str]:
        return embedded_argv(ports, self.grpc, device_id=self.device_id, cpu_port=self.cpu_port,
                             pcap_dir=self.pcap_dir)


SWITCHES: dict[str, type[P4NicSwitch]] = {"bmv2": Bmv2NicSwitch, "embedded": EmbeddedNicSwitch}


class KernelHost(Host):
    """A Linux host in its own namespace whose kernel TCP is the peer.

    Transmit checksum offload is turned off on its interfaces: a veth frame leaves with the TCP
    checksum unfinished (CHECKSUM_PARTIAL), and a P4 target reading it from a raw socket would
    see a bad checksum and drop it. `ethtool -K IF tx off` makes the kernel finish it in software
    (TSO goes off with it, so every segment is a complete frame).
    """

    def config(self, **params):
        result = super().config(**params)
        if shutil.which("ethtool") is None:
            raise RuntimeError("ethtool not found on PATH; install it (apt-get install ethtool): "
                               "kernel hosts need transmit checksum offload turned off")
        self.cmd("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1")
        for intf in self.intfList():
            if intf.name == "lo":
                continue
            out = self.cmd(f"ethtool -K {intf.name} tx off 2>&1; ethtool -k {intf.name}")
            if "tx-checksumming: off" not in out:
                raise RuntimeError(f"{self.name}: could not turn off tx checksum offload on "
                                   f"{intf.name}: {out.strip()[:300]}")
        return result


class P4mtcpHost(Host):
    """The machine that runs the p4mtcp stack: one interface per core, wired to a NIC core port.

    It stays in the root namespace, next to its NIC, so the stack reaches the NIC's P4Runtime
    server on 127.0.0.1 as it would on a machine with a local P4 NIC. Its interfaces carry no
    addresses: the host's IP addresses belong to the NIC (ARP responder, local_ipv4), and the
    root kernel drops the core ports' IPv4 frames as addressed to another host's MAC.
    """

    def __init__(self, name: str, **params):
        params.setdefault("inNamespace", False)
        super().__init__(name, **params)

    def config(self, **params):
        params.update(ip=None, mac=None)   # the NIC owns the addresses
        result = super().config(**params)
        for intf in self.intfList():
            if intf.name != "lo":
                _disable_ipv6(self, intf.name)
                self.cmd(f"ip addr flush dev {intf.name}; ip link set {intf.name} up")
        return result

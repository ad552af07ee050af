"""`p4mtcp testbed`: a Mininet network of kernel hosts and one p4mtcp host behind a P4 NIC switch.

```
 h1 (10.0.1.1) ── port 1 ┐                         ┌ port 16 ── m1-eth0 (core 0)
 h2 (10.0.2.1) ── port 2 ┤  s1: BMv2 or embedded   ├ port 17 ── m1-eth1 (core 1)
                         └  (10.0.J.100 = m1)      ┘ ...
```

Kernel host hJ sits on NIC port J in subnet 10.0.J.0/24; the p4mtcp host m1 owns 10.0.J.100 on
each of them (the NIC answers ARP for it and steers its TCP to the cores). m1's interfaces carry
the cores' frames; its configuration (mtcp.conf, arp.conf, route.conf) is written into the work
directory and its agent (the P4Runtime primary) runs in this process, programming the NIC from
those files and serving the core processes' flow_steer requests (`steer_socket`), so
`p4mtcp epserver -f DIR/mtcp.conf ...` run on m1 just opens its core ports.

m1 stays in the root namespace (see `P4mtcpHost`); `core_links` in its mtcp.conf name m1's own
ends of the core links, which is what each core process opens.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p4mtcp.control.config import (ArpEntry, MtcpConfig, format_arp_conf, format_mtcp_conf,
                                   format_route_conf)
from p4mtcp.bmv2.preflight import missing

CORE_PORT_BASE = 16


@dataclass(frozen=True)
class TestbedPlan:
    """Addresses and port numbers of the testbed; everything else derives from these."""

    hosts: int = 2
    cores: int = 2
    core_port_base: int = CORE_PORT_BASE

    def __post_init__(self) -> None:
        if not 1 <= self.hosts < self.core_port_base:
            raise ValueError(f"--hosts {self.hosts}: between 1 and {self.core_port_base - 1}")
        if not 1 <= self.cores <= 64:
            raise ValueError(f"--cores {self.cores}: between 1 and 64")

    def host_ip(self, j: int) -> str:
        return f"10.0.{j}.1"

    def host_mac(self, j: int) -> str:
        return f"02:00:00:00:{j:02x}:01"

    def nic_ip(self, j: int) -> str:
        return f"10.0.{j}.100"

    def core_port(self, core: int) -> int:
        return self.core_port_base + core

    def mtcp_config(self, grpc: str, device_id: int, core_ifaces: list[str],
                    device_config: str | None = None, target: str = "embedded") -> MtcpConfig:
        """m1's mtcp.conf: one interface per kernel host's subnet, one core link per core."""
        js = range(1, self.hosts + 1)
        return MtcpConfig(
            local_ip=tuple(ipaddress.IPv4Interface(f"{self.nic_ip(j)}/24") for j in js),
            num_cores=self.cores, port=tuple(f"net{j}" for j in js), stat_print=("net1",),
            nic_target=target, p4runtime=grpc, device_id=device_id,
            p4_device_config=device_config, core_port_base=self.core_port_base,
            network_ports=tuple(js), core_links=tuple(core_ifaces))

    def arp_entries(self) -> list[ArpEntry]:
        return [ArpEntry(ipaddress.IPv4Network(f"{self.host_ip(j)}/32"), self.host_mac(j))
                for j in range(1, self.hosts + 1)]


@dataclass
class Testbed:
    """A built (and, after `start`, running) testbed network."""

    net: Any                        # mininet.net.Mininet
    plan: TestbedPlan
    workdir: Path
    kind: str
    device_config: str | None = None
    conf_path: Path = field(init=False)
    agent: Any = field(default=None, init=False)
    steering: Any = field(default=None, init=False)  # flow_steer requests of m1's core processes
    _stopped: bool = field(default=False, init=False)

    @property
    def switch(self):
        return self.net.get("s1")

    @property
    def p4host(self):
        return self.net.get("m1")

    def kernel_host(self, j: int):
        return self.net.get(f"h{j}")

    def core_ifaces(self) -> list[str]:
        return [self.p4host.intfs[core].name for core in range(self.plan.cores)]

    def start(self, agent_timeout: float = 30.0) -> "Testbed":
        """Start the network, write m1's configuration, and start m1's agent on it (it pushes
        the pipeline and programs the NIC; it keeps running, learning neighbours, until stop)."""
        from p4mtcp.control.agent import NicAgent
        from p4mtcp.control.config import load_host
        from p4mtcp.control.steering import serve_for

        self._stopped = False
        try:
            self.net.start()
            self.conf_path = self.write_configs()
            host = load_host(self.conf_path, self.workdir / "arp.conf",
                             self.workdir / "route.conf")
            self.agent = NicAgent(host).start(agent_timeout)
            self.steering = serve_for(self.agent, host.mtcp)
        except BaseException:
            self.stop()       # a half-started network still has namespaces, links, a switch
            raise
        return self

    def stop(self) -> None:
        """Stop the agent, the switch process, hosts and links; safe to call more than once."""
        if self._stopped:
            return
        self._stopped = True
        if self.agent is not None:      # else the control modules were never loaded
            from p4mtcp.control.agent import stop_control
            stop_control(self.steering, self.agent)
        self.steering = self.agent = None
        self.net.stop()

    def write_configs(self) -> Path:
        """mtcp.conf, arp.conf and route.conf for m1 in the work directory; mtcp.conf's path."""
        s1 = self.switch
        cfg = self.plan.mtcp_config(s1.grpc, s1.device_id, self.core_ifaces(),
                                    self.device_config, self.kind)
        cfg = dataclasses.replace(cfg, steer_socket=str(self.workdir / "steer.sock"))
        (self.workdir / "mtcp.conf").write_text(format_mtcp_conf(cfg))
        (self.workdir / "arp.conf").write_text(format_arp_conf(self.plan.arp_entries()))
        (self.workdir / "route.conf").write_text(format_route_conf([]))
        return self.workdir / "mtcp.conf"

    def __enter__(self) -> "Testbed":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def build(kind: str, plan: TestbedPlan, workdir: str | Path,
          device_config: str | None = None, pcap_dir: str | None = None) -> Testbed:
    """The Mininet network (not started): s1 of `kind`, kernel hosts h1..hN, p4mtcp host m1."""
    from p4mtcp.bmv2.mininet_switches import SWITCHES, KernelHost, P4mtcpHost
    from mininet.net import Mininet

    if kind not in SWITCHES:
        raise ValueError(f"--switch {kind!r}: expected one of {', '.join(SWITCHES)}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    net = Mininet(topo=None, controller=None, build=False, autoSetMacs=False)
    try:
        s1 = net.addSwitch("s1", cls=SWITCHES[kind], log_dir=str(workdir), pcap_dir=pcap_dir)
        for j in range(1, plan.hosts + 1):
            h = net.addHost(f"h{j}", cls=KernelHost, ip=f"{plan.host_ip(j)}/24",
                            mac=plan.host_mac(j))
            net.addLink(h, s1, port2=j)
        m1 = net.addHost("m1", cls=P4mtcpHost, ip=None)
        for core in range(plan.cores):
            net.addLink(m1, s1, port1=core, port2=plan.core_port(core))
        net.build()
    except BaseException:
        net.stop()            # namespaces and links made so far
        raise
    return Testbed(net, plan, workdir, kind, device_config)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="p4mtcp testbed", description=__doc__.split("\n")[0])
    p.add_argument("--switch", choices=("embedded", "bmv2"), default="embedded",
                   help="the NIC: the embedded target (default) or BMv2 simple_switch_grpc")
    p.add_argument("--hosts", type=int, default=2, help="kernel hosts (default 2)")
    p.add_argument("--cores", type=int, default=2, help="cores of the p4mtcp host (default 2)")
    p.add_argument("--workdir", help="configs and logs (default: a new directory under /tmp)")
    p.add_argument("--cli", action="store_true", help="drop into Mininet's CLI")
    p.add_argument("--pcap", metavar="DIR",
                   help="the switch captures every port into DIR (embedded: pcap per port and "
                        "direction; bmv2: its own <port>_in/_out.pcap)")
    p.add_argument("--script", metavar="FILE",
                   help="run the Mininet CLI commands in FILE (e.g. 'h1 curl ...'), then stop")
    args = p.parse_args(argv)
    if args.script and not Path(args.script).is_file():
        p.error(f"--script {args.script}: no such file")
    return args


def describe(tb: Testbed) -> str:
    plan, s1 = tb.plan, tb.switch
    lines = [f"s1: {tb.kind} NIC, P4Runtime {s1.grpc} device_id {s1.device_id}, "
             f"log {s1.log_dir / 's1.log'}"]
    lines += [f"h{j}: {plan.host_ip(j)}/24 on NIC port {j}; m1 is {plan.nic_ip(j)} there"
              for j in range(1, plan.hosts + 1)]
    lines += [f"m1 core {i}: {name} <-> NIC port {plan.core_port(i)}"
              for i, name in enumerate(tb.core_ifaces())]
    lines.append(f"m1 config: {tb.conf_path} (+ arp.conf, route.conf); its agent programmed s1")
    lines.append(f"start the server: m1 p4mtcp epserver -p WWW_DIR -f {tb.conf_path} "
                 f"-N {plan.cores}")
    lines.append(f"then fetch:       h1 curl http://{plan.nic_ip(1)}/FILE")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    reason = missing(args.switch)
    if reason:
        print(f"p4mtcp testbed: cannot run a {args.switch} testbed here: {reason}", file=sys.stderr)
        return 2
    try:
        plan = TestbedPlan(args.hosts, args.cores)
        workdir = Path(args.workdir or tempfile.mkdtemp(prefix="p4mtcp-testbed-"))
        device_config = None
        if args.switch == "bmv2":
            from p4mtcp.bmv2.launcher import compile_program
            device_config = str(compile_program(workdir / "build").json)
        pcap = os.path.abspath(args.pcap) if args.pcap else None
        if pcap:
            os.makedirs(pcap, exist_ok=True)
        tb = build(args.switch, plan, workdir, device_config, pcap)
    except (ValueError, RuntimeError, ImportError) as exc:
        print(f"p4mtcp testbed: {exc}", file=sys.stderr)
        return 2
    try:
        # SIGTERM stops the testbed like Ctrl-C does: the finally clause below cleans up.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        tb.start()
        print(describe(tb), flush=True)
        if args.cli or args.script:
            from mininet.cli import CLI
            CLI(tb.net, script=args.script)
        else:
            print("testbed up; Ctrl-C stops it", flush=True)
            try:
                while tb.switch.connected():
                    time.sleep(1.0)
                print("p4mtcp testbed: the switch stopped", file=sys.stderr)
                return 1
            except KeyboardInterrupt:
                pass
    except Exception as exc:  # the switch, the agent or Mininet failed: say which, then clean up
        print(f"p4mtcp testbed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        tb.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

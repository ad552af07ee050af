"""The embedded NIC in the test's path: frames cross the P4 pipeline in-process, both ways.

The device runs the project's P4Info with the Python mirror of the program and holds the entries
the NIC agent installs for a one-core host (``control.agent.host_entries``), written through the
same P4Runtime codecs the agent and the server use. The context runs with checksum offload, as
in production: the pipeline verifies the checksums of arriving frames (a bad one is dropped and
counted), fills the MACs and both checksums of leaving ones.
"""

from __future__ import annotations

import ipaddress

from p4mtcp.control.agent import host_entries
from p4mtcp.control.config import ArpEntry, HostConfig, MtcpConfig, Route
from p4mtcp.control.p4rt import encode_entry
from p4mtcp.dataplane.device import Device
from p4mtcp.dataplane.tables import decode_action, decode_match
from p4mtcp.p4info import P4Schema
from p4mtcp.apps.stats import drop_reason
from p4mtcp.p4src import DROPS, P4INFO

from .links import ScriptedPort


def one_core_host(local_ip: str, remote_ip: str, remote_mac: str) -> HostConfig:
    """A host with one interface (local_ip/24), one core, and the peer reachable by a /32 route."""
    peer = ipaddress.IPv4Network(f"{remote_ip}/32")
    mtcp = MtcpConfig(local_ip=(ipaddress.IPv4Interface(f"{local_ip}/24"),), num_cores=1,
                      port=("net0",))
    return HostConfig(mtcp=mtcp, arp=(ArpEntry(peer, remote_mac),), routes=(Route(peer, "net0"),))


class NicLink:
    """Frames through ``Device.process``: network port in, core port out, and back."""

    offload_checksum = True

    def __init__(self, host: HostConfig):
        cfg = host.mtcp
        self.network_port = cfg.network_ports[0]
        self.core_port = cfg.core_port(0)
        self.host_mac = cfg.host_mac[0]
        self.device = Device()
        schema = P4Schema.from_file(P4INFO)
        self.device.set_pipeline(schema, b"")
        pipeline = self.device.pipeline
        assert pipeline is not None
        for e in host_entries(host):
            msg = encode_entry(schema, e)
            table = pipeline.tables[e.table]
            action, params = decode_action(schema, table.table, msg.action.action, default=False)
            table.insert(decode_match(table.table, msg.match), msg.priority, action, params)
        self._drops = pipeline.counters[DROPS]
        self.port = ScriptedPort()
        self._other: list[tuple[int, bytes]] = []

    def to_stack(self, frame: bytes) -> None:
        for port, out in self.device.process(self.network_port, frame):
            if port == self.core_port:
                self.port.inbox.append(out)
            else:
                self._other.append((port, out))  # e.g. an ARP reply back to the network

    def from_stack(self) -> list[bytes]:
        out = []
        for frame in self.port.outbox:
            for port, data in self.device.process(self.core_port, frame):
                if port == self.network_port:
                    out.append(data)
                else:
                    self._other.append((port, data))
        self.port.outbox.clear()
        return out

    def other_frames(self) -> list[tuple[int, bytes]]:
        """(port, frame) the pipeline sent anywhere but the core and network ports (ARP replies
        to the network, packet-ins to the CPU port); drained."""
        other, self._other = self._other, []
        return other

    def drops(self) -> dict[str, int]:
        """``NicIngress.drops`` by reason name, nonzero ones only."""
        counts = {i: self._drops.read(i)[0] for i in range(self._drops.size)}
        return {drop_reason(i): n for i, n in counts.items() if n}

"""The NIC agent: keeps the NIC programmed (pipeline, tables, ARP, counters) across restarts.

The agent keeps what it wants the NIC to hold as data — a dict of table entries built from the
host's configuration plus what it learned (ARP) or was asked for (flow_steer) — and makes the
NIC agree with it: after connecting it reads every table it owns, deletes what it does not want,
modifies what differs and inserts what is missing. A restarted NIC (stream broken, pipeline gone)
is therefore just another reconnect: the supervisor thread backs off, reconnects, pushes the
pipeline if the NIC lacks it and re-applies the whole state.

P4Runtime never sits on a per-packet path: the NIC answers ARP for local addresses and steers TCP
by itself; the agent only sees ARP it must learn from, frames whose next hop is unresolved and
ICMP other than echo requests. Of those it logs, a fragmentation-needed message about one of our
TCP flows goes on to the core that owns the flow (RFC 1191), which lowers that connection's MSS.
Objects are addressed by name; the P4Runtime messages and the connection are `control.p4rt`'s.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import struct
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from p4.v1 import p4runtime_pb2 as p4r

from p4mtcp.control.config import HostConfig, Route, check_host, mac_to_int
from p4mtcp.control.p4rt import (
    Client, Entry, Match, P4RuntimeError, encode_entry, entry, packet_in_metadata)
from p4mtcp.control.rss import round_robin_reta
from p4mtcp.control.tcp import pmtu
from p4mtcp.hashing import rss_bucket
from p4mtcp.p4info import P4Schema
from p4mtcp.p4src import (
    ARP_REPLY, ARP_RESPONDER, DROPS, FLOW_STEER, IPV4_LPM, LOCAL_IPV4, NEIGHBOR, PACKET_IN_ARP,
    PACKET_IN_ICMP, PACKET_IN_NEIGHBOR_MISS, PORT_MAC, PORT_ROLE, RETA, RX_PORT, SET_CORE_PORT,
    SET_DST_MAC, SET_LOCAL, SET_NETWORK_PORT, SET_NEXT_HOP, SET_SRC_MAC, STEER_TO_CORE, TX_PORT)
from p4mtcp.ratelimit import RateLimitedLog

if TYPE_CHECKING:
    from p4mtcp.control.steering import SteeringServer

log = logging.getLogger(__name__)

OWNED_TABLES = (PORT_ROLE, PORT_MAC, LOCAL_IPV4, ARP_RESPONDER, IPV4_LPM, NEIGHBOR, RETA,
                FLOW_STEER)

AgentError = P4RuntimeError
"""What the agent raises: a refused or failed P4Runtime call (`control.p4rt`)."""

_ETH = struct.Struct("!6s6sH")
_ARP = struct.Struct("!HHBBH6s4s6s4s")
_IPV4_DST = struct.Struct("!I")
IPPROTO_ICMP = 1
ETHERTYPE_ARP, ETHERTYPE_IPV4 = 0x0806, 0x0800
BROADCAST = b"\xff" * 6


# --- frames the agent reads and writes --------------------------------------------------------

@dataclass(frozen=True)
class Arp:
    oper: int
    sha: bytes
    spa: int
    tha: bytes
    tpa: int


def parse_arp(frame: bytes) -> Arp | None:
    """The ARP body of an Ethernet/IPv4 ARP frame, None if it is not one."""
    if len(frame) < _ETH.size + _ARP.size or _ETH.unpack_from(frame)[2] != ETHERTYPE_ARP:
        return None
    htype, ptype, hlen, plen, oper, sha, spa, tha, tpa = _ARP.unpack_from(frame, _ETH.size)
    if (htype, ptype, hlen, plen) != (1, ETHERTYPE_IPV4, 6, 4):
        return None
    return Arp(oper, sha, int.from_bytes(spa, "big"), tha, int.from_bytes(tpa, "big"))


def arp_request(src_mac: bytes, src_ip: int, target_ip: int) -> bytes:
    """RFC 826 request, broadcast, padded to Ethernet's 60-byte minimum."""
    frame = (_ETH.pack(BROADCAST, src_mac, ETHERTYPE_ARP)
             + _ARP.pack(1, ETHERTYPE_IPV4, 6, 4, 1, src_mac, src_ip.to_bytes(4, "big"),
                         bytes(6), target_ip.to_bytes(4, "big")))
    return frame.ljust(60, b"\0")


@dataclass(frozen=True)
class Icmp:
    """An ICMP message for a local address, as the NIC handed it over (RFC 792); the message
    itself is read by `control.tcp.pmtu`, which the core's engine reads it with too."""
    src: str
    dst: str
    message: pmtu.IcmpMessage
    payload: bytes                                # the ICMP message (the IPv4 payload)

    def __str__(self) -> str:
        m = self.message
        text = f"ICMP type {m.type} code {m.code} from {self.src} to {self.dst}"
        q = m.quoted
        if q is not None:
            text += (f" about protocol {q.proto} {ipaddress.IPv4Address(q.src)}:{q.sport} -> "
                     f"{ipaddress.IPv4Address(q.dst)}:{q.dport}")
        if m.frag_needed:
            text += f": fragmentation needed, next-hop MTU {m.next_hop_mtu} (RFC 1191)"
        return text


def parse_icmp(frame: bytes) -> Icmp | None:
    """The ICMP message of an Ethernet/IPv4 frame (no IPv4 options: the NIC drops those), with
    the quoted datagram when it carries one; None if it is not one."""
    off, ipv4 = _ETH.size, pmtu.IPV4
    if (len(frame) < off + ipv4.size or _ETH.unpack_from(frame)[2] != ETHERTYPE_IPV4
            or frame[off] != 0x45):
        return None
    _, total, proto, src, dst = ipv4.unpack_from(frame, off)
    payload = bytes(frame[off + ipv4.size:off + total])   # the NIC checked the total length
    message = pmtu.read_icmp(payload) if proto == IPPROTO_ICMP else None
    if message is None:
        return None
    return Icmp(str(ipaddress.IPv4Address(src)), str(ipaddress.IPv4Address(dst)), message,
                payload)


def _ipv4_dst(frame: bytes) -> int | None:
    if len(frame) < 34 or _ETH.unpack_from(frame)[2] != ETHERTYPE_IPV4:
        return None
    return _IPV4_DST.unpack_from(frame, 30)[0]


# --- the desired state --------------------------------------------------------------------------

def host_entries(host: HostConfig) -> list[Entry]:
    """Every entry the configuration asks for (learned neighbours and flow_steer come later).

    Routing: each route's next hop is its network address, so a /len ARP entry (mTCP's gateway
    form) is the neighbour of the whole prefix; an on-link destination with no such entry misses
    `neighbor`, reaches the agent, and gets its own /32 route and neighbour once ARP answers.
    """
    cfg = host.mtcp
    out = [entry(PORT_ROLE, {"standard_metadata.ingress_port": p}, SET_NETWORK_PORT)
           for p in cfg.network_ports]
    out += [entry(PORT_ROLE, {"standard_metadata.ingress_port": p}, SET_CORE_PORT,
                  core=i) for i, p in enumerate(cfg.core_ports)]
    out += [entry(PORT_MAC, {"standard_metadata.egress_spec": p}, SET_SRC_MAC,
                  mac=mac_to_int(m)) for p, m in zip(cfg.network_ports, cfg.host_mac)]
    for addr, mac in zip(cfg.local_ip, cfg.host_mac):
        ip = int(addr.ip)
        out.append(entry(LOCAL_IPV4, {"hdr.ipv4.dst_addr": ip}, SET_LOCAL))
        out.append(entry(ARP_RESPONDER, {"hdr.arp.tpa": ip}, ARP_REPLY,
                         mac=mac_to_int(mac)))
    port_of = dict(zip(cfg.port, cfg.network_ports))
    routes = {r.network: r for r in host.all_routes()}
    for e in host.arp:        # a prefix ARP entry needs its prefix routed to its next hop
        via = host.route_for(e.network.network_address)   # check_host: there is one
        if e.network not in routes and via is not None:
            routes[e.network] = Route(e.network, via.dev)
    for net, r in routes.items():
        nh = int(net.network_address)
        out.append(entry(IPV4_LPM, {"hdr.ipv4.dst_addr": (nh, net.prefixlen)},
                         SET_NEXT_HOP, next_hop=nh, port=port_of[r.dev]))
    for e in host.arp:
        out.append(entry(NEIGHBOR, {"meta.next_hop": int(e.network.network_address)},
                         SET_DST_MAC, mac=mac_to_int(e.mac)))
    out += [entry(RETA, {"meta.rss_bucket": b}, STEER_TO_CORE, port=p)
            for b, p in enumerate(round_robin_reta(cfg.core_ports))]
    return out


def _flow_key(remote_ip: int, local_ip: int, remote_port: int, local_port: int) -> Match:
    """flow_steer matches arriving segments: source is the peer, destination is us."""
    return (("hdr.ipv4.src_addr", remote_ip), ("hdr.ipv4.dst_addr", local_ip),
            ("hdr.tcp.src_port", remote_port), ("hdr.tcp.dst_port", local_port))


@dataclass
class _Pending:
    """A next hop being resolved: where it lives, when we last asked, frames waiting for it."""
    port: int
    src_ip: int
    first: float
    last: float
    frames: deque = field(default_factory=deque)


@dataclass
class AgentStats:
    packet_ins: int = 0
    arp_learned: int = 0
    arp_requests: int = 0
    frames_released: int = 0
    frames_dropped: int = 0
    ignored: int = 0
    connects: int = 0
    icmp: int = 0              # ICMP messages for local addresses the NIC handed over
    pmtu_forwarded: int = 0    # fragmentation needed about our TCP flows, sent to their core
    pmtu_ignored: int = 0      # fragmentation needed not usable (logged with the reason)


# --- the agent ----------------------------------------------------------------------------------

def stop_control(steering: SteeringServer | None, agent: NicAgent | None) -> None:
    """Stop a host's flow_steer server (`control.steering.serve_for`), then the agent it
    programs the NIC through, so no request reaches a stopped agent. Either may be None (a
    half-started host)."""
    if steering is not None:
        steering.stop()
    if agent is not None:
        agent.stop()


class NicAgent:
    """Programs one NIC for one host; a supervisor thread keeps it programmed across restarts.

    Use as ``with NicAgent(host) as agent: ...`` or ``start()``/``stop()``. `generation` counts
    completed (re)installs; `wait_generation(n)` waits for the n-th.
    """

    ARP_RETRY = 1.0        # seconds between ARP requests for one next hop
    ARP_GIVE_UP = 5.0      # seconds after which queued frames for an unresolved hop are dropped
    ARP_QUEUE = 8          # frames held per unresolved next hop
    MAX_PENDING = 256      # next hops being resolved at once
    HEALTH_INTERVAL = 2.0  # seconds between checks that the NIC still runs our pipeline

    def __init__(self, host: HostConfig, schema: P4Schema | None = None,
                 device_config: bytes | None = None, backoff: tuple[float, float] = (0.05, 2.0),
                 connect_timeout: float = 5.0):
        cfg = host.mtcp
        self.host = check_host(host)
        try:
            self.schema = schema or P4Schema.from_file(cfg.p4info)
            if device_config is None:
                device_config = (Path(cfg.p4_device_config).read_bytes()
                                 if cfg.p4_device_config else b"")
        except OSError as e:
            raise ValueError(f"{e.filename}: cannot read: {e.strerror}") from None
        self.device_config = device_config
        self.address = cfg.p4runtime
        self.device_id = cfg.device_id
        self.election_id = cfg.election_id
        self.cookie = int.from_bytes(hashlib.blake2b(
            self.schema.p4info.SerializeToString(deterministic=True) + device_config,
            digest_size=8).digest(), "big")
        self.backoff = backoff
        self.connect_timeout = connect_timeout
        self.stats = AgentStats()
        self._icmp_log = RateLimitedLog(logger=log)   # ICMP from the network: never a flood
        self.last_error: BaseException | None = None
        self.generation = 0
        self._static_neighbors = {int(e.network.network_address) for e in host.arp}
        self._entries: OrderedDict[tuple[str, Match], Entry] = OrderedDict(
            (e.key, e) for e in host_entries(host))
        self._learned: dict[int, tuple[bytes, int]] = {}    # ip -> (mac, port)
        self._pending: OrderedDict[int, _Pending] = OrderedDict()
        self._local_ips = {int(a.ip) for a in cfg.local_ip}
        self._iface_of_port = {p: i for i, p in enumerate(cfg.network_ports)}
        self._port_mac = {p: bytes.fromhex(m.replace(":", ""))
                          for p, m in zip(cfg.network_ports, cfg.host_mac)}
        self._state = threading.RLock()      # desired state and the session pointer
        self._synced = threading.Condition(self._state)
        self._session: Client | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- life cycle --

    def start(self, timeout: float = 10.0) -> "NicAgent":
        """Connect, push the pipeline and install everything; AgentError if that fails in time."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._supervise, name="p4rt-agent", daemon=True)
        self._thread.start()
        if not self.wait_generation(1, timeout):
            err = self.last_error
            self.stop()
            if isinstance(err, AgentError):
                raise err
            raise AgentError("connect", "UNAVAILABLE",
                             f"NIC at {self.address} not programmed within {timeout} s"
                             + (f": {err}" if err else ""))
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._state:
            session = self._session
        if session is not None:
            session.close()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None

    def __enter__(self) -> "NicAgent":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_generation(self, n: int, timeout: float) -> bool:
        """True once `n` installs have completed (the first connect is generation 1)."""
        deadline = time.monotonic() + timeout
        with self._synced:
            while self.generation < n:
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set():
                    return False
                self._synced.wait(min(left, 0.1))
        return True

    @property
    def connected(self) -> bool:
        with self._state:
            return self._session is not None and not self._session.closed.is_set()

    def _supervise(self) -> None:
        delay = self.backoff[0]
        while not self._stop.is_set():
            session = Client(self.address, self.schema, self.device_id, self.election_id)
            try:
                session.open(self.connect_timeout, partial(self._on_packet_in, session))
                self.stats.connects += 1
                if self._stop.is_set():
                    break
                self._ensure_pipeline(session)
                with self._state:
                    self._session = session
                    self._sync(session)
                    self.generation += 1
                    self._synced.notify_all()
                delay = self.backoff[0]
                log.info("NIC at %s programmed (generation %d)", self.address, self.generation)
                next_check = time.monotonic() + self.HEALTH_INTERVAL
                while not session.closed.wait(0.2) and not self._stop.is_set():
                    self._expire_pending()
                    if time.monotonic() >= next_check:
                        self._check_pipeline(session)
                        next_check = time.monotonic() + self.HEALTH_INTERVAL
                if session.error is not None:
                    log.warning("NIC stream ended: %s", session.error)
            except (AgentError, grpc.RpcError, ValueError) as e:
                self.last_error = e
                if not self._stop.is_set():   # a requested stop cancels calls in flight
                    log.warning("NIC at %s: %s", self.address, e)
            except Exception as e:  # a bug must not end the supervisor: report it and retry
                self.last_error = e
                log.exception("NIC agent")
            finally:
                with self._state:
                    if self._session is session:
                        self._session = None
                session.close()
            self._stop.wait(delay)
            delay = min(delay * 2, self.backoff[1])

    # -- pipeline and state sync --

    def _runs_our_pipeline(self, session: Client) -> bool:
        try:
            got = session.stub.GetForwardingPipelineConfig(p4r.GetForwardingPipelineConfigRequest(
                device_id=self.device_id,
                response_type=p4r.GetForwardingPipelineConfigRequest.P4INFO_AND_COOKIE))
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.FAILED_PRECONDITION:   # no pipeline at all
                return False
            raise AgentError.from_rpc("GetForwardingPipelineConfig", e) from None
        # A target that keeps no cookie (0) is judged by its P4Info.
        return (got.config.cookie.cookie == self.cookie
                or (got.config.cookie.cookie == 0 and got.config.p4info == self.schema.p4info))

    def _check_pipeline(self, session: Client) -> None:
        """A NIC that lost or replaced our pipeline with the stream still up: start over."""
        if not self._runs_our_pipeline(session):
            raise AgentError("GetForwardingPipelineConfig", "FAILED_PRECONDITION",
                             f"NIC at {self.address} no longer runs our pipeline")

    def _ensure_pipeline(self, session: Client) -> None:
        """Push P4Info + device config unless the NIC already runs exactly this pipeline."""
        if not self._runs_our_pipeline(session):
            session.set_pipeline(self.device_config, self.cookie)

    def _sync(self, session: Client) -> None:
        """Make the NIC's owned tables equal the desired entries (delete, modify, insert)."""
        have: dict[tuple[str, Match], Entry] = {}
        for table in OWNED_TABLES:
            for e in session.read_table(table):
                have[e.key] = e
        deletes = [e for k, e in have.items() if k not in self._entries]
        modifies = [e for k, e in self._entries.items() if k in have and have[k] != e]
        inserts = [e for k, e in self._entries.items() if k not in have]
        session.write([(p4r.Update.DELETE, e) for e in deletes]
                      + [(p4r.Update.MODIFY, e) for e in modifies]
                      + [(p4r.Update.INSERT, e) for e in inserts])

    def _apply(self, ops: list[tuple[int, Entry]]) -> None:
        """Record `ops` in the desired state and write them now if connected (else at reconnect)."""
        for _, e in ops:                  # ValueError before anything is recorded
            encode_entry(self.schema, e)
        with self._state:
            before = [self._entries.get(e.key) for _, e in ops]
            for kind, e in ops:
                if kind == p4r.Update.DELETE:
                    self._entries.pop(e.key, None)
                else:
                    self._entries[e.key] = e
            session = self._session
            if session is None or session.closed.is_set():
                return
            try:
                session.write(ops)
            except AgentError as err:
                # What the NIC refused is not wanted either, or every resync would fail on it.
                failed = {u.index for u in err.updates} or set(range(len(ops)))
                for i in failed:
                    key, old = ops[i][1].key, before[i]
                    if old is None:
                        self._entries.pop(key, None)
                    else:
                        self._entries[key] = old
                raise

    # -- what others ask for --

    def steer_flow(self, remote_ip: int, local_ip: int, remote_port: int, local_port: int,
                   core: int) -> None:
        """Send the flow's arriving segments to `core` (for flows the RSS hash cannot place)."""
        key = _flow_key(remote_ip, local_ip, remote_port, local_port)
        with self._state:
            kind = p4r.Update.MODIFY if (FLOW_STEER, key) in self._entries else p4r.Update.INSERT
            self._apply([(kind, Entry(FLOW_STEER, key, STEER_TO_CORE,
                                      (("port", self.host.mtcp.core_port(core)),)))])

    def unsteer_flow(self, remote_ip: int, local_ip: int, remote_port: int, local_port: int
                     ) -> None:
        key = _flow_key(remote_ip, local_ip, remote_port, local_port)
        with self._state:
            e = self._entries.get((FLOW_STEER, key))
            if e is not None:
                self._apply([(p4r.Update.DELETE, e)])

    def desired(self, table: str | None = None) -> list[Entry]:
        """The entries the agent keeps on the NIC (all tables, or one)."""
        with self._state:
            return [e for e in self._entries.values() if table in (None, e.table)]

    def neighbors(self) -> dict[int, tuple[bytes, int]]:
        """Learned neighbours: IPv4 address -> (MAC, network port)."""
        with self._state:
            return dict(self._learned)

    def core_port_of(self, local_ip: int, local_port: int, remote_ip: int, remote_port: int
                     ) -> int | None:
        """The core port the NIC steers this flow's arriving segments to, from the entries the
        agent keeps on it: the flow's flow_steer entry, else the reta bucket of the RSS hash;
        None if neither is installed."""
        with self._state:
            e = self._entries.get((FLOW_STEER, _flow_key(remote_ip, local_ip, remote_port,
                                                         local_port)))
            if e is None:
                bucket = rss_bucket(local_ip, local_port, remote_ip, remote_port)
                e = self._entries.get((RETA, (("meta.rss_bucket", bucket),)))
        return None if e is None else dict(e.params)["port"]

    def send_packet(self, port: int, frame: bytes) -> None:
        """PacketOut: `frame` leaves the NIC unchanged out of `port`."""
        self._require_session().send_packet(frame, egress_port=port)

    # -- reading the NIC --

    def _require_session(self) -> Client:
        with self._state:
            session = self._session
        if session is None or session.closed.is_set():
            raise AgentError("connect", "UNAVAILABLE", f"NIC at {self.address} is not connected")
        return session

    def read_table(self, table: str) -> list[Entry]:
        """Every (non-default) entry of `table` as the NIC holds it."""
        return self._require_session().read_table(table)

    def read_counter(self, name: str) -> dict[int, tuple[int, int]]:
        """Indexed counter `name`: index -> (packets, bytes), cells still at zero left out."""
        return {i: c for i, c in self._require_session().read_counter(name).items() if any(c)}

    def read_direct_counter(self, table: str) -> dict[Match, tuple[int, int]]:
        """The direct counter of `table`: entry match -> (packets, bytes)."""
        return self._require_session().read_direct_counter(table)

    def nic_counters(self) -> dict[str, dict]:
        """Statistics in plain dicts: rx_port/tx_port (port -> (pkts, bytes)), drops (reason ->
        (pkts, bytes)) and flow_steer_hits (flow match -> (pkts, bytes))."""
        return {"rx_port": self.read_counter(RX_PORT), "tx_port": self.read_counter(TX_PORT),
                "drops": self.read_counter(DROPS),
                "flow_steer_hits": self.read_direct_counter(FLOW_STEER)}

    # -- packet-in: ARP learning and next-hop resolution --

    def _on_packet_in(self, session: Client, pkt: p4r.PacketIn) -> None:
        self.stats.packet_ins += 1
        try:
            meta = packet_in_metadata(self.schema, pkt)
        except ValueError as e:           # a field wider than the P4Info says: not ours to parse
            self.stats.ignored += 1
            log.warning("packet-in metadata: %s", e)
            return
        reason = meta.get("reason")
        try:
            if reason == PACKET_IN_ARP:
                self._on_arp(session, meta.get("ingress_port", -1), pkt.payload)
            elif reason == PACKET_IN_NEIGHBOR_MISS:
                self._on_neighbor_miss(session, pkt.payload)
            elif reason == PACKET_IN_ICMP:
                self._on_icmp(session, meta.get("ingress_port", -1), pkt.payload)
            else:
                self.stats.ignored += 1
        except AgentError as e:           # a write failed; the next reconnect re-syncs
            self.last_error = e
            log.warning("packet-in handling: %s", e)

    def _on_icmp(self, session: Client, port: int, frame: bytes) -> None:
        """Log what an ICMP message says (the NIC answers echo requests itself), and hand a
        fragmentation-needed message to the core whose engine runs the flow it quotes."""
        msg = parse_icmp(frame)
        if msg is None:
            self.stats.ignored += 1
            return
        outcome = self._forward_frag_needed(session, frame, msg) if msg.message.frag_needed else ""
        self._icmp_log.warning("port %d: %s%s", port, msg, outcome)
        self.stats.icmp += 1                      # counted once handled and logged

    def _forward_frag_needed(self, session: Client, frame: bytes, msg: Icmp) -> str:
        """RFC 1191: send the frame unchanged out of the core port the flow's segments arrive
        on (the core's engine checks it against the connection, RFC 5927 4.1); what happened,
        for the log line."""
        try:
            fn = pmtu.frag_needed(msg.payload)
        except ValueError as e:
            self.stats.pmtu_ignored += 1
            return f"; ignored: {e}"
        if fn.local_ip not in self._local_ips:    # routers answer the quoted datagram's source
            self.stats.pmtu_ignored += 1
            return "; ignored: the quoted segment was not sent from a local address"
        port = self.core_port_of(fn.local_ip, fn.local_port, fn.remote_ip, fn.remote_port)
        if port is None:
            self.stats.pmtu_ignored += 1
            return "; ignored: no core port steers that flow"
        session.send_packet(frame, egress_port=port)
        self.stats.pmtu_forwarded += 1
        return f"; path MTU {fn.mtu} sent to core port {port}"

    def _on_arp(self, session: Client, port: int, frame: bytes) -> None:
        arp = parse_arp(frame)
        iface = self._iface_of_port.get(port)
        with self._state:
            pending = None if arp is None else self._pending.get(arp.spa)
            # RFC 826 "Packet Reception": update a pair we already hold (or asked for, on the
            # port we asked on); add a new one only if we are the target and it is on-link.
            # Static arp.conf entries are never overridden.
            known = arp is not None and (arp.spa in self._learned
                                         or (pending is not None and pending.port == port))
            if (iface is None or arp is None or arp.spa in self._static_neighbors
                    or not (known or (arp.tpa in self._local_ips
                                      and self._on_link(iface, arp.spa)))):
                self.stats.ignored += 1
                return
            if self._learned.get(arp.spa) != (arp.sha, port):
                self._learn(arp.spa, arp.sha, port)
            self._pending.pop(arp.spa, None)
        for f in (pending.frames if pending is not None else ()):
            self._release(session, port, arp.sha, f)

    def _release(self, session: Client, port: int, dst_mac: bytes, frame: bytes) -> None:
        """Send a held frame (zero MACs, checksums done by the NIC) out of `port` with MACs."""
        session.send_packet(dst_mac + self._port_mac[port] + bytes(frame[12:]), egress_port=port)
        self.stats.frames_released += 1

    def _learn(self, ip: int, mac: bytes, port: int) -> None:
        ops = []
        for e in (entry(IPV4_LPM, {"hdr.ipv4.dst_addr": (ip, 32)}, SET_NEXT_HOP,
                        next_hop=ip, port=port),
                  entry(NEIGHBOR, {"meta.next_hop": ip}, SET_DST_MAC,
                        mac=int.from_bytes(mac, "big"))):
            ops.append((p4r.Update.MODIFY if e.key in self._entries else p4r.Update.INSERT, e))
        self._apply(ops)
        self._learned[ip] = (mac, port)
        self.stats.arp_learned += 1

    def _on_link(self, iface: int, ip: int) -> bool:
        return ipaddress.IPv4Address(ip) in self.host.mtcp.local_ip[iface].network

    def _on_neighbor_miss(self, session: Client, frame: bytes) -> None:
        """Hold the frame, ask for the next hop's MAC (RFC 826), release it when the reply comes."""
        dst = _ipv4_dst(frame)
        route = None if dst is None else self.host.route_for(ipaddress.IPv4Address(dst))
        if route is None:
            self.stats.frames_dropped += 1
            return
        iface = self.host.mtcp.interface(route.dev)
        cfg = self.host.mtcp
        now = time.monotonic()
        with self._state:
            learned = self._learned.get(dst)
            if learned is not None:      # raced with the install: send it on now
                self._release(session, learned[1], learned[0], frame)
                return
            p = self._pending.get(dst)
            if p is None:
                if len(self._pending) >= self.MAX_PENDING:
                    _, old = self._pending.popitem(last=False)
                    self.stats.frames_dropped += len(old.frames)
                port = cfg.network_ports[iface]
                p = self._pending[dst] = _Pending(port, int(cfg.local_ip[iface].ip), now, 0.0,
                                                  deque(maxlen=self.ARP_QUEUE))
            if len(p.frames) == p.frames.maxlen:
                self.stats.frames_dropped += 1
            p.frames.append(bytes(frame))
            if now - p.last >= self.ARP_RETRY:
                p.last = now
                session.send_packet(arp_request(self._port_mac[p.port], p.src_ip, dst),
                                    egress_port=p.port)
                self.stats.arp_requests += 1

    def _expire_pending(self) -> None:
        now = time.monotonic()
        with self._state:
            for ip in [ip for ip, p in self._pending.items() if now - p.first > self.ARP_GIVE_UP]:
                self.stats.frames_dropped += len(self._pending.pop(ip).frames)

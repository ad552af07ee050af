"""Python mirror of p4src/mtcp_nic.p4: one method per v1model control, same names, same behaviour.

The P4 source is the specification. Each method below carries the name of the control it mirrors
(NicParser, NicVerifyChecksum, NicIngress, NicEgress, NicComputeChecksum, NicDeparser) and
follows it statement by statement, including BMv2's v1model semantics: a parse failure or a bad
checksum only sets a flag that ingress acts on; counters count the frame's ingress length; the
checksum payload is everything after the last parsed header.

Headers are read once with precompiled structs from the frame; the deparser copies the frame only
when a header changed. Checksums use p4mtcp.hashing.ones_sum over memoryview slices (C speed).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Protocol

from p4mtcp.hashing import ones_sum, rss_bucket
from p4mtcp.p4info import P4Schema, SchemaError

# The program's names, spelled once in p4src (docs/ARCHITECTURE.md).
from p4mtcp.p4src import (  # noqa: E402,I001
    PORT_ROLE, ARP_RESPONDER, LOCAL_IPV4, FLOW_STEER, RETA, IPV4_LPM, NEIGHBOR, PORT_MAC,
    SET_NETWORK_PORT, SET_CORE_PORT, UNKNOWN_PORT, ARP_REPLY, ARP_TO_CPU, SET_LOCAL, NOT_LOCAL,
    STEER_TO_CORE, USE_RSS, NO_CORE, SET_NEXT_HOP, NO_ROUTE, SET_DST_MAC, NEIGHBOR_MISS,
    SET_SRC_MAC, NOP, DROP, TO_CPU, ICMP_ECHO_REPLY, RX_PORT, TX_PORT, DROPS, FLOW_STEER_HITS,
    ICMP_ECHO, PACKET_IN_ARP, PACKET_IN_NEIGHBOR_MISS, PACKET_IN_ICMP,
)

# table -> (match fields (name, bitwidth, match type), actions {name: params}, initial default)
TABLES: dict[str, tuple[tuple[tuple[str, int, str], ...], dict[str, tuple[tuple[str, int], ...]], str]] = {
    PORT_ROLE: ((("standard_metadata.ingress_port", 9, "exact"),),
                {SET_NETWORK_PORT: (), SET_CORE_PORT: (("core", 8),), UNKNOWN_PORT: ()}, UNKNOWN_PORT),
    ARP_RESPONDER: ((("hdr.arp.tpa", 32, "exact"),),
                    {ARP_REPLY: (("mac", 48),), ARP_TO_CPU: ()}, ARP_TO_CPU),
    LOCAL_IPV4: ((("hdr.ipv4.dst_addr", 32, "exact"),), {SET_LOCAL: (), NOT_LOCAL: ()}, NOT_LOCAL),
    FLOW_STEER: ((("hdr.ipv4.src_addr", 32, "exact"), ("hdr.ipv4.dst_addr", 32, "exact"),
                  ("hdr.tcp.src_port", 16, "exact"), ("hdr.tcp.dst_port", 16, "exact")),
                 {STEER_TO_CORE: (("port", 9),), USE_RSS: ()}, USE_RSS),
    RETA: ((("meta.rss_bucket", 8, "exact"),), {STEER_TO_CORE: (("port", 9),), NO_CORE: ()}, NO_CORE),
    IPV4_LPM: ((("hdr.ipv4.dst_addr", 32, "lpm"),),
               {SET_NEXT_HOP: (("next_hop", 32), ("port", 9)), NO_ROUTE: ()}, NO_ROUTE),
    NEIGHBOR: ((("meta.next_hop", 32, "exact"),),
               {SET_DST_MAC: (("mac", 48),), NEIGHBOR_MISS: ()}, NEIGHBOR_MISS),
    PORT_MAC: ((("standard_metadata.egress_spec", 9, "exact"),),
               {SET_SRC_MAC: (("mac", 48),), NOP: ()}, NOP),
}
# Every action of the program: the tables' and those the apply block calls itself.
ACTIONS = frozenset({a for _, actions, _ in TABLES.values() for a in actions}
                    | {DROP, TO_CPU, ICMP_ECHO_REPLY})
COUNTERS = {RX_PORT: 512, DROPS: 16, TX_PORT: 512, ICMP_ECHO: 512}
DIRECT_COUNTERS = {FLOW_STEER_HITS: FLOW_STEER}
CONTROLLER_HEADERS = {
    "packet_in": (("ingress_port", 9), ("_pad", 7), ("reason", 8)),
    "packet_out": (("egress_port", 9), ("_pad", 7)),
}

# Index of NicIngress.drops (p4src/include/headers.p4).
DROP_PARSER_ERROR = 0
DROP_BAD_IPV4_CSUM = 1
DROP_BAD_TCP_CSUM = 2
DROP_BAD_LENGTH = 3
DROP_UNKNOWN_PORT = 4
DROP_NOT_LOCAL = 5
DROP_UNHANDLED = 6
DROP_NO_CORE = 7
DROP_NO_ROUTE = 8
DROP_IPV4_OPTIONS = 9
DROP_BAD_ICMP_CSUM = 10
ROLE_UNKNOWN, ROLE_NETWORK, ROLE_CORE = 0, 1, 2
DROP_PORT = 511  # v1model: mark_to_drop sets egress_spec to 511
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_ARP = 0x0806
IP_PROTO_TCP = 6
IP_PROTO_ICMP = 1
ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY_TYPE = 8, 0
ETH_MIN_FRAME = 60

_ETH = struct.Struct("!6s6sH")
_ARP = struct.Struct("!HHBBH6sI6sI")
_IPV4 = struct.Struct("!BBHHHBBHII")  # ver_ihl tos total_len id flags_frag ttl proto csum src dst
_TCP = struct.Struct("!HHIIBBHHH")  # src_port dst_port seq ack data_offset_res flags window csum urg
_ICMP = struct.Struct("!BBHI")  # type code checksum rest
_U16 = struct.Struct("!H")
_PACKET_IN = struct.Struct("!HB")  # ingress_port:9 _pad:7, reason:8
_PACKET_OUT = _U16  # egress_port:9 _pad:7

ETH_LEN, ARP_LEN, IPV4_LEN, TCP_LEN, ICMP_LEN = 14, 28, 20, 20, 8
_IP_OFF = ETH_LEN
_TCP_OFF = ETH_LEN + IPV4_LEN


class TableState(Protocol):
    def lookup(self, key: tuple[int, ...], nbytes: int) -> tuple[str, tuple[int, ...]]: ...


class CounterState(Protocol):
    def count(self, index: int, nbytes: int) -> None: ...


def validate(schema: P4Schema) -> None:
    """ValueError naming the first table/action/field/width the mirror does not implement."""
    try:
        if set(schema.actions) != ACTIONS:
            raise ValueError(f"actions {sorted(set(schema.actions) ^ ACTIONS)}: in only one of "
                             "the P4Info and the mirror")
        for tname, (fields, actions, default) in TABLES.items():
            table = schema.table(tname)
            got = tuple((f.name, f.bitwidth, f.match_type) for f in table.match_fields)
            if got != fields:
                raise ValueError(f"table {tname}: match fields {got} differ from the mirror's {fields}")
            refs = {schema.by_id(i).name for i in table.action_ids if schema.by_id(i) is not None}
            for aname, params in actions.items():
                if aname not in refs:
                    raise ValueError(f"table {tname}: action {aname} missing from its action list")
                got_params = tuple((p.name, p.bitwidth) for p in schema.action(aname).params)
                if got_params != params:
                    raise ValueError(f"action {aname}: parameters {got_params} differ from {params}")
            unknown = refs - set(actions)
            if unknown:
                raise ValueError(f"table {tname}: actions {sorted(unknown)} are not in the mirror")
            if table.initial_default is not None:
                initial = schema.by_id(table.initial_default[0])
                if initial is None or initial.name != default:
                    raise ValueError(f"table {tname}: initial default action is not {default}")
        for cname, size in COUNTERS.items():
            counter = schema.counter(cname)
            if counter.size < size or counter.unit != "both":
                raise ValueError(f"counter {cname}: size {counter.size} unit {counter.unit}, "
                                 f"the mirror needs {size} packets-and-bytes")
        for cname, tname in DIRECT_COUNTERS.items():
            if schema.direct_counter(cname).table_id != schema.table(tname).id:
                raise ValueError(f"direct counter {cname} is not attached to {tname}")
        for hname, hfields in CONTROLLER_HEADERS.items():
            got_h = tuple((f.name, f.bitwidth) for f in schema.controller_header(hname).fields)
            if got_h != hfields:
                raise ValueError(f"controller header {hname}: fields {got_h} differ from {hfields}")
    except SchemaError as e:
        raise ValueError(f"P4Info does not match the embedded pipeline: {e}") from None


class Packet:
    """One frame's journey through the pipeline: parsed headers, metadata, standard metadata."""

    __slots__ = (
        "in_port", "frame", "length", "parser_error", "checksum_error",
        "packet_out_port", "eth_dst", "eth_src", "eth_type", "arp",
        "ipv4", "tcp_valid", "tcp", "icmp", "l4_len", "port_role", "core", "rss_bucket",
        "next_hop", "drop", "drop_reason", "egress_spec", "egress_port", "packet_in", "eth_dirty",
        "arp_dirty", "ipv4_dirty", "ipv4_csum", "tcp_csum",
    )

    def __init__(self, in_port: int, frame: bytes):
        self.in_port = in_port
        self.frame = frame
        self.length = len(frame)
        self.parser_error: str | None = None
        self.checksum_error = False
        self.packet_out_port = -1  # -1: header invalid
        self.eth_dst = self.eth_src = b""
        self.eth_type = 0
        self.arp: list | None = None
        self.ipv4: tuple | None = None
        self.tcp_valid = False
        self.tcp: tuple = ()
        self.icmp: tuple | None = None
        self.l4_len = 0
        self.port_role = ROLE_UNKNOWN
        self.core = 0
        self.rss_bucket = 0
        self.next_hop = 0
        self.drop = False
        self.drop_reason = 0
        self.egress_spec = 0  # v1model's initial value
        self.egress_port = 0
        self.packet_in: tuple[int, int] | None = None
        self.eth_dirty = False
        self.arp_dirty = False
        self.ipv4_dirty = False  # addresses changed (an echo reply)
        self.ipv4_csum: int | None = None  # set by NicComputeChecksum
        self.tcp_csum: int | None = None

    def set_drop(self, reason: int) -> None:
        self.drop = True
        self.drop_reason = reason


def _mac(value: int) -> bytes:
    return value.to_bytes(6, "big")


class NicPipeline:
    """The NIC program over the device's table and counter state."""

    def __init__(self, tables: Mapping[str, TableState], counters: Mapping[str, CounterState],
                 cpu_port: int = 255):
        self.cpu_port = cpu_port
        self._port_role = tables[PORT_ROLE]
        self._arp_responder = tables[ARP_RESPONDER]
        self._local_ipv4 = tables[LOCAL_IPV4]
        self._flow_steer = tables[FLOW_STEER]
        self._reta = tables[RETA]
        self._ipv4_lpm = tables[IPV4_LPM]
        self._neighbor = tables[NEIGHBOR]
        self._port_mac = tables[PORT_MAC]
        self._rx_port = counters[RX_PORT]
        self._tx_port = counters[TX_PORT]
        self._drops = counters[DROPS]
        self._icmp_echo = counters[ICMP_ECHO]

    def process(self, in_port: int, frame: bytes) -> list[tuple[int, bytes]]:
        """(egress port, frame) pairs. Frames to cpu_port start with the packet_in header bytes,
        exactly as BMv2 emits them on its CPU port; frames from cpu_port start with packet_out."""
        p = Packet(in_port, frame)
        self.parser(p)
        # NicVerifyChecksum runs here in v1model; its one output, checksum_error, is read only by
        # ingress for frames from network ports, so ingress runs it there, on demand, and frames
        # from cores (zero checksums, never verified) skip the wasted pass.
        self.ingress(p)
        if p.drop or p.egress_spec == DROP_PORT:
            return []
        p.egress_port = p.egress_spec
        self.egress(p)
        self.compute_checksum(p)
        return [(p.egress_port, self.deparser(p))]

    # --- NicParser ------------------------------------------------------------------------------

    def parser(self, p: Packet) -> None:
        frame, n = p.frame, p.length
        if p.in_port == self.cpu_port:  # state start: select(ingress_port) CPU_PORT
            if n < 2:
                p.parser_error = "PacketTooShort"
                return
            p.packet_out_port = _PACKET_OUT.unpack_from(frame, 0)[0] >> 7
            return
        if n < ETH_LEN:
            p.parser_error = "PacketTooShort"
            return
        p.eth_dst, p.eth_src, p.eth_type = _ETH.unpack_from(frame, 0)
        if p.eth_type == ETHERTYPE_ARP:
            if n < ETH_LEN + ARP_LEN:
                p.parser_error = "PacketTooShort"
                return
            p.arp = list(_ARP.unpack_from(frame, ETH_LEN))
        elif p.eth_type == ETHERTYPE_IPV4:
            if n < _TCP_OFF:
                p.parser_error = "PacketTooShort"
                return
            ip = p.ipv4 = _IPV4.unpack_from(frame, _IP_OFF)
            if ip[0] >> 4 != 4:
                p.parser_error = "IPv4BadVersion"
                return
            p.l4_len = (ip[2] - 20) & 0xFFFF
            # select(ihl, frag_offset, protocol): (5, 0, TCP) -> parse_tcp
            if ip[0] & 0xF == 5 and ip[4] & 0x1FFF == 0 and ip[6] == IP_PROTO_TCP:
                if n < _TCP_OFF + TCP_LEN:
                    p.parser_error = "PacketTooShort"
                    return
                p.tcp = _TCP.unpack_from(frame, _TCP_OFF)
                p.tcp_valid = True
                if p.tcp[4] >> 4 < 5:
                    p.parser_error = "TcpBadDataOffset"
            elif ip[0] & 0xF == 5 and ip[4] & 0x1FFF == 0 and ip[6] == IP_PROTO_ICMP:
                if n < _TCP_OFF + ICMP_LEN:
                    p.parser_error = "PacketTooShort"
                    return
                p.icmp = _ICMP.unpack_from(frame, _TCP_OFF)

    # --- NicVerifyChecksum -----------------------------------------------------------------------

    def verify_checksum(self, p: Packet) -> None:
        """verify_checksum / verify_checksum_with_payload with csum16: flag a mismatch."""
        if p.ipv4 is None or p.parser_error is not None:
            return  # a parser error drops the frame before the flag is read
        mv = memoryview(p.frame)
        ip = p.ipv4
        if self._ipv4_checksum(mv, ip) != ip[7]:
            p.checksum_error = True
        elif p.tcp_valid and self._tcp_checksum(mv, p) != p.tcp[7]:
            p.checksum_error = True
        elif p.icmp is not None and self._icmp_checksum(mv, p.icmp) != p.icmp[2]:
            p.checksum_error = True

    # Both checksums leave their own field out. One pass sums the whole header (or segment) and
    # takes the field back off: one's-complement addition is addition mod 0xFFFF (RFC 1071), and
    # what remains is never all zero (IPv4 version 4; the pseudo-header's protocol 6), so a zero
    # residue is written 0xFFFF, exactly as ones_sum over the fields without it would give.

    @staticmethod
    def _ipv4_checksum(mv: memoryview, ip: tuple) -> int:
        """csum16 over the IPv4 header fields, the checksum field (ip[7]) left out."""
        return ~((ones_sum(mv[_IP_OFF:_TCP_OFF]) - ip[7]) % 0xFFFF or 0xFFFF) & 0xFFFF

    @staticmethod
    def _tcp_checksum(mv: memoryview, p: Packet) -> int:
        """csum16 over {src, dst, 8w0, protocol, l4_len, TCP fields but checksum} and the payload
        (options, data and any Ethernet padding: BMv2 sums everything after the parsed headers)."""
        ip = p.ipv4
        src, dst = ip[8], ip[9]
        pseudo = (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + ip[6] + p.l4_len
        return ~((ones_sum(mv[_TCP_OFF:], pseudo) - p.tcp[7]) % 0xFFFF or 0xFFFF) & 0xFFFF

    @staticmethod
    def _icmp_checksum(mv: memoryview, icmp: tuple) -> int:
        """csum16 over {type, code, rest} and the payload (data and any Ethernet padding)."""
        return ~((ones_sum(mv[_TCP_OFF:]) - icmp[2]) % 0xFFFF or 0xFFFF) & 0xFFFF

    # --- NicIngress ------------------------------------------------------------------------------

    def ingress(self, p: Packet) -> None:
        nbytes = p.length
        self._rx_port.count(p.in_port, nbytes)
        if p.packet_out_port >= 0:
            p.egress_spec = p.packet_out_port
            p.packet_out_port = -1  # setInvalid: the deparser drops the header
            return
        if p.parser_error is not None:
            p.set_drop(DROP_PARSER_ERROR)
        else:
            action, params = self._port_role.lookup((p.in_port,), nbytes)
            if action == SET_NETWORK_PORT:
                p.port_role = ROLE_NETWORK
            elif action == SET_CORE_PORT:
                p.port_role = ROLE_CORE
                p.core = params[0]
            else:
                p.set_drop(DROP_UNKNOWN_PORT)

        if not p.drop and p.port_role != ROLE_UNKNOWN and p.ipv4 is not None:
            self._ipv4_admission(p)

        if not p.drop:
            if p.port_role == ROLE_NETWORK:
                self._from_network(p)
            elif p.port_role == ROLE_CORE:
                self._from_core(p)

        if p.drop:
            self._drops.count(p.drop_reason, nbytes)
            p.egress_spec = DROP_PORT

    def _ipv4_admission(self, p: Packet) -> None:
        ip = p.ipv4
        total_len = ip[2]
        ip_end = total_len + ETH_LEN
        n = p.length
        if ip[0] & 0xF != 5:
            p.set_drop(DROP_IPV4_OPTIONS)
        elif (total_len < 20 or ip_end > n or (ip_end < n and n > ETH_MIN_FRAME)
              or (p.tcp_valid and (p.tcp[4] >> 4) << 2 > p.l4_len)):
            # RFC 791: total length counts header and data; only Ethernet padding of a
            # minimum-size frame may follow the datagram.
            p.set_drop(DROP_BAD_LENGTH)
        elif ip[4] & 0x2000 or ip[4] & 0x1FFF:  # MF flag or a fragment offset
            p.set_drop(DROP_UNHANDLED)

    def _from_network(self, p: Packet) -> None:
        nbytes = p.length
        arp = p.arp
        if arp is not None:
            if arp[0] == 1 and arp[1] == ETHERTYPE_IPV4 and arp[2] == 6 and arp[3] == 4:
                if arp[4] == 1:  # request
                    action, params = self._arp_responder.lookup((arp[8],), nbytes)
                    if action == ARP_REPLY:
                        self._arp_reply(p, params[0])
                    else:
                        self._to_cpu(p, PACKET_IN_ARP)
                else:
                    self._to_cpu(p, PACKET_IN_ARP)
            else:
                p.set_drop(DROP_UNHANDLED)
            return
        ip = p.ipv4
        if ip is None:
            p.set_drop(DROP_UNHANDLED)
            return
        self.verify_checksum(p)
        if p.checksum_error:
            # One v1model error bit: the header (checksum included) sums to zero iff valid.
            residue = ~ones_sum(memoryview(p.frame)[_IP_OFF:_TCP_OFF]) & 0xFFFF
            p.set_drop(DROP_BAD_IPV4_CSUM if residue != 0 else
                       DROP_BAD_TCP_CSUM if p.tcp_valid else DROP_BAD_ICMP_CSUM)
            return
        action, _ = self._local_ipv4.lookup((ip[9],), nbytes)
        if action != SET_LOCAL:
            p.set_drop(DROP_NOT_LOCAL)
            return
        if p.icmp is not None:
            if p.icmp[0] == ICMP_ECHO_REQUEST and p.icmp[1] == 0:
                self._icmp_echo_reply(p)
            else:
                self._to_cpu(p, PACKET_IN_ICMP)
            return
        if not p.tcp_valid:
            p.set_drop(DROP_UNHANDLED)
            return
        tcp = p.tcp
        action, params = self._flow_steer.lookup((ip[8], ip[9], tcp[0], tcp[1]), nbytes)
        if action == USE_RSS:
            # Symmetric RSS: hash(rss_bucket, crc32, 0, {lo_ip, hi_ip, lo_port, hi_port}, RETA_SIZE)
            p.rss_bucket = rss_bucket(ip[8], tcp[0], ip[9], tcp[1])
            action, params = self._reta.lookup((p.rss_bucket,), nbytes)
            if action == STEER_TO_CORE:
                p.egress_spec = params[0]
            else:
                p.set_drop(DROP_NO_CORE)
        elif action == STEER_TO_CORE:
            p.egress_spec = params[0]

    def _from_core(self, p: Packet) -> None:
        nbytes = p.length
        if p.ipv4 is None:
            p.set_drop(DROP_UNHANDLED)
            return
        action, params = self._ipv4_lpm.lookup((p.ipv4[9],), nbytes)
        if action != SET_NEXT_HOP:
            p.set_drop(DROP_NO_ROUTE)
            return
        next_hop, p.egress_spec = params
        p.next_hop = next_hop or p.ipv4[9]  # 0: on-link, the destination is the next hop
        action, params = self._neighbor.lookup((p.next_hop,), nbytes)
        if action == SET_DST_MAC:
            p.eth_dst = _mac(params[0])
            p.eth_dirty = True
            action, params = self._port_mac.lookup((p.egress_spec,), nbytes)
            if action == SET_SRC_MAC:
                p.eth_src = _mac(params[0])
        else:
            self._to_cpu(p, PACKET_IN_NEIGHBOR_MISS)

    def _arp_reply(self, p: Packet, mac: int) -> None:
        """RFC 826 "Packet Reception": answer with our hardware address, out of the same port."""
        arp = p.arp
        own = _mac(mac)
        p.eth_dst, p.eth_src = p.eth_src, own
        arp[4] = 2
        arp[7] = arp[5]  # tha = sha
        arp[5] = own
        arp[6], arp[8] = arp[8], arp[6]  # spa <-> tpa
        p.eth_dirty = p.arp_dirty = True
        p.egress_spec = p.in_port

    def _icmp_echo_reply(self, p: Packet) -> None:
        """RFC 792 echo reply: addresses reversed, type 0, out of the same port; the checksum
        updated for the type word 0x0800 -> 0 (RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'))."""
        p.eth_dst, p.eth_src = p.eth_src, p.eth_dst
        ip = p.ipv4
        p.ipv4 = (*ip[:8], ip[9], ip[8])
        typ, code, csum, rest = p.icmp
        total = (~csum & 0xFFFF) + 0xF7FF
        total = (total & 0xFFFF) + (total >> 16)
        p.icmp = (ICMP_ECHO_REPLY_TYPE, code, ~total & 0xFFFF, rest)
        p.eth_dirty = p.ipv4_dirty = True
        p.egress_spec = p.in_port
        self._icmp_echo.count(p.in_port, p.length)

    def _to_cpu(self, p: Packet, reason: int) -> None:
        p.egress_spec = self.cpu_port
        p.packet_in = (p.in_port, reason)

    # --- NicEgress -------------------------------------------------------------------------------

    def egress(self, p: Packet) -> None:
        self._tx_port.count(p.egress_port, p.length)  # BMv2 counts the ingress length

    # --- NicComputeChecksum ----------------------------------------------------------------------

    def compute_checksum(self, p: Packet) -> None:
        """update_checksum(_with_payload) for frames from core ports: the stack left them zero."""
        if p.port_role != ROLE_CORE or p.ipv4 is None:
            return
        mv = memoryview(p.frame)
        p.ipv4_csum = self._ipv4_checksum(mv, p.ipv4)
        if p.tcp_valid:
            p.tcp_csum = self._tcp_checksum(mv, p)

    # --- NicDeparser -----------------------------------------------------------------------------

    def deparser(self, p: Packet) -> bytes:
        """emit(packet_in, ethernet, arp, ipv4, tcp) then the unparsed payload."""
        frame = p.frame
        if p.in_port == self.cpu_port:
            return frame[2:]  # packet_out was set invalid; the rest is payload
        if not (p.eth_dirty or p.arp_dirty or p.ipv4_dirty or p.ipv4_csum is not None
                or p.packet_in):
            return frame
        buf = bytearray(frame)
        if p.eth_dirty:
            _ETH.pack_into(buf, 0, p.eth_dst, p.eth_src, p.eth_type)
        if p.arp_dirty:
            _ARP.pack_into(buf, ETH_LEN, *p.arp)
        if p.ipv4_dirty:
            _IPV4.pack_into(buf, _IP_OFF, *p.ipv4)
            _ICMP.pack_into(buf, _TCP_OFF, *p.icmp)
        if p.ipv4_csum is not None:
            _U16.pack_into(buf, _IP_OFF + 10, p.ipv4_csum)
        if p.tcp_csum is not None:
            _U16.pack_into(buf, _TCP_OFF + 16, p.tcp_csum)
        if p.packet_in:
            port, reason = p.packet_in
            return _PACKET_IN.pack((port & 0x1FF) << 7, reason) + buf
        return bytes(buf)


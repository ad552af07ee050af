"""Python mirror of p4src/mtcp_nic.p4: one method per v1model control, same names, same behaviour.

The P4 source is the specification. Each method below carries the name of the control it mirrors
(NicParser, NicVerifyChecksum, NicIngress, NicEgress, NicComputeChecksum, NicDeparser) and
follows it statement by statement, including BMv2's v1model semantics: a parse failure or a bad
checksum only sets a flag that ingress acts on; counters count the frame's ingress length; the
checksum payload is everything after the last parsed header.

Headers are read once with precompiled structs from the frame; the deparser copies the frame only
when a header changed. Checksums use p4mtcp.hashing (C speed, no per-byte Python loop).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Final

from p4mtcp.hashing import ones_fold, ones_sum, rss_bucket
from p4mtcp.p4info import P4Schema, SchemaError

from .tables import CounterState, TableState

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
DROP_PARSER_ERROR: Final = 0
DROP_BAD_IPV4_CSUM: Final = 1
DROP_BAD_TCP_CSUM: Final = 2
DROP_BAD_LENGTH: Final = 3
DROP_UNKNOWN_PORT: Final = 4
DROP_NOT_LOCAL: Final = 5
DROP_UNHANDLED: Final = 6
DROP_NO_CORE: Final = 7
DROP_NO_ROUTE: Final = 8
DROP_IPV4_OPTIONS: Final = 9
DROP_BAD_ICMP_CSUM: Final = 10
ROLE_UNKNOWN: Final = 0
ROLE_NETWORK: Final = 1
ROLE_CORE: Final = 2
DROP_PORT: Final = 511  # v1model: mark_to_drop sets egress_spec to 511
ETHERTYPE_IPV4: Final = 0x0800
ETHERTYPE_ARP: Final = 0x0806
IP_PROTO_TCP: Final = 6
IP_PROTO_ICMP: Final = 1
ICMP_ECHO_REQUEST: Final = 8
ICMP_ECHO_REPLY_TYPE: Final = 0
ETH_MIN_FRAME: Final = 60

# Only the fields the program reads: fewer objects per frame (pad bytes "x" are skipped). The
# IPv4 header is read as its ten 16-bit words: the fields come from them, and so does their sum,
# which both IPv4 checksum controls need.
_ARP: Final = struct.Struct("!HHBBH6sI6sI")
_IPV4_WORDS: Final = struct.Struct("!10H").unpack_from
_TCP: Final = struct.Struct("!HH8xB3xH").unpack_from  # src_port dst_port data_offset_res csum
_ICMP: Final = struct.Struct("!BBH")  # type code checksum
_ADDRS: Final = struct.Struct("!II")  # IPv4 src_addr dst_addr
_U16: Final = struct.Struct("!H")
_PACKET_IN: Final = struct.Struct("!HB")  # ingress_port:9 _pad:7, reason:8

ETH_LEN: Final = 14
ARP_LEN: Final = 28
IPV4_LEN: Final = 20
TCP_LEN: Final = 20
ICMP_LEN: Final = 8
_IP_OFF: Final = ETH_LEN
_TCP_OFF: Final = ETH_LEN + IPV4_LEN


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
    """One frame's journey through the pipeline: parsed header fields, metadata, standard
    metadata. The class holds every field's initial value, so a frame sets only what its path
    through the program sets (a header's fields are meaningful only while it is valid)."""

    # the frame and what the parser found
    in_port: int
    frame: bytes
    length: int
    parser_error = ""             # v1model: error.NoError
    checksum_error = False
    packet_out_port = -1          # -1: packet_out header invalid
    eth_type = 0
    arp: list | None = None       # arp header, field by field (None: invalid)
    ipv4_valid = False
    ip_ver_ihl = 0
    ip_total_len = 0
    ip_flags_frag = 0
    ip_proto = 0
    ip_csum = 0
    ip_sum = 0                    # the header's ten words added up (checksum field included)
    ip_src = 0
    ip_dst = 0
    tcp_valid = False
    tcp_src_port = 0
    tcp_dst_port = 0
    tcp_data_offset = 0
    tcp_csum = 0
    icmp_valid = False
    icmp_type = 0
    icmp_code = 0
    icmp_csum = 0
    l4_len = 0
    # metadata
    port_role = ROLE_UNKNOWN
    core = 0
    rss_bucket = 0
    next_hop = 0
    # standard metadata
    drop = False
    drop_reason = 0
    egress_spec = 0               # v1model's initial value
    egress_port = 0
    # what the deparser changes in the frame
    packet_in_reason = 0          # 0: packet_in header invalid (reasons start at 1)
    eth_dst = b""                 # b"": unchanged
    eth_src = b""
    arp_dirty = False
    ipv4_dirty = False            # addresses swapped (an echo reply)
    new_ipv4_csum = -1            # set by NicComputeChecksum; -1: not computed
    new_tcp_csum = -1

    def __init__(self, in_port: int, frame: bytes) -> None:
        self.in_port = in_port
        self.frame = frame
        self.length = len(frame)

    def set_drop(self, reason: int) -> None:
        self.drop = True
        self.drop_reason = reason


# What a forwarded TCP segment's lookups decided, for the flow cache (dataplane/flowcache.py):
# (egress port, fill both checksums (a frame from a core; else verify them), destination MAC and
# source MAC to write (b"": unchanged), the counter cells the frame counted: (rx_port cell,
# tx_port cell, the hit flow_steer entry's direct counts or None)).
Decision = tuple[int, bool, bytes, bytes, tuple]


def _mac(value: int) -> bytes:
    return value.to_bytes(6, "big")


# The IPv4 and TCP checksums leave their own field out: one pass sums the whole header (or
# segment) and takes the field back off, since one's-complement addition is addition mod 0xFFFF
# (RFC 1071). What remains is never all zero (IPv4 version 4; the pseudo-header's protocol 6), so
# a zero residue is the sum 0xFFFF, exactly as ones_sum over the fields without it would give.

def _csum_without(total: int, field: int) -> int:
    """csum16 of words that add up to ``total`` with the 16-bit ``field`` among them left out
    (the words left are never all zero: the comment above)."""
    return ~((total - field) % 0xFFFF or 0xFFFF) & 0xFFFF


def _ipv4_checksum(p: Packet) -> int:
    """csum16 over the IPv4 header fields, the checksum field left out."""
    return _csum_without(p.ip_sum, p.ip_csum)


def _tcp_checksum(p: Packet) -> int:
    """csum16 over {src, dst, 8w0, protocol, l4_len, TCP fields but checksum} and the payload
    (options, data and any Ethernet padding: BMv2 sums everything after the parsed headers)."""
    src, dst = p.ip_src, p.ip_dst
    pseudo = (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + p.ip_proto + p.l4_len
    return _csum_without(ones_sum(p.frame[_TCP_OFF:], pseudo), p.tcp_csum)


def _icmp_checksum(p: Packet) -> int:
    """csum16 over {type, code, rest} and the payload (data and any Ethernet padding). An ICMP
    message may be all zero but its checksum, whose sum is 0 and checksum 0xFFFF (as BMv2's
    csum16 gives), which the residue above cannot tell from a non-zero multiple of 0xFFFF: the
    words before and after the checksum field are summed apart."""
    frame = p.frame
    return ~ones_sum(frame[_TCP_OFF + 4:], ones_sum(frame[_TCP_OFF:_TCP_OFF + 2])) & 0xFFFF


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
        # A decision can be replayed only if the cells it names are all the frame counted:
        # flow_steer's is the one direct counter the program declares.
        self._replayable = not any(t.has_counter for name, t in tables.items()
                                   if name != FLOW_STEER)

    def process(self, in_port: int, frame: bytes) -> list[tuple[int, bytes]]:
        """(egress port, frame) pairs. Frames to cpu_port start with the packet_in header bytes,
        exactly as BMv2 emits them on its CPU port; frames from cpu_port start with packet_out."""
        p = Packet(in_port, frame)
        if not self._run(p):
            return []
        return [(p.egress_port, self.deparser(p))]

    def process_batch(self, in_port: int, frames: list[bytes], out: dict[int, list[bytes]],
                      errors: list[tuple[int, Exception]]) -> None:
        """process() for every frame of a batch from in_port, the results appended to
        out[egress port] in order. A frame on which the program raises (a bug) is dropped and
        reported in errors as (its index, the exception); the others go on."""
        for i in range(len(frames)):
            try:
                p = Packet(in_port, frames[i])
                if self._run(p):
                    self._emit(p, out)
            except Exception as e:  # noqa: BLE001  (reported to the caller, which logs it)
                errors.append((i, e))

    def process_one(self, in_port: int, frame: bytes, out: dict[int, list[bytes]],
                    decide: bool = True) -> Decision | None:
        """process_batch for one frame (raising what the program raises), and, if `decide`,
        what its lookups decided when it is a forwarded TCP segment whose every effect the
        decision holds; None for any other frame."""
        p = Packet(in_port, frame)
        if not self._run(p):
            return None
        self._emit(p, out)
        if not (decide and self._replayable and p.tcp_valid) or p.packet_in_reason \
                or p.egress_port == self.cpu_port:
            return None
        cells = (self._rx_port.cell(p.in_port), self._tx_port.cell(p.egress_port))
        if p.port_role == ROLE_NETWORK:
            steer = self._flow_steer.find((p.ip_src, p.ip_dst, p.tcp_src_port, p.tcp_dst_port))
            return (p.egress_port, False, b"", b"",
                    cells + (None if steer is None else steer.counts,))
        if p.port_role == ROLE_CORE and p.eth_dst:
            return (p.egress_port, True, p.eth_dst, p.eth_src, cells + (None,))
        return None

    def _emit(self, p: Packet, out: dict[int, list[bytes]]) -> None:
        data = self.deparser(p)
        group = out.get(p.egress_port)
        if group is None:
            out[p.egress_port] = [data]
        else:
            group.append(data)

    def _run(self, p: Packet) -> bool:
        """The controls in v1model's order up to the deparser; False when the frame is dropped."""
        self.parser(p)
        # NicVerifyChecksum runs here in v1model; its one output, checksum_error, is read only by
        # ingress for frames from network ports, so ingress runs it there, on demand, and frames
        # from cores (zero checksums, never verified) skip the wasted pass.
        self.ingress(p)
        if p.drop or p.egress_spec == DROP_PORT:
            return False
        p.egress_port = p.egress_spec
        self.egress(p)
        self.compute_checksum(p)
        return True

    # --- NicParser ------------------------------------------------------------------------------

    def parser(self, p: Packet) -> None:
        frame, n = p.frame, p.length
        if p.in_port == self.cpu_port:  # state start: select(ingress_port) CPU_PORT
            if n < 2:
                p.parser_error = "PacketTooShort"
                return
            p.packet_out_port = (frame[0] << 1) | (frame[1] >> 7)  # egress_port: bit<9>
            return
        if n < ETH_LEN:
            p.parser_error = "PacketTooShort"
            return
        eth_type = p.eth_type = (frame[12] << 8) | frame[13]
        if eth_type == ETHERTYPE_ARP:
            if n < ETH_LEN + ARP_LEN:
                p.parser_error = "PacketTooShort"
                return
            p.arp = list(_ARP.unpack_from(frame, ETH_LEN))
        elif eth_type == ETHERTYPE_IPV4:
            if n < _TCP_OFF:
                p.parser_error = "PacketTooShort"
                return
            words: tuple[int, ...] = _IPV4_WORDS(frame, _IP_OFF)
            # version_ihl diffserv | total_len | identification | flags_frag | ttl protocol |
            # checksum | src_addr (2 words) | dst_addr (2 words)
            ver_ihl = words[0] >> 8
            total_len = words[1]
            flags_frag = words[3]
            proto = words[4] & 0xFF
            p.ipv4_valid = True
            p.ip_ver_ihl = ver_ihl
            p.ip_total_len = total_len
            p.ip_flags_frag = flags_frag
            p.ip_proto = proto
            p.ip_csum = words[5]
            p.ip_sum = sum(words)
            p.ip_src = (words[6] << 16) | words[7]
            p.ip_dst = (words[8] << 16) | words[9]
            if ver_ihl >> 4 != 4:
                p.parser_error = "IPv4BadVersion"
                return
            p.l4_len = (total_len - 20) & 0xFFFF
            # select(ihl, frag_offset, protocol): (5, 0, TCP) -> parse_tcp, (5, 0, ICMP) -> parse_icmp
            if ver_ihl & 0xF != 5 or flags_frag & 0x1FFF:
                return
            if proto == IP_PROTO_TCP:
                if n < _TCP_OFF + TCP_LEN:
                    p.parser_error = "PacketTooShort"
                    return
                sport, dport, offset_res, tcp_csum = _TCP(frame, _TCP_OFF)
                p.tcp_valid = True
                p.tcp_src_port = sport
                p.tcp_dst_port = dport
                p.tcp_data_offset = offset_res >> 4
                p.tcp_csum = tcp_csum
                if offset_res >> 4 < 5:
                    p.parser_error = "TcpBadDataOffset"
            elif proto == IP_PROTO_ICMP:
                if n < _TCP_OFF + ICMP_LEN:
                    p.parser_error = "PacketTooShort"
                    return
                typ, code, icmp_csum = _ICMP.unpack_from(frame, _TCP_OFF)
                p.icmp_valid = True
                p.icmp_type = typ
                p.icmp_code = code
                p.icmp_csum = icmp_csum

    # --- NicVerifyChecksum -----------------------------------------------------------------------

    def verify_checksum(self, p: Packet) -> None:
        """verify_checksum / verify_checksum_with_payload with csum16: flag a mismatch."""
        if not p.ipv4_valid or p.parser_error:
            return  # a parser error drops the frame before the flag is read
        if _ipv4_checksum(p) != p.ip_csum:
            p.checksum_error = True
        elif p.tcp_valid and _tcp_checksum(p) != p.tcp_csum:
            p.checksum_error = True
        elif p.icmp_valid and _icmp_checksum(p) != p.icmp_csum:
            p.checksum_error = True

    # --- NicIngress ------------------------------------------------------------------------------

    def ingress(self, p: Packet) -> None:
        nbytes = p.length
        self._rx_port.count(p.in_port, nbytes)
        if p.packet_out_port >= 0:
            p.egress_spec = p.packet_out_port
            p.packet_out_port = -1  # setInvalid: the deparser drops the header
            return
        if p.parser_error:
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

        if not p.drop and p.port_role != ROLE_UNKNOWN and p.ipv4_valid:
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
        total_len = p.ip_total_len
        ip_end = total_len + ETH_LEN
        n = p.length
        if p.ip_ver_ihl & 0xF != 5:
            p.set_drop(DROP_IPV4_OPTIONS)
        elif (total_len < 20 or ip_end > n or (ip_end < n and n > ETH_MIN_FRAME)
              or (p.tcp_valid and p.tcp_data_offset << 2 > p.l4_len)):
            # RFC 791: total length counts header and data; only Ethernet padding of a
            # minimum-size frame may follow the datagram.
            p.set_drop(DROP_BAD_LENGTH)
        elif p.ip_flags_frag & 0x3FFF:  # MF flag or a fragment offset
            p.set_drop(DROP_UNHANDLED)

    def _from_network(self, p: Packet) -> None:
        nbytes = p.length
        arp = p.arp
        if arp is not None:
            if arp[0] == 1 and arp[1] == ETHERTYPE_IPV4 and arp[2] == 6 and arp[3] == 4:
                if arp[4] == 1:  # request
                    action, params = self._arp_responder.lookup((arp[8],), nbytes)
                    if action == ARP_REPLY:
                        self._arp_reply(p, arp, params[0])
                    else:
                        self._to_cpu(p, PACKET_IN_ARP)
                else:
                    self._to_cpu(p, PACKET_IN_ARP)
            else:
                p.set_drop(DROP_UNHANDLED)
            return
        if not p.ipv4_valid:
            p.set_drop(DROP_UNHANDLED)
            return
        self.verify_checksum(p)
        if p.checksum_error:
            # One v1model error bit: the header (checksum included) sums to zero iff valid.
            residue = ~ones_fold(p.ip_sum) & 0xFFFF
            p.set_drop(DROP_BAD_IPV4_CSUM if residue != 0 else
                       DROP_BAD_TCP_CSUM if p.tcp_valid else DROP_BAD_ICMP_CSUM)
            return
        action, _ = self._local_ipv4.lookup((p.ip_dst,), nbytes)
        if action != SET_LOCAL:
            p.set_drop(DROP_NOT_LOCAL)
            return
        if p.icmp_valid:
            if p.icmp_type == ICMP_ECHO_REQUEST and p.icmp_code == 0:
                self._icmp_echo_reply(p)
            else:
                self._to_cpu(p, PACKET_IN_ICMP)
            return
        if not p.tcp_valid:
            p.set_drop(DROP_UNHANDLED)
            return
        src, dst, sport, dport = p.ip_src, p.ip_dst, p.tcp_src_port, p.tcp_dst_port
        action, params = self._flow_steer.lookup((src, dst, sport, dport), nbytes)
        if action == USE_RSS:
            # Symmetric RSS: hash(rss_bucket, crc32, 0, {lo_ip, hi_ip, lo_port, hi_port}, RETA_SIZE)
            bucket = p.rss_bucket = rss_bucket(src, sport, dst, dport)
            action, params = self._reta.lookup((bucket,), nbytes)
            if action == STEER_TO_CORE:
                p.egress_spec = params[0]
            else:
                p.set_drop(DROP_NO_CORE)
        elif action == STEER_TO_CORE:
            p.egress_spec = params[0]

    def _from_core(self, p: Packet) -> None:
        nbytes = p.length
        if not p.ipv4_valid:
            p.set_drop(DROP_UNHANDLED)
            return
        action, params = self._ipv4_lpm.lookup((p.ip_dst,), nbytes)
        if action != SET_NEXT_HOP:
            p.set_drop(DROP_NO_ROUTE)
            return
        next_hop, p.egress_spec = params
        p.next_hop = next_hop or p.ip_dst  # 0: on-link, the destination is the next hop
        action, params = self._neighbor.lookup((p.next_hop,), nbytes)
        if action == SET_DST_MAC:
            p.eth_dst = _mac(params[0])
            action, params = self._port_mac.lookup((p.egress_spec,), nbytes)
            if action == SET_SRC_MAC:
                p.eth_src = _mac(params[0])
        else:
            self._to_cpu(p, PACKET_IN_NEIGHBOR_MISS)

    def _arp_reply(self, p: Packet, arp: list, mac: int) -> None:
        """RFC 826 "Packet Reception": answer with our hardware address, out of the same port."""
        own = _mac(mac)
        p.eth_dst, p.eth_src = p.frame[6:12], own
        arp[4] = 2
        arp[7] = arp[5]  # tha = sha
        arp[5] = own
        arp[6], arp[8] = arp[8], arp[6]  # spa <-> tpa
        p.arp_dirty = True
        p.egress_spec = p.in_port

    def _icmp_echo_reply(self, p: Packet) -> None:
        """RFC 792 echo reply: addresses reversed, type 0, out of the same port; the checksum
        updated for the type word 0x0800 -> 0 (RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'))."""
        frame = p.frame
        p.eth_dst, p.eth_src = frame[6:12], frame[0:6]
        p.ip_src, p.ip_dst = p.ip_dst, p.ip_src
        total = (~p.icmp_csum & 0xFFFF) + 0xF7FF
        total = (total & 0xFFFF) + (total >> 16)
        p.icmp_type = ICMP_ECHO_REPLY_TYPE
        p.icmp_csum = ~total & 0xFFFF
        p.ipv4_dirty = True
        p.egress_spec = p.in_port
        self._icmp_echo.count(p.in_port, p.length)

    def _to_cpu(self, p: Packet, reason: int) -> None:
        p.egress_spec = self.cpu_port
        p.packet_in_reason = reason

    # --- NicEgress -------------------------------------------------------------------------------

    def egress(self, p: Packet) -> None:
        self._tx_port.count(p.egress_port, p.length)  # BMv2 counts the ingress length

    # --- NicComputeChecksum ----------------------------------------------------------------------

    def compute_checksum(self, p: Packet) -> None:
        """update_checksum(_with_payload) for frames from core ports: the stack left them zero."""
        if p.port_role != ROLE_CORE or not p.ipv4_valid:
            return
        p.new_ipv4_csum = _ipv4_checksum(p)
        if p.tcp_valid:
            p.new_tcp_csum = _tcp_checksum(p)

    # --- NicDeparser -----------------------------------------------------------------------------

    def deparser(self, p: Packet) -> bytes:
        """emit(packet_in, ethernet, arp, ipv4, tcp) then the unparsed payload."""
        frame = p.frame
        if p.in_port == self.cpu_port:
            return frame[2:]  # packet_out was set invalid; the rest is payload
        if not (p.eth_dst or p.eth_src or p.arp_dirty or p.ipv4_dirty or p.new_ipv4_csum >= 0
                or p.packet_in_reason):
            return frame
        buf = bytearray(frame)
        if p.eth_dst:
            buf[0:6] = p.eth_dst
        if p.eth_src:
            buf[6:12] = p.eth_src
        arp = p.arp
        if p.arp_dirty and arp is not None:
            _ARP.pack_into(buf, ETH_LEN, *arp)
        if p.ipv4_dirty:
            _ADDRS.pack_into(buf, _IP_OFF + 12, p.ip_src, p.ip_dst)
            _ICMP.pack_into(buf, _TCP_OFF, p.icmp_type, p.icmp_code, p.icmp_csum)
        if p.new_ipv4_csum >= 0:
            _U16.pack_into(buf, _IP_OFF + 10, p.new_ipv4_csum)
        if p.new_tcp_csum >= 0:
            _U16.pack_into(buf, _TCP_OFF + 16, p.new_tcp_csum)
        if p.packet_in_reason:
            return _PACKET_IN.pack((p.in_port & 0x1FF) << 7, p.packet_in_reason) + buf
        return bytes(buf)

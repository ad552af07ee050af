"""A seeded corpus of frames that walks every branch of the NIC program, for target comparison.

Every frame is labelled with the case it exercises (`tcp/options+payload`, `truncated/ipv4`,
`vlan/8021q-tcp`, ...). Where a frame has bytes after its headers, they end in a nonce drawn from
the seed, so that whatever a target makes of the frame (forwarded, answered, sent to the CPU,
rewritten by a core route) still ends in the same four bytes: outputs are matched to the frame
that caused them by that tail, even when a batch is in flight together.

The corpus knows the addresses of `frametests.Plan` and the extra entries `extra_entries` adds
(flow_steer hits, an on-link subnet with and without neighbours, a route whose next hop is not
resolved); `Plan.ports` plus `UNKNOWN_PORT` are the ports frames enter on.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.packet import Raw

from p4mtcp.bmv2.controller import Controller
from p4mtcp.bmv2.frametests import Plan, ip_int
from p4mtcp.hashing import ones_sum

UNKNOWN_PORT = 3                      # a port with an interface but no port_role entry
ONLINK_NET = "10.0.6.0"               # /24 routed on-link out of the network port
ONLINK_KNOWN = ("10.0.6.1", "10.0.6.2")   # ... with neighbour entries
ONLINK_UNKNOWN = "10.0.6.9"           # ... without: neighbour miss
VIA_NET = "10.0.7.0"                  # /24 via NEXT_HOP_UNRESOLVED, which has no neighbour entry
NEXT_HOP_UNRESOLVED = "10.0.0.254"
UNROUTABLE = "192.0.2.33"             # no route at all
NOT_LOCAL = ("10.0.0.7", "10.0.0.102", "192.0.2.1")
STEERED = ((40001, 80), (40002, 443), (40003, 8080))   # flow_steer entries (peer -> local 0)

NONCE_LEN = 4


@dataclass(frozen=True)
class Frame:
    label: str
    port: int          # the ingress port, or the egress port of a packet-out
    data: bytes
    packet_out: bool = False

    @property
    def tail(self) -> bytes:
        return self.data[-NONCE_LEN:]


def extra_entries(ctrl: Controller, plan: Plan) -> None:
    """The entries beyond `frametests.program` that the corpus relies on."""
    e = ctrl.table_entry
    entries = [e("NicIngress.flow_steer", [ip_int(plan.peer_ip), ip_int(plan.local_ips[0]), s, d],
                 "NicIngress.steer_to_core", [plan.core_ports[i % len(plan.core_ports)]])
               for i, (s, d) in enumerate(STEERED)]
    entries.append(e("NicIngress.ipv4_lpm", [(ip_int(ONLINK_NET), 24)], "NicIngress.set_next_hop",
                     [0, plan.network_port]))
    entries.append(e("NicIngress.ipv4_lpm", [(ip_int(VIA_NET), 24)], "NicIngress.set_next_hop",
                     [ip_int(NEXT_HOP_UNRESOLVED), plan.network_port]))
    entries += [e("NicIngress.neighbor", [ip_int(ip)], "NicIngress.set_dst_mac",
                  [0x020000000600 + i]) for i, ip in enumerate(ONLINK_KNOWN)]
    ctrl.write(entries)


# --- byte-level helpers ------------------------------------------------------------------------

def _fix_ipv4_checksum(frame: bytearray, ip_off: int = 14) -> None:
    ihl = (frame[ip_off] & 0xF) * 4
    frame[ip_off + 10:ip_off + 12] = b"\0\0"
    struct.pack_into("!H", frame, ip_off + 10,
                     ~ones_sum(memoryview(frame)[ip_off:ip_off + ihl]) & 0xFFFF)


class Builder:
    """Frames for one plan, drawn from one seeded generator."""

    def __init__(self, plan: Plan, seed: int):
        self.plan = plan
        self.rng = random.Random(seed)

    def nonce(self) -> bytes:
        return self.rng.randbytes(NONCE_LEN)

    def payload(self, lo: int = 1, hi: int = 1200) -> bytes:
        n = self.rng.randint(max(lo, NONCE_LEN), hi)
        return self.rng.randbytes(n - NONCE_LEN) + self.nonce()

    def sport(self) -> int:
        return self.rng.randrange(1024, 65536)

    def options(self) -> list:
        choices = [("MSS", self.rng.randrange(536, 9000)), ("WScale", self.rng.randrange(0, 15)),
                   ("SAckOK", b""), ("Timestamp", (self.rng.getrandbits(32), 0)),
                   ("NOP", None)]
        return self.rng.sample(choices, self.rng.randint(1, len(choices)))

    def tcp(self, src: str | None = None, dst: str | None = None, sport: int | None = None,
            dport: int | None = None, payload: bytes = b"", options: list | None = None,
            eth_src: str | None = None, eth_dst: str | None = None, **ip_fields) -> Ether:
        p = self.plan
        return (Ether(src=eth_src or p.peer_mac, dst=eth_dst or p.nic_mac) /
                IP(src=src or p.peer_ip, dst=dst or p.local_ips[0],
                   id=self.rng.getrandbits(16), **ip_fields) /
                TCP(sport=sport or self.sport(), dport=dport or self.rng.choice((80, 443, 22)),
                    seq=self.rng.getrandbits(32), ack=self.rng.getrandbits(32),
                    flags=self.rng.choice(("S", "SA", "A", "PA", "FA", "R")),
                    window=self.rng.getrandbits(16), options=options or []) /
                Raw(payload))

    def core_tcp(self, dst: str, payload: bytes | None = None, options: list | None = None
                 ) -> bytes:
        """What a core's stack emits: zero MACs and checksums (the NIC fills them in)."""
        p = self.plan
        frame = (Ether(src="00:00:00:00:00:00", dst="00:00:00:00:00:00") /
                 IP(src=self.rng.choice(p.local_ips), dst=dst, id=self.rng.getrandbits(16),
                    chksum=0) /
                 TCP(sport=self.rng.choice((80, 443)), dport=self.sport(), flags="PA",
                     seq=self.rng.getrandbits(32), ack=self.rng.getrandbits(32), chksum=0,
                     options=options if options is not None
                     else self.options() if self.rng.random() < 0.5 else []) /
                 Raw(self.payload() if payload is None else payload))
        return bytes(frame)

    def arp(self, op: int, tpa: str, **fields) -> bytes:
        p = self.plan
        frame = Ether(src=p.peer_mac, dst="ff:ff:ff:ff:ff:ff" if op == 1 else p.nic_mac) / ARP(
            op=op, hwsrc=p.peer_mac, psrc=p.peer_ip, pdst=tpa,
            hwdst="00:00:00:00:00:00" if op == 1 else p.nic_mac, **fields)
        return bytes(frame) + bytes(18 - NONCE_LEN) + self.nonce()     # padded to 60 bytes


# --- the cases ---------------------------------------------------------------------------------

Case = Callable[[Builder], Iterator[tuple[str, int, bytes]]]


def valid_tcp(b: Builder) -> Iterator[tuple[str, int, bytes]]:
    p = b.plan
    for _ in range(200):
        yield "tcp/plain", p.network_port, bytes(b.tcp(payload=b.nonce()))
    for _ in range(260):
        frame = b.tcp(dst=b.rng.choice(p.local_ips), payload=b.payload(), options=b.options())
        yield "tcp/options+payload", p.network_port, bytes(frame)
    for _ in range(60):
        yield "tcp/options-no-payload", p.network_port, bytes(b.tcp(options=b.options()))
    for i in range(60):
        sport, dport = STEERED[i % len(STEERED)]
        yield "tcp/flow_steer-hit", p.network_port, bytes(
            b.tcp(sport=sport, dport=dport, payload=b.payload(hi=300)))


def bad_checksums(b: Builder) -> Iterator[tuple[str, int, bytes]]:
    p = b.plan
    for _ in range(60):
        frame = bytearray(bytes(b.tcp(payload=b.payload(hi=400))))
        frame[24] ^= 1 << b.rng.randrange(8)                       # IPv4 checksum
        yield "checksum/bad-ipv4", p.network_port, bytes(frame)
    for _ in range(80):
        frame = bytearray(bytes(b.tcp(payload=b.payload(hi=400), options=b.options())))
        frame[50] ^= 1 << b.rng.randrange(8)                       # TCP checksum
        yield "checksum/bad-tcp", p.network_port, bytes(frame)
    for _ in range(30):                                            # both wrong
        frame = bytearray(bytes(b.tcp(payload=b.payload(hi=100))))
        frame[24] ^= 0x10
        frame[50] ^= 0x01
        yield "checksum/bad-both", p.network_port, bytes(frame)


def ipv4_oddities(b: Builder) -> Iterator[tuple[str, int, bytes]]:
    p = b.plan
    for _ in range(50):
        words = b.rng.randint(1, 10)
        opts = [b"\x01" * (4 * words)]                             # NOPs: valid IPv4 options
        frame = b.tcp(payload=b.payload(hi=200), options=b.options())
        frame[IP].options = opts
        yield "ipv4/options", p.network_port, bytes(Ether(bytes(frame)))
    for _ in range(60):
        frame = b.tcp(payload=b.payload(hi=300), flags=b.rng.choice(("MF", 0)),
                      frag=b.rng.choice((0, 1, 185, 8191)))
        if frame[IP].flags == 0 and frame[IP].frag == 0:
            frame[IP].flags = "MF"
        yield "ipv4/fragment", p.network_port, bytes(frame)
    for _ in range(20):                                            # DF alone is fine
        yield "ipv4/df", p.network_port, bytes(b.tcp(payload=b.payload(hi=100), flags="DF"))
    for version in (0, 1, 5, 6, 15):
        for _ in range(8):
            frame = bytearray(bytes(b.tcp(payload=b.payload(hi=100))))
            frame[14] = (version << 4) | 5
            _fix_ipv4_checksum(frame)
            yield "ipv4/version", p.network_port, bytes(frame)
    for _ in range(40):
        proto = b.rng.choice((1, 17, 47, 132, 255))
        body = (ICMP(type=b.rng.choice((0, 3, 8, 11, 13)))
                if proto == 1 else UDP(sport=b.sport(), dport=53) if proto == 17 else Raw())
        frame = (Ether(src=p.peer_mac, dst=p.nic_mac) /
                 IP(src=p.peer_ip, dst=b.rng.choice(p.local_ips), proto=proto,
                    id=b.rng.getrandbits(16)) / body / Raw(b.payload(hi=200)))
        yield "ipv4/non-tcp", p.network_port, bytes(frame)
    for _ in range(60):
        yield "ipv4/not-local", p.network_port, bytes(
            b.tcp(dst=b.rng.choice(NOT_LOCAL), payload=b.payload(hi=300)))


def lengths(b: Builder) -> Iterator[tuple[str, int, bytes]]:
    """Total length against the frame, Ethernet padding, TCP data offset."""
    p = b.plan
    for _ in range(50):                                            # datagram shorter than frame
        frame = bytes(b.tcp(payload=b.payload(lo=20, hi=300)))
        cut = b.rng.randint(1, 16)
        raw = bytearray(frame)
        struct.pack_into("!H", raw, 16, len(frame) - 14 - cut)
        _fix_ipv4_checksum(raw)
        yield "length/total-short", p.network_port, bytes(raw)
    for _ in range(50):                                            # datagram longer than frame
        raw = bytearray(bytes(b.tcp(payload=b.payload(lo=8, hi=300))))
        struct.pack_into("!H", raw, 16, len(raw) - 14 + b.rng.randint(1, 40))
        _fix_ipv4_checksum(raw)
        yield "length/total-long", p.network_port, bytes(raw)
    for _ in range(40):                                            # short datagrams, padded
        frame = bytes(b.tcp(payload=b.rng.randbytes(b.rng.randint(0, 2))))
        pad_len = 60 - len(frame)
        zero = b.rng.random() < 0.6
        pad = bytes(pad_len - NONCE_LEN) + (bytes(NONCE_LEN) if zero else b.nonce())
        label = "length/padding-zero" if zero else "length/padding-nonzero"
        yield label, p.network_port, frame + pad
    for _ in range(20):                                            # over-long padding
        frame = bytes(b.tcp(payload=b.payload(lo=4, hi=20)))
        yield "length/padding-past-60", p.network_port, frame + bytes(80 - len(frame))
    for offset in range(0, 5):                                     # data offset < 5
        for _ in range(6):
            raw = bytearray(bytes(b.tcp(payload=b.payload(hi=60))))
            raw[46] = (offset << 4) | (raw[46] & 0xF)
            yield "tcp/data-offset-below-5", p.network_port, bytes(raw)
    for _ in range(30):                                            # data offset past segment
        payload = b.payload(lo=4, hi=30)
        raw = bytearray(bytes(b.tcp(payload=payload)))
        words = b.rng.randint(6 + len(payload) // 4 + 1, 15) if len(payload) < 36 else 15
        raw[46] = (words << 4) | (raw[46] & 0xF)
        yield "tcp/data-offset-past-segment", p.network_port, bytes(raw)


def truncated(b: Builder) -> Iterator[tuple[str, int, bytes]]:
    """Cut at and around every header boundary: Ethernet 14, IPv4 34, TCP 54, options, ARP 42."""
    p = b.plan
    full = bytes(b.tcp(payload=b.payload(lo=8, hi=16), options=[("MSS", 1460), ("NOP", None),
                                                               ("WScale", 7)]))
    for n in sorted({1, 6, 13, *range(14, 62)}):
        if n < len(full):
            yield "truncated/tcp", p.network_port, full[:n]
    arp = b.arp(1, p.local_ips[0])
    for n in (13, 14, 15, 20, 27, 28, 41, 42):
        yield "truncated/arp", p.network_port, arp[:n]
    core = b.core_tcp(p.peer_ip)
    for n in (13, 14, 20, 33, 34, 35, 53, 54):
        yield "truncated/core", p.core_ports[0], core[:n]


def arp(b: Builder) -> Iterator[tuple[str, int, bytes]]:
    p = b.plan
    for _ in range(40):
        yield "arp/request-local", p.network_port, b.arp(1, b.rng.choice(p.local_ips))
    for _ in range(20):
        yield "arp/request-other", p.network_port, b.arp(1, b.rng.choice(NOT_LOCAL))
    for _ in range(30):
        yield "arp/reply", p.network_port, b.arp(2, p.local_ips[0])
    for field, value in (("hwtype", 6), ("ptype", 0x86DD), ("hwlen", 8), ("plen", 16)):
        for _ in range(5):
            yield "arp/bad-format", p.network_port, b.arp(1, p.local_ips[0], **{field: value})
    for op in (0, 3, 4, 0xFFFF):
        yield "arp/other-op", p.network_port, b.arp(op, p.local_ips[0])


def ethertypes(b: Builder) -> Iterator[tuple[str, int, bytes]]:
    p = b.plan
    for etype in (0x86DD, 0x88CC, 0x8847, 0x0000, 0x05DC, 0x0801, 0x88B5, 0xFFFF):
        for _ in range(5):
            frame = Ether(src=p.peer_mac, dst=p.nic_mac, type=etype) / Raw(b.payload(lo=46,
                                                                                   hi=200))
            yield "ethertype/other", p.network_port, bytes(frame)


def vlan(b: Builder) -> Iterator[tuple[str, int, bytes]]:
    """802.1Q and 802.1ad (QinQ) tags, from the network and from a core."""
    p = b.plan
    for _ in range(20):
        inner = b.tcp(payload=b.payload(hi=200))
        tagged = Ether(src=inner.src, dst=inner.dst) / Dot1Q(vlan=b.rng.randrange(1, 4095)) / \
            inner[IP]
        yield "vlan/8021q-tcp", p.network_port, bytes(tagged)
    for _ in range(10):
        req = Ether(b.arp(1, p.local_ips[0]))
        tagged = Ether(src=req.src, dst=req.dst) / Dot1Q(vlan=7) / req[ARP] / Raw(b.nonce())
        yield "vlan/8021q-arp", p.network_port, bytes(tagged)
    for _ in range(20):
        inner = b.tcp(payload=b.payload(hi=200))
        tagged = (Ether(src=inner.src, dst=inner.dst) / Dot1AD(vlan=100) /
                  Dot1Q(vlan=b.rng.randrange(1, 4095)) / inner[IP])
        yield "vlan/qinq-tcp", p.network_port, bytes(tagged)
    for _ in range(20):
        inner = Ether(b.core_tcp(p.peer_ip))
        tagged = Ether(src=inner.src, dst=inner.dst) / Dot1Q(vlan=5) / inner[IP]
        yield "vlan/core-8021q", p.core_ports[1], bytes(tagged)


def core(b: Builder) -> Iterator[tuple[str, int, bytes]]:
    p = b.plan
    for _ in range(150):
        yield "core/routed-peer", b.rng.choice(p.core_ports), b.core_tcp(p.peer_ip)
    for _ in range(60):
        yield "core/routed-onlink", b.rng.choice(p.core_ports), b.core_tcp(
            b.rng.choice(ONLINK_KNOWN))
    for i in range(20):                                            # short: padding follows
        frame = b.core_tcp(p.peer_ip, payload=b"", options=[])
        pad = bytes(60 - len(frame) - NONCE_LEN) + (b.nonce() if i % 2 else bytes(NONCE_LEN))
        yield "core/routed-padded", p.core_ports[0], frame + pad
    for _ in range(40):
        yield "core/unroutable", b.rng.choice(p.core_ports), b.core_tcp(UNROUTABLE)
    for _ in range(30):
        yield "core/neighbor-miss-onlink", p.core_ports[0], b.core_tcp(ONLINK_UNKNOWN)
    for _ in range(30):
        yield "core/neighbor-miss-via", p.core_ports[1], b.core_tcp("10.0.7.5")
    for _ in range(20):
        yield "core/arp", p.core_ports[0], b.arp(1, p.peer_ip)
    for _ in range(20):
        raw = bytearray(b.core_tcp(p.peer_ip))
        raw[20] |= 0x20                                            # MF
        yield "core/fragment", p.core_ports[1], bytes(raw)
    for _ in range(20):
        raw = bytearray(b.core_tcp(p.peer_ip))
        struct.pack_into("!H", raw, 16, len(raw) - 14 + 9)         # longer than the frame
        yield "core/bad-length", p.core_ports[0], bytes(raw)
    for _ in range(20):                                            # UDP routed as well
        frame = (Ether(src="00:00:00:00:00:00", dst="00:00:00:00:00:00") /
                 IP(src=p.local_ips[0], dst=p.peer_ip, chksum=0, id=b.rng.getrandbits(16)) /
                 UDP(sport=53, dport=b.sport(), chksum=0) / Raw(b.payload(hi=200)))
        yield "core/udp", p.core_ports[1], bytes(frame)


def icmp(b: Builder) -> Iterator[tuple[str, int, bytes]]:
    """Echo requests (answered in the data plane), other ICMP (to the CPU), broken ICMP."""
    p = b.plan

    def message(dst: str | None = None, payload: bytes | None = None, **fields) -> Ether:
        return (Ether(src=p.peer_mac, dst=p.nic_mac) /
                IP(src=p.peer_ip, dst=dst or b.rng.choice(p.local_ips), id=b.rng.getrandbits(16),
                   ttl=b.rng.randint(1, 255)) /
                ICMP(**fields) / Raw(b.payload(hi=1400) if payload is None else payload))

    for _ in range(80):
        yield "icmp/echo-request", p.network_port, bytes(message(
            type=8, id=b.rng.getrandbits(16), seq=b.rng.getrandbits(16)))
    for _ in range(20):                                            # short: padded to 60 bytes
        frame = bytes(message(type=8, id=b.rng.getrandbits(16), payload=b""))
        yield "icmp/echo-request-padded", p.network_port, frame + bytes(60 - len(frame))
    for _ in range(10):
        yield "icmp/echo-request-code", p.network_port, bytes(message(type=8, code=1))
    for kind, code in ((3, 4), (3, 3), (11, 0), (13, 0), (0, 0), (5, 1)):
        for _ in range(5):
            yield "icmp/other-type", p.network_port, bytes(message(type=kind, code=code,
                                                                   payload=b.payload(hi=60)))
    for _ in range(20):
        raw = bytearray(bytes(message(type=8)))
        raw[36] ^= 1 << b.rng.randrange(8)                         # ICMP checksum
        yield "icmp/bad-checksum", p.network_port, bytes(raw)
    # A message whose words are all zero but its checksum: RFC 1071's sum is 0, so the checksum
    # is 0xFFFF; 0x0000 (the other one's-complement zero) must fail, as in BMv2's csum16
    for csum in (b"\xff\xff", b"\x00\x00"):
        raw = bytearray(bytes(message(type=0, code=0, id=0, seq=0, payload=b"")))
        raw[36:38] = csum
        yield "icmp/all-zero", p.network_port, bytes(raw)
    for _ in range(10):
        yield "icmp/not-local", p.network_port, bytes(message(dst=b.rng.choice(NOT_LOCAL),
                                                              type=8))
    full = bytes(message(type=8, payload=b.payload(lo=8, hi=8)))
    for n in range(34, 43):
        yield "icmp/truncated", p.network_port, full[:n]
    for _ in range(10):                                            # a core's ICMP is routed
        frame = (Ether(src="00:00:00:00:00:00", dst="00:00:00:00:00:00") /
                 IP(src=p.local_ips[0], dst=p.peer_ip, chksum=0, id=b.rng.getrandbits(16)) /
                 ICMP(type=0) / Raw(b.payload(hi=100)))
        yield "icmp/from-core", p.core_ports[0], bytes(frame)


def unknown_port(b: Builder) -> Iterator[tuple[str, int, bytes]]:
    for _ in range(30):
        yield "port/unknown", UNKNOWN_PORT, bytes(b.tcp(payload=b.payload(hi=200)))
    for _ in range(10):
        yield "port/unknown-arp", UNKNOWN_PORT, b.arp(1, b.plan.local_ips[0])


def packet_outs(b: Builder) -> Iterator[tuple[str, int, bytes]]:
    p = b.plan
    for port in (*p.ports, UNKNOWN_PORT):
        for _ in range(10):
            yield "packet-out/tcp", port, bytes(b.tcp(payload=b.payload(hi=500)))
        for _ in range(5):
            yield "packet-out/arp", port, b.arp(1, p.peer_ip)
        yield "packet-out/runt", port, b.rng.randbytes(20)


CASES: tuple[Case, ...] = (valid_tcp, bad_checksums, ipv4_oddities, lengths, truncated, arp,
                           ethertypes, vlan, core, icmp, unknown_port)


def build(plan: Plan = Plan(), seed: int = 10) -> list[Frame]:
    """The whole corpus, frames then packet-outs, in a fixed order for a given seed."""
    b = Builder(plan, seed)
    frames = [Frame(label, port, data) for case in CASES for label, port, data in case(b)]
    frames += [Frame(label, port, data, packet_out=True) for label, port, data in packet_outs(b)]
    first = {f.label: i for i, f in reversed(list(enumerate(frames)))}
    return sorted(frames, key=lambda f: first[f.label])    # each label one run (stable sort)

"""Path MTU discovery (RFC 1191): what an ICMP "fragmentation needed" message tells a sender.

Every segment leaves with DF set (netif.py), so a router whose next hop cannot carry it drops it
and answers ICMP type 3 code 4, quoting the datagram's IPv4 header and its first 8 octets
(RFC 792): for TCP, the ports and the sequence number. This module reads such messages — in the
NIC agent, which receives them as packet-ins and forwards them to the core owning the flow, and
in that core's engine — and turns the reported MTU into the MSS a connection may still send.

Which MTU (the rule followed, and why):
- the Next-Hop MTU field (RFC 1191 4); a router that leaves it 0 predates RFC 1191, and the
  estimate is then the largest plateau of RFC 1191 table 7-1 below the quoted datagram's total
  length (RFC 1191 5);
- a value below 68 is bogus and the message is ignored: RFC 791 requires every router to forward
  68 octets unfragmented, so no router can truthfully report less (RFC 1191 4);
- a value of 68..551 is raised to 552, Linux's ``net.ipv4.route.min_pmtu`` default: an attacker
  forging small MTUs (RFC 1191 8, RFC 5927 7.1) cannot shrink segments below 512 octets of IPv4
  payload. Linux applies that floor to any report; this module rejects the sub-68 ones first.

What is learned is kept per destination (RFC 1191 5), in each stack's `PathCache`: a later
connection to the same host starts at the lower size instead of losing its first full-size
flight to the same router. An entry ages out after CACHE_SECONDS (RFC 1191 6.3: raise the
estimate again after 10 minutes); connections then start at full size and learn again if the
path still needs it. Connections already open keep their MSS (RFC 1191 6.4: it never rises on
a message).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

ICMP_UNREACHABLE = 3          # RFC 792 Destination Unreachable
ICMP_FRAG_NEEDED = 4          # its code "fragmentation needed and DF set"
MIN_MTU = 68                  # RFC 791: the datagram every router forwards unfragmented
MIN_PMTU = 552                # Linux net.ipv4.route.min_pmtu (512 + 20 + 20)
MIN_MSS = 64                  # the engine's floor for any MSS (connection.py _set_mss)
HEADERS = 40                  # IPv4 + TCP headers without options (RFC 1191 6.4: PMTU - 40)
CACHE_SECONDS = 600.0         # RFC 1191 6.3: an estimate is raised after 10 minutes
CACHE_ENTRIES = 4096          # destinations remembered per stack; the oldest entry goes first
PLATEAUS = (65535, 32000, 17914, 8166, 4352, 2002, 1492, 1006, 508, 296, 68)
"""RFC 1191 table 7-1, largest first."""

_ICMP = struct.Struct("!BBHHH")        # type, code, checksum, unused, next-hop MTU (RFC 1191 4)
IPV4 = struct.Struct("!BxH5xB2x4s4s")
"""The IPv4 header fields ICMP readers need: version/IHL, total length, protocol, src, dst."""
_QUOTED_L4 = struct.Struct("!HHI")     # the quoted 8 octets: ports, then TCP's sequence number
_ERRORS = frozenset({3, 4, 5, 11, 12})  # RFC 792 messages that quote a datagram
IPPROTO_TCP = 6


@dataclass(frozen=True, slots=True)
class Quoted:
    """The datagram an ICMP error quotes (its IPv4 header and first 8 octets, RFC 792)."""

    proto: int
    src: int
    dst: int
    total_length: int
    sport: int
    dport: int
    seq: int                  # TCP's sequence number (meaningless for other protocols)


@dataclass(frozen=True, slots=True)
class IcmpMessage:
    """An ICMP message's header and, for an error message, the datagram it quotes."""

    type: int
    code: int
    next_hop_mtu: int         # the low 16 bits after the checksum (RFC 1191 4)
    quoted: Quoted | None

    @property
    def frag_needed(self) -> bool:
        return self.type == ICMP_UNREACHABLE and self.code == ICMP_FRAG_NEEDED


@dataclass(frozen=True, slots=True)
class FragNeeded:
    """A fragmentation-needed message for one of our TCP flows, as the engine takes it: the
    quoted segment went from (local_ip, local_port) to (remote_ip, remote_port)."""

    local_ip: int
    local_port: int
    remote_ip: int
    remote_port: int
    seq: int                  # the quoted segment's sequence number (RFC 5927 4.1 check)
    mtu: int                  # the path MTU to use (`path_mtu`)


def read_icmp(icmp: bytes | bytearray | memoryview) -> IcmpMessage | None:
    """The ICMP message in ``icmp`` (the IPv4 payload); None if shorter than an ICMP header.
    ``quoted`` is None unless it is an error message quoting an IPv4 header and 8 octets."""
    if len(icmp) < _ICMP.size:
        return None
    typ, code, _, _, mtu = _ICMP.unpack_from(icmp)
    quoted = None
    off = _ICMP.size
    if typ in _ERRORS and len(icmp) >= off + IPV4.size and icmp[off] >> 4 == 4:
        ihl = (icmp[off] & 0x0F) * 4
        if ihl >= 20 and len(icmp) >= off + ihl + _QUOTED_L4.size:
            _, total, proto, src, dst = IPV4.unpack_from(icmp, off)
            sport, dport, seq = _QUOTED_L4.unpack_from(icmp, off + ihl)
            quoted = Quoted(proto, int.from_bytes(src, "big"), int.from_bytes(dst, "big"),
                            total, sport, dport, seq)
    return IcmpMessage(typ, code, mtu, quoted)


def path_mtu(next_hop_mtu: int, quoted_length: int) -> int:
    """The path MTU a fragmentation-needed message implies (the rules in the module doc).
    ValueError for a report below 68, which no router can truthfully send."""
    mtu = next_hop_mtu
    if mtu == 0:              # RFC 1191 5: a pre-RFC 1191 router; the plateau below the datagram
        mtu = next((p for p in PLATEAUS if p < quoted_length), MIN_MTU)
    if mtu < MIN_MTU:         # RFC 1191 4 / RFC 791: bogus
        raise ValueError(f"next-hop MTU {mtu} is below the 68 octets every router forwards "
                         "(RFC 791): ignored")
    return max(mtu, MIN_PMTU)  # Linux min_pmtu


def frag_needed(icmp: bytes | bytearray | memoryview) -> FragNeeded:
    """The fragmentation-needed message in ``icmp`` (the IPv4 payload) about a TCP segment we
    sent. ValueError saying why it is not one the engine can use."""
    msg = read_icmp(icmp)
    if msg is None:
        raise ValueError(f"ICMP message of {len(icmp)} octets is shorter than its header")
    if not msg.frag_needed:
        raise ValueError(f"ICMP type {msg.type} code {msg.code} is not fragmentation needed "
                         "(type 3 code 4)")
    q = msg.quoted
    if q is None:
        raise ValueError("fragmentation needed quotes no IPv4 header and 8 octets (RFC 792)")
    if q.proto != IPPROTO_TCP:
        raise ValueError(f"fragmentation needed quotes protocol {q.proto}, not TCP")
    return FragNeeded(q.src, q.sport, q.dst, q.dport, q.seq,
                      path_mtu(msg.next_hop_mtu, q.total_length))


def mss_for(mtu: int, option_octets: int) -> int:
    """The payload a segment may carry on a path of ``mtu``: headers and the options every
    segment carries (timestamps) subtracted, as Linux's tcp_mtu_to_mss; never below MIN_MSS."""
    return max(MIN_MSS, mtu - HEADERS - option_octets)


class PathCache:
    """The path MTU learned per destination (module doc), with the time each entry expires.
    Sans-IO: the stack passes its clock."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: dict[int, tuple[int, float]] = {}   # remote IPv4 -> (mtu, expires)

    def __len__(self) -> int:
        return len(self._entries)

    def learn(self, remote_ip: int, mtu: int, now: float) -> None:
        """A believed fragmentation-needed message says the path to ``remote_ip`` carries
        ``mtu``: remember it, unless a lower estimate is already held (RFC 1191 6.4: it never
        rises on a message). A lower one restarts the entry's 10 minutes."""
        held = self.lookup(remote_ip, now)
        if held and held <= mtu:
            return
        entries = self._entries
        entries.pop(remote_ip, None)
        if len(entries) >= CACHE_ENTRIES:
            del entries[next(iter(entries))]               # the oldest learned
        entries[remote_ip] = (mtu, now + CACHE_SECONDS)

    def lookup(self, remote_ip: int, now: float) -> int:
        """The path MTU held for ``remote_ip``, 0 if none or aged out (then forgotten)."""
        entry = self._entries.get(remote_ip)
        if entry is None:
            return 0
        if now >= entry[1]:
            del self._entries[remote_ip]
            return 0
        return entry[0]

"""Test-only driver: moves frames between a sans-IO TcpStack and a Linux interface (AF_PACKET).

It is the smallest host the engine can have on a real wire: it owns one IPv4 address and a MAC,
answers ARP for that address itself, resolves the peer's MAC by ARP, wraps the engine's TCP bytes
in Ethernet + IPv4, checks every checksum in both directions with its own code (the engine
computes TCP checksums with TcpConfig(offload_checksum=False); with True the driver fills them
in, as the NIC would), and can impair the TCP frames it moves (seeded loss and reordering) for
kernels that lack netem.  Time is time.monotonic(); the loop blocks in select() until the
stack's next deadline.  Every loop is bounded by a wall-clock limit.
"""

from __future__ import annotations

import heapq
import random
import select
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from p4mtcp.control.tcp import Connection, State, TcpConfig

ETH = struct.Struct("!6s6sH")
IPV4 = struct.Struct("!BBHHHBBH4s4s")
ARP = struct.Struct("!HHBBH6s4s6s4s")
ETH_P_ALL, ETH_P_IP, ETH_P_ARP = 0x0003, 0x0800, 0x0806
ARP_REQUEST, ARP_REPLY = 1, 2
SOL_PACKET, PACKET_IGNORE_OUTGOING, PACKET_OUTGOING = 263, 23, 4
BROADCAST = b"\xff" * 6
RX_BATCH = 512                       # frames drained per wake-up
ARP_RETRY = 0.5                      # seconds between ARP requests for an unresolved peer
MAX_UNRESOLVED = 4096                # segments queued while waiting for ARP

TcpSegment = tuple[int, int, bytes]  # (src_ip, dst_ip, tcp_bytes)
Tap = Callable[[str, float, int, int, bytes], None]   # (direction "in"/"out", now, src, dst, tcp)


def ip_to_int(ip: str) -> int:
    return int.from_bytes(socket.inet_aton(ip), "big")


def int_to_ip(value: int) -> str:
    return socket.inet_ntoa(value.to_bytes(4, "big"))


def ones_complement(data: bytes) -> int:
    """RFC 1071 sum of data (padded to even length), folded, in network byte order."""
    if len(data) & 1:
        data += b"\0"
    total = sum(memoryview(data).cast("H"))     # native-order words, C speed
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    if sys.byteorder == "little":               # the folded sum is byte-order symmetric
        total = (total & 0xFF) << 8 | total >> 8
    return total


def tcp_checksum_ok(src: bytes, dst: bytes, tcp: bytes) -> bool:
    """Whether the TCP checksum over the IPv4 pseudo-header and tcp verifies (RFC 9293 3.1)."""
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(tcp))
    return ones_complement(pseudo + tcp) == 0xFFFF


def fill_tcp_checksum(src: bytes, dst: bytes, tcp: bytes) -> bytes:
    """tcp with its checksum field computed (as a checksum-offloading NIC would)."""
    if len(tcp) < 20:
        return tcp
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(tcp))
    zeroed = tcp[:16] + b"\0\0" + tcp[18:]
    csum = ~ones_complement(pseudo + zeroed) & 0xFFFF
    return tcp[:16] + csum.to_bytes(2, "big") + tcp[18:]


def ipv4_header(src: bytes, dst: bytes, payload_len: int, ident: int) -> bytes:
    """A 20-byte IPv4 header (DF, TTL 64, protocol TCP) with its checksum filled in."""
    hdr = IPV4.pack(0x45, 0, 20 + payload_len, ident, 0x4000, 64, 6, 0, src, dst)
    csum = ~ones_complement(hdr) & 0xFFFF
    return hdr[:10] + csum.to_bytes(2, "big") + hdr[12:]


def random_mac(rng: random.Random) -> bytes:
    """A unicast, locally administered MAC."""
    first = (rng.randrange(256) & 0xFC) | 0x02
    return bytes([first]) + rng.randbytes(5)


@dataclass(frozen=True)
class Impairment:
    """Seeded per-frame loss and hold-back applied by the driver to TCP frames, each direction."""

    loss: float = 0.0
    reorder: float = 0.0            # chance a frame is held back by reorder_delay
    reorder_delay: float = 0.005
    seed: int = 1


@dataclass
class DriverStats:
    """What the driver saw and did; tests assert on the bad_* counts (they must stay 0)."""

    rx_frames: int = 0
    rx_tcp: int = 0
    rx_not_for_us: int = 0
    rx_bad_ipv4: int = 0
    rx_bad_tcp_checksum: int = 0
    tx_frames: int = 0
    tx_errors: int = 0
    tx_bad_tcp_checksum: int = 0
    arp_replies: int = 0
    arp_requests: int = 0
    impaired_lost_in: int = 0
    impaired_lost_out: int = 0
    impaired_held: int = 0
    unresolved_dropped: int = 0


class Host(Protocol):
    """The part of the TcpStack facade the driver uses."""

    config: TcpConfig

    def receive(self, src_ip: int, dst_ip: int, tcp_bytes: bytes, now: float) -> None: ...

    def poll(self, now: float) -> list[TcpSegment]: ...

    def next_deadline(self) -> float | None: ...


class DriverTimeout(AssertionError):
    """The driver loop ran past its wall-clock limit or iteration cap."""


@dataclass
class EngineDriver:
    """Run `stack` as the host `engine_ip` on interface `ifname` (root needed for AF_PACKET)."""

    ifname: str
    stack: Host
    engine_ip: str
    impairment: Impairment | None = None
    syn_capture_limit: int = 64
    tap: Tap | None = None
    stats: DriverStats = field(default_factory=DriverStats)

    def __post_init__(self) -> None:
        self._rng = random.Random(f"driver:{self.engine_ip}")
        self.mac = random_mac(self._rng)
        self._ip = socket.inet_aton(self.engine_ip)
        self._ip_int = ip_to_int(self.engine_ip)
        self.neighbors: dict[bytes, bytes] = {}                 # IPv4 (4 bytes) -> MAC
        self._unresolved: dict[bytes, list[bytes]] = {}       # IPv4 -> IPv4 packets waiting
        self._arp_sent: dict[bytes, float] = {}
        self._ident = 0
        imp = self.impairment
        self._imp_rng = random.Random(f"impair:{imp.seed}") if imp else None
        self._held: list[tuple[float, int, str, bytes]] = []   # (release, order, dir, data)
        self._held_order = 0
        self.syn_segments: list[tuple[str, bytes]] = []       # ("in"/"out", tcp bytes)
        # Protocol 0 until bound: a socket opened with ETH_P_ALL would queue frames from every
        # interface (other tests' veths included) until bind() narrows it to ours.
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
            self.sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            self.sock.bind((self.ifname, ETH_P_ALL))
            self.sock.setblocking(False)
        except OSError:
            self.sock.close()
            raise

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> EngineDriver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- receive path --------------------------------------------------------------------------

    def _drain(self, now: float) -> None:
        for _ in range(RX_BATCH):
            try:
                frame, addr = self.sock.recvfrom(65536)
            except BlockingIOError:
                return
            if addr[2] == PACKET_OUTGOING:
                continue
            self.stats.rx_frames += 1
            self._on_frame(frame, now)

    def _on_frame(self, frame: bytes, now: float) -> None:
        if len(frame) < ETH.size:
            return
        _dst, src_mac, ethertype = ETH.unpack_from(frame)
        if ethertype == ETH_P_ARP:
            self._on_arp(frame, now)
        elif ethertype == ETH_P_IP:
            self._on_ipv4(frame, src_mac, now)

    def _on_arp(self, frame: bytes, now: float) -> None:
        if len(frame) < ETH.size + ARP.size:
            return
        htype, ptype, hlen, plen, op, sha, spa, _tha, tpa = ARP.unpack_from(frame, ETH.size)
        if (htype, ptype, hlen, plen) != (1, ETH_P_IP, 6, 4):
            return
        if spa != b"\0\0\0\0":
            self._learn(spa, sha, now)
        if op == ARP_REQUEST and tpa == self._ip:
            reply = ARP.pack(1, ETH_P_IP, 6, 4, ARP_REPLY, self.mac, self._ip, sha, spa)
            self._send_frame(ETH.pack(sha, self.mac, ETH_P_ARP) + reply)
            self.stats.arp_replies += 1

    def _on_ipv4(self, frame: bytes, src_mac: bytes, now: float) -> None:
        if len(frame) < ETH.size + IPV4.size:
            self.stats.rx_bad_ipv4 += 1
            return
        vihl, _tos, total, _id, frag, _ttl, proto, _csum, src, dst = IPV4.unpack_from(
            frame, ETH.size)
        ihl = (vihl & 0x0F) * 4
        end = ETH.size + total
        if dst != self._ip:
            self.stats.rx_not_for_us += 1
            return
        if (vihl >> 4 != 4 or ihl < 20 or total < ihl or end > len(frame)
                or ones_complement(frame[ETH.size:ETH.size + ihl]) != 0xFFFF
                or frag & 0x3FFF):
            self.stats.rx_bad_ipv4 += 1          # malformed, or a fragment (none expected)
            return
        if proto != 6:
            return
        tcp = frame[ETH.size + ihl:end]
        if not tcp_checksum_ok(src, dst, tcp):
            self.stats.rx_bad_tcp_checksum += 1
            return
        self._learn(src, src_mac, now)
        self.stats.rx_tcp += 1
        if self._impair("in", tcp, src, now):
            return
        self._deliver(src, tcp, now)

    def _deliver(self, src: bytes, tcp: bytes, now: float) -> None:
        src_int = int.from_bytes(src, "big")
        self._observe("in", now, src_int, self._ip_int, tcp)
        self.stack.receive(src_int, self._ip_int, tcp, now)

    def _learn(self, ip: bytes, mac: bytes, now: float) -> None:
        self.neighbors[ip] = mac
        waiting = self._unresolved.pop(ip, None)
        if waiting:
            for packet in waiting:
                self._send_frame(ETH.pack(mac, self.mac, ETH_P_IP) + packet)

    # -- transmit path -------------------------------------------------------------------------

    def _transmit(self, segments: list[TcpSegment], now: float) -> None:
        offload = self.stack.config.offload_checksum
        for src, dst, tcp in segments:
            dst_b = dst.to_bytes(4, "big")
            self._observe("out", now, src, dst, tcp)          # as the engine emitted it
            if offload:                     # do the NIC's job: the engine left the field zero
                tcp = fill_tcp_checksum(src.to_bytes(4, "big"), dst_b, tcp)
            elif not tcp_checksum_ok(src.to_bytes(4, "big"), dst_b, tcp):
                self.stats.tx_bad_tcp_checksum += 1
            if self._impair("out", tcp, dst_b, now):
                continue
            self._send_ipv4(src.to_bytes(4, "big"), dst_b, tcp, now)

    def _send_ipv4(self, src: bytes, dst: bytes, tcp: bytes, now: float) -> None:
        self._ident = (self._ident + 1) & 0xFFFF
        packet = ipv4_header(src, dst, len(tcp), self._ident) + tcp
        mac = self.neighbors.get(dst)
        if mac is not None:
            self._send_frame(ETH.pack(mac, self.mac, ETH_P_IP) + packet)
            return
        queue = self._unresolved.setdefault(dst, [])
        if len(queue) < MAX_UNRESOLVED:
            queue.append(packet)
        else:
            self.stats.unresolved_dropped += 1
        self._resolve(dst, now)

    def _resolve(self, ip: bytes, now: float) -> None:
        last = self._arp_sent.get(ip)
        if last is not None and now - last < ARP_RETRY:
            return
        self._arp_sent[ip] = now
        request = ARP.pack(1, ETH_P_IP, 6, 4, ARP_REQUEST, self.mac, self._ip, b"\0" * 6, ip)
        self._send_frame(ETH.pack(BROADCAST, self.mac, ETH_P_ARP) + request)
        self.stats.arp_requests += 1

    def _send_frame(self, frame: bytes) -> None:
        try:
            self.sock.send(frame)
            self.stats.tx_frames += 1
        except (BlockingIOError, OSError):
            self.stats.tx_errors += 1        # a full queue is loss; TCP recovers

    # -- impairment and observation --------------------------------------------------------------

    def _impair(self, direction: str, tcp: bytes, peer: bytes, now: float) -> bool:
        """True when the frame was consumed (lost or held back) instead of passed on now."""
        imp = self.impairment
        if imp is None:
            return False
        rng = self._imp_rng
        if imp.loss and rng.random() < imp.loss:
            if direction == "in":
                self.stats.impaired_lost_in += 1
            else:
                self.stats.impaired_lost_out += 1
            return True
        if imp.reorder and rng.random() < imp.reorder:
            self.stats.impaired_held += 1
            self._held_order += 1
            heapq.heappush(self._held, (now + imp.reorder_delay, self._held_order, direction,
                                        peer + tcp))
            return True
        return False

    def _release_held(self, now: float) -> None:
        while self._held and self._held[0][0] <= now:
            _, _, direction, data = heapq.heappop(self._held)
            peer, tcp = data[:4], data[4:]
            if direction == "in":
                self._deliver(peer, tcp, now)
            else:
                self._send_ipv4(self._ip, peer, tcp, now)

    def _observe(self, direction: str, now: float, src: int, dst: int, tcp: bytes) -> None:
        if len(tcp) > 13 and tcp[13] & 0x02 and len(self.syn_segments) < self.syn_capture_limit:
            self.syn_segments.append((direction, tcp))
        if self.tap is not None:
            self.tap(direction, now, src, dst, tcp)

    # -- the loop ------------------------------------------------------------------------------

    def run(self, done: Callable[[], bool], app: Callable[[float], None] | None = None,
            timeout: float = 60.0, max_iterations: int = 5_000_000,
            max_sleep: float = 0.05) -> None:
        """Move frames until done() holds; DriverTimeout after `timeout` wall-clock seconds.

        `app(now)` runs every round (the application's turn); `max_sleep` bounds each select()
        so that done() can watch things outside the stack, such as a subprocess exiting."""
        end = time.monotonic() + timeout
        for _ in range(max_iterations):
            now = time.monotonic()
            self._drain(now)
            self._release_held(now)
            if app is not None:
                app(now)
            self._transmit(self.stack.poll(now), now)
            if done():
                return
            now = time.monotonic()
            if now > end:
                raise DriverTimeout(f"driver on {self.ifname}: not done after {timeout} s "
                                    f"({self.stats})")
            wake = now + max_sleep
            deadline = self.stack.next_deadline()
            if deadline is not None:
                wake = min(wake, deadline)
            if self._held:
                wake = min(wake, self._held[0][0])
            select.select([self.sock], [], [], max(0.0, wake - now))
        raise DriverTimeout(f"driver on {self.ifname}: iteration cap {max_iterations} reached")


class StreamApp:
    """The application on one engine connection: writes `outgoing` as send space allows, reads
    everything that arrives, and closes once its part is done.

    `outgoing` None means "the reply is not known yet" (set it later with set_outgoing).
    `close_when_sent`: close (FIN) right after the last byte is accepted by the engine; otherwise
    close after the peer's EOF.  Never reads after closing."""

    def __init__(self, conn: Connection, outgoing: bytes | None = b"", close_when_sent: bool = True,
                 chunk: int = 256 << 10) -> None:
        self.conn = conn
        self.incoming = bytearray()
        self.closed = False
        self.close_when_sent = close_when_sent
        self._chunk = chunk
        self._out: memoryview | None = None
        self.sent = 0
        if outgoing is not None:
            self.set_outgoing(outgoing)

    def set_outgoing(self, data: bytes) -> None:
        self._out = memoryview(data)
        self.sent = 0

    @property
    def reply_unset(self) -> bool:
        return self._out is None

    @property
    def all_sent(self) -> bool:
        return self._out is not None and self.sent == len(self._out)

    def pump(self) -> None:
        conn = self.conn
        if self.closed:
            return
        while True:
            data = conn.recv(1 << 20)
            if not data:
                break
            self.incoming += data
        out = self._out
        if out is not None and conn.state in (State.ESTABLISHED, State.CLOSE_WAIT):
            while self.sent < len(out) and conn.send_space > 0:
                n = conn.send(out[self.sent:self.sent + self._chunk])
                if n <= 0:
                    break
                self.sent += n
        if self.all_sent and (self.close_when_sent or conn.eof):
            conn.close()
            self.closed = True


class Sinks:
    """The application of a receiving server, as `app(now)` for `EngineDriver.run`: drains the
    stack's events, accepts every connection on `listener` into a StreamApp that reads to the
    peer's EOF (then closes), and pumps them all."""

    def __init__(self, stack: object, listener: object) -> None:
        self.stack = stack
        self.listener = listener
        self.apps: list[StreamApp] = []

    def __call__(self, now: float) -> None:
        self.stack.events()
        conn = self.listener.accept()
        if conn is not None:
            self.apps.append(StreamApp(conn, close_when_sent=False))
        for a in self.apps:
            a.pump()

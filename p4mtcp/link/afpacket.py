"""AF_PACKET ports on a Linux interface (root): PACKET_MMAP rings, or plain socket calls.

`open_interface` sets up the rings and falls back to the plain socket when it cannot (and logs
which one is in use):

- receive: a TPACKET_V3 ring. The kernel fills blocks of frames and hands a block over when it
  is full or RETIRE_MS after its first frame; one poll wake-up reads every frame of every ready
  block in place, then returns the blocks. (The price of V3 is that the first frame of a quiet
  block waits up to RETIRE_MS.)
- transmit: a TPACKET_V3 ring of fixed slots (the kernel's V3 transmit path takes one frame per
  slot, as V2 does), each large enough for a jumbo frame (link.MAX_MTU); a batch is written into
  the slots and flushed with one `send`. (A `send` with data on a socket with a transmit ring
  does not send that data, it only flushes the ring: every frame must go through a slot.)
  A frame the kernel will not take must not stop the ring: one longer than the interface's MTU
  is dropped and counted before it reaches a slot (and PACKET_LOSS makes the kernel skip one it
  refuses anyway, if the MTU shrank). One the kernel keeps answering with ENOBUFS (a veth whose
  far end has a smaller MTU drops it; the kernel then offers the same slot again at every flush,
  for ever) is dropped and counted once it has held the ring for STALL_SECONDS, and the port
  transmits by plain per-frame `send` from then on, saying so in the log.

Both paths hand the pipeline the frame as it was on the wire: a VLAN tag the kernel moved into
the packet metadata (TP_STATUS_VLAN_VALID with tp_vlan_tci / tp_vlan_tpid, in the ring header or
the PACKET_AUXDATA message) is put back, and a TCP checksum a local kernel peer left unfinished
(TP_STATUS_CSUMNOTREADY) is finished. A tagged frame is sent as it is: its tag goes on the wire.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import mmap
import os
import socket
import struct
import time
from collections.abc import Sequence
from typing import Final

from .frames import ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, VLAN_HLEN, finish_checksum, insert_vlan
from .port import BATCH, MAX_FRAME, PortStats
from .unix import big_buffers

log = logging.getLogger("p4mtcp.link")

ETH_P_ALL: Final = 0x0003
SOL_PACKET: Final = 263
PACKET_RX_RING, PACKET_STATISTICS, PACKET_AUXDATA, PACKET_VERSION, PACKET_TX_RING = 5, 6, 8, 10, 13
PACKET_LOSS: Final = 14
PACKET_IGNORE_OUTGOING: Final = 23
PACKET_OUTGOING: Final = 4
TPACKET_V3: Final = 2
TP_STATUS_USER: Final = 1                # rx: the block is ours
TP_STATUS_LOSING: Final = 4              # rx: the kernel dropped frames, the ring was full
TP_STATUS_SEND_REQUEST: Final = 1        # tx: the slot is ready for the kernel
TP_STATUS_CSUMNOTREADY: Final = 1 << 3
TP_STATUS_VLAN_VALID: Final = 1 << 4
TP_STATUS_VLAN_TPID_VALID: Final = 1 << 6
_AUXDATA: Final = struct.Struct("=IIIHHHH")  # struct tpacket_auxdata
_CMSG_SPACE: Final = socket.CMSG_SPACE(_AUXDATA.size)
_REQ3: Final = struct.Struct("=7I")      # struct tpacket_req3
_STATS3: Final = struct.Struct("=III")   # struct tpacket_stats_v3: packets, drops, freeze_q_cnt
_BLOCK: Final = struct.Struct("=IIII")   # tpacket_block_desc: block_status, num_pkts, first,
                                         # blk_len (the bytes in use, header included)
_BLOCK_AT: Final = 8                     # offset of block_status in tpacket_block_desc
_U32: Final = struct.Struct("=I")
_PKT: Final = struct.Struct("=I8xIIIH")  # tpacket3_hdr: next_offset, snaplen, len, status, mac
_VLAN: Final = struct.Struct("=II H")    # tpacket3_hdr at 28: rxhash, vlan_tci, vlan_tpid
_VLAN_AT: Final = 28
_TX: Final = struct.Struct("=IIIIII")    # tpacket3_hdr: next_offset, sec, nsec, snaplen, len,
                                         # status; struct writes fields in order: status last
_STATUS_AT: Final = 20                   # offset of tp_status in tpacket3_hdr
_TX_DATA: Final = 48                     # TPACKET_ALIGN(sizeof(tpacket3_hdr)): where tx data sits
_SLL_PKTTYPE: Final = 48 + 10            # sockaddr_ll.sll_pkttype after the rx header

RX_BLOCK: Final = 1 << 15                # 32 KiB: ~200 64-byte frames per block
RX_BLOCKS: Final = 256                   # many small blocks: a quiet block retires after
                                         # RETIRE_MS holding few frames, so the ring's depth in
                                         # time is about RX_BLOCKS x RETIRE_MS at low rates
RX_FRAME: Final = 1 << 11                # the kernel's slot unit; V3 packs frames tighter
RETIRE_MS: Final = 1
TX_SLOT: Final = 1 << 14                 # 16 KiB: a MAX_MTU frame, tags and header included
TX_SLOTS: Final = 512
TX_BLOCK: Final = TX_SLOT * 8            # the ring is allocated in blocks of 8 slots
STALL_SECONDS: Final = 0.05              # a slot refused this long is a frame that never goes
SIOCGIFMTU: Final = 0x8921
_IFREQ_MTU: Final = struct.Struct("16si20x")  # struct ifreq: ifr_name, ifr_mtu (40 bytes)
_GONE: Final = (errno.EAGAIN, errno.EINTR, errno.ENOBUFS, errno.ENETDOWN, errno.EMSGSIZE)


def _packet_socket(ifname: str, proto: int = ETH_P_ALL) -> socket.socket:
    """A non-blocking AF_PACKET socket bound to ``ifname``; ``proto`` 0 receives nothing."""
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(proto))
    except PermissionError:
        raise PermissionError(errno.EPERM,
                              f"{ifname}: AF_PACKET needs root (CAP_NET_RAW)") from None
    try:
        sock.bind((ifname, proto))
    except OSError as e:
        sock.close()
        raise OSError(e.errno, f"{ifname}: cannot bind AF_PACKET socket: {e.strerror}") from None
    try:
        sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)  # Linux 4.20; else filtered below
    except OSError:
        pass
    sock.setblocking(False)
    return sock


def interface_mtu(ifname: str) -> int:
    """The interface's MTU (what the kernel lets a frame carry beyond its Ethernet header),
    asked with SIOCGIFMTU (netdevice(7)) in this thread's network namespace: /sys shows the
    namespace it was mounted in, which is not the one of an interface opened after setns()."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            reply = fcntl.ioctl(probe.fileno(), SIOCGIFMTU, _IFREQ_MTU.pack(ifname.encode(), 0))
        except OSError as e:
            raise OSError(e.errno, f"{ifname}: cannot read the MTU: {e.strerror}") from None
    return _IFREQ_MTU.unpack(reply)[1]


def open_interface(ifname: str) -> "PacketPort | MmapPacketPort":
    """The interface's port: PACKET_MMAP rings when the kernel sets them up, else plain calls
    (also when P4MTCP_PACKET_MMAP=0 is in the environment: to compare, or to rule the rings out)."""
    if os.environ.get("P4MTCP_PACKET_MMAP") == "0":
        log.info("%s: plain AF_PACKET calls (P4MTCP_PACKET_MMAP=0)", ifname)
        return PacketPort(ifname)
    try:
        port: PacketPort | MmapPacketPort = MmapPacketPort(ifname)
    except OSError as e:
        if isinstance(e, PermissionError) or e.errno in (errno.ENODEV, errno.ENXIO):
            raise
        log.warning("%s: PACKET_MMAP unavailable (%s); using plain AF_PACKET calls", ifname, e)
        return PacketPort(ifname)
    log.info("%s: PACKET_MMAP (TPACKET_V3 rx ring, tx ring)", ifname)
    return port


class _Sender:
    """Plain per-frame transmit, shared by both ports (the ring's oversize frames use it)."""

    _sock: socket.socket
    stats: PortStats
    closed_by_peer = False  # an interface has no peer that could close it

    def _send_one(self, frame: bytes) -> bool:
        try:
            self._sock.send(frame)
        except OSError as e:
            if e.errno not in _GONE:
                raise
            return False
        return True

    def arm(self) -> bool:
        return True

    def pending(self) -> bool:
        return False  # the socket's descriptor shows every frame, and every ready ring block

    def fileno(self) -> int:
        return self._sock.fileno()

    def send(self, frame: bytes) -> bool:
        return self.send_batch((frame,)) == 1

    def send_batch(self, frames: Sequence[bytes]) -> int:
        """One `send` per frame; n: frames[:n] were sent, the first refusal drops the rest
        (counted), as on every other link."""
        send = self._send_one
        for i, frame in enumerate(frames):
            if not send(frame):
                self.stats.tx_frames += i
                self.stats.tx_dropped += len(frames) - i
                return i
        self.stats.tx_frames += len(frames)
        return len(frames)


class PacketPort(_Sender):
    """AF_PACKET with one system call per frame: the fallback where rings cannot be set up."""

    def __init__(self, ifname: str):
        self.ifname = ifname
        self.stats = PortStats()
        self._sock = _packet_socket(ifname)
        self._sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        big_buffers(self._sock)

    def recv_batch(self) -> list[bytes]:
        out: list[bytes] = []
        recvmsg = self._sock.recvmsg
        stats = self.stats
        while len(out) < BATCH:
            try:
                data, ancdata, flags, addr = recvmsg(MAX_FRAME, _CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                break
            if addr[2] == PACKET_OUTGOING:
                continue  # a frame the host itself sent on this interface
            if flags & socket.MSG_TRUNC:
                stats.rx_truncated += 1
                continue
            for level, kind, cdata in ancdata:
                if level == SOL_PACKET and kind == PACKET_AUXDATA:
                    status, _, _, _, _, tci, tpid = _AUXDATA.unpack_from(cdata)
                    if status & TP_STATUS_CSUMNOTREADY:
                        data = finish_checksum(data)
                        stats.csum_finished += 1
                    if status & TP_STATUS_VLAN_VALID:
                        data = insert_vlan(data, tpid if status & TP_STATUS_VLAN_TPID_VALID else 0,
                                           tci)
                        stats.vlan_restored += 1
            out.append(data)
        stats.rx_frames += len(out)
        return out

    def close(self) -> None:
        self._sock.close()


class _PlainTransmit(_Sender):
    """Per-frame `send` on a socket of its own that receives nothing: a ring port's transmit
    path once its ring has stalled (its counters are the ring port's)."""

    def __init__(self, ifname: str, stats: PortStats):
        self.stats = stats
        self._sock = _packet_socket(ifname, proto=0)

    def close(self) -> None:
        self._sock.close()


class MmapPacketPort(_Sender):
    """AF_PACKET with a TPACKET_V3 receive ring and a transmit ring in one mapping."""

    def __init__(self, ifname: str):
        self.ifname = ifname
        self.stats = PortStats()
        self._sock = sock = _packet_socket(ifname)
        try:
            self.mtu = interface_mtu(ifname)
            sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            sock.setsockopt(SOL_PACKET, PACKET_LOSS, 1)  # skip, not stop at, a refused slot
            sock.setsockopt(SOL_PACKET, PACKET_RX_RING, _REQ3.pack(
                RX_BLOCK, RX_BLOCKS, RX_FRAME, RX_BLOCK // RX_FRAME * RX_BLOCKS, RETIRE_MS, 0, 0))
            sock.setsockopt(SOL_PACKET, PACKET_TX_RING, _REQ3.pack(
                TX_BLOCK, TX_SLOT * TX_SLOTS // TX_BLOCK, TX_SLOT, TX_SLOTS, 0, 0, 0))
            big_buffers(sock)
            rx_size = RX_BLOCK * RX_BLOCKS
            mapped = mmap.mmap(sock.fileno(), rx_size + TX_SLOT * TX_SLOTS)
        except OSError:
            sock.close()
            raise
        self._map: mmap.mmap | None = mapped
        self._rx = memoryview(mapped)[:rx_size]
        self._tx = memoryview(mapped)[rx_size:]
        self._block = 0      # the next receive block to read
        self._slot = 0       # the next transmit slot to fill
        self._stalled: tuple[int, float] | None = None  # (slot, since) while ENOBUFS holds it
        self._plain: _PlainTransmit | None = None       # transmit after a stall

    def recv_batch(self) -> list[bytes]:
        """Every frame of the ready blocks (stopping after the block that reaches BATCH)."""
        rx, stats = self._rx, self.stats
        out: list[bytes] = []
        while len(out) < BATCH:
            base = self._block * RX_BLOCK
            status, count, at, used = _BLOCK.unpack_from(rx, base + _BLOCK_AT)
            if not status & TP_STATUS_USER:
                break
            if status & TP_STATUS_LOSING:  # read (and reset) the kernel's drop count
                drops = _STATS3.unpack(self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS,
                                                             _STATS3.size))[1]
                stats.rx_dropped += drops
            # one copy of the block's frames; each frame is then a slice of it
            block = rx[base:base + min(max(used, at), RX_BLOCK)].tobytes()
            self._read_block(block, count, at, out)
            _U32.pack_into(rx, base + _BLOCK_AT, 0)  # TP_STATUS_KERNEL: give the block back
            self._block = (self._block + 1) % RX_BLOCKS
        stats.rx_frames += len(out)
        return out

    def _read_block(self, block: bytes, count: int, at: int, out: list[bytes]) -> None:
        stats = self.stats
        unpack = _PKT.unpack_from
        for _ in range(count):
            nxt, snap, length, status, mac = unpack(block, at)
            if snap < length:
                stats.rx_truncated += 1
            elif block[at + _SLL_PKTTYPE] != PACKET_OUTGOING:
                frame = block[at + mac:at + mac + snap]
                if status & TP_STATUS_CSUMNOTREADY:
                    frame = finish_checksum(frame)
                    stats.csum_finished += 1
                if status & TP_STATUS_VLAN_VALID:
                    _, tci, tpid = _VLAN.unpack_from(block, at + _VLAN_AT)
                    frame = insert_vlan(frame, tpid if status & TP_STATUS_VLAN_TPID_VALID else 0,
                                        tci)
                    stats.vlan_restored += 1
                out.append(frame)
            at += nxt

    def send_batch(self, frames: Sequence[bytes]) -> int:
        """Frames into free transmit slots, then one `send` to flush them; n: frames[:n] were
        handled (sent, or longer than the MTU: dropped and counted as tx_oversize), a full ring
        drops the rest (counted)."""
        if self._plain is not None:
            return self._plain.send_batch(frames)
        tx, stats = self._tx, self.stats
        slot = self._slot
        limit = self.mtu + ETH_HLEN
        queued = sent = oversize = 0
        pack, status_of = _TX.pack_into, _U32.unpack_from
        for frame in frames:
            size = len(frame)
            if size > limit and not self._fits_tagged(frame):
                oversize += 1               # the kernel would refuse it (EMSGSIZE)
                sent += 1
                continue
            at = slot * TX_SLOT
            if status_of(tx, at + _STATUS_AT)[0]:
                break  # the kernel has not sent this slot yet: the ring is full
            tx[at + _TX_DATA:at + _TX_DATA + size] = frame
            # the header after the data, its status last: x86-64 keeps the stores in order,
            # so the kernel never takes a slot whose frame is not whole
            pack(tx, at, 0, 0, 0, size, size, TP_STATUS_SEND_REQUEST)
            slot = (slot + 1) % TX_SLOTS
            queued += 1
            sent += 1
        self._slot = slot
        stats.tx_frames += sent - oversize
        stats.tx_oversize += oversize
        stats.tx_dropped += len(frames) - sent
        if queued:
            self._flush()
        return sent

    def _fits_tagged(self, frame: bytes) -> bool:
        """A frame up to 4 bytes over the MTU passes if it carries a VLAN tag (the kernel
        allows the tag beyond the MTU, as on the wire)."""
        return (len(frame) <= self.mtu + ETH_HLEN + VLAN_HLEN
                and (frame[12] << 8 | frame[13]) in (ETH_P_8021Q, ETH_P_8021AD))

    def _flush(self) -> None:
        """Hand the queued slots to the kernel: one system call, which does not wait for them.
        A transient refusal leaves them queued for the next flush, like a NIC's tx ring; a
        slot refused for STALL_SECONDS is given up (module docstring)."""
        try:
            self._sock.send(b"", socket.MSG_DONTWAIT)
        except OSError as e:
            if e.errno not in _GONE:
                raise
            if e.errno == errno.ENOBUFS:
                self._check_stall()
                return
        self._stalled = None

    def _check_stall(self) -> None:
        """Find the oldest slot the kernel still holds (the queued slots run up to the next
        free one; the kernel sends them in order) and give up on it once it has held the ring
        for STALL_SECONDS."""
        tx, status_of = self._tx, _U32.unpack_from
        head, back = self._slot, 0
        while back < TX_SLOTS and status_of(tx, (head - 1) % TX_SLOTS * TX_SLOT + _STATUS_AT)[0]:
            head, back = (head - 1) % TX_SLOTS, back + 1
        if not back:
            self._stalled = None
            return
        now = time.monotonic()
        if self._stalled is None or self._stalled[0] != head:
            self._stalled = (head, now)
        elif now - self._stalled[1] >= STALL_SECONDS:
            self._give_up_ring(head)

    def _give_up_ring(self, head: int) -> None:
        """Drop the frame the kernel keeps refusing and send the ones queued behind it, and
        every later one, by plain `send`: the kernel will offer that slot again at every flush,
        so the ring cannot move past it."""
        tx = self._tx
        frames = []
        slot = head
        while slot != self._slot:
            at = slot * TX_SLOT
            size = _TX.unpack_from(tx, at)[4]
            frames.append(bytes(tx[at + _TX_DATA:at + _TX_DATA + size]))
            slot = (slot + 1) % TX_SLOTS
        log.error("%s: the kernel refuses a %d-byte frame in the transmit ring (ENOBUFS for "
                  "%.0f ms; the far end's MTU smaller than this interface's %d?): dropped it; "
                  "transmitting by plain send() from now on", self.ifname, len(frames[0]),
                  STALL_SECONDS * 1e3, self.mtu)
        self.stats.tx_frames -= len(frames)       # counted when queued; counted again below
        self.stats.tx_dropped += 1
        self._plain = _PlainTransmit(self.ifname, self.stats)
        self._plain.send_batch(frames[1:])

    def close(self) -> None:
        if self._map is not None:
            self._rx.release()
            self._tx.release()
            self._map.close()
            self._map = None
        if self._plain is not None:
            self._plain.close()
        self._sock.close()

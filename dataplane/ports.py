"""Frame ports: one frame pipe each, `send(frame)`, `recv_batch()`, `fileno()`, `close()`.

Spec strings (`p4mtcp nic -i NUM@SPEC`, docs/ARCHITECTURE.md "Ports"):
  unix:PATH       the NIC's side of a UNIX-socket link, listening at PATH (no root needed)
  unix-host:PATH  the other side: a core context, or a second NIC, connecting to PATH
  IFNAME          AF_PACKET on a Linux interface (root)

UNIX links are SOCK_SEQPACKET, not SOCK_DGRAM: a datagram socket that is not connected back to
its sender queues at most net.unix.max_dgram_qlen (default 10) frames, so a burst of 11 from a
core would fail; a sequenced-packet connection keeps message boundaries and is limited only by the
sender's buffer (set large here). Every socket is non-blocking: a full peer costs dropped frames
(counted in `stats.tx_dropped`, like a NIC's full ring), never a stalled NIC.

One message on a UNIX link carries a batch of frames, so that a core's loop step or a NIC's
forwarded batch costs one `send` syscall, not one per frame (both ends are this module, so the
format is private to it; native byte order, the link never leaves the host):

    u32 count | count x u32 frame length | the frames back to back

A message holds at most MSG_FRAMES frames and, unless it is a single frame, at most MSG_BYTES
bytes; `send_batch` splits longer batches. A message that breaks the format (count 0 or above
MSG_FRAMES, lengths that do not add up to its size) is dropped whole and counted in
`stats.rx_malformed`; nothing of it reaches the pipeline.

AF_PACKET ports read PACKET_AUXDATA: a frame sent by a local kernel peer on a veth can carry a
TCP checksum the kernel left unfinished (CHECKSUM_PARTIAL, TP_STATUS_CSUMNOTREADY); it is
finished here before the pipeline, which verifies checksums, sees it.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import stat
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate, pairwise
from typing import Protocol

from p4mtcp.hashing import ones_sum

BATCH = 256          # frames one recv_batch() returns at most (fairness between ports)
MAX_FRAME = 65536 + 64
MSG_FRAMES = 64      # frames one UNIX-link message carries at most
MSG_BYTES = 65536    # size cap of a multi-frame message (a single frame may be up to MAX_FRAME)
_HEADS = [struct.Struct(f"={n + 1}I") for n in range(MSG_FRAMES + 1)]  # count + n lengths
MAX_MESSAGE = _HEADS[1].size + MAX_FRAME  # the largest message a receiver must take whole
SOCKET_BUFFER = 8 << 20
_SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


@dataclass
class PortStats:
    rx_frames: int = 0
    tx_frames: int = 0
    tx_dropped: int = 0      # peer absent or its buffer full, or a frame above MAX_FRAME
    rx_malformed: int = 0    # UNIX-link messages that broke the batch format, dropped whole
    csum_finished: int = 0   # AF_PACKET frames whose checksum the kernel left to us
    rx_truncated: int = 0    # AF_PACKET frames longer than MAX_FRAME (GRO off?), dropped


class Port(Protocol):
    stats: PortStats

    def send(self, frame: bytes) -> bool: ...
    def send_batch(self, frames: Sequence[bytes]) -> int: ...
    def recv_batch(self) -> list[bytes]: ...
    def fileno(self) -> int: ...
    def close(self) -> None: ...


def open_port(spec: str, connect_timeout: float = 0.0) -> Port:
    """The port a spec string names; ValueError says what is wrong with the spec."""
    kind, sep, rest = spec.partition(":")
    if sep and kind == "unix":
        return UnixNicPort(_path(spec, rest))
    if sep and kind == "unix-host":
        return UnixHostPort(_path(spec, rest), connect_timeout)
    if sep:
        raise ValueError(f"port spec {spec!r}: unknown kind {kind!r} (unix:, unix-host: or an "
                         "interface name)")
    if not spec or len(spec) >= 16 or "/" in spec or spec.strip() != spec:
        raise ValueError(f"port spec {spec!r}: not an interface name")
    return PacketPort(spec)


def _path(spec: str, path: str) -> str:
    if not path:
        raise ValueError(f"port spec {spec!r}: empty socket path")
    if len(os.fsencode(path)) > 107:
        raise ValueError(f"port spec {spec!r}: socket path longer than 107 bytes")
    return path


def _seqpacket() -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.setblocking(False)
    return s


def _big_buffers(s: socket.socket) -> None:
    """Raise the send/receive buffers: past the sysctl caps when allowed (root), else up to them."""
    for force, plain in ((_SO_SNDBUFFORCE, socket.SO_SNDBUF), (_SO_RCVBUFFORCE, socket.SO_RCVBUF)):
        try:
            s.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER)
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, plain, SOCKET_BUFFER)


def _messages(frames: Sequence[bytes]) -> list[tuple[int, int]]:
    """(start, end) index ranges splitting frames into messages within MSG_FRAMES / MSG_BYTES.
    A frame above MAX_FRAME ends the list: it and the frames after it cannot be sent."""
    lens = list(map(len, frames))
    n = len(lens)
    if not n:
        return []
    if n <= MSG_FRAMES and sum(lens) + 4 * n + 4 <= MSG_BYTES:
        return [(0, n)]  # the common case: one message, no per-frame walk
    ranges = []
    start, size = 0, 4
    for i, length in enumerate(lens):
        if length > MAX_FRAME:
            break
        if i > start and (i - start == MSG_FRAMES or size + 4 + length > MSG_BYTES):
            ranges.append((start, i))
            start, size = i, 4
        size += 4 + length
    else:
        i = n
    if i > start:
        ranges.append((start, i))
    return ranges


def _send_batch(sock: socket.socket, frames: Sequence[bytes], stats: PortStats
                ) -> tuple[int, OSError | None]:
    """Send frames in as few messages as the limits allow: (n, error). frames[:n] were sent,
    frames[n:] dropped and counted (the first refusal ends the batch, so what is lost is always
    the tail). error: the OSError that ended it, None when it was only a full peer."""
    sent = 0
    error = None
    sendmsg = sock.sendmsg
    try:
        for start, end in _messages(frames):
            part = frames[start:end]
            sendmsg([_HEADS[end - start].pack(end - start, *map(len, part)), *part])
            sent = end
    except (BlockingIOError, InterruptedError):
        pass
    except OSError as e:
        error = e
    stats.tx_frames += sent
    stats.tx_dropped += len(frames) - sent
    return sent, error


def _unpack(msg: bytes, out: list[bytes]) -> bool:
    """Append the frames of one batch message; False (nothing appended) if it is malformed."""
    size = len(msg)
    if size < 8:
        return False
    count = _HEADS[0].unpack_from(msg)[0]
    if count == 1:
        if _HEADS[1].unpack_from(msg)[1] != size - 8:
            return False
        out.append(msg[8:])
        return True
    if not 1 < count <= MSG_FRAMES or 4 + 4 * count > size:
        return False
    ends = list(accumulate(_HEADS[count].unpack_from(msg)[1:], initial=4 + 4 * count))
    if ends[-1] != size:
        return False
    out += [msg[a:b] for a, b in pairwise(ends)]
    return True


def _drain(conn: socket.socket, out: list[bytes], stats: PortStats) -> bool:
    """Append the frames waiting on conn (up to BATCH in all); False when the peer hung up.
    Messages are read while one more, whatever its count, still fits within BATCH."""
    recv = conn.recv
    while len(out) <= BATCH - MSG_FRAMES:
        try:
            msg = recv(MAX_MESSAGE)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        if not msg:
            return False  # SOCK_SEQPACKET: a zero-length read is the peer's close
        if not _unpack(msg, out):
            stats.rx_malformed += 1
    return True


class UnixNicPort:
    """The NIC's end of a UNIX link: listens at PATH and serves the latest core that connected.

    `fileno()` is an epoll descriptor over the listening socket and the connection, so one
    descriptor stays valid for the NIC's poll loop while cores come and go.
    """

    def __init__(self, path: str):
        self.path = path
        self.stats = PortStats()
        if os.path.exists(path):
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                raise ValueError(f"unix:{path}: exists and is not a socket")
            os.unlink(path)  # left over from an earlier run
        self._listener = _seqpacket()
        self._listener.bind(path)
        self._listener.listen(8)
        self._conn: socket.socket | None = None
        self._poll = select.epoll()
        self._poll.register(self._listener.fileno(), select.EPOLLIN)

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def fileno(self) -> int:
        return self._poll.fileno()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            conn.setblocking(False)
            _big_buffers(conn)
            self._drop_conn()  # a reconnecting core replaces its old connection
            self._conn = conn
            self._poll.register(conn.fileno(), select.EPOLLIN)

    def _drop_conn(self) -> None:
        if self._conn is not None:
            self._poll.unregister(self._conn.fileno())
            self._conn.close()
            self._conn = None

    def recv_batch(self) -> list[bytes]:
        self._accept()
        out: list[bytes] = []
        if self._conn is not None and not _drain(self._conn, out, self.stats):
            self._drop_conn()
        self.stats.rx_frames += len(out)
        return out

    def send(self, frame: bytes) -> bool:
        return self.send_batch((frame,)) == 1

    def send_batch(self, frames: Sequence[bytes]) -> int:
        """Frames in order, in as few messages as the limits allow; n: frames[:n] were sent."""
        conn = self._conn
        if conn is None:
            self._accept()
            conn = self._conn
        if conn is None:
            self.stats.tx_dropped += len(frames)
            return 0
        sent, error = _send_batch(conn, frames, self.stats)
        if error is not None:
            self._drop_conn()  # the core went away; a reconnecting one is accepted later
        return sent

    def close(self) -> None:
        self._drop_conn()
        self._poll.close()
        self._listener.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class UnixHostPort:
    """A core's (or a second NIC's) end of a UNIX link: connects to the NIC listening at PATH."""

    def __init__(self, path: str, connect_timeout: float = 0.0):
        self.path = path
        self.stats = PortStats()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        _big_buffers(self._sock)
        deadline = time.monotonic() + connect_timeout
        while True:
            try:
                self._sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError) as e:
                if time.monotonic() >= deadline:
                    self._sock.close()
                    raise ConnectionRefusedError(
                        e.errno, f"unix-host:{path}: no NIC is listening there") from None
                time.sleep(0.02)
        self._sock.setblocking(False)
        self.closed_by_peer = False

    def fileno(self) -> int:
        return self._sock.fileno()

    def recv_batch(self) -> list[bytes]:
        out: list[bytes] = []
        if not self.closed_by_peer and not _drain(self._sock, out, self.stats):
            self.closed_by_peer = True
        self.stats.rx_frames += len(out)
        return out

    def send(self, frame: bytes) -> bool:
        return self.send_batch((frame,)) == 1

    def send_batch(self, frames: Sequence[bytes]) -> int:
        """Frames in order, in as few messages as the limits allow; n: frames[:n] were sent.
        OSError when the link fails other than by the NIC hanging up."""
        sent, error = _send_batch(self._sock, frames, self.stats)
        if error is not None:
            if error.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                raise error
            self.closed_by_peer = True
        return sent

    def close(self) -> None:
        self._sock.close()


# --- AF_PACKET ---------------------------------------------------------------------------------

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_OUTGOING = 4
TP_STATUS_CSUMNOTREADY = 1 << 3
_AUXDATA = struct.Struct("=IIIHHHH")  # struct tpacket_auxdata
_CMSG_SPACE = socket.CMSG_SPACE(_AUXDATA.size)
_U16 = struct.Struct("!H")


def finish_checksum(frame: bytes) -> bytes:
    """The frame with its IPv4 TCP checksum computed in full (RFC 9293 3.1: pseudo-header,
    header, options and data). A frame that is not IPv4/TCP, or too short, comes back unchanged:
    the pipeline drops and counts malformed frames itself."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
        return frame
    ihl = (frame[14] & 0xF) * 4
    total = _U16.unpack_from(frame, 16)[0]
    l4 = 14 + ihl
    end = 14 + total
    if ihl < 20 or end > len(frame) or end - l4 < 20:
        return frame
    buf = bytearray(frame)
    buf[l4 + 16:l4 + 18] = b"\0\0"
    mv = memoryview(buf)
    pseudo = ones_sum(mv[26:34], 6 + (end - l4))
    _U16.pack_into(buf, l4 + 16, ~ones_sum(mv[l4:end], pseudo) & 0xFFFF)
    return bytes(buf)


class PacketPort:
    """AF_PACKET on a Linux interface (needs CAP_NET_RAW)."""

    def __init__(self, ifname: str):
        self.ifname = ifname
        self.stats = PortStats()
        try:
            self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        except PermissionError:
            raise PermissionError(errno.EPERM, f"{ifname}: AF_PACKET needs root (CAP_NET_RAW)") from None
        try:
            self._sock.bind((ifname, ETH_P_ALL))
        except OSError as e:
            self._sock.close()
            raise OSError(e.errno, f"{ifname}: cannot bind AF_PACKET socket: {e.strerror}") from None
        self._sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        _big_buffers(self._sock)
        self._sock.setblocking(False)

    def fileno(self) -> int:
        return self._sock.fileno()

    def recv_batch(self) -> list[bytes]:
        out: list[bytes] = []
        recvmsg = self._sock.recvmsg
        while len(out) < BATCH:
            try:
                data, ancdata, flags, addr = recvmsg(MAX_FRAME, _CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                break
            if addr[2] == PACKET_OUTGOING:
                continue  # a frame the host itself sent on this interface
            if flags & socket.MSG_TRUNC:
                self.stats.rx_truncated += 1
                continue
            for level, kind, cdata in ancdata:
                if (level == SOL_PACKET and kind == PACKET_AUXDATA
                        and _AUXDATA.unpack_from(cdata)[0] & TP_STATUS_CSUMNOTREADY):
                    data = finish_checksum(data)
                    self.stats.csum_finished += 1
            out.append(data)
        self.stats.rx_frames += len(out)
        return out

    def send(self, frame: bytes) -> bool:
        try:
            self._sock.send(frame)
            self.stats.tx_frames += 1
            return True
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EINTR, errno.ENOBUFS, errno.ENETDOWN,
                               errno.EMSGSIZE):
                raise
            self.stats.tx_dropped += 1
            return False

    def send_batch(self, frames: Sequence[bytes]) -> int:
        """One `send` per frame (AF_PACKET has no batch); n: frames[:n] were sent, the first
        refusal drops the rest (counted), as on UNIX links."""
        send = self.send
        for i, frame in enumerate(frames):
            if not send(frame):
                self.stats.tx_dropped += len(frames) - i - 1
                return i
        return len(frames)

    def close(self) -> None:
        self._sock.close()

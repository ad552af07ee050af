"""UNIX-socket links: `unix:PATH` (the NIC listens) and `unix-host:PATH` (a core connects).

UNIX links are SOCK_SEQPACKET, not SOCK_DGRAM: a datagram socket that is not connected back to
its sender queues at most net.unix.max_dgram_qlen (default 10) frames, so a burst of 11 from a
core would fail; a sequenced-packet connection keeps message boundaries and is limited only by the
sender's buffer (set large here). Every socket is non-blocking: a full peer costs dropped frames
(counted in `stats.tx_dropped`, like a NIC's full ring), never a stalled NIC.

One message carries a batch of frames, so that a core's loop step or a NIC's forwarded batch
costs one `send` syscall, not one per frame (both ends are this module, so the format is private
to it; native byte order, the link never leaves the host):

    u32 count | count x u32 frame length | the frames back to back

A message holds at most MSG_FRAMES frames and, unless it is a single frame, at most MSG_BYTES
bytes; `send_batch` splits longer batches. A message that breaks the format (count 0 or above
MSG_FRAMES, lengths that do not add up to its size) is dropped whole and counted in
`stats.rx_malformed`; nothing of it reaches the pipeline.

The listening and connecting halves (`Acceptor`, `connect`) are also the control connection of
shared-memory links (link/shm.py), whose frames travel in rings instead.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import stat
import struct
import time
from collections.abc import Iterator, Sequence
from itertools import accumulate, pairwise

from .port import BATCH, MAX_FRAME, PortStats

MSG_FRAMES = 64      # frames one message carries at most
MSG_BYTES = 65536    # size cap of a multi-frame message (a single frame may be up to MAX_FRAME)
_HEADS = [struct.Struct(f"={n + 1}I") for n in range(MSG_FRAMES + 1)]  # count + n lengths
MAX_MESSAGE = _HEADS[1].size + MAX_FRAME  # the largest message a receiver must take whole
SOCKET_BUFFER = 8 << 20
_SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
_GONE = (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN)


def check_path(spec: str, path: str) -> str:
    """PATH of a `kind:PATH` spec, or ValueError naming the spec."""
    if not path:
        raise ValueError(f"port spec {spec!r}: empty socket path")
    if len(os.fsencode(path)) > 107:
        raise ValueError(f"port spec {spec!r}: socket path longer than 107 bytes")
    return path


def seqpacket() -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.setblocking(False)
    return s


def big_buffers(s: socket.socket) -> None:
    """Raise the send/receive buffers: past the sysctl caps when allowed (root), else up to them."""
    for force, plain in ((_SO_SNDBUFFORCE, socket.SO_SNDBUF), (_SO_RCVBUFFORCE, socket.SO_RCVBUF)):
        try:
            s.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER)
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, plain, SOCKET_BUFFER)


def connect(kind: str, path: str, timeout: float) -> socket.socket:
    """A blocking SOCK_SEQPACKET connection to the NIC listening at path, retried up to
    `timeout` s (the NIC may still be starting); ConnectionRefusedError says who was missing."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    big_buffers(sock)
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock.connect(path)
            return sock
        except (FileNotFoundError, ConnectionRefusedError) as e:
            if time.monotonic() >= deadline:
                sock.close()
                raise ConnectionRefusedError(
                    e.errno, f"{kind}:{path}: no NIC is listening there") from None
            time.sleep(0.02)


class Acceptor:
    """A listening socket at PATH that keeps the latest connection (a reconnecting core
    replaces its old one). `fileno()` is an epoll descriptor over both, so one descriptor stays
    valid for a poll loop while cores come and go."""

    def __init__(self, kind: str, path: str):
        self.path = path
        if os.path.exists(path):
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                raise ValueError(f"{kind}:{path}: exists and is not a socket")
            os.unlink(path)  # left over from an earlier run
        self._listener = seqpacket()
        self._listener.bind(path)
        self._listener.listen(8)
        self.conn: socket.socket | None = None
        self._poll = select.epoll()
        self._poll.register(self._listener.fileno(), select.EPOLLIN)

    def fileno(self) -> int:
        return self._poll.fileno()

    def accept(self) -> socket.socket | None:
        """The newest connection waiting, now `self.conn`; None when none waits."""
        new = None
        while True:
            try:
                conn, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return new
            conn.setblocking(False)
            big_buffers(conn)
            self.drop()
            self.conn = new = conn
            self._poll.register(conn.fileno(), select.EPOLLIN)

    def drop(self) -> None:
        if self.conn is not None:
            self._poll.unregister(self.conn.fileno())
            self.conn.close()
            self.conn = None

    def close(self) -> None:
        self.drop()
        self._poll.close()
        self._listener.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


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


def received(sock: socket.socket, size: int) -> Iterator[bytes]:
    """The messages waiting on a non-blocking sock, read as they are asked for;
    ConnectionError when the peer has hung up."""
    recv = sock.recv
    while True:
        try:
            msg = recv(size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            raise ConnectionError(e.errno, e.strerror) from None
        if not msg:
            raise ConnectionError("peer closed")  # SOCK_SEQPACKET: zero length is the close
        yield msg


def _drain(conn: socket.socket, out: list[bytes], stats: PortStats) -> bool:
    """Append the frames waiting on conn (up to BATCH in all); False when the peer hung up.
    Messages are read while one more, whatever its count, still fits within BATCH."""
    try:
        for msg in received(conn, MAX_MESSAGE):
            if not _unpack(msg, out):
                stats.rx_malformed += 1
            if len(out) > BATCH - MSG_FRAMES:
                break
    except ConnectionError:
        return False
    return True


class UnixNicPort:
    """The NIC's end of a UNIX link: listens at PATH and serves the latest core that connected."""

    closed_by_peer = False  # a departed core is replaced by the next one that connects

    def __init__(self, path: str):
        self.path = path
        self.stats = PortStats()
        self._acceptor = Acceptor("unix", path)

    @property
    def connected(self) -> bool:
        return self._acceptor.conn is not None

    def fileno(self) -> int:
        return self._acceptor.fileno()

    def arm(self) -> bool:
        return True

    def pending(self) -> bool:
        return False  # the socket's descriptor shows every frame

    def recv_batch(self) -> list[bytes]:
        self._acceptor.accept()
        conn = self._acceptor.conn
        out: list[bytes] = []
        if conn is not None and not _drain(conn, out, self.stats):
            self._acceptor.drop()
        self.stats.rx_frames += len(out)
        return out

    def send(self, frame: bytes) -> bool:
        return self.send_batch((frame,)) == 1

    def send_batch(self, frames: Sequence[bytes]) -> int:
        """Frames in order, in as few messages as the limits allow; n: frames[:n] were sent."""
        conn = self._acceptor.conn
        if conn is None:
            self._acceptor.accept()
            conn = self._acceptor.conn
        if conn is None:
            self.stats.tx_dropped += len(frames)
            return 0
        sent, error = _send_batch(conn, frames, self.stats)
        if error is not None:
            self._acceptor.drop()  # the core went away; a reconnecting one is accepted later
        return sent

    def close(self) -> None:
        self._acceptor.close()


class UnixHostPort:
    """A core's (or a second NIC's) end of a UNIX link: connects to the NIC listening at PATH,
    or wraps an already connected socket (`pipe_pair`)."""

    def __init__(self, path: str, connect_timeout: float = 0.0,
                 sock: socket.socket | None = None):
        self.path = path
        self.stats = PortStats()
        self._sock = sock if sock is not None else connect("unix-host", path, connect_timeout)
        self._sock.setblocking(False)
        self.closed_by_peer = False

    def fileno(self) -> int:
        return self._sock.fileno()

    def arm(self) -> bool:
        return True

    def pending(self) -> bool:
        return False  # the socket's descriptor shows every frame

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
            if error.errno not in _GONE:
                raise error
            self.closed_by_peer = True
        return sent

    def close(self) -> None:
        self._sock.close()


def pipe_pair() -> tuple[UnixHostPort, UnixHostPort]:
    """Two ports joined back to back in this process (tests wire two contexts with it)."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for s in (a, b):
        big_buffers(s)
    return UnixHostPort("", sock=a), UnixHostPort("", sock=b)

"""Shared-memory links: `shm:PATH` (the NIC's side) and `shm-host:PATH` (a core's side).

Frames travel in two rings (link/shmring.py), one per direction; PATH is a UNIX SOCK_SEQPACKET
control connection (link/unix.py) that carries only the set-up, the doorbells and, by its end of
file, the news that the other side died. Set-up: a core connects; the NIC creates a fresh pair
of ring files in /dev/shm and sends their names; the core opens them, removes the names and
answers READY, so nothing is left behind whichever side dies later (and a NIC port sweeps the
files of NIC processes killed before their core attached).

Control messages: RINGS up\\0down (NIC -> core), READY (core -> NIC), DOORBELL (either way: "your
ring has frames", sent only when the reader said it was going to sleep). A reader drains up to
BATCH frames per wake-up; either side reads its control socket only after it armed to sleep (or
every CONTROL_EVERY reads), so a busy loop makes no system call to receive. A full ring drops
the frames that do not fit, counted on both sides: `tx_dropped` at the writer, `rx_dropped` at
the reader (the ring's refused count).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import socket
from collections.abc import Sequence

from .port import BATCH, PortStats
from .shmring import Ring, RingError, Role
from .unix import Acceptor, connect, received

log = logging.getLogger("p4mtcp.link")

RING_BYTES = 1 << 22
"""Data bytes per ring (per direction per core): ~58,000 64-byte frames, 63 of 64 KiB."""
SHM_DIR = "/dev/shm"
HANDSHAKE_TIMEOUT = 5.0
RINGS, READY, DOORBELL = b"RINGS ", b"READY", b"D"
GONE = "the other side closed the link or died"
CONTROL_EVERY = 64
"""A reader that never sleeps still looks at its control socket every this many reads, so that
it notices a dead peer (or the NIC a new core) without a system call in every loop step."""
_CONTROL_MAX = 512
_SEND_FLAGS = socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL
_serial = itertools.count()


def _ring(sock: socket.socket) -> bool:
    """Ring the peer's doorbell; False when the peer is gone. A full control buffer means a
    doorbell is already waiting to be read, which is as good."""
    try:
        sock.send(DOORBELL, _SEND_FLAGS)
    except BlockingIOError:
        pass
    except OSError:
        return False
    return True


def _control(sock: socket.socket) -> list[bytes] | None:
    """The control messages waiting on sock; None when the peer has closed or failed."""
    try:
        return list(received(sock, _CONTROL_MAX))
    except ConnectionError:
        return None


def sweep_stale_rings() -> list[str]:
    """Remove the ring files of NIC processes that are gone (killed before a core attached);
    the names of the files removed."""
    removed = []
    for name in os.listdir(SHM_DIR):
        parts = name.split("-")
        if len(parts) != 4 or parts[0] != "p4mtcp" or not parts[1].isdigit():
            continue
        try:
            os.kill(int(parts[1]), 0)
        except ProcessLookupError:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(SHM_DIR, name))
                removed.append(name)
        except PermissionError:
            pass  # alive, someone else's
    return removed


class _Rings:
    """What both sides do with their pair of rings: `rx` is read here, `tx` written here."""

    rx: Ring | None
    tx: Ring | None
    stats: PortStats
    _woken = True  # the loop slept on fileno(): what woke it is on the control socket
    _reads = 0

    def _control_due(self) -> bool:
        """Look at the control socket now? After the loop armed (and maybe slept), or every
        CONTROL_EVERY reads: a busy reader's loop otherwise makes no system call to receive."""
        self._reads += 1
        due = self._woken or not self._reads % CONTROL_EVERY
        self._woken = False
        return due

    def _read(self) -> list[bytes]:
        out = self.rx.get(BATCH)  # type: ignore[union-attr]
        self.stats.rx_frames += len(out)
        self.stats.rx_dropped = self.rx.refused  # type: ignore[union-attr]
        return out

    def _write(self, sock: socket.socket, frames: Sequence[bytes]) -> tuple[int, str]:
        """(frames written, why the link is over: "" while it is not)."""
        try:
            n, doorbell = self.tx.put(frames)  # type: ignore[union-attr]
        except RingError as e:
            n, why = 0, str(e)
        else:
            why = "" if not doorbell or _ring(sock) else GONE
        self.stats.tx_frames += n
        self.stats.tx_dropped += len(frames) - n
        return n, why

    def _close_rings(self) -> None:
        for ring in (self.rx, self.tx):
            if ring is not None:
                ring.close()
        self.rx = self.tx = None


class ShmNicPort(_Rings):
    """The NIC's end of a shared-memory link: listens at PATH and serves the latest core."""

    closed_by_peer = False  # a departed core is replaced by the next one that connects

    def __init__(self, path: str, ring_bytes: int = RING_BYTES):
        self.path = path
        self.stats = PortStats()
        self.ring_bytes = ring_bytes
        self.rx = self.tx = None
        self._names: tuple[str, str] | None = None  # ring files not yet unlinked
        self._acceptor = Acceptor("shm", path)
        sweep_stale_rings()

    @property
    def connected(self) -> bool:
        return self.rx is not None

    def fileno(self) -> int:
        return self._acceptor.fileno()

    def arm(self) -> bool:
        self._woken = True
        return self.rx is None or self.rx.arm()

    def pending(self) -> bool:
        return self.rx is not None and self.rx.pending()

    def _accept(self) -> None:
        conn = self._acceptor.accept()
        if conn is None:
            return
        self._detach()
        base = os.path.join(SHM_DIR, f"p4mtcp-{os.getpid()}-{next(_serial)}")
        up, down = base + "-up", base + "-down"
        try:
            self.rx = Ring.create(up, self.ring_bytes, Role.CONSUMER)
            self.tx = Ring.create(down, self.ring_bytes, Role.PRODUCER)
            self._names = (up, down)
            conn.send(RINGS + os.fsencode(up) + b"\0" + os.fsencode(down), _SEND_FLAGS)
        except OSError as e:
            self._detach(f"cannot set up rings for a core: {e}")
            return
        log.info("shm:%s: core attached (rings %s, %s)", self.path, up, down)

    def _detach(self, why: str = "") -> None:
        if why:
            log.warning("shm:%s: %s; waiting for a core to connect", self.path, why)
        self._unlink()
        self._close_rings()
        if why:
            self._acceptor.drop()

    def _unlink(self) -> None:
        for name in self._names or ():
            try:
                os.unlink(name)
            except FileNotFoundError:
                pass
        self._names = None

    def recv_batch(self) -> list[bytes]:
        if self._control_due():
            self._accept()
            conn = self._acceptor.conn
            if conn is None or self.rx is None:
                return []
            msgs = _control(conn)
            if msgs is None:
                self._detach(GONE)
                return []
            if READY in msgs:
                self._names = None  # the core has opened both rings and removed their names
        if self.rx is None:
            return []
        try:
            return self._read()
        except RingError as e:
            self._detach(str(e))
            return []

    def send(self, frame: bytes) -> bool:
        return self.send_batch((frame,)) == 1

    def send_batch(self, frames: Sequence[bytes]) -> int:
        if self.tx is None:
            self._accept()
        conn = self._acceptor.conn
        if self.tx is None or conn is None:
            self.stats.tx_dropped += len(frames)
            return 0
        n, why = self._write(conn, frames)
        if why:
            self._detach(why)
        return n

    def close(self) -> None:
        self._detach()
        self._acceptor.close()


class ShmHostPort(_Rings):
    """A core's end of a shared-memory link: connects to the NIC at PATH and opens the rings
    it names (blocking for up to `connect_timeout` s, then HANDSHAKE_TIMEOUT for the answer)."""

    def __init__(self, path: str, connect_timeout: float = 0.0):
        self.path = path
        self.stats = PortStats()
        self.closed_by_peer = False
        self.rx = self.tx = None
        self._sock = connect("shm-host", path, connect_timeout)
        try:
            self._sock.settimeout(HANDSHAKE_TIMEOUT)
            msg = self._sock.recv(_CONTROL_MAX)
            if not msg.startswith(RINGS) or msg.count(b"\0") != 1:
                raise ConnectionError(errno.EPROTO, f"shm-host:{path}: the NIC answered "
                                      f"{msg[:40]!r}, not the names of its rings")
            up, down = map(os.fsdecode, msg[len(RINGS):].split(b"\0"))
            self.tx = Ring(up, Role.PRODUCER)
            self.rx = Ring(down, Role.CONSUMER)
            for name in (up, down):  # both sides hold them open now: leave no name behind
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name)
            self._sock.send(READY)
        except (OSError, RingError) as e:
            self._close_rings()
            self._sock.close()
            if isinstance(e, RingError):
                raise ConnectionError(errno.EPROTO, f"shm-host:{path}: {e}") from None
            if isinstance(e, TimeoutError):
                raise ConnectionError(errno.ETIMEDOUT, f"shm-host:{path}: the NIC did not "
                                      f"answer within {HANDSHAKE_TIMEOUT} s") from None
            raise
        self._sock.setblocking(False)

    def fileno(self) -> int:
        return self._sock.fileno()

    def arm(self) -> bool:
        self._woken = True
        return self.closed_by_peer or self.rx.arm()  # type: ignore[union-attr]

    def pending(self) -> bool:
        return not self.closed_by_peer and self.rx.pending()  # type: ignore[union-attr]

    def _hang_up(self, why: str) -> None:
        if not self.closed_by_peer:
            log.warning("shm-host:%s: %s", self.path, why)
            self.closed_by_peer = True

    def recv_batch(self) -> list[bytes]:
        if self.closed_by_peer:
            return []
        if self._control_due() and _control(self._sock) is None:
            self._hang_up(GONE)
        try:
            return self._read()  # frames the NIC wrote before it went are still good
        except RingError as e:
            self._hang_up(str(e))
            return []

    def send(self, frame: bytes) -> bool:
        return self.send_batch((frame,)) == 1

    def send_batch(self, frames: Sequence[bytes]) -> int:
        if self.closed_by_peer:
            self.stats.tx_dropped += len(frames)
            return 0
        n, why = self._write(self._sock, frames)
        if why:
            self._hang_up(why)
        return n

    def close(self) -> None:
        self._close_rings()
        self._sock.close()

"""A single-producer/single-consumer frame ring in a shared-memory file (/dev/shm).

Layout (native byte order: both ends run on this host), 64-bit words:

    word 0   magic "P4MTRNG1"      word 1  data capacity in bytes (a power of two)
    word 8   head   (producer)     word 9  producer pid     word 10  frames refused (ring full)
    word 16  tail   (consumer)     word 17 consumer pid     word 18  consumer is asleep
    byte 256 data: records of  u32 length | u32 0 | frame | pad to 8 bytes

head and tail count bytes since the start and only grow; a record sits at `head % capacity`
and never wraps: when it would not fit before the end, the producer writes a WRAP length there
and starts again at offset 0.

Ordering. The producer writes a batch of records, then publishes the new head with one store;
the consumer reads head, copies out the records below it, then publishes the new tail with one
store. Index words are read and written through a memoryview cast to 64-bit items, which CPython
copies with one aligned 8-byte move: a reader sees the old or the new value, never a mix. x86-64
is TSO: stores become visible in program order and loads are not reordered with older loads, so
a consumer that sees the new head sees every byte of the records before it, and a producer that
sees the new tail knows the consumer has finished reading the space it reuses. (A weaker memory
model would need release/acquire fences here; this module is for x86-64 Linux.)

Sleeping. A consumer that is about to block sets "asleep" and then re-reads head; a producer
publishes head and then reads "asleep", and rings the doorbell (clearing the flag) only when it
is set: one doorbell per sleep, none while the consumer is busy (interrupt moderation). TSO
lets a load pass an older store, which could let both sides miss each other, so each side puts
a full fence between its store and its load: a lock acquire/release, which on x86-64 is a
locked instruction. Even a missed doorbell costs only latency: every sleeper's wait is bounded.

Roles are exclusive: the producer and the consumer each hold an OFD lock on their own byte of
the file (byte 0, byte 1), which the kernel drops when the holder's file is closed or its
process dies; a second producer (or consumer) is refused with RingError.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import threading
from collections.abc import Sequence
from enum import Enum

from .port import MAX_FRAME

MAGIC = int.from_bytes(b"P4MTRNG1", "little")
HEADER = 256
RECORD_HEAD = 8
WRAP = 0xFFFFFFFF
MIN_CAPACITY = 1 << 19  # room for several of the largest records
COPY = 1 << 18  # bytes a reader copies out at once: more than the largest record (MAX_FRAME)
_MAGIC_W, _CAP_W = 0, 1
_HEAD_W, _PRODUCER_W, _REFUSED_W = 8, 9, 10
_TAIL_W, _CONSUMER_W, _ASLEEP_W = 16, 17, 18
_LEN = struct.Struct("=I")
_FLOCK = struct.Struct("hhqqi4x")  # struct flock on x86-64 Linux
_fence_lock = threading.Lock()


class RingError(Exception):
    """A ring that cannot be used: bad header, role already taken, indices out of range."""


class Role(Enum):
    PRODUCER = 0
    CONSUMER = 1


def _fence() -> None:
    """A full memory fence (see the module docstring: a locked instruction on x86-64)."""
    _fence_lock.acquire()
    _fence_lock.release()


class Ring:
    """One end of a ring file: `create` makes a new one, `Ring(path, role)` opens one."""

    def __init__(self, path: str, role: Role, _fd: int | None = None):
        self.path = path
        self.role = role
        fd = os.open(path, os.O_RDWR) if _fd is None else _fd
        try:
            size = os.fstat(fd).st_size
            if size < HEADER + 8:
                raise RingError(f"ring {path}: file of {size} bytes is too small for a ring")
            self._map = mmap.mmap(fd, size)
            self._idx = memoryview(self._map)[:HEADER].cast("Q")
            self._check_header(size)
            self._lock_role(fd)
        except BaseException:
            if hasattr(self, "_map"):
                self._idx.release()
                self._map.close()
            os.close(fd)
            raise
        self._fd = fd
        self._data = memoryview(self._map)[HEADER:]
        self.capacity = self._idx[_CAP_W]
        self._mask = self.capacity - 1
        if role is Role.PRODUCER:
            self._pos = self._idx[_HEAD_W]
            self._idx[_PRODUCER_W] = os.getpid()
        else:
            self._pos = self._idx[_TAIL_W]
            self._idx[_CONSUMER_W] = os.getpid()

    @classmethod
    def create(cls, path: str, capacity: int, role: Role) -> "Ring":
        """A new, empty ring file at path (which must not exist), opened in `role`."""
        if capacity < MIN_CAPACITY or capacity & (capacity - 1):
            raise ValueError(f"ring {path}: capacity {capacity} must be a power of two "
                             f">= {MIN_CAPACITY}")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, HEADER + capacity)
            with mmap.mmap(fd, HEADER) as m:
                idx = memoryview(m).cast("Q")
                idx[_CAP_W] = capacity
                idx[_MAGIC_W] = MAGIC  # last: a ring is valid only once its header is whole
                idx.release()
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        return cls(path, role, fd)

    def _check_header(self, size: int) -> None:
        idx = self._idx
        if idx[_MAGIC_W] != MAGIC:
            raise RingError(f"ring {self.path}: bad magic {idx[_MAGIC_W]:#018x}: not a p4mtcp "
                            "ring, or its header was overwritten")
        cap = idx[_CAP_W]
        if cap < MIN_CAPACITY or cap & (cap - 1) or HEADER + cap != size:
            raise RingError(f"ring {self.path}: header says capacity {cap}, which does not fit "
                            f"a {size}-byte file")
        self._check_indices(idx[_HEAD_W], idx[_TAIL_W], cap)

    def _check_indices(self, head: int, tail: int, cap: int) -> None:
        if not 0 <= head - tail <= cap or head & 7 or tail & 7:
            raise RingError(f"ring {self.path}: corrupt indices head={head} tail={tail} "
                            f"(capacity {cap})")

    def _lock_role(self, fd: int) -> None:
        byte = self.role.value
        try:
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, byte, 1, 0))
        except OSError:
            pid = self._idx[_PRODUCER_W if self.role is Role.PRODUCER else _CONSUMER_W]
            raise RingError(f"ring {self.path}: already has a {self.role.name.lower()} "
                            f"(pid {pid}); a ring has exactly one of each") from None

    # -- producer ---------------------------------------------------------------------------

    def put(self, frames: Sequence[bytes]) -> tuple[int, bool]:
        """Write frames in order as far as they fit: (n, doorbell). frames[:n] were written,
        the rest refused (counted in `refused`); doorbell: the consumer is asleep, wake it."""
        idx, data, cap, mask = self._idx, self._data, self.capacity, self._mask
        head = self._pos
        tail = idx[_TAIL_W]
        if not 0 <= head - tail <= cap:
            self._check_indices(head, tail, cap)  # a consumer that scribbled on its index
        free = cap - (head - tail)
        pack_into = _LEN.pack_into
        n = 0
        for frame in frames:
            size = len(frame)
            if size > MAX_FRAME:
                break
            rec = (size + RECORD_HEAD + 7) & ~7
            off = head & mask
            skip = cap - off if rec > cap - off else 0
            if rec + skip > free:
                free = cap - (head - idx[_TAIL_W])  # the consumer may have moved on since
                if rec + skip > free:
                    break
            if skip:
                pack_into(data, off, WRAP)
                head += skip
                free -= skip
                off = 0
            pack_into(data, off, size)
            data[off + RECORD_HEAD:off + RECORD_HEAD + size] = frame
            head += rec
            free -= rec
            n += 1
        if n < len(frames):
            idx[_REFUSED_W] += len(frames) - n
        if not n:
            return 0, False
        idx[_HEAD_W] = head  # publish: every record below head is whole
        self._pos = head
        _fence()
        if idx[_ASLEEP_W]:
            idx[_ASLEEP_W] = 0
            return n, True
        return n, False

    # -- consumer ---------------------------------------------------------------------------

    def get(self, limit: int) -> list[bytes]:
        """Up to `limit` frames, oldest first; their space is released to the producer.
        The ready records are copied out of shared memory in one piece per stretch (up to the
        end of the area, at most COPY bytes) and split there: one copy, not one per frame."""
        idx, data, cap, mask = self._idx, self._data, self.capacity, self._mask
        tail = self._pos
        head = idx[_HEAD_W]
        if head == tail:
            return []
        self._check_indices(head, tail, cap)
        unpack_from = _LEN.unpack_from
        out: list[bytes] = []
        append = out.append
        left = limit
        while tail != head and left:
            off = tail & mask
            ready = min(head - tail, cap - off)
            n = min(ready, COPY)
            blob = data[off:off + n].tobytes()
            at = 0
            while at < n and left:
                size = unpack_from(blob, at)[0]
                end = at + RECORD_HEAD + size
                if end > n or size > MAX_FRAME:
                    break
                append(blob[at + RECORD_HEAD:end])
                at = (end + 7) & ~7
                left -= 1
            if at < n and left:  # stopped at a record it could not take whole
                if size == WRAP and head - tail >= cap - off:
                    tail += cap - off  # the producer went on at offset 0
                    continue
                if not (n < ready and at and size <= MAX_FRAME):  # else: the copy cut it
                    raise RingError(f"ring {self.path}: corrupt record of length {size} at "
                                    f"offset {off + at} (head={head} tail={tail})")
            tail += at
        idx[_TAIL_W] = tail  # publish: the producer may reuse everything below tail
        self._pos = tail
        return out

    def pending(self) -> bool:
        return self._idx[_HEAD_W] != self._pos

    def arm(self) -> bool:
        """About to sleep: ask for the doorbell. False when frames are already waiting (the
        flag is withdrawn; do not sleep)."""
        self._idx[_ASLEEP_W] = 1
        _fence()
        if self._idx[_HEAD_W] != self._pos:
            self._idx[_ASLEEP_W] = 0
            return False
        return True

    @property
    def refused(self) -> int:
        """Frames the producer could not write because the ring was full."""
        return self._idx[_REFUSED_W]

    def close(self) -> None:
        """Unmap and close; the role's lock goes with the file."""
        if self._fd < 0:
            return
        self._data.release()
        self._idx.release()
        self._map.close()
        os.close(self._fd)
        self._fd = -1

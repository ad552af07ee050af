"""Send buffer and receive reassembly buffer, both indexed by unbounded stream offsets."""

from __future__ import annotations

import bisect

_EMPTY = b""     # an idle buffer holds this shared constant, not an empty bytearray of its own


class SendBuffer:
    """Bytes the application wrote that are not yet acknowledged.

    ``base`` is the stream offset of the first byte held. The bytearray is compacted lazily so
    that releasing acknowledged bytes is amortised O(1) and sending only slices memoryviews; it
    exists only while bytes are held (idle connections are the common case at scale).
    """

    __slots__ = ("capacity", "base", "_buf", "_head")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.base = 0
        self._buf: bytes | bytearray = _EMPTY
        self._head = 0

    def __len__(self) -> int:
        return len(self._buf) - self._head

    @property
    def end(self) -> int:
        """Stream offset one past the last byte written."""
        return self.base + len(self._buf) - self._head

    @property
    def space(self) -> int:
        return max(0, self.capacity - (len(self._buf) - self._head))

    def write(self, data: bytes | bytearray | memoryview) -> int:
        n = min(len(data), self.space)
        if n:
            part = memoryview(data)[:n] if n < len(data) else data
            buf = self._buf
            if isinstance(buf, bytearray):
                buf += part
            else:
                self._buf = bytearray(part)
        return n

    def view(self, offset: int, n: int) -> memoryview:
        """``n`` bytes starting at stream ``offset`` (must be held); no copy."""
        start = self._head + offset - self.base
        return memoryview(self._buf)[start:start + n]

    def release(self, upto: int) -> None:
        """Forget bytes before stream offset ``upto`` (they were acknowledged)."""
        n = min(upto - self.base, len(self._buf) - self._head)
        if n <= 0:
            return
        self.base += n
        self._head += n
        buf = self._buf
        if self._head == len(buf):
            self._buf = _EMPTY
            self._head = 0
        elif self._head > 65536 and self._head * 2 > len(buf) and isinstance(buf, bytearray):
            del buf[:self._head]
            self._head = 0


class RecvBuffer:
    """In-order readable bytes plus out-of-order blocks awaiting the gap before them.

    Offsets are stream offsets; ``nxt`` is the next in-order offset expected (RCV.NXT). In-order
    payload is copied once, into the readable bytearray. Out-of-order payload is copied once on
    arrival and once more when its gap fills. Neither the bytearray nor the out-of-order lists
    exist while empty.
    """

    __slots__ = ("capacity", "nxt", "_buf", "_head", "_ooo_starts", "_ooo", "last_block")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.nxt = 0
        self._buf: bytes | bytearray = _EMPTY
        self._head = 0
        self._ooo_starts: list[int] | None = None   # sorted, disjoint, non-adjacent blocks
        self._ooo: list[bytearray] | None = None
        self.last_block: tuple[int, int] | None = None   # most recent OOO block (RFC 2018 4)

    @property
    def readable(self) -> int:
        return len(self._buf) - self._head

    @property
    def window(self) -> int:
        """Free space to advertise (RCV.WND)."""
        return max(0, self.capacity - (len(self._buf) - self._head))

    @property
    def has_ooo(self) -> bool:
        return bool(self._ooo)

    def ooo_blocks(self) -> list[tuple[int, int]]:
        """Out-of-order blocks as (start, end) offsets, the most recently changed first."""
        if self._ooo_starts is None or self._ooo is None:
            return []
        blocks = [(s, s + len(b)) for s, b in zip(self._ooo_starts, self._ooo)]
        last = self.last_block
        if last is not None:
            for i, (s, e) in enumerate(blocks):
                if s <= last[0] and last[1] <= e:
                    blocks.insert(0, blocks.pop(i))
                    break
        return blocks

    def covered(self, start: int, end: int) -> bool:
        """Whether [start, end) is held already (in order or out of order): a duplicate."""
        if end <= self.nxt:
            return True
        starts, blocks = self._ooo_starts, self._ooo
        if starts is None or blocks is None:
            return False
        i = bisect.bisect_right(starts, start) - 1
        return i >= 0 and starts[i] + len(blocks[i]) >= end

    def _append(self, data: bytes | bytearray | memoryview) -> None:
        buf = self._buf
        if isinstance(buf, bytearray):
            buf += data
        else:
            self._buf = bytearray(data)

    def add(self, offset: int, data: memoryview) -> int:
        """Store ``data`` at stream ``offset`` (already trimmed to the window); return in-order
        bytes newly readable."""
        n = len(data)
        if offset <= self.nxt:
            skip = self.nxt - offset
            if skip >= n:
                return 0
            self._append(data[skip:] if skip else data)
            before = self.nxt
            self.nxt = offset + n
            if self._ooo:
                self._merge_ready()
            return self.nxt - before
        self._insert_ooo(offset, data)
        return 0

    def _merge_ready(self) -> None:
        starts, blocks = self._ooo_starts, self._ooo
        assert starts is not None and blocks is not None
        while starts and starts[0] <= self.nxt:
            s = starts.pop(0)
            b = blocks.pop(0)
            end = s + len(b)
            if end > self.nxt:
                self._append(memoryview(b)[self.nxt - s:])
                self.nxt = end
        if not starts:
            self._ooo_starts = self._ooo = None
        if self.last_block is not None and self.last_block[1] <= self.nxt:
            self.last_block = None

    def _insert_ooo(self, offset: int, data: memoryview) -> None:
        end = offset + len(data)
        starts, blocks = self._ooo_starts, self._ooo
        if starts is None or blocks is None:
            self._ooo_starts, self._ooo = [offset], [bytearray(data)]
            self.last_block = (offset, end)
            return
        i = bisect.bisect_left(starts, offset)
        if i and starts[i - 1] + len(blocks[i - 1]) >= offset:
            i -= 1                                 # overlaps or touches the block before
        j = i
        new_start, new_end = offset, end
        while j < len(starts) and starts[j] <= new_end:
            new_start = min(new_start, starts[j])
            new_end = max(new_end, starts[j] + len(blocks[j]))
            j += 1
        if j == i:
            starts.insert(i, offset)
            blocks.insert(i, bytearray(data))
        else:
            merged = bytearray(new_end - new_start)
            mv = memoryview(merged)
            mv[offset - new_start:end - new_start] = data
            for k in range(i, j):              # existing bytes win (RFC 9293 3.10.7.4 note)
                s = starts[k]
                mv[s - new_start:s - new_start + len(blocks[k])] = blocks[k]
            del starts[i:j], blocks[i:j]
            starts.insert(i, new_start)
            blocks.insert(i, merged)
        self.last_block = (offset, end)

    def read(self, n: int, peek: bool = False) -> bytes:
        buf = self._buf
        avail = len(buf) - self._head
        if n > avail:
            n = avail
        if n <= 0:
            return b""
        head = self._head
        with memoryview(buf) as mv:
            out = bytes(mv[head:head + n])         # one copy; the view is released at once
        if not peek:
            head += n
            if head == len(buf):
                self._buf = _EMPTY
                head = 0
            elif head > 65536 and head * 2 > len(buf) and isinstance(buf, bytearray):
                del buf[:head]
                head = 0
            self._head = head
        return out

"""The NIC's flow cache: the compiled build's C fast path (p4mtcp/flowcache.c) in front of the
P4 program's mirror, as Open vSwitch's datapath flow cache sits in front of its slow path.

Every frame the cache cannot vouch for runs through the mirror (`NicPipeline.process_one`).
For a TCP flow the cache admits (`FlowCache.admit`: a batch's first 8 new flows, any other on
its second miss, so that a flood of one-frame flows costs few inserts), the mirror also returns
what its lookups decided; the cache keeps that per (ingress port, addresses, ports) and forwards
the flow's later segments in C, checksums verified or filled, MACs written. Frames keep their
order: the cache stops at the first frame it does not forward, the mirror takes that one, and
the cache goes on after it.

The mirror stays the definition. Any table write clears the cache before the next batch
(`TableState.on_write`), and the counts the cache took are added to the program's counters at
the end of every batch, so a P4Runtime read between batches sees every frame. Without the
compiled build (no C module), `wrap` returns the mirror itself.
"""

from __future__ import annotations

from typing import Any, Mapping

from .tables import TableState

try:  # built by `p4mtcp accel build` (p4mtcp.accel.NATIVE); found only while current
    from p4mtcp._flowcache import FlowCache
except ImportError:
    FlowCache = None

CAPACITY = 4096
"""Flows the cache holds (a power of two). A full probe window evicts its least recently used
entry."""


class CachedPipeline:
    """A NicPipeline behind a flow cache: the same process / process_batch contract."""

    def __init__(self, program: Any, tables: Mapping[str, TableState], capacity: int = CAPACITY):
        self.program = program
        self._cache = FlowCache(capacity, program.cpu_port)
        self._stale = False
        # One record per distinct set of cells: the cache sums its counts per record, so the
        # flows of one port pair (every RSS-steered flow) cost one addition per batch.
        self._records: dict[tuple[int, int, int], tuple] = {}
        for table in tables.values():
            table.on_write = self._table_written

    def _table_written(self) -> None:
        """A gRPC thread changed a table: the data-plane thread clears the cache before its
        next batch (an insert made meanwhile from the old state is cleared with it)."""
        self._stale = True

    def stats(self) -> dict[str, int]:
        """hits, inserts, evictions, clears and the entries held now."""
        return self._cache.stats()

    def process(self, in_port: int, frame: bytes) -> list[tuple[int, bytes]]:
        return self.program.process(in_port, frame)

    def process_batch(self, in_port: int, frames: list[bytes], out: dict[int, list[bytes]],
                      errors: list[tuple[int, Exception]]) -> None:
        """NicPipeline.process_batch, the flows the cache holds forwarded in C."""
        cache = self._cache
        if self._stale:
            self._stale = False
            _add_counts(cache.clear())
            self._records.clear()
        program = self.program
        n = len(frames)
        i = cache.run(in_port, frames, 0, out)
        while i < n:
            frame = frames[i]
            try:
                decision = program.process_one(in_port, frame, out, cache.admit(in_port, frame))
            except Exception as e:  # noqa: BLE001  (reported to the caller, which logs it)
                errors.append((i, e))
                decision = None
            if decision is not None:
                egress, fill, dst_mac, src_mac, cells = decision
                rx, tx, steer = cells
                cells = self._records.setdefault((id(rx), id(tx), id(steer)), cells)
                evicted = cache.insert(in_port, frame, egress, fill, dst_mac, src_mac, cells)
                if evicted:
                    _add_counts([evicted])
            i = cache.run(in_port, frames, i + 1, out)
        _add_counts(cache.drain())


def _add_counts(counted: list[tuple[tuple, int, int]]) -> None:
    """Add what the cache forwarded to the cells each decision named: the rx_port and tx_port
    cells, and the flow_steer entry's direct counts when the flow hit one."""
    for (rx, tx, steer), packets, nbytes in counted:
        if rx is not None:
            rx.packets += packets
            rx.bytes += nbytes
        if tx is not None:
            tx.packets += packets
            tx.bytes += nbytes
        if steer is not None:
            steer[0] += packets
            steer[1] += nbytes


def wrap(program: Any, tables: Mapping[str, TableState]) -> Any:
    """`program` behind a flow cache when the C module is loaded and the program can say what
    it decided (NicPipeline.process_one); else `program` itself."""
    if FlowCache is None or getattr(program, "process_one", None) is None:
        return program
    return CachedPipeline(program, tables)

"""A small P4Runtime controller for the testbed: push the pipeline, write entries, read counters.

The P4Runtime work is the agent's own client (`control.p4rt`); this wraps it with the calls the
testbed needs: match values and params in P4Info order, one counter cell at a time, PacketIns
queued for the tests that expect them. The same calls program BMv2 and the embedded target.
Refused calls raise `control.p4rt.P4RuntimeError`, which names each failed update.
"""

from __future__ import annotations

import queue
from collections.abc import Sequence
from pathlib import Path

from p4.v1 import p4runtime_pb2 as p4r

from p4mtcp.control.p4rt import Client, Entry, packet_in_metadata, positional_entry
from p4mtcp.p4info import P4Schema

Match = int | tuple[int, int]
"""An exact value, or (value, prefix length) for an LPM field."""


class Controller:
    """P4Runtime client of one device: the primary (election id `election_low`) when
    `arbitrate`, else a read-only observer that leaves the primary (say the agent) alone."""

    def __init__(self, address: str, p4info_path: str | Path, device_id: int = 1,
                 election_low: int = 1, timeout: float = 10.0, arbitrate: bool = True):
        self.schema = P4Schema.from_file(p4info_path)
        self.packet_ins: queue.Queue[p4r.PacketIn] = queue.Queue()
        self.client = Client(address, self.schema, device_id, election_low, timeout)
        if arbitrate:
            try:
                self.client.open(timeout, self.packet_ins.put)
            except BaseException:
                self.client.close()
                raise

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "Controller":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_pipeline(self, device_config: bytes) -> None:
        """SetForwardingPipelineConfig(VERIFY_AND_COMMIT) with the schema's P4Info."""
        self.client.set_pipeline(device_config)

    # --- tables ----------------------------------------------------------------------------

    def table_entry(self, table: str, match: Sequence[Match], action: str,
                    params: Sequence[int] = ()) -> Entry:
        """An entry from match values and params in P4Info order (a bare LPM value is /32)."""
        return positional_entry(self.schema, table, match, action, params)

    def write(self, entries: Sequence[Entry], kind: int = p4r.Update.INSERT) -> None:
        self.client.write([(kind, e) for e in entries])

    def insert(self, table: str, match: Sequence[Match], action: str,
               params: Sequence[int] = ()) -> None:
        self.write([self.table_entry(table, match, action, params)])

    def delete(self, table: str, match: Sequence[Match], action: str,
               params: Sequence[int] = ()) -> None:
        self.write([self.table_entry(table, match, action, params)], p4r.Update.DELETE)

    def read_table(self, table: str) -> list[Entry]:
        """Every non-default entry of `table` (wildcard read)."""
        return self.client.read_table(table)

    # --- counters and packets --------------------------------------------------------------

    def read_counter(self, name: str, index: int) -> tuple[int, int]:
        """(packets, bytes) of one cell of an indirect counter array."""
        cells = self.client.read_counter(name, index)
        if index not in cells:
            raise LookupError(f"{name}[{index}]: not in the Read reply")
        return cells[index]

    def packet_out(self, payload: bytes, **metadata: int) -> None:
        """Send a PacketOut; metadata fields of the packet_out header by name."""
        self.client.send_packet(payload, **metadata)

    def packet_in_metadata(self, pkt: p4r.PacketIn) -> dict[str, int]:
        """A PacketIn's metadata by field name (packet_in header of the P4Info)."""
        return packet_in_metadata(self.schema, pkt)

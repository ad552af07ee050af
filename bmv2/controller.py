"""A small P4Runtime controller for the testbed: push the pipeline, write entries, read counters.

It addresses everything by name through `P4Schema` and writes match values in P4Info order, so
the same calls program BMv2 and the embedded target. It keeps the stream channel open (it is the
primary controller while it lives) and queues PacketIn messages for the tests that expect them.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
from google.rpc import code_pb2, status_pb2
from p4.v1 import p4runtime_pb2 as p4r
from p4.v1 import p4runtime_pb2_grpc

from p4mtcp.p4info import P4Schema, encode_int

Match = int | tuple[int, int]
"""An exact value, or (value, prefix length) for an LPM field."""

MAX_MESSAGE = 64 * 1024 * 1024


class WriteFailed(RuntimeError):
    """A Write the switch refused; the message lists each failed update's code and reason."""


def _update_errors(err: grpc.RpcError) -> str:
    """The per-update `p4.v1.Error`s of a failed Write (the P4Runtime spec's batch error
    reporting: one Error per update in the status details), as text."""
    for key, value in err.trailing_metadata() or ():
        if key != "grpc-status-details-bin":
            continue
        status = status_pb2.Status.FromString(value)
        lines = []
        for i, detail in enumerate(status.details):
            e = p4r.Error()
            if detail.Unpack(e) and e.canonical_code != code_pb2.OK:
                lines.append(f"update {i}: {code_pb2.Code.Name(e.canonical_code)} {e.message}")
        return "; ".join(lines)
    return ""


class Controller:
    """P4Runtime client of one device: the primary (election id `election_low`) when
    `arbitrate`, else a read-only observer that leaves the primary (say the agent) alone."""

    def __init__(self, address: str, p4info_path: str | Path, device_id: int = 1,
                 election_low: int = 1, timeout: float = 10.0, arbitrate: bool = True):
        self.schema = P4Schema.from_file(p4info_path)
        self.device_id = device_id
        self.election = p4r.Uint128(high=0, low=election_low)
        self.timeout = timeout
        self.packet_ins: queue.Queue[p4r.PacketIn] = queue.Queue()
        self._channel = grpc.insecure_channel(address, options=[
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.max_receive_message_length", MAX_MESSAGE)])
        self._stub = p4runtime_pb2_grpc.P4RuntimeStub(self._channel)
        self._requests: queue.Queue[p4r.StreamMessageRequest | None] = queue.Queue()
        self._arbitrated = threading.Event()
        self._arbitration_status: str = ""
        if not arbitrate:
            return
        self._stream = self._stub.StreamChannel(self._request_iter())
        self._reader = threading.Thread(target=self._read_stream, daemon=True,
                                        name=f"p4rt-stream-{address}")
        self._reader.start()
        self._requests.put(p4r.StreamMessageRequest(arbitration=p4r.MasterArbitrationUpdate(
            device_id=device_id, election_id=self.election)))
        if not self._arbitrated.wait(timeout):
            self.close()
            raise TimeoutError(f"P4Runtime {address}: no arbitration reply in {timeout:.0f} s"
                               f"{self._arbitration_status}")

    def _request_iter(self) -> Iterator[p4r.StreamMessageRequest]:
        while (msg := self._requests.get()) is not None:
            yield msg

    def _read_stream(self) -> None:
        try:
            for msg in self._stream:
                kind = msg.WhichOneof("update")
                if kind == "arbitration":
                    self._arbitrated.set()
                elif kind == "packet":
                    self.packet_ins.put(msg.packet)
        except grpc.RpcError as e:  # closed by us, or the switch went away
            self._arbitration_status = f": {e.code().name} {e.details()}"
            self._arbitrated.set()

    def close(self) -> None:
        self._requests.put(None)
        self._channel.close()

    def __enter__(self) -> "Controller":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- pipeline --------------------------------------------------------------------------

    def set_pipeline(self, device_config: bytes) -> None:
        """SetForwardingPipelineConfig(VERIFY_AND_COMMIT) with the schema's P4Info."""
        self._stub.SetForwardingPipelineConfig(p4r.SetForwardingPipelineConfigRequest(
            device_id=self.device_id, election_id=self.election,
            action=p4r.SetForwardingPipelineConfigRequest.VERIFY_AND_COMMIT,
            config=p4r.ForwardingPipelineConfig(p4info=self.schema.p4info,
                                                p4_device_config=device_config)),
            timeout=self.timeout)

    # --- tables ----------------------------------------------------------------------------

    def table_entry(self, table: str, match: Sequence[Match], action: str,
                    params: Sequence[int] = (), priority: int = 0) -> p4r.TableEntry:
        """Build a TableEntry; match values and params are given in P4Info order."""
        t = self.schema.table(table)
        a = self.schema.action(action)
        if len(match) != len(t.match_fields):
            raise ValueError(f"{table}: {len(t.match_fields)} match fields, got {len(match)}")
        if len(params) != len(a.params):
            raise ValueError(f"{action}: {len(a.params)} parameters, got {len(params)}")
        entry = p4r.TableEntry(table_id=t.id, priority=priority)
        for f, value in zip(t.match_fields, match):
            fm = entry.match.add(field_id=f.id)
            if f.match_type == "lpm":
                addr, plen = value if isinstance(value, tuple) else (value, f.bitwidth)
                fm.lpm.value = encode_int(addr, f.bitwidth)
                fm.lpm.prefix_len = plen
            elif f.match_type == "exact":
                fm.exact.value = encode_int(int(value), f.bitwidth)  # type: ignore[arg-type]
            else:
                raise ValueError(f"{table}.{f.name}: {f.match_type} match not used by the testbed")
        entry.action.action.action_id = a.id
        for p, value in zip(a.params, params):
            entry.action.action.params.add(param_id=p.id, value=encode_int(value, p.bitwidth))
        return entry

    def write(self, entries: Sequence[p4r.TableEntry],
              kind: int = p4r.Update.INSERT) -> None:
        if not entries:
            return
        req = p4r.WriteRequest(device_id=self.device_id, election_id=self.election)
        for e in entries:
            req.updates.add(type=kind, entity=p4r.Entity(table_entry=e))
        try:
            self._stub.Write(req, timeout=self.timeout)
        except grpc.RpcError as e:
            raise WriteFailed(f"Write of {len(entries)} update(s) failed: {e.code().name} "
                              f"{e.details()} {_update_errors(e)}".rstrip()) from None

    def insert(self, table: str, match: Sequence[Match], action: str,
               params: Sequence[int] = ()) -> None:
        self.write([self.table_entry(table, match, action, params)])

    def delete(self, table: str, match: Sequence[Match], action: str,
               params: Sequence[int] = ()) -> None:
        self.write([self.table_entry(table, match, action, params)], p4r.Update.DELETE)

    def read_table(self, table: str) -> list[p4r.TableEntry]:
        """Every entry of `table` (wildcard read)."""
        req = p4r.ReadRequest(device_id=self.device_id, entities=[p4r.Entity(
            table_entry=p4r.TableEntry(table_id=self.schema.table(table).id))])
        return [ent.table_entry for resp in self._stub.Read(req, timeout=self.timeout)
                for ent in resp.entities if ent.HasField("table_entry")]

    # --- counters and packets --------------------------------------------------------------

    def read_counter(self, name: str, index: int) -> tuple[int, int]:
        """(packets, bytes) of one cell of an indirect counter array."""
        c = self.schema.counter(name)
        req = p4r.ReadRequest(device_id=self.device_id, entities=[p4r.Entity(
            counter_entry=p4r.CounterEntry(counter_id=c.id, index=p4r.Index(index=index)))])
        for resp in self._stub.Read(req, timeout=self.timeout):
            for ent in resp.entities:
                got = ent.counter_entry
                if got.counter_id == c.id and got.index.index == index:
                    return got.data.packet_count, got.data.byte_count
        raise LookupError(f"{name}[{index}]: not in the Read reply")

    def packet_out(self, payload: bytes, **metadata: int) -> None:
        """Send a PacketOut; metadata fields of the packet_out header by name."""
        hdr = self.schema.controller_header("packet_out")
        msg = p4r.PacketOut(payload=payload)
        for f in hdr.fields:
            msg.metadata.add(metadata_id=f.id,
                             value=encode_int(metadata.get(f.name, 0), f.bitwidth))
        self._requests.put(p4r.StreamMessageRequest(packet=msg))

    def packet_in_metadata(self, pkt: p4r.PacketIn) -> dict[str, int]:
        """A PacketIn's metadata by field name (packet_in header of the P4Info)."""
        hdr = self.schema.controller_header("packet_in")
        names = {f.id: f.name for f in hdr.fields}
        return {names.get(m.metadata_id, str(m.metadata_id)): int.from_bytes(m.value, "big")
                for m in pkt.metadata}

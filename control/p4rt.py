"""Typed P4Runtime client pieces: entries by name <-> p4.v1 messages, and one device connection.

The NIC agent and the testbed controller both program a P4Runtime device; this module is the
one place that turns named values into protobuf (through `P4Schema`, so ids appear nowhere
else), reads counters, builds packet-outs, decodes packet-ins and turns a refused call into a
`P4RuntimeError` carrying the per-update errors.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import grpc
from google.rpc import status_pb2
from p4.v1 import p4runtime_pb2 as p4r
from p4.v1 import p4runtime_pb2_grpc

from p4mtcp.p4info import P4Schema, decode_int, encode_int
from p4mtcp.write_errors import update_errors

log = logging.getLogger(__name__)

CODE_NAMES = {sc.value[0]: sc.name for sc in grpc.StatusCode}
_UPDATE_TYPES = {v: k for k, v in p4r.Update.Type.items()}
_MSG_LIMIT = 256 << 20      # pipeline configs and whole-table reads exceed gRPC's 4 MiB default
CHANNEL_OPTIONS = [("grpc.max_send_message_length", _MSG_LIMIT),
                   ("grpc.max_receive_message_length", _MSG_LIMIT)]


# --- errors -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class UpdateError:
    """One failed update of a Write: which one, on which table, and the device's canonical code."""
    index: int
    update: str      # INSERT | MODIFY | DELETE
    table: str
    code: str        # grpc canonical code name, e.g. ALREADY_EXISTS
    message: str

    def __str__(self) -> str:
        return f"update {self.index} ({self.update} {self.table}): {self.code}: {self.message}"


class P4RuntimeError(Exception):
    """A P4Runtime call the device refused, with the per-update errors when it sent them."""

    def __init__(self, call: str, code: str, message: str, updates: tuple[UpdateError, ...] = ()):
        super().__init__(call, code, message, updates)
        self.call, self.code, self.message, self.updates = call, code, message, updates

    def __str__(self) -> str:
        text = f"{self.call}: {self.code}: {self.message}"
        return "; ".join([text, *map(str, self.updates)])

    @classmethod
    def from_rpc(cls, call: str, err: grpc.RpcError, updates: Sequence[p4r.Update] = (),
                 schema: P4Schema | None = None) -> "P4RuntimeError":
        """Decode grpc-status-details-bin: P4Runtime 12.3 puts one p4.v1.Error per update there
        (or, for a batch too big for that, one per distinct error: see p4mtcp.write_errors).
        Failures a report could not list come as one UpdateError with index -1."""
        code = err.code().name if err.code() else "UNKNOWN"
        details: list[UpdateError] = []
        for key, value in (err.trailing_metadata() or ()):
            if key != "grpc-status-details-bin" or not updates:
                continue
            status = status_pb2.Status.FromString(value)
            for i, canonical, message in update_errors(status, len(updates)):
                known = 0 <= i < len(updates)
                kind = _UPDATE_TYPES.get(updates[i].type, "?") if known else "?"
                obj = schema.by_id(updates[i].entity.table_entry.table_id) \
                    if schema and known else None
                details.append(UpdateError(i, kind, obj.name if obj is not None else "?",
                                           CODE_NAMES.get(canonical, str(canonical)), message))
        return cls(call, code, err.details() or "", tuple(details))


# --- table entries as values ------------------------------------------------------------------

Match = tuple[tuple[str, "int | tuple[int, int]"], ...]
"""(field name, value) per key field; an LPM value is (address, prefix length)."""


@dataclass(frozen=True)
class Entry:
    """One table entry by name: what a client writes and what it reads back."""
    table: str
    match: Match
    action: str
    params: tuple[tuple[str, int], ...] = ()

    @property
    def key(self) -> tuple[str, Match]:
        return self.table, self.match


def entry(table: str, match: dict, action: str, **params: int) -> Entry:
    return Entry(table, tuple(match.items()), action, tuple(params.items()))


def encode_entry(schema: P4Schema, e: Entry, with_action: bool = True) -> p4r.TableEntry:
    """The P4Runtime TableEntry for `e`; ValueError naming the table and field that do not fit."""
    t = schema.table(e.table)
    msg = p4r.TableEntry(table_id=t.id)
    for name, value in e.match:
        f = t.field(name)
        try:
            if f.match_type == "lpm":
                addr, plen = value
                if not 0 <= plen <= f.bitwidth:
                    raise ValueError(f"prefix length {plen} outside 0..{f.bitwidth}")
                mask = ((1 << f.bitwidth) - 1) ^ ((1 << (f.bitwidth - plen)) - 1)
                msg.match.add(field_id=f.id, lpm=p4r.FieldMatch.LPM(
                    value=encode_int(addr & mask, f.bitwidth), prefix_len=plen))
            elif f.match_type == "exact":
                msg.match.add(field_id=f.id, exact=p4r.FieldMatch.Exact(
                    value=encode_int(value, f.bitwidth)))
            else:
                raise ValueError(f"{f.match_type} match is not supported by this client")
        except (TypeError, ValueError) as err:
            raise ValueError(f"{e.table} key {name}: {err}") from None
    if with_action:
        a = schema.action(e.action)
        msg.action.action.action_id = a.id
        for name, value in e.params:
            p = a.param(name)
            try:
                msg.action.action.params.add(param_id=p.id, value=encode_int(value, p.bitwidth))
            except ValueError as err:
                raise ValueError(f"{e.table} action {a.name} param {name}: {err}") from None
    return msg


def positional_entry(schema: P4Schema, table: str, match: Sequence[int | tuple[int, int]],
                     action: str, params: Sequence[int] = ()) -> Entry:
    """An Entry from match values and params in P4Info order; a bare LPM value is a full prefix."""
    t, a = schema.table(table), schema.action(action)
    if len(match) != len(t.match_fields):
        raise ValueError(f"{table}: {len(t.match_fields)} match fields, got {len(match)}")
    if len(params) != len(a.params):
        raise ValueError(f"{action}: {len(a.params)} parameters, got {len(params)}")
    keys = tuple((f.name, (v, f.bitwidth) if f.match_type == "lpm" and isinstance(v, int) else v)
                 for f, v in zip(t.match_fields, match))
    return Entry(t.name, keys, a.name, tuple((p.name, v) for p, v in zip(a.params, params)))


def decode_match(schema: P4Schema, msg: p4r.TableEntry) -> Match:
    t = schema.by_id(msg.table_id)
    fields = {m.field_id: m for m in msg.match}
    match = []
    for f in t.match_fields:
        m = fields.get(f.id)
        if m is None:          # an LPM field may be omitted for /0 (P4Runtime 9.1.1)
            match.append((f.name, (0, 0)))
        elif m.HasField("lpm"):
            match.append((f.name, (decode_int(m.lpm.value, f.bitwidth), m.lpm.prefix_len)))
        else:
            match.append((f.name, decode_int(m.exact.value, f.bitwidth)))
    return tuple(match)


def decode_entry(schema: P4Schema, msg: p4r.TableEntry) -> Entry:
    a = schema.by_id(msg.action.action.action_id)
    values = {p.param_id: p.value for p in msg.action.action.params}
    params = tuple((p.name, decode_int(values[p.id], p.bitwidth)) for p in a.params
                   if p.id in values)
    return Entry(schema.by_id(msg.table_id).name, decode_match(schema, msg), a.name, params)


# --- controller packets -------------------------------------------------------------------------

def packet_out(schema: P4Schema, payload: bytes, **metadata: int) -> p4r.PacketOut:
    """A PacketOut; fields of the `packet_out` controller header by name (unnamed ones 0)."""
    header = schema.controller_header("packet_out")
    msg = p4r.PacketOut(payload=payload)
    for f in header.fields:
        msg.metadata.add(metadata_id=f.id, value=encode_int(metadata.get(f.name, 0), f.bitwidth))
    return msg


def packet_in_metadata(schema: P4Schema, pkt: p4r.PacketIn) -> dict[str, int]:
    """A PacketIn's `packet_in` header fields by name; ids the P4Info lacks are left out,
    ValueError for a value wider than its field."""
    fields = {f.id: f for f in schema.controller_header("packet_in").fields}
    return {f.name: decode_int(m.value, f.bitwidth) for m in pkt.metadata
            if (f := fields.get(m.metadata_id)) is not None}


# --- one connection to a device -----------------------------------------------------------------

class Client:
    """A channel to one device: unary calls, and the StreamChannel once `open` has made us
    primary. Without `open` it is a read-only observer that leaves the primary alone."""

    def __init__(self, address: str, schema: P4Schema, device_id: int, election_id: int,
                 timeout: float | None = None):
        self.address, self.schema, self.device_id = address, schema, device_id
        self.timeout = timeout
        self.election = p4r.Uint128(high=election_id >> 64, low=election_id & ((1 << 64) - 1))
        self.channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
        self.stub = p4runtime_pb2_grpc.P4RuntimeStub(self.channel)
        self.closed = threading.Event()
        self.error: grpc.RpcError | None = None   # why the stream ended, if we did not close it
        self._closing = False
        self._requests: queue.Queue[p4r.StreamMessageRequest | None] = queue.Queue()
        self._arbitration: queue.Queue[p4r.MasterArbitrationUpdate | None] = queue.Queue()
        self._on_packet: Callable[[p4r.PacketIn], None] = lambda pkt: None
        self._reader: threading.Thread | None = None

    def _outgoing(self) -> Iterator[p4r.StreamMessageRequest]:
        while (msg := self._requests.get()) is not None:
            yield msg

    def _read_stream(self) -> None:
        try:
            for msg in self.stub.StreamChannel(self._outgoing()):
                kind = msg.WhichOneof("update")
                if kind == "arbitration":
                    self._arbitration.put(msg.arbitration)
                elif kind == "packet":
                    self._on_packet(msg.packet)
                elif kind == "error":
                    log.warning("%s: stream error: %s", self.address, msg.error)
        except grpc.RpcError as e:
            if not self._closing:         # our own close() cancels the call: not an error
                self.error = e
        finally:
            self.closed.set()
            self._arbitration.put(None)

    def open(self, timeout: float, on_packet: Callable[[p4r.PacketIn], None] | None = None
             ) -> None:
        """Start the stream and become primary (P4Runtime 5: highest election id wins);
        P4RuntimeError if the device does not answer in time or another client is primary."""
        if on_packet is not None:
            self._on_packet = on_packet
        self._reader = threading.Thread(target=self._read_stream, daemon=True,
                                        name=f"p4rt-stream-{self.address}")
        self._reader.start()
        self._requests.put(p4r.StreamMessageRequest(arbitration=p4r.MasterArbitrationUpdate(
            device_id=self.device_id, election_id=self.election)))
        try:
            reply = self._arbitration.get(timeout=timeout)
        except queue.Empty:
            raise P4RuntimeError("StreamChannel", "DEADLINE_EXCEEDED",
                                 f"no arbitration reply from {self.address} in {timeout} s"
                                 ) from None
        if reply is None:
            err = self.error
            code = err.code().name if err is not None else "UNAVAILABLE"
            text = err.details() if err is not None else "stream closed"
            raise P4RuntimeError("StreamChannel", code, f"{self.address}: {text}")
        if reply.status.code != 0:
            raise P4RuntimeError("StreamChannel", CODE_NAMES.get(reply.status.code, "?"),
                                 f"not primary for device {self.device_id}: "
                                 f"{reply.status.message}")

    def close(self) -> None:
        self._closing = True
        self._requests.put(None)
        self.channel.close()
        self.closed.set()
        if (self._reader is not None and self._reader.is_alive()
                and threading.current_thread() is not self._reader):
            self._reader.join(2.0)

    def send_packet(self, payload: bytes, **metadata: int) -> None:
        """PacketOut over the stream; `metadata` names fields of the packet_out header."""
        self._requests.put(p4r.StreamMessageRequest(
            packet=packet_out(self.schema, payload, **metadata)))

    # -- unary calls --

    def set_pipeline(self, p4_device_config: bytes, cookie: int = 0) -> None:
        """SetForwardingPipelineConfig(VERIFY_AND_COMMIT) with the schema's P4Info."""
        req = p4r.SetForwardingPipelineConfigRequest(
            device_id=self.device_id, election_id=self.election,
            action=p4r.SetForwardingPipelineConfigRequest.VERIFY_AND_COMMIT)
        req.config.p4info.CopyFrom(self.schema.p4info)
        req.config.p4_device_config = p4_device_config
        req.config.cookie.cookie = cookie
        try:
            self.stub.SetForwardingPipelineConfig(req, timeout=self.timeout)
        except grpc.RpcError as e:
            raise P4RuntimeError.from_rpc("SetForwardingPipelineConfig", e) from None

    def write(self, ops: Sequence[tuple[int, Entry]]) -> None:
        """One Write of (Update.Type, Entry) pairs, CONTINUE_ON_ERROR; DELETEs carry no action."""
        if not ops:
            return
        req = p4r.WriteRequest(device_id=self.device_id, election_id=self.election,
                               atomicity=p4r.WriteRequest.CONTINUE_ON_ERROR)
        for kind, e in ops:
            u = req.updates.add(type=kind)
            u.entity.table_entry.CopyFrom(encode_entry(self.schema, e, kind != p4r.Update.DELETE))
        try:
            self.stub.Write(req, timeout=self.timeout)
        except grpc.RpcError as err:
            raise P4RuntimeError.from_rpc("Write", err, req.updates, self.schema) from None

    def read(self, entity: p4r.Entity, what: str) -> Iterator[p4r.Entity]:
        req = p4r.ReadRequest(device_id=self.device_id, entities=[entity])
        try:
            for resp in self.stub.Read(req, timeout=self.timeout):
                yield from resp.entities
        except grpc.RpcError as e:
            raise P4RuntimeError.from_rpc(f"Read {what}", e) from None

    def read_table(self, table: str) -> list[Entry]:
        """Every entry of `table` but the default one (wildcard read)."""
        ent = p4r.Entity(table_entry=p4r.TableEntry(table_id=self.schema.table(table).id))
        return [decode_entry(self.schema, e.table_entry) for e in self.read(ent, table)
                if not e.table_entry.is_default_action]

    def read_counter(self, name: str, index: int | None = None) -> dict[int, tuple[int, int]]:
        """Indexed counter `name`: index -> (packets, bytes), every cell or just `index`."""
        c = p4r.CounterEntry(counter_id=self.schema.counter(name).id)
        if index is not None:
            c.index.index = index
        return {e.counter_entry.index.index: (e.counter_entry.data.packet_count,
                                              e.counter_entry.data.byte_count)
                for e in self.read(p4r.Entity(counter_entry=c), name)}

    def read_direct_counter(self, table: str) -> dict[Match, tuple[int, int]]:
        """The direct counter of `table`: entry match -> (packets, bytes)."""
        ent = p4r.Entity(direct_counter_entry=p4r.DirectCounterEntry(
            table_entry=p4r.TableEntry(table_id=self.schema.table(table).id)))
        return {decode_match(self.schema, e.direct_counter_entry.table_entry):
                (e.direct_counter_entry.data.packet_count, e.direct_counter_entry.data.byte_count)
                for e in self.read(ent, f"{table} direct counter")}

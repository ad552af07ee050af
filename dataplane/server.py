"""The embedded target's P4Runtime server (`p4.v1.P4Runtime`, P4Runtime specification v1.4).

It gives clients the specification's semantics they rely on with BMv2: arbitration (the
highest election id per device and role is primary), the specified error codes, per-update
`p4.v1.Error` details on a failed Write, wildcard reads, default entries, counters and direct
counters, canonical byte strings in replies, and packet-in/packet-out through the program's
controller headers. Each open StreamChannel holds one worker thread of the gRPC pool.
"""

from __future__ import annotations

import importlib.metadata
import queue
import threading
from collections import namedtuple
from concurrent import futures
from functools import partial
from typing import Callable, Iterable, Iterator

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, status_pb2
from p4.v1 import p4runtime_pb2 as pb
from p4.v1 import p4runtime_pb2_grpc

from p4mtcp.p4info import ControllerHeader, decode_int, encode_int

from .device import Device, Pipeline
from .tables import (CounterState, Entry, P4Error, TableState, decode_action, decode_match,
                     encode_action, encode_match)

MAX_MESSAGE = 256 * 1024 * 1024  # pipeline configs and big reads exceed gRPC's 4 MiB default
NO_PIPELINE = "No forwarding pipeline config set for this device"
READ_BATCH = 1000                # entities per ReadResponse
PACKET_IN_BACKLOG = 4096         # packet-ins queued for a slow client before new ones are dropped
_GRPC_CODE = {c.value[0]: c for c in grpc.StatusCode}
_CLOSE = object()


def api_version() -> str:
    try:
        return importlib.metadata.version("p4runtime")
    except importlib.metadata.PackageNotFoundError:
        return "1.4.1"


class _Status(namedtuple("_Status", ("code", "details", "trailing_metadata")), grpc.Status):
    """A gRPC status with trailing metadata, for `context.abort_with_status`."""


def _abort(context: grpc.ServicerContext, e: P4Error):
    context.abort(_GRPC_CODE[e.code], e.message)


def _election(msg) -> int | None:
    return (msg.election_id.high << 64) | msg.election_id.low if msg.HasField("election_id") else None


# --- arbitration (P4Runtime spec 5) ---------------------------------------------------------

class _Stream:
    """One StreamChannel: what it is waiting to send and what it claimed in arbitration."""

    def __init__(self) -> None:
        self.out: queue.Queue = queue.Queue()
        self.group: tuple[int, str] | None = None  # (device_id, role name)
        self.election: int | None = None


class Arbitration:
    """Primary election per (device id, role): the connected stream with the highest election id.

    `on_change(device_id, has_primary)` runs (under the arbitration lock, so calls never
    interleave) after every change, for the server to route packet-ins only while someone
    can receive them."""

    def __init__(self, on_change: Callable[[int, bool], None] | None = None) -> None:
        self._on_change = on_change
        self._lock = threading.Lock()
        self._groups: dict[tuple[int, str], list[_Stream]] = {}
        self._highest: dict[tuple[int, str], int] = {}

    def _primary(self, group: tuple[int, str]) -> _Stream | None:
        elected = [s for s in self._groups.get(group, ()) if s.election is not None]
        return max(elected, key=lambda s: s.election, default=None)

    def _notify(self, group: tuple[int, str], streams: Iterable[_Stream]) -> None:
        primary = self._primary(group)
        election = primary.election if primary else self._highest.get(group)
        for s in streams:
            msg = pb.StreamMessageResponse()
            a = msg.arbitration
            a.device_id = group[0]
            if group[1]:
                a.role.name = group[1]
            if election is not None:
                a.election_id.high, a.election_id.low = election >> 64, election & (2**64 - 1)
            if s is primary:
                a.status.code, a.status.message = code_pb2.OK, "primary"
            elif primary is not None:
                a.status.code = code_pb2.ALREADY_EXISTS
                a.status.message = "backup: another client is primary"
            else:
                a.status.code, a.status.message = code_pb2.NOT_FOUND, "no primary client"
            s.out.put(msg)

    def update(self, stream: _Stream, device_id: int, role: str, election: int | None) -> None:
        """Apply one MasterArbitrationUpdate; the sender always gets a reply, the others one
        when the primary changed (spec 5.3)."""
        group = (device_id, role)
        with self._lock:
            if stream.group is not None and stream.group != group:
                raise P4Error(code_pb2.FAILED_PRECONDITION,
                              "a stream cannot change its device id or role")
            members = self._groups.setdefault(group, [])
            if election is not None and any(s.election == election for s in members if s is not stream):
                raise P4Error(code_pb2.INVALID_ARGUMENT,
                              f"election id {election} is already used by another client")
            before = self._primary(group)
            stream.group, stream.election = group, election
            if stream not in members:
                members.append(stream)
            if election is not None and election > self._highest.get(group, -1):
                self._highest[group] = election
            after = self._primary(group)
            self._notify(group, members if after is not before else [stream])
            self._changed(device_id)

    def _changed(self, device_id: int) -> None:
        if self._on_change is not None:
            self._on_change(device_id, any(self._primary(g) for g in self._groups
                                           if g[0] == device_id))

    def remove(self, stream: _Stream) -> None:
        with self._lock:
            group = stream.group
            members = self._groups.get(group, [])
            if stream not in members:
                return
            was_primary = self._primary(group) is stream
            members.remove(stream)
            if was_primary and members:
                self._notify(group, members)
            self._changed(group[0])

    def is_primary(self, device_id: int, role: str, election: int | None) -> bool:
        with self._lock:
            primary = self._primary((device_id, role))
            return primary is not None and election is not None and primary.election == election

    def primaries(self, device_id: int) -> list[_Stream]:
        with self._lock:
            groups = [g for g in self._groups if g[0] == device_id]
            return [p for p in map(self._primary, groups) if p is not None]


# --- controller headers (packet_in / packet_out) --------------------------------------------

def _header_bytes(header: ControllerHeader | None) -> int:
    return (sum(f.bitwidth for f in header.fields) + 7) // 8 if header else 0


def parse_packet_in(header: ControllerHeader | None, frame: bytes) -> pb.PacketIn:
    """PacketIn for a frame the program sent to the CPU port: the packet_in header's fields as
    metadata (canonical byte strings), the rest as payload."""
    n = _header_bytes(header)
    msg = pb.PacketIn(payload=frame[n:])
    if header is None:
        return msg
    total = n * 8
    value = int.from_bytes(frame[:n], "big")
    for f in header.fields:  # fields are packed MSB first, padding (if any) at the end
        total -= f.bitwidth
        msg.metadata.add(metadata_id=f.id,
                         value=encode_int((value >> total) & ((1 << f.bitwidth) - 1), f.bitwidth))
    return msg


def build_packet_out(header: ControllerHeader | None, msg: pb.PacketOut) -> bytes:
    """The frame the program receives on its CPU port: packet_out header, then the payload.
    Missing metadata are 0; unknown ones and values too wide are INVALID_ARGUMENT."""
    if header is None:
        return msg.payload
    values: dict[int, int] = {}
    for md in msg.metadata:
        f = next((f for f in header.fields if f.id == md.metadata_id), None)
        if f is None:
            raise P4Error(code_pb2.INVALID_ARGUMENT,
                          f"packet_out has no metadata with id {md.metadata_id}")
        try:
            values[f.id] = decode_int(md.value, f.bitwidth)
        except ValueError as e:
            raise P4Error(code_pb2.INVALID_ARGUMENT,
                          f"packet_out metadata {f.name}: {e}") from None
    n = _header_bytes(header)
    word = 0
    for f in header.fields:
        word = (word << f.bitwidth) | values.get(f.id, 0)
    word <<= n * 8 - sum(f.bitwidth for f in header.fields)
    return word.to_bytes(n, "big") + msg.payload


# --- the servicer ---------------------------------------------------------------------------

class P4RuntimeServicer(p4runtime_pb2_grpc.P4RuntimeServicer):
    """P4Runtime over one Device."""

    def __init__(self, device: Device):
        self.device = device
        self.arbitration = Arbitration(self._route_packet_in)
        self._saved: Pipeline | None = None  # VERIFY_AND_SAVE, waiting for COMMIT
        self.packet_in_dropped = 0

    def _route_packet_in(self, device_id: int, has_primary: bool) -> None:
        """CPU-port frames come to the server only while a primary client can take them; with
        none, the device returns them to its caller (which counts them) instead."""
        if device_id == self.device.device_id:
            self.device.packet_in_handler = self._packet_in if has_primary else None

    # -- common checks --

    def _check_device(self, device_id: int) -> None:
        if device_id != self.device.device_id:
            raise P4Error(code_pb2.NOT_FOUND, f"unknown device id {device_id} "
                                              f"(this is device {self.device.device_id})")

    def _check_primary(self, request) -> None:
        if not self.arbitration.is_primary(request.device_id, request.role, _election(request)):
            raise P4Error(code_pb2.PERMISSION_DENIED,
                          "not the primary client (election id does not match the primary's)")

    def _pipeline(self) -> Pipeline:
        p = self.device.pipeline
        if p is None:
            raise P4Error(code_pb2.FAILED_PRECONDITION, NO_PIPELINE)
        return p

    # -- RPCs --

    def Capabilities(self, request, context):
        return pb.CapabilitiesResponse(p4runtime_api_version=api_version())

    def SetForwardingPipelineConfig(self, request, context):
        A = pb.SetForwardingPipelineConfigRequest
        try:
            self._check_device(request.device_id)
            self._check_primary(request)
            cfg = request.config
            if request.action == A.COMMIT:
                with self.device.lock:
                    if self._saved is None:
                        raise P4Error(code_pb2.FAILED_PRECONDITION,
                                      "no saved config to commit (VERIFY_AND_SAVE first)")
                    self.device.install(self._saved)
                    self._saved = None
                return pb.SetForwardingPipelineConfigResponse()
            if request.action not in (A.VERIFY, A.VERIFY_AND_SAVE, A.VERIFY_AND_COMMIT,
                                      A.RECONCILE_AND_COMMIT):
                raise P4Error(code_pb2.INVALID_ARGUMENT, f"unknown action {request.action}")
            if not cfg.HasField("p4info"):
                raise P4Error(code_pb2.INVALID_ARGUMENT, "config has no p4info")
            if request.action == A.RECONCILE_AND_COMMIT:
                with self.device.lock:
                    current = self.device.pipeline
                    if current is not None:
                        if current.schema.p4info != cfg.p4info:
                            raise P4Error(code_pb2.UNIMPLEMENTED,
                                          "RECONCILE_AND_COMMIT keeps forwarding state only for "
                                          "an unchanged P4Info; use VERIFY_AND_COMMIT")
                        self.device.install(current.with_config(cfg.p4_device_config,
                                                                cfg.cookie.cookie))
                        return pb.SetForwardingPipelineConfigResponse()
            try:
                built = self.device.build(cfg.p4info, cfg.p4_device_config, cfg.cookie.cookie)
            except (ValueError, KeyError) as e:
                raise P4Error(code_pb2.INVALID_ARGUMENT,
                              f"pipeline config refused: {e}") from None
            with self.device.lock:
                if request.action == A.VERIFY_AND_SAVE:
                    self._saved = built
                elif request.action != A.VERIFY:
                    self.device.install(built)
                    self._saved = None
            return pb.SetForwardingPipelineConfigResponse()
        except P4Error as e:
            _abort(context, e)

    def GetForwardingPipelineConfig(self, request, context):
        R = pb.GetForwardingPipelineConfigRequest
        try:
            self._check_device(request.device_id)
            p = self._pipeline()
        except P4Error as e:
            _abort(context, e)
        rep = pb.GetForwardingPipelineConfigResponse()
        rep.config.cookie.cookie = p.cookie
        if request.response_type in (R.ALL, R.P4INFO_AND_COOKIE):
            rep.config.p4info.CopyFrom(p.schema.p4info)
        if request.response_type in (R.ALL, R.DEVICE_CONFIG_AND_COOKIE):
            rep.config.p4_device_config = p.device_config
        return rep

    def Write(self, request, context):
        try:
            self._check_device(request.device_id)
            self._check_primary(request)
            self._pipeline()
            if request.atomicity != pb.WriteRequest.CONTINUE_ON_ERROR:
                raise P4Error(code_pb2.UNIMPLEMENTED,
                              "only CONTINUE_ON_ERROR atomicity is supported by this target")
        except P4Error as e:
            _abort(context, e)
        errors: list[P4Error | None] = []
        with self.device.lock:
            p = self.device.pipeline
            for update in request.updates:
                try:
                    self._apply(p, update)
                    errors.append(None)
                except P4Error as e:
                    errors.append(e)
        failed = sum(e is not None for e in errors)
        if failed:
            # P4Runtime 12.3: UNKNOWN, with one p4.v1.Error per update (OK ones included)
            status = status_pb2.Status(code=code_pb2.UNKNOWN,
                                       message=f"{failed} of {len(errors)} updates failed")
            for e in errors:
                detail = any_pb2.Any()
                detail.Pack(pb.Error(canonical_code=e.code, message=e.message) if e else pb.Error())
                status.details.append(detail)
            context.abort_with_status(_Status(grpc.StatusCode.UNKNOWN, status.message,
                                              (("grpc-status-details-bin",
                                                status.SerializeToString()),)))
        return pb.WriteResponse()

    def Read(self, request, context):
        try:
            self._check_device(request.device_id)
            self._pipeline()
            with self.device.lock:  # one consistent snapshot
                p = self.device.pipeline
                found = [f for entity in request.entities for f in self._read(p, entity)]
        except P4Error as e:
            _abort(context, e)
        for i in range(0, max(len(found), 1), READ_BATCH):
            rep = pb.ReadResponse()
            for fill in found[i:i + READ_BATCH]:
                fill(rep.entities.add())
            yield rep

    def StreamChannel(self, request_iterator, context):
        stream = _Stream()
        context.add_callback(lambda: stream.out.put(_CLOSE))
        threading.Thread(target=self._stream_reader, args=(request_iterator, stream),
                         name="p4rt-stream", daemon=True).start()
        try:
            while True:
                item = stream.out.get()
                if item is _CLOSE:
                    return
                if isinstance(item, P4Error):
                    _abort(context, item)
                yield item
        finally:
            self.arbitration.remove(stream)

    # -- stream --

    def _stream_reader(self, requests: Iterator[pb.StreamMessageRequest], stream: _Stream) -> None:
        try:
            for req in requests:
                kind = req.WhichOneof("update")
                if kind == "arbitration":
                    a = req.arbitration
                    try:
                        self._check_device(a.device_id)
                        self.arbitration.update(stream, a.device_id, a.role.name, _election(a))
                    except P4Error as e:  # spec 5.3: these end the stream
                        stream.out.put(e)
                        return
                elif kind == "packet":
                    self._packet_out(stream, req.packet)
                else:
                    self._stream_error(stream, code_pb2.UNIMPLEMENTED,
                                       f"stream message {kind!r} is not supported by this target")
        except grpc.RpcError:
            pass  # the client went away; the RPC's callback closes the stream
        finally:
            stream.out.put(_CLOSE)

    @staticmethod
    def _stream_error(stream: _Stream, code: int, message: str, packet: pb.PacketOut | None = None):
        msg = pb.StreamMessageResponse()
        msg.error.canonical_code, msg.error.message = code, message
        if packet is not None:
            msg.error.packet_out.packet_out.CopyFrom(packet)
        stream.out.put(msg)

    def _packet_out(self, stream: _Stream, packet: pb.PacketOut) -> None:
        if stream.group is None or not self.arbitration.is_primary(*stream.group, stream.election):
            self._stream_error(stream, code_pb2.PERMISSION_DENIED,
                               "packet-out from a client that is not primary", packet)
            return
        p = self.device.pipeline
        handler = self.device.packet_out_handler
        if p is None or handler is None:
            self._stream_error(stream, code_pb2.FAILED_PRECONDITION,
                               NO_PIPELINE if p is None else "this device has no packet-out path",
                               packet)
            return
        try:
            frame = build_packet_out(p.schema.controller_headers.get("packet_out"), packet)
        except P4Error as e:
            self._stream_error(stream, e.code, e.message, packet)
            return
        try:
            handler(frame)
        except Exception as e:  # the stream must outlive a packet the device cannot take
            self._stream_error(stream, code_pb2.INTERNAL, f"packet-out failed: {e!r}", packet)

    def _packet_in(self, frame: bytes) -> None:
        """Device callback (data-plane thread): a frame the program sent to the CPU port."""
        p = self.device.pipeline
        if p is None:
            return
        header = p.schema.controller_headers.get("packet_in")
        if len(frame) < _header_bytes(header):
            return  # cannot come from the program: it always emits the whole header
        msg = pb.StreamMessageResponse(packet=parse_packet_in(header, frame))
        for s in self.arbitration.primaries(self.device.device_id):
            if s.out.qsize() < PACKET_IN_BACKLOG:
                s.out.put(msg)
            else:
                self.packet_in_dropped += 1  # the client is not reading its stream

    # -- Write --

    def _apply(self, p: Pipeline, update: pb.Update) -> None:
        U = pb.Update
        if update.type not in (U.INSERT, U.MODIFY, U.DELETE):
            raise P4Error(code_pb2.INVALID_ARGUMENT, "update type is UNSPECIFIED")
        kind = update.entity.WhichOneof("entity")
        if kind == "table_entry":
            self._write_table_entry(p, update.type, update.entity.table_entry)
        elif kind in ("counter_entry", "direct_counter_entry"):
            if update.type != U.MODIFY:
                raise P4Error(code_pb2.INVALID_ARGUMENT, f"{kind} can only be modified")
            if kind == "counter_entry":
                self._write_counter(p, update.entity.counter_entry)
            else:
                dce = update.entity.direct_counter_entry
                entry = self._one_entry(p, dce.table_entry, counted=True)
                entry.counts[0], entry.counts[1] = dce.data.packet_count, dce.data.byte_count
        elif kind is None:
            raise P4Error(code_pb2.INVALID_ARGUMENT, "update has no entity")
        else:
            raise P4Error(code_pb2.UNIMPLEMENTED, f"{kind} is not supported by this target")

    @staticmethod
    def _table(p: Pipeline, table_id: int) -> TableState:
        t = p.table_ids.get(table_id)
        if t is None:
            raise P4Error(code_pb2.INVALID_ARGUMENT, f"no table with id {table_id} in the P4Info")
        return t

    def _entry_action(self, p: Pipeline, t: TableState, te: pb.TableEntry, default: bool):
        kind = te.action.WhichOneof("type")
        if kind != "action":
            if kind is None:
                raise P4Error(code_pb2.INVALID_ARGUMENT, f"table {t.name}: entry has no action")
            raise P4Error(code_pb2.UNIMPLEMENTED, f"table {t.name}: {kind} is not supported")
        return decode_action(p.schema, t.table, te.action.action, default=default)

    def _write_table_entry(self, p: Pipeline, utype: int, te: pb.TableEntry) -> None:
        t = self._table(p, te.table_id)
        if t.table.is_const:
            raise P4Error(code_pb2.PERMISSION_DENIED, f"table {t.name} is const")
        if te.idle_timeout_ns:
            raise P4Error(code_pb2.INVALID_ARGUMENT, f"table {t.name} has no idle timeout")
        if te.HasField("meter_config") or te.HasField("meter_counter_data"):
            raise P4Error(code_pb2.INVALID_ARGUMENT, f"table {t.name} has no direct meter")
        counts = None
        if te.HasField("counter_data"):
            if not t.has_counter:
                raise P4Error(code_pb2.INVALID_ARGUMENT, f"table {t.name} has no direct counter")
            counts = (te.counter_data.packet_count, te.counter_data.byte_count)
        if te.is_default_action:
            if utype != pb.Update.MODIFY:  # P4Runtime 9.1.4: the default entry always exists
                raise P4Error(code_pb2.INVALID_ARGUMENT,
                              f"table {t.name}: the default entry can only be modified")
            if len(te.match) or te.priority:
                raise P4Error(code_pb2.INVALID_ARGUMENT,
                              f"table {t.name}: the default entry has no match and no priority")
            if te.HasField("action"):
                t.set_default(*self._entry_action(p, t, te, default=True), counts=counts)
            else:  # MODIFY without an action restores the program's default
                t.set_default(None, counts=counts)
            return
        key = decode_match(t.table, te.match)
        if utype == pb.Update.DELETE:
            t.delete(key, te.priority)
            return
        action, params = self._entry_action(p, t, te, default=False)
        write = t.insert if utype == pb.Update.INSERT else t.modify
        write(key, te.priority, action, params, te.metadata, counts)

    @staticmethod
    def _counter(p: Pipeline, counter_id: int):
        c = p.counter_ids.get(counter_id)
        if c is None:
            raise P4Error(code_pb2.INVALID_ARGUMENT,
                          f"no counter with id {counter_id} in the P4Info")
        return c

    @staticmethod
    def _indexes(c, ce: pb.CounterEntry) -> range:
        if not ce.HasField("index"):
            return range(c.size)
        i = ce.index.index
        if not 0 <= i < c.size:
            raise P4Error(code_pb2.OUT_OF_RANGE,
                          f"counter {c.name}: index {i} not in 0..{c.size - 1}")
        return range(i, i + 1)

    def _write_counter(self, p: Pipeline, ce: pb.CounterEntry) -> None:
        c = self._counter(p, ce.counter_id)
        for i in self._indexes(c, ce):
            c.write(i, ce.data.packet_count, ce.data.byte_count)

    def _one_entry(self, p: Pipeline, te: pb.TableEntry, counted: bool):
        """The entry (or default entry) a request names; NOT_FOUND when it is not installed."""
        t = self._table(p, te.table_id)
        if counted and not t.has_counter:
            raise P4Error(code_pb2.INVALID_ARGUMENT, f"table {t.name} has no direct counter")
        if te.is_default_action:
            return t.default
        t.check_priority(te.priority)
        e = t.get(decode_match(t.table, te.match), te.priority)
        if e is None:
            raise P4Error(code_pb2.NOT_FOUND, f"table {t.name}: no such entry")
        return e

    # -- Read --
    # Entities are gathered under the device lock as fillers that hold a snapshot of what to
    # report (entries are replaced, never edited, on MODIFY; counts are copied), then encoded
    # straight into the ReadResponse outside the lock.

    def _read(self, p: Pipeline, entity: pb.Entity) -> list[Filler]:
        kind = entity.WhichOneof("entity")
        if kind == "table_entry":
            te = entity.table_entry
            with_counts = te.HasField("counter_data")
            return [partial(_fill_table_entry, t, e, _counts(e) if with_counts else None)
                    for t, e in self._selected(p, te, counted=False)]
        if kind == "counter_entry":
            return self._read_counters(p, entity.counter_entry)
        if kind == "direct_counter_entry":
            return [partial(_fill_direct_counter, t, e, _counts(e))
                    for t, e in self._selected(p, entity.direct_counter_entry.table_entry,
                                               counted=True)]
        if kind is None:
            raise P4Error(code_pb2.INVALID_ARGUMENT, "read request has an empty entity")
        raise P4Error(code_pb2.UNIMPLEMENTED, f"{kind} is not supported by this target")

    def _selected(self, p: Pipeline, te: pb.TableEntry, counted: bool):
        """(table, entry) pairs a possibly wildcard table entry selects (P4Runtime 11.1)."""
        if te.table_id == 0:
            if len(te.match):
                raise P4Error(code_pb2.INVALID_ARGUMENT, "a read of all tables (table_id 0) "
                                                         "cannot have a match")
            tables = [t for t in p.tables.values() if t.has_counter or not counted]
        else:
            t = self._table(p, te.table_id)
            if counted and not t.has_counter:
                raise P4Error(code_pb2.INVALID_ARGUMENT, f"table {t.name} has no direct counter")
            tables = [t]
        for t in tables:
            if te.is_default_action:
                yield t, t.default
            elif len(te.match):
                e = t.get(decode_match(t.table, te.match), te.priority)
                if e is not None:
                    yield t, e
            else:
                for e in t.entries():
                    if not te.priority or e.priority == te.priority:
                        yield t, e

    def _read_counters(self, p: Pipeline, ce: pb.CounterEntry) -> list[Filler]:
        counters = [self._counter(p, ce.counter_id)] if ce.counter_id else list(p.counters.values())
        return [partial(_fill_counter, c, i, c.packets[i], c.bytes[i])
                for c in counters for i in self._indexes(c, ce)]


Filler = Callable[[pb.Entity], None]


def _counts(e: Entry) -> tuple[int, int] | None:
    return tuple(e.counts) if e.counts is not None else None


def _encode_entry(t: TableState, e: Entry, m: pb.TableEntry, with_action: bool = True) -> None:
    m.table_id = t.table.id
    if e.key is None:
        m.is_default_action = True
    else:
        encode_match(t.table, e.key, m.match)
        m.priority = e.priority
        m.metadata = e.metadata
    if with_action and e.action.id:  # the implicit NoAction default has no P4Info action
        encode_action(e.action, e.params, m.action.action)


def _fill_table_entry(t: TableState, e: Entry, counts, into: pb.Entity) -> None:
    _encode_entry(t, e, into.table_entry)
    if counts is not None:
        into.table_entry.counter_data.packet_count, into.table_entry.counter_data.byte_count = counts


def _fill_direct_counter(t: TableState, e: Entry, counts, into: pb.Entity) -> None:
    d = into.direct_counter_entry
    _encode_entry(t, e, d.table_entry, with_action=False)
    _set_counter_data(d.data, t.schema.by_id(t.table.direct_counter_id).unit, *counts)


def _fill_counter(c: CounterState, index: int, packets: int, nbytes: int, into: pb.Entity) -> None:
    m = into.counter_entry
    m.counter_id = c.counter.id
    m.index.index = index
    _set_counter_data(m.data, c.counter.unit, packets, nbytes)


def _set_counter_data(data: pb.CounterData, unit: str, packets: int, nbytes: int) -> None:
    """Only the counts the counter's unit keeps (PACKETS, BYTES or BOTH)."""
    if unit in ("packets", "both", "unspecified"):
        data.packet_count = packets
    if unit in ("bytes", "both", "unspecified"):
        data.byte_count = nbytes


def serve(device: Device, address: str = "127.0.0.1:9559", max_workers: int = 64) -> grpc.Server:
    """Start a P4Runtime server for `device` on `address`. Each open stream holds one of the
    `max_workers` threads. The servicer is `server.p4runtime` (arbitration, packet-in drops).
    OSError if the address cannot be bound: SO_REUSEPORT is off so that a second target on
    the same port fails instead of silently sharing the clients with the first."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers,
                                                    thread_name_prefix="p4rt"),
                         options=[("grpc.max_send_message_length", MAX_MESSAGE),
                                  ("grpc.max_receive_message_length", MAX_MESSAGE),
                                  ("grpc.so_reuseport", 0)])
    server.p4runtime = P4RuntimeServicer(device)
    p4runtime_pb2_grpc.add_P4RuntimeServicer_to_server(server.p4runtime, server)
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as e:  # newer grpcio raises, older ones return 0
        raise OSError(f"P4Runtime server cannot listen on {address}: {e}") from None
    if bound == 0:
        raise OSError(f"P4Runtime server cannot listen on {address}")
    server.start()
    return server

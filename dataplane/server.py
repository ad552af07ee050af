"""The embedded target's P4Runtime server (`p4.v1.P4Runtime`, P4Runtime specification v1.4).

It gives clients the specification's semantics they rely on with BMv2: arbitration (the
highest election id per device and role is primary), the specified error codes, per-update
`p4.v1.Error` details on a failed Write, wildcard reads, default entries, counters and direct
counters, canonical byte strings in replies, and packet-in/packet-out through the program's
controller headers.

It is built so that hostile clients can neither stall nor bloat it:
- grpc.aio on one event-loop thread: an open StreamChannel costs a coroutine and a queue, not a
  worker thread, so idle streams cannot starve unary RPCs. At most MAX_STREAMS are open: a new
  one ends the oldest that never arbitrated, or is refused (RESOURCE_EXHAUSTED) if all have.
  The work of unary RPCs runs on a small thread pool, so the loop keeps serving streams while
  a big Write or Read runs, and a Read returns at most MAX_READ_RESULTS entities.
- Requests arrive as raw bytes (no deserializer in the method handlers) and are decoded here:
  bytes that do not decode are answered INVALID_ARGUMENT saying so, and logged a bounded
  number of times. grpcio's own path for a request that fails to deserialize keeps ~20 KB per
  call and logs a traceback each time.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import threading
from concurrent import futures
from functools import partial
from itertools import islice
from typing import AsyncIterator, Callable, Iterator

import grpc
from google.protobuf.message import DecodeError
from google.rpc import code_pb2
from p4.v1 import p4runtime_pb2 as pb

from p4mtcp.ratelimit import RateLimitedLog
from p4mtcp.write_errors import write_status

from .device import Device, Pipeline
from .packet_io import build_packet_out, header_bytes, parse_packet_in
from .streams import Arbitration, Stream, stream_error
from .tables import (CounterState, Entry, P4Error, TableState, decode_action, decode_match,
                     encode_action, encode_match)

log = logging.getLogger("p4mtcp.p4runtime")

MAX_MESSAGE = 256 * 1024 * 1024  # pipeline configs and big reads exceed gRPC's 4 MiB default
NO_PIPELINE = "No forwarding pipeline config set for this device"
READ_BATCH = 1000                # entities per ReadResponse
MAX_READ_RESULTS = 1 << 21       # entities one Read may return
PACKET_IN_BACKLOG = 4096         # packet-ins queued for a slow client before new ones are dropped
MAX_STREAMS = 1024               # open StreamChannels (see _Rpcs._make_room past that)
WORKERS = 4                      # threads running the work of unary RPCs
LOG_BURST, LOG_WINDOW = 10, 60.0  # undecodable requests logged per window (seconds)
SERVICE = "p4.v1.P4Runtime"
_GRPC_CODE = {c.value[0]: c for c in grpc.StatusCode}
_CLOSE = object()


def api_version() -> str:
    try:
        return importlib.metadata.version("p4runtime")
    except importlib.metadata.PackageNotFoundError:
        return "1.4.1"


class WriteFailed(P4Error):
    """Some updates of a Write failed: UNKNOWN, with the per-update errors as the
    `grpc-status-details-bin` trailer (P4Runtime spec, Write RPC, Error Reporting)."""

    def __init__(self, results: list[tuple[int, str] | None]):
        status = write_status(results)
        super().__init__(code_pb2.UNKNOWN, status.message)
        self.trailer = (("grpc-status-details-bin", status.SerializeToString()),)


def _election(msg) -> int | None:
    return (msg.election_id.high << 64) | msg.election_id.low if msg.HasField("election_id") else None


# --- the servicer ---------------------------------------------------------------------------

class P4RuntimeServicer:
    """P4Runtime over one Device: the RPCs' work on decoded requests, called from the worker
    threads (unary RPCs) or the event loop (stream messages); refusals raise P4Error."""

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

    def capabilities(self, request: pb.CapabilitiesRequest) -> pb.CapabilitiesResponse:
        return pb.CapabilitiesResponse(p4runtime_api_version=api_version())

    def set_pipeline(self, request: pb.SetForwardingPipelineConfigRequest):
        A = pb.SetForwardingPipelineConfigRequest
        self._check_device(request.device_id)
        self._check_primary(request)
        cfg = request.config
        if request.action == A.COMMIT:
            # P4Runtime spec, SetForwardingPipelineConfig: COMMIT realizes the saved config;
            # NOT_FOUND without one, INVALID_ARGUMENT if a config comes with it
            if request.HasField("config"):
                raise P4Error(code_pb2.INVALID_ARGUMENT, "COMMIT takes no config (it commits "
                                                         "the one VERIFY_AND_SAVE saved)")
            with self.device.lock:
                if self._saved is None:
                    raise P4Error(code_pb2.NOT_FOUND,
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
        try:  # the spec's answer for a config the target cannot realize: INVALID_ARGUMENT
            built = self.device.build(cfg.p4info, cfg.p4_device_config, cfg.cookie.cookie)
        except (ValueError, KeyError) as e:
            raise P4Error(code_pb2.INVALID_ARGUMENT, f"pipeline config refused: {e}") from None
        with self.device.lock:
            if request.action == A.VERIFY_AND_SAVE:
                self._saved = built
            elif request.action != A.VERIFY:
                self.device.install(built)
                self._saved = None
        return pb.SetForwardingPipelineConfigResponse()

    def get_pipeline(self, request: pb.GetForwardingPipelineConfigRequest):
        R = pb.GetForwardingPipelineConfigRequest
        self._check_device(request.device_id)
        p = self._pipeline()
        rep = pb.GetForwardingPipelineConfigResponse()
        rep.config.cookie.cookie = p.cookie
        if request.response_type in (R.ALL, R.P4INFO_AND_COOKIE):
            rep.config.p4info.CopyFrom(p.schema.p4info)
        if request.response_type in (R.ALL, R.DEVICE_CONFIG_AND_COOKIE):
            rep.config.p4_device_config = p.device_config
        return rep

    def write(self, request: pb.WriteRequest) -> pb.WriteResponse:
        self._check_device(request.device_id)
        self._check_primary(request)
        self._pipeline()
        if request.atomicity != pb.WriteRequest.CONTINUE_ON_ERROR:
            raise P4Error(code_pb2.UNIMPLEMENTED,
                          "only CONTINUE_ON_ERROR atomicity is supported by this target")
        results: list[tuple[int, str] | None] = []
        with self.device.lock:
            p = self.device.pipeline
            for update in request.updates:
                try:
                    self._apply(p, update)
                    results.append(None)
                except P4Error as e:
                    results.append((e.code, e.message))
        if any(r is not None for r in results):
            raise WriteFailed(results)
        return pb.WriteResponse()

    def read(self, request: pb.ReadRequest) -> list[Filler]:
        """What a Read returns, gathered under the device lock (one consistent snapshot).
        Any client may read, and a few bytes of wildcards can select every entry many times
        over: past MAX_READ_RESULTS entities the read is refused with RESOURCE_EXHAUSTED."""
        self._check_device(request.device_id)
        self._pipeline()
        found: list[Filler] = []
        with self.device.lock:
            p = self.device.pipeline
            for entity in request.entities:
                found.extend(islice(self._read(p, entity), MAX_READ_RESULTS + 1 - len(found)))
                if len(found) > MAX_READ_RESULTS:
                    raise P4Error(code_pb2.RESOURCE_EXHAUSTED,
                                  f"the read selects more than {MAX_READ_RESULTS} entities "
                                  "(this target's limit); read fewer at a time")
        return found

    # -- stream --

    def stream_message(self, stream: Stream, req: pb.StreamMessageRequest) -> bool:
        """Handle one StreamChannel message; False when it ends the stream (an arbitration
        error, queued for the client as the stream's status, P4Runtime spec 5.3)."""
        kind = req.WhichOneof("update")
        if kind == "arbitration":
            a = req.arbitration
            try:
                self._check_device(a.device_id)
                self.arbitration.update(stream, a.device_id, a.role.name, _election(a))
            except P4Error as e:
                stream.put(e)
                return False
        elif kind == "packet":
            self._packet_out(stream, req.packet)
        else:
            stream_error(stream, code_pb2.UNIMPLEMENTED,
                         f"stream message {kind!r} is not supported by this target")
        return True

    def _packet_out(self, stream: Stream, packet: pb.PacketOut) -> None:
        if stream.group is None or not self.arbitration.is_primary(*stream.group, stream.election):
            stream_error(stream, code_pb2.PERMISSION_DENIED,
                         "packet-out from a client that is not primary", packet)
            return
        p = self.device.pipeline
        handler = self.device.packet_out_handler
        if p is None or handler is None:
            stream_error(stream, code_pb2.FAILED_PRECONDITION,
                         NO_PIPELINE if p is None else "this device has no packet-out path",
                         packet)
            return
        try:
            frame = build_packet_out(p.schema.controller_headers.get("packet_out"), packet)
        except P4Error as e:
            stream_error(stream, e.code, e.message, packet)
            return
        try:
            handler(frame)
        except Exception as e:  # the stream must outlive a packet the device cannot take
            stream_error(stream, code_pb2.INTERNAL, f"packet-out failed: {e!r}", packet)

    def _packet_in(self, frame: bytes) -> None:
        """Device callback (data-plane thread): a frame the program sent to the CPU port."""
        p = self.device.pipeline
        if p is None:
            return
        header = p.schema.controller_headers.get("packet_in")
        if len(frame) < header_bytes(header):
            return  # cannot come from the program: it always emits the whole header
        msg = pb.StreamMessageResponse(packet=parse_packet_in(header, frame))
        for s in self.arbitration.primaries(self.device.device_id):
            if not s.put(msg, limit=PACKET_IN_BACKLOG):
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

    def _read(self, p: Pipeline, entity: pb.Entity) -> Iterator[Filler]:
        kind = entity.WhichOneof("entity")
        if kind == "table_entry":
            te = entity.table_entry
            with_counts = te.HasField("counter_data")
            return (partial(_fill_table_entry, t, e, _counts(e) if with_counts else None)
                    for t, e in self._selected(p, te, counted=False))
        if kind == "counter_entry":
            return self._read_counters(p, entity.counter_entry)
        if kind == "direct_counter_entry":
            return (partial(_fill_direct_counter, t, e, _counts(e))
                    for t, e in self._selected(p, entity.direct_counter_entry.table_entry,
                                               counted=True))
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

    def _read_counters(self, p: Pipeline, ce: pb.CounterEntry) -> Iterator[Filler]:
        counters = [self._counter(p, ce.counter_id)] if ce.counter_id else list(p.counters.values())
        return (partial(_fill_counter, c, i, *c.read(i))
                for c in counters for i in self._indexes(c, ce))


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


# --- gRPC: raw bytes in, decoded here; unary work on the pool, streams on the loop ---------

class _Rpcs:
    """The RPC handlers grpc.aio calls on the event loop."""

    def __init__(self, servicer: P4RuntimeServicer, pool: futures.Executor):
        self.servicer = servicer
        self._pool = pool
        self._undecodable = RateLimitedLog(log, LOG_BURST, LOG_WINDOW)
        self._open: dict[Stream, None] = {}  # open streams, oldest first

    def _decode(self, cls, raw: bytes):
        try:
            return cls.FromString(raw)
        except (DecodeError, RuntimeError, ValueError) as e:
            self._undecodable.warning("P4Runtime: a %d-byte %s does not decode: %s",
                                      len(raw), cls.DESCRIPTOR.name, e)
            raise P4Error(code_pb2.INVALID_ARGUMENT, "request bytes are not a valid "
                                                     f"{cls.DESCRIPTOR.full_name}: {e}") from None

    async def _run(self, context: grpc.aio.ServicerContext, work: Callable, *args):
        """`work(*args)` on the pool; a P4Error becomes the RPC's status."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, work, *args)
        except P4Error as e:
            await context.abort(_GRPC_CODE[e.code], e.message,
                                trailing_metadata=e.trailer if isinstance(e, WriteFailed) else ())

    def _decoded(self, cls, work: Callable, raw: bytes):
        return work(self._decode(cls, raw))

    async def Capabilities(self, raw: bytes, context):
        return await self._run(context, self._decoded, pb.CapabilitiesRequest,
                               self.servicer.capabilities, raw)

    async def SetForwardingPipelineConfig(self, raw: bytes, context):
        return await self._run(context, self._decoded, pb.SetForwardingPipelineConfigRequest,
                               self.servicer.set_pipeline, raw)

    async def GetForwardingPipelineConfig(self, raw: bytes, context):
        return await self._run(context, self._decoded, pb.GetForwardingPipelineConfigRequest,
                               self.servicer.get_pipeline, raw)

    async def Write(self, raw: bytes, context):
        return await self._run(context, self._decoded, pb.WriteRequest, self.servicer.write, raw)

    async def Read(self, raw: bytes, context) -> AsyncIterator[pb.ReadResponse]:
        found = await self._run(context, self._decoded, pb.ReadRequest, self.servicer.read, raw)
        for i in range(0, max(len(found), 1), READ_BATCH):
            yield await self._run(context, _read_response, found[i:i + READ_BATCH])

    @property
    def streams(self) -> int:
        return len(self._open)

    def _make_room(self) -> bool:
        """At MAX_STREAMS, end the oldest stream that never arbitrated (RESOURCE_EXHAUSTED), so
        that streams opened and left idle cannot lock a controller out; False if every open
        stream has arbitrated."""
        if len(self._open) < MAX_STREAMS:
            return True
        idle = next((s for s in self._open if s.group is None), None)
        if idle is None:
            return False
        del self._open[idle]
        idle.put(P4Error(code_pb2.RESOURCE_EXHAUSTED, f"{MAX_STREAMS} streams are open, the "
                         "most this target serves: this one, the oldest that never arbitrated, "
                         "makes room for a new one"))
        return True

    async def StreamChannel(self, requests: AsyncIterator[bytes], context):
        if not self._make_room():
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"{MAX_STREAMS} streams are open, the most this target serves")
        stream = Stream(asyncio.get_running_loop())
        self._open[stream] = None
        reader = asyncio.ensure_future(self._stream_reader(requests, stream))
        try:
            while True:
                item = await stream.get()
                if item is _CLOSE:
                    return
                if isinstance(item, P4Error):
                    await context.abort(_GRPC_CODE[item.code], item.message)
                yield item
        finally:
            self._open.pop(stream, None)
            reader.cancel()
            self.servicer.arbitration.remove(stream)

    async def _stream_reader(self, requests: AsyncIterator[bytes], stream: Stream) -> None:
        try:
            async for raw in requests:
                try:
                    req = self._decode(pb.StreamMessageRequest, raw)
                except P4Error as e:  # the stream outlives a message it cannot read
                    stream_error(stream, e.code, e.message, other=True)
                    continue
                if not self.servicer.stream_message(stream, req):
                    return
        except (grpc.RpcError, asyncio.InvalidStateError):
            pass  # the client went away
        finally:
            stream.put(_CLOSE)

    def handler(self) -> grpc.GenericRpcHandler:
        def out(msg) -> bytes:
            return msg.SerializeToString()
        unary = partial(grpc.unary_unary_rpc_method_handler, response_serializer=out)
        return grpc.method_handlers_generic_handler(SERVICE, {
            "Capabilities": unary(self.Capabilities),
            "SetForwardingPipelineConfig": unary(self.SetForwardingPipelineConfig),
            "GetForwardingPipelineConfig": unary(self.GetForwardingPipelineConfig),
            "Write": unary(self.Write),
            "Read": grpc.unary_stream_rpc_method_handler(self.Read, response_serializer=out),
            "StreamChannel": grpc.stream_stream_rpc_method_handler(self.StreamChannel,
                                                                   response_serializer=out),
        })


def _read_response(fillers: list[Filler]) -> pb.ReadResponse:
    rep = pb.ReadResponse()
    for fill in fillers:
        fill(rep.entities.add())
    return rep


class _Loop:
    """The one event loop, on its own daemon thread, that every server of the process uses."""

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def get(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="p4rt-loop", daemon=True).start()
                cls._loop = loop
            return cls._loop


class P4RuntimeServer:
    """A running P4Runtime server. `p4runtime` is its servicer (arbitration, packet-in drops);
    `stop(grace)` returns an event set once it has stopped."""

    def __init__(self, device: Device, address: str):
        self._loop = _Loop.get()
        self._pool = futures.ThreadPoolExecutor(WORKERS, thread_name_prefix="p4rt")
        self.p4runtime = P4RuntimeServicer(device)
        self._rpcs = _Rpcs(self.p4runtime, self._pool)
        try:
            self._server = asyncio.run_coroutine_threadsafe(self._start(address),
                                                            self._loop).result()
        except BaseException:
            self._pool.shutdown(wait=False)
            raise

    async def _start(self, address: str) -> grpc.aio.Server:
        server = grpc.aio.server(options=[("grpc.max_send_message_length", MAX_MESSAGE),
                                          ("grpc.max_receive_message_length", MAX_MESSAGE),
                                          ("grpc.so_reuseport", 0)])
        server.add_generic_rpc_handlers((self._rpcs.handler(),))
        try:
            bound = server.add_insecure_port(address)
        except RuntimeError as e:  # newer grpcio raises, older ones return 0
            raise OSError(f"P4Runtime server cannot listen on {address}: {e}") from None
        if bound == 0:
            raise OSError(f"P4Runtime server cannot listen on {address}")
        await server.start()
        return server

    @property
    def open_streams(self) -> int:
        """StreamChannels open now (at most MAX_STREAMS)."""
        return self._rpcs.streams

    def stop(self, grace: float | None = None) -> threading.Event:
        done = threading.Event()

        def stopped(_) -> None:
            self._pool.shutdown(wait=False)
            done.set()
        asyncio.run_coroutine_threadsafe(self._server.stop(grace), self._loop) \
            .add_done_callback(stopped)
        return done


def serve(device: Device, address: str = "127.0.0.1:9559") -> P4RuntimeServer:
    """Start a P4Runtime server for `device` on `address`; it runs while the returned handle is
    referenced (a gRPC server stops when it is garbage-collected). OSError if the address cannot
    be bound: SO_REUSEPORT is off so that a second target on the same port fails instead of
    silently sharing the clients with the first."""
    return P4RuntimeServer(device, address)

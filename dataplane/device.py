"""Device state of the embedded target: the pipeline config, its tables and counters.

A new pipeline is built completely aside and then swapped in with one assignment, so a packet
being processed on the data-plane thread sees either the old pipeline or the new one, never a
mix. Table writes from gRPC threads take `Device.lock`; lookups take no lock: they read dicts
with single `get` calls (atomic under the GIL), and the lists they iterate (LPM levels, the
priority-ordered scan) are rebuilt aside and swapped in, never edited in place.
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any, Callable, Mapping

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError
from p4.config.v1 import p4info_pb2

from p4mtcp.p4info import P4Schema

from . import flowcache
from .tables import CounterState, TableState

PIPELINE_MODULE = "p4mtcp.dataplane.pipeline"

# What this target can realize (docs/ARCHITECTURE.md, "Limits"). The P4Info comes from a client,
# so it is checked against these before anything is allocated for it.
MAX_TABLE_SIZE = 1 << 20      # entries of one table
MAX_COUNTER_SIZE = 1 << 20    # cells of one indexed counter (allocated when first used)
MAX_BITWIDTH = 2048           # bits of one match field, action parameter or controller metadata


def _p4_device_config_class():
    """PI's `p4.tmp.P4DeviceConfig` (p4lang/PI proto/p4/tmp/p4config.proto), which the p4runtime
    package does not ship: `bool reassign = 1; Extras extras = 2; bytes device_data = 3;` with
    `Extras { map<string, string> kv = 1; }`. Built in a private pool so it cannot clash."""
    f = descriptor_pb2.FileDescriptorProto(name="p4mtcp/p4config.proto", package="p4.tmp",
                                           syntax="proto3")
    msg = f.message_type.add(name="P4DeviceConfig")
    extras = msg.nested_type.add(name="Extras")
    entry = extras.nested_type.add(name="KvEntry")
    entry.options.map_entry = True
    F = descriptor_pb2.FieldDescriptorProto
    for num, name in ((1, "key"), (2, "value")):
        entry.field.add(name=name, number=num, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    extras.field.add(name="kv", number=1, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
                     type_name=".p4.tmp.P4DeviceConfig.Extras.KvEntry")
    msg.field.add(name="reassign", number=1, type=F.TYPE_BOOL, label=F.LABEL_OPTIONAL)
    msg.field.add(name="extras", number=2, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL,
                  type_name=".p4.tmp.P4DeviceConfig.Extras")
    msg.field.add(name="device_data", number=3, type=F.TYPE_BYTES, label=F.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return message_factory.MessageFactory(pool).GetPrototype(
        pool.FindMessageTypeByName("p4.tmp.P4DeviceConfig"))


P4DeviceConfig = _p4_device_config_class()


def unwrap_device_config(data: bytes) -> bytes:
    """The target's own config bytes: `device_data` when `data` is a PI P4DeviceConfig, else
    `data` as it came. BMv2 JSON or text cannot parse as that message (a '{' or a letter is not
    a valid field tag for it), so the two forms are told apart without a flag."""
    if not data:
        return data
    wrapped = P4DeviceConfig()
    try:
        wrapped.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError):
        return data
    if wrapped.UnknownFields() or not (wrapped.device_data or wrapped.HasField("extras")):
        return data
    return wrapped.device_data


@dataclass(frozen=True)
class Pipeline:
    """Everything one SetForwardingPipelineConfig installs; replaced whole, never edited."""

    schema: P4Schema
    device_config: bytes            # as the client sent it (returned by Get)
    device_data: bytes              # unwrapped from P4DeviceConfig when it was wrapped
    cookie: int
    tables: Mapping[str, TableState]
    counters: Mapping[str, CounterState]
    program: Any                    # NicPipeline (or an injected stand-in), None without one
    table_ids: Mapping[int, TableState]
    counter_ids: Mapping[int, CounterState]

    def with_config(self, device_config: bytes, cookie: int) -> "Pipeline":
        """The same program and state under a new device config and cookie (reconcile)."""
        return replace(self, device_config=device_config,
                       device_data=unwrap_device_config(device_config), cookie=cookie)


def check_limits(schema: P4Schema) -> None:
    """ValueError naming the first object this target cannot realize: a size that is not
    positive (a capacity of 0 or less holds nothing: a broken P4Info) or beyond the limits
    above, or a bitwidth outside 1..MAX_BITWIDTH."""
    sized = [("table", t.name, t.size, MAX_TABLE_SIZE) for t in schema.tables.values()]
    sized += [("counter", c.name, c.size, MAX_COUNTER_SIZE) for c in schema.counters.values()]
    for kind, name, size, limit in sized:
        if not 0 < size <= limit:
            raise ValueError(f"{kind} {name}: size {size} not in 1..{limit} (this target's limit)")
    widths = [(f"table {t.name}, field {f.name}", f.bitwidth)
              for t in schema.tables.values() for f in t.match_fields]
    widths += [(f"action {a.name}, parameter {p.name}", p.bitwidth)
               for a in schema.actions.values() for p in a.params]
    widths += [(f"controller header {h.name}, field {f.name}", f.bitwidth)
               for h in schema.controller_headers.values() for f in h.fields]
    for where, width in widths:
        if not 0 < width <= MAX_BITWIDTH:
            raise ValueError(f"{where}: bitwidth {width} not in 1..{MAX_BITWIDTH}")


def _load_mirror(module: ModuleType | None) -> ModuleType | None:
    if module is not None:
        return module
    try:
        return importlib.import_module(PIPELINE_MODULE)
    except ModuleNotFoundError as e:
        if e.name != PIPELINE_MODULE:
            raise
        return None


class Device:
    """One P4 device: the current pipeline, and process() for the ports."""

    def __init__(self, device_id: int = 1, cpu_port: int = 255,
                 pipeline_module: ModuleType | Any | None = None, flow_cache: bool = True):
        """`pipeline_module` supplies `validate(schema)` and `NicPipeline(tables, counters,
        cpu_port)`; by default `p4mtcp.dataplane.pipeline`, imported when a pipeline is set.
        `flow_cache`: put the compiled build's flow cache in front of the program when it is
        loaded (dataplane/flowcache.py)."""
        self.device_id = device_id
        self.cpu_port = cpu_port
        self.flow_cache = flow_cache
        self.lock = threading.RLock()
        self.pipeline: Pipeline | None = None
        self.packet_in_handler: Callable[[bytes], None] | None = None
        self.packet_out_handler: Callable[[bytes], None] | None = None
        self._module = pipeline_module

    @property
    def schema(self) -> P4Schema | None:
        p = self.pipeline
        return p.schema if p is not None else None

    def build(self, p4info: p4info_pb2.P4Info | P4Schema, device_config: bytes,
              cookie: int = 0) -> Pipeline:
        """A fresh pipeline for this P4Info, not yet installed; ValueError says what is wrong
        (an object the table engine or the Python mirror of the program does not implement)."""
        schema = p4info if isinstance(p4info, P4Schema) else P4Schema(p4info)
        check_limits(schema)
        mirror = _load_mirror(self._module)
        if mirror is not None:
            mirror.validate(schema)
        tables = {name: TableState(t, schema) for name, t in schema.tables.items()}
        counters = {name: CounterState(c) for name, c in schema.counters.items()}
        program = mirror.NicPipeline(tables, counters, cpu_port=self.cpu_port) if mirror else None
        if program is not None and self.flow_cache:
            program = flowcache.wrap(program, tables)
        return Pipeline(schema, device_config, unwrap_device_config(device_config), cookie,
                        tables, counters, program,
                        {t.table.id: t for t in tables.values()},
                        {c.counter.id: c for c in counters.values()})

    def install(self, pipeline: Pipeline) -> None:
        with self.lock:
            self.pipeline = pipeline

    def set_pipeline(self, p4info: p4info_pb2.P4Info | P4Schema, device_config: bytes,
                     cookie: int = 0) -> None:
        """Validate and install a new pipeline; all table and counter state starts empty."""
        self.install(self.build(p4info, device_config, cookie))

    def flow_cache_stats(self) -> dict[str, int] | None:
        """The flow cache's counters (hits, inserts, evictions, clears, entries), None when
        the program runs without one."""
        p = self.pipeline
        program = p.program if p is not None else None
        return program.stats() if isinstance(program, flowcache.CachedPipeline) else None

    def process(self, in_port: int, frame: bytes) -> list[tuple[int, bytes]]:
        """Run one frame through the pipeline: (egress port, frame) pairs. Frames for the CPU
        port go to `packet_in_handler` when one is set (the server's packet-in stream) and are
        returned like the others when none is."""
        p = self.pipeline
        if p is None or p.program is None:
            return []
        out = p.program.process(in_port, frame)
        handler = self.packet_in_handler
        if handler is None or not any(port == self.cpu_port for port, _ in out):
            return out
        rest = []
        for port, data in out:
            if port == self.cpu_port:
                handler(data)
            else:
                rest.append((port, data))
        return rest

    def process_batch(self, in_port: int, frames: list[bytes], out: dict[int, list[bytes]],
                      errors: list[tuple[int, Exception]]) -> None:
        """process() for a batch of frames from in_port in one call (the program loops, so a
        compiled program runs the whole batch without returning to Python): results appended
        to out[egress port] in order, frames the program raised on (a bug) in errors as (index,
        exception). CPU-port frames go to `packet_in_handler` as in process()."""
        p = self.pipeline
        if p is None or p.program is None:
            return
        p.program.process_batch(in_port, frames, out, errors)
        handler = self.packet_in_handler
        if handler is not None and self.cpu_port in out:
            for data in out.pop(self.cpu_port):
                handler(data)

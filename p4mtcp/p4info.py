"""One schema object over a P4Info: P4 objects are addressed by name, ids appear nowhere else.

Both sides of P4Runtime use it: the embedded target's server (to validate and decode requests)
and the control agent (to encode them), so the two can never disagree on an id or a width.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from p4.config.v1 import p4info_pb2

MATCH_TYPES = {
    p4info_pb2.MatchField.EXACT: "exact",
    p4info_pb2.MatchField.LPM: "lpm",
    p4info_pb2.MatchField.TERNARY: "ternary",
    p4info_pb2.MatchField.RANGE: "range",
    p4info_pb2.MatchField.OPTIONAL: "optional",
}


class SchemaError(KeyError):
    """A name or id that the P4Info does not define."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class BytestringError(ValueError):
    """A byte string that is empty or holds a value wider than its field: the P4Runtime spec
    (Bytestrings) has the server answer OUT_OF_RANGE for it."""


def encode_int(value: int, bitwidth: int) -> bytes:
    """Canonical P4Runtime byte string (P4Runtime spec 8.4): shortest big-endian form, >= 1 byte."""
    if value < 0 or value >> bitwidth:
        raise ValueError(f"value {value} does not fit in bit<{bitwidth}>")
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def decode_int(data: bytes, bitwidth: int) -> int:
    """Read a P4Runtime byte string; padded forms are accepted, values wider than the field are not
    (P4Runtime spec, Bytestrings: any length, but the value must fit the bitwidth; never empty)."""
    if not data:
        raise BytestringError("empty byte string")
    value = int.from_bytes(data, "big")
    if value >> bitwidth:
        shown = data.hex() if len(data) <= 32 else f"{data[:16].hex()}...({len(data)} bytes)"
        raise BytestringError(f"0x{shown} does not fit in bit<{bitwidth}>")
    return value


@dataclass(frozen=True)
class Param:
    id: int
    name: str
    bitwidth: int


@dataclass(frozen=True)
class MatchField:
    id: int
    name: str
    bitwidth: int
    match_type: str  # exact | lpm | ternary | range | optional


@dataclass(frozen=True)
class Action:
    id: int
    name: str
    params: tuple[Param, ...]

    def param(self, key: str | int) -> Param:
        for p in self.params:
            if key in (p.name, p.id):
                return p
        raise SchemaError(f"action {self.name} has no parameter {key!r}")


@dataclass(frozen=True)
class Table:
    id: int
    name: str
    match_fields: tuple[MatchField, ...]
    action_ids: tuple[int, ...]
    const_default_action_id: int
    size: int
    direct_counter_id: int
    # P4Runtime 9.1: @tableonly actions cannot be the default, @defaultonly ones cannot be in entries
    table_only_action_ids: tuple[int, ...] = ()
    default_only_action_ids: tuple[int, ...] = ()
    # the program's default action and its arguments (param id, value), when the P4Info states it
    initial_default: tuple[int, tuple[tuple[int, bytes], ...]] | None = None
    is_const: bool = False
    implementation_id: int = 0

    def field(self, key: str | int) -> MatchField:
        for f in self.match_fields:
            if key in (f.name, f.id):
                return f
        raise SchemaError(f"table {self.name} has no match field {key!r}")

    @property
    def needs_priority(self) -> bool:
        """P4Runtime 9.1: entries of tables with ternary, range or optional fields carry a priority."""
        return any(f.match_type in ("ternary", "range", "optional") for f in self.match_fields)


@dataclass(frozen=True)
class Counter:
    id: int
    name: str
    size: int
    unit: str  # bytes | packets | both
    table_id: int = 0  # for direct counters: the table they are attached to


@dataclass(frozen=True)
class ControllerHeader:
    id: int
    name: str
    fields: tuple[Param, ...]


def _unique_ids(owner: str, members) -> None:
    """Match fields, action parameters and controller metadata are addressed by id within their
    object (P4Runtime spec: P4Info, TableEntry match, packet I/O): a repeated or zero id would
    make them ambiguous."""
    seen: set[int] = set()
    for m in members:
        if m.id == 0 or m.id in seen:
            problem = "id 0" if m.id == 0 else f"a repeated id {m.id}"
            raise ValueError(f"{owner}: {m.name!r} has {problem}")
        seen.add(m.id)


class P4Schema:
    """Name and id index over one P4Info message; ValueError for ids that are 0 or not unique."""

    def __init__(self, p4info: p4info_pb2.P4Info):
        self.p4info = p4info
        self.tables: dict[str, Table] = {}
        self.actions: dict[str, Action] = {}
        self.counters: dict[str, Counter] = {}
        self.direct_counters: dict[str, Counter] = {}
        self.controller_headers: dict[str, ControllerHeader] = {}
        self._by_id: dict[int, object] = {}
        self._alias: dict[str, str] = {}
        for a in p4info.actions:
            self._add(self.actions, a.preamble, Action(
                a.preamble.id, a.preamble.name,
                tuple(Param(p.id, p.name, p.bitwidth) for p in a.params)))
        direct_counter_ids = {c.preamble.id for c in p4info.direct_counters}
        for t in p4info.tables:
            initial = None
            if t.HasField("initial_default_action"):
                call = t.initial_default_action
                initial = (call.action_id, tuple((a.param_id, a.value) for a in call.arguments))
            self._add(self.tables, t.preamble, Table(
                t.preamble.id, t.preamble.name,
                tuple(MatchField(f.id, f.name, f.bitwidth, MATCH_TYPES.get(f.match_type, "unspecified"))
                      for f in t.match_fields),
                tuple(r.id for r in t.action_refs), t.const_default_action_id, t.size,
                next((i for i in t.direct_resource_ids if i in direct_counter_ids), 0),
                tuple(r.id for r in t.action_refs if r.scope == p4info_pb2.ActionRef.TABLE_ONLY),
                tuple(r.id for r in t.action_refs if r.scope == p4info_pb2.ActionRef.DEFAULT_ONLY),
                initial, t.is_const_table, t.implementation_id))
        units = {0: "unspecified", 1: "bytes", 2: "packets", 3: "both"}
        for c in p4info.counters:
            self._add(self.counters, c.preamble, Counter(
                c.preamble.id, c.preamble.name, c.size, units[c.spec.unit]))
        for c in p4info.direct_counters:
            self._add(self.direct_counters, c.preamble, Counter(
                c.preamble.id, c.preamble.name, 0, units[c.spec.unit], c.direct_table_id))
        for h in p4info.controller_packet_metadata:
            self._add(self.controller_headers, h.preamble, ControllerHeader(
                h.preamble.id, h.preamble.name,
                tuple(Param(m.id, m.name, m.bitwidth) for m in h.metadata)))

    def _add(self, index: dict, preamble, obj) -> None:
        # P4Runtime spec (P4Info; Default-valued Fields): every object has a non-zero id, unique
        # in the P4Info; requests address objects by id, so a duplicate would be unreachable
        if preamble.id == 0:
            raise ValueError(f"P4Info object {preamble.name!r} has id 0")
        if preamble.id in self._by_id:
            raise ValueError(f"P4Info id {preamble.id:#x} is used by both "
                             f"{self._by_id[preamble.id].name!r} and {preamble.name!r}")
        if preamble.name in index:
            raise ValueError(f"P4Info has two objects named {preamble.name!r}")
        _unique_ids(preamble.name, getattr(obj, "params", None) or getattr(obj, "fields", None)
                    or getattr(obj, "match_fields", ()))
        index[preamble.name] = obj
        self._by_id[preamble.id] = obj
        if preamble.alias and preamble.alias != preamble.name:
            self._alias.setdefault(preamble.alias, preamble.name)

    @classmethod
    def from_file(cls, path: str | Path) -> "P4Schema":
        p4info = p4info_pb2.P4Info()
        try:
            text_format.Parse(Path(path).read_text(), p4info)
        except text_format.ParseError as e:
            raise ValueError(f"{path}: not a P4Info text file: {e}") from None
        return cls(p4info)

    def _get(self, index: dict, kind: str, name: str):
        obj = index.get(name) or index.get(self._alias.get(name, ""))
        if obj is None:
            raise SchemaError(f"P4Info has no {kind} named {name!r}")
        return obj

    def table(self, name: str) -> Table:
        return self._get(self.tables, "table", name)

    def action(self, name: str) -> Action:
        return self._get(self.actions, "action", name)

    def counter(self, name: str) -> Counter:
        return self._get(self.counters, "counter", name)

    def direct_counter(self, name: str) -> Counter:
        return self._get(self.direct_counters, "direct counter", name)

    def controller_header(self, name: str) -> ControllerHeader:
        return self._get(self.controller_headers, "controller header", name)

    def by_id(self, id_: int):
        """The Table, Action, Counter or ControllerHeader with this id, or None."""
        return self._by_id.get(id_)

"""Match-action tables and counter arrays of the embedded target, built from the P4Info.

The data plane calls `TableState.lookup` once per packet per table, so each table picks its
cheapest search when it is built: an all-exact table is one dict lookup, a table with one LPM
field (the others exact) is one dict per prefix length tried longest first, and a table with
ternary, range or optional fields scans its entries in priority order with the whole key packed
into one integer. The control-plane side (`decode_match`, `decode_action`, `insert`, ...)
validates and canonicalises P4Runtime input (P4Runtime spec 9.1) and raises `P4Error` with the
canonical error code the server must return.
"""

from __future__ import annotations

from typing import Callable, Final, Iterable, Sequence

from google.rpc import code_pb2
from p4.v1 import p4runtime_pb2

from p4mtcp.p4info import (Action, BytestringError, Counter, MatchField, P4Schema, SchemaError,
                           Table, decode_int, encode_int)

# A canonical match key holds one item per match field, in P4Info order:
#   exact: value | lpm: (value, prefix_len) | ternary: (value, mask) | range: (low, high)
#   optional: value, or None when the field is a don't-care.
# Don't-care lpm/ternary/range fields are (0, 0), (0, 0) and (0, 2**bitwidth - 1).
Key = tuple
Params = tuple[int, ...]
# How a table searches (TableState._kind).
_EXACT: Final = 0
_LPM: Final = 1
_SCAN: Final = 2


class P4Error(Exception):
    """A request the target refuses: the google.rpc canonical code and a message saying why."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _invalid(message: str) -> P4Error:
    return P4Error(code_pb2.INVALID_ARGUMENT, message)


def _decode(data: bytes, bitwidth: int, where: str) -> int:
    try:
        return decode_int(data, bitwidth)
    except BytestringError as e:  # P4Runtime spec, Bytestrings: empty or too wide is OUT_OF_RANGE
        raise P4Error(code_pb2.OUT_OF_RANGE, f"{where}: {e}") from None


def _full(bitwidth: int) -> int:
    return (1 << bitwidth) - 1


def _prefix_mask(prefix_len: int, bitwidth: int) -> int:
    return _full(prefix_len) << (bitwidth - prefix_len)


# --- match keys: P4Runtime FieldMatch <-> canonical key (P4Runtime spec 9.1.1) ---------------

def _decode_field(fm: p4runtime_pb2.FieldMatch | None, f: MatchField, where: str):
    kind = f.match_type
    if fm is None:
        if kind == "exact":  # 9.1.1: exact fields can never be omitted
            raise _invalid(f"{where}: exact match field is missing")
        return {"lpm": (0, 0), "ternary": (0, 0), "range": (0, _full(f.bitwidth)),
                "optional": None}[kind]
    given = fm.WhichOneof("field_match_type")
    if given != kind:
        raise _invalid(f"{where}: field is {kind}, request has a {given or 'empty'} match")
    if kind == "exact":
        return _decode(fm.exact.value, f.bitwidth, where)
    if kind == "lpm":
        plen = fm.lpm.prefix_len
        if plen <= 0 or plen > f.bitwidth:
            # 9.1.1: a prefix length of 0 is a don't-care and must be omitted instead
            raise _invalid(f"{where}: prefix length {plen} not in 1..{f.bitwidth}"
                           + (" (omit a don't-care field)" if plen == 0 else ""))
        value = _decode(fm.lpm.value, f.bitwidth, where)
        if value & ~_prefix_mask(plen, f.bitwidth):
            raise _invalid(f"{where}: LPM value has bits set beyond the /{plen} prefix")
        return (value, plen)
    if kind == "ternary":
        value = _decode(fm.ternary.value, f.bitwidth, where)
        mask = _decode(fm.ternary.mask, f.bitwidth, where + " mask")
        if mask == 0:
            raise _invalid(f"{where}: ternary mask is 0 (omit a don't-care field)")
        if value & ~mask:
            raise _invalid(f"{where}: ternary value has bits set outside the mask")
        return (value, mask)
    if kind == "range":
        low = _decode(fm.range.low, f.bitwidth, where + " low")
        high = _decode(fm.range.high, f.bitwidth, where + " high")
        if low > high:
            raise _invalid(f"{where}: range low {low} > high {high}")
        if low == 0 and high == _full(f.bitwidth):
            raise _invalid(f"{where}: range covers every value (omit a don't-care field)")
        return (low, high)
    return _decode(fm.optional.value, f.bitwidth, where)  # optional


def decode_match(table: Table, match: Iterable[p4runtime_pb2.FieldMatch]) -> Key:
    """Canonical key of a P4Runtime match; INVALID_ARGUMENT naming the table and field."""
    given: dict[int, p4runtime_pb2.FieldMatch] = {}
    for fm in match:
        try:
            f = table.field(fm.field_id)
        except SchemaError:
            raise _invalid(f"table {table.name}: no match field with id {fm.field_id}") from None
        if f.id in given:
            raise _invalid(f"table {table.name}, field {f.name}: given more than once")
        given[f.id] = fm
    return tuple(_decode_field(given.get(f.id), f, f"table {table.name}, field {f.name}")
                 for f in table.match_fields)


def _is_dont_care(item, f: MatchField) -> bool:
    kind = f.match_type
    if kind in ("lpm", "ternary"):
        return item[1] == 0
    if kind == "range":
        return item == (0, _full(f.bitwidth))
    return kind == "optional" and item is None


def encode_match(table: Table, key: Key, into) -> None:
    """Append the P4Runtime match of a canonical key to `into` (a repeated FieldMatch field):
    canonical byte strings, don't-care fields omitted. Filled in place: copying protobuf
    messages is what costs most when a read returns many entries."""
    for f, item in zip(table.match_fields, key):
        if _is_dont_care(item, f):
            continue
        fm = into.add(field_id=f.id)
        w = f.bitwidth
        if f.match_type == "exact":
            fm.exact.value = encode_int(item, w)
        elif f.match_type == "lpm":
            fm.lpm.value, fm.lpm.prefix_len = encode_int(item[0], w), item[1]
        elif f.match_type == "ternary":
            fm.ternary.value, fm.ternary.mask = encode_int(item[0], w), encode_int(item[1], w)
        elif f.match_type == "range":
            fm.range.low, fm.range.high = encode_int(item[0], w), encode_int(item[1], w)
        else:
            fm.optional.value = encode_int(item, w)


# --- actions ---------------------------------------------------------------------------------

def decode_params(action: Action, given: Iterable[tuple[int, bytes]], where: str) -> Params:
    """Parameter values in P4Info order from (param id, byte string) pairs; each exactly once."""
    values: dict[int, int] = {}
    for pid, data in given:
        try:
            p = action.param(pid)
        except SchemaError:
            raise _invalid(f"{where}: action {action.name} has no parameter with id {pid}") from None
        if p.id in values:
            raise _invalid(f"{where}: parameter {p.name} of {action.name} given more than once")
        values[p.id] = _decode(data, p.bitwidth, f"{where}, parameter {p.name} of {action.name}")
    missing = [p.name for p in action.params if p.id not in values]
    if missing:
        raise _invalid(f"{where}: action {action.name} is missing parameter(s) {', '.join(missing)}")
    return tuple(values[p.id] for p in action.params)


def decode_action(schema: P4Schema, table: Table, action: p4runtime_pb2.Action,
                  *, default: bool) -> tuple[Action, Params]:
    """The table's action and its parameters; INVALID_ARGUMENT if it may not be used there."""
    where = f"table {table.name}"
    if action.action_id not in table.action_ids:
        raise _invalid(f"{where}: action id {action.action_id} is not an action of this table")
    act: Action = schema.by_id(action.action_id)
    # P4Runtime 9.1: @defaultonly actions only as the default, @tableonly never as the default
    if default and act.id in table.table_only_action_ids:
        raise _invalid(f"{where}: action {act.name} is @tableonly and cannot be the default")
    if not default and act.id in table.default_only_action_ids:
        raise _invalid(f"{where}: action {act.name} is @defaultonly and cannot be in an entry")
    return act, decode_params(act, ((p.param_id, p.value) for p in action.params), where)


def encode_action(action: Action, params: Params, into: p4runtime_pb2.Action) -> None:
    """Fill `into` with the action and its parameters as canonical byte strings."""
    into.action_id = action.id
    for p, v in zip(action.params, params):
        into.params.add(param_id=p.id, value=encode_int(v, p.bitwidth))


# --- tables ----------------------------------------------------------------------------------

class Entry:
    """One installed entry (or the default entry, whose key is None)."""

    __slots__ = ("key", "priority", "action", "params", "result", "counts", "metadata")

    def __init__(self, key: Key | None, priority: int, action: Action, params: Params,
                 counts: list[int] | None, metadata: bytes = b""):
        self.key = key
        self.priority = priority
        self.action = action
        self.params = params
        self.result = (action.name, params)
        self.counts = counts  # [packets, bytes] when the table has a direct counter
        self.metadata = metadata


class TableState:
    """Entries, default entry and direct counter of one table, with the lookup the data plane uses."""

    def __init__(self, table: Table, schema: P4Schema):
        self.table = table
        self.name = table.name
        self.schema = schema
        self.has_counter = bool(table.direct_counter_id)
        for f in table.match_fields:
            if f.match_type not in ("exact", "lpm", "ternary", "range", "optional") or f.bitwidth <= 0:
                raise ValueError(f"table {table.name}: field {f.name} has an unsupported match "
                                 f"kind {f.match_type!r} or width {f.bitwidth}")
        if table.implementation_id:
            raise ValueError(f"table {table.name}: action profiles/selectors are not supported")
        for action_id in table.action_ids:
            if not isinstance(schema.by_id(action_id), Action):
                raise ValueError(f"table {table.name}: action id {action_id} is not in the P4Info")
        self._entries: dict[tuple[Key, int], Entry] = {}
        self.on_write: Callable[[], None] | None = None
        """Called after every change of what a lookup answers (entries, the default action)."""
        self._widths = tuple(f.bitwidth for f in table.match_fields)
        kinds = [f.match_type for f in table.match_fields]
        self._initial = self._initial_default()
        self._default = self._initial
        # Every index exists whatever the kind (one attribute layout); lookup reads its kind's.
        self._exact: dict[Key, Entry] = {}
        self._lpm_pos = kinds.index("lpm") if "lpm" in kinds else 0
        self._lpm_width = self._widths[self._lpm_pos] if kinds else 0
        self._lpm_index: dict[int, dict[Key, Entry]] = {}
        self._lpm_levels: list[tuple[int, dict[Key, Entry]]] = []
        self._scan: list[tuple[int, int, tuple[tuple[int, int, int], ...], Entry]] = []
        if all(k == "exact" for k in kinds):
            self._kind = _EXACT
        elif kinds.count("lpm") == 1 and all(k in ("exact", "lpm") for k in kinds):
            self._kind = _LPM
        else:
            self._kind = _SCAN

    def _initial_default(self) -> Entry:
        """The program's default action: stated in the P4Info, else the const one, else NoAction."""
        t = self.table
        counts = [0, 0] if self.has_counter else None
        if t.initial_default is not None:
            action_id, args = t.initial_default
            act = self.schema.by_id(action_id)
            if not isinstance(act, Action):
                raise ValueError(f"table {t.name}: initial default action id {action_id} unknown")
            try:
                params = decode_params(act, args, f"table {t.name} initial default")
            except P4Error as e:
                raise ValueError(e.message) from None
            return Entry(None, 0, act, params, counts)
        if t.const_default_action_id:
            act = self.schema.by_id(t.const_default_action_id)
            return Entry(None, 0, act, (0,) * len(act.params), counts)
        noaction = next((a for a in map(self.schema.by_id, t.action_ids)
                         if isinstance(a, Action) and a.name.rsplit(".", 1)[-1] == "NoAction"),
                        Action(0, "NoAction", ()))
        return Entry(None, 0, noaction, (), counts)

    # -- data plane ------------------------------------------------------------------------

    def lookup(self, key: tuple[int, ...], nbytes: int) -> tuple[str, Params]:
        """Matching entry's (action full name, params in P4Info order) or the default action's.
        Counts a hit in the table's direct counter if it has one; a miss is not counted, as on
        BMv2, which updates direct counters only `if (hit)`."""
        e = self.find(key)
        if e is None:
            return self._default.result
        c = e.counts
        if c is not None:
            c[0] += 1
            c[1] += nbytes
        return e.result

    def find(self, key: tuple[int, ...]) -> Entry | None:
        """The entry `key` matches, or None for the default action; counts nothing."""
        kind = self._kind
        if kind == _EXACT:
            return self._exact.get(key)
        if kind == _LPM:
            return self._match_lpm(key)
        return self._match_scan(key)

    def _match_lpm(self, key: tuple[int, ...]) -> Entry | None:
        i = self._lpm_pos
        head, value, tail = key[:i], key[i], key[i + 1:]
        for mask, index in self._lpm_levels:  # longest prefix first
            e = index.get(head + (value & mask,) + tail)
            if e is not None:
                return e
        return None

    def _match_scan(self, key: tuple[int, ...]) -> Entry | None:
        packed = 0
        for v, w in zip(key, self._widths):
            packed = (packed << w) | v
        for value, mask, ranges, e in self._scan:  # highest priority first
            if packed & mask == value and all(lo <= key[j] <= hi for j, lo, hi in ranges):
                return e
        return None

    # -- control plane (callers hold the device's write lock) ------------------------------

    def check_priority(self, priority: int) -> None:
        """P4Runtime 9.1: ternary/range/optional tables need priority > 0, the others 0."""
        if self.table.needs_priority:
            if priority <= 0:
                raise _invalid(f"table {self.name}: entries need a priority > 0 "
                               "(the table has ternary, range or optional fields)")
        elif priority != 0:
            raise _invalid(f"table {self.name}: priority must be 0 (exact/LPM-only table), "
                           f"got {priority}")

    def get(self, key: Key, priority: int) -> Entry | None:
        return self._entries.get((key, priority))

    def entries(self) -> list[Entry]:
        return list(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def default(self) -> Entry:
        return self._default

    def insert(self, key: Key, priority: int, action: Action, params: Params,
               metadata: bytes = b"", counts: Sequence[int] | None = None) -> None:
        self.check_priority(priority)
        if (key, priority) in self._entries:
            raise P4Error(code_pb2.ALREADY_EXISTS, f"table {self.name}: entry already exists")
        if self.table.size and len(self._entries) >= self.table.size:
            raise P4Error(code_pb2.RESOURCE_EXHAUSTED,
                          f"table {self.name} is full ({self.table.size} entries)")
        c = (list(counts) if counts is not None else [0, 0]) if self.has_counter else None
        self._store(Entry(key, priority, action, params, c, metadata))
        self._written()

    def modify(self, key: Key, priority: int, action: Action, params: Params,
               metadata: bytes = b"", counts: Sequence[int] | None = None) -> None:
        self.check_priority(priority)
        old = self._entries.get((key, priority))
        if old is None:
            raise P4Error(code_pb2.NOT_FOUND, f"table {self.name}: no such entry to modify")
        c = old.counts
        if c is not None and counts is not None:
            c[0], c[1] = counts
        self._store(Entry(key, priority, action, params, c, metadata))
        self._written()

    def delete(self, key: Key, priority: int) -> None:
        self.check_priority(priority)
        e = self._entries.pop((key, priority), None)
        if e is None:
            raise P4Error(code_pb2.NOT_FOUND, f"table {self.name}: no such entry to delete")
        self._unindex(e)
        self._written()

    def set_default(self, action: Action | None, params: Params = (),
                    counts: Sequence[int] | None = None) -> None:
        """MODIFY of the default entry; action None restores the program's default."""
        t = self.table
        if t.const_default_action_id:  # P4Runtime 9.1.4: a const default action cannot change
            raise P4Error(code_pb2.PERMISSION_DENIED,
                          f"table {self.name}: the default action is const")
        c = self._default.counts
        if c is not None and counts is not None:
            c[0], c[1] = counts
        if action is None:
            action, params = self._initial.action, self._initial.params
        self._default = Entry(None, 0, action, params, c)
        self._written()

    def _written(self) -> None:
        notify = self.on_write
        if notify is not None:
            notify()

    def _store(self, e: Entry) -> None:
        key = e.key
        assert key is not None  # only the default entry has none, and it is never stored
        self._entries[(key, e.priority)] = e
        if self._kind == _EXACT:
            self._exact[key] = e
        elif self._kind == _LPM:
            plen = key[self._lpm_pos][1]
            level = self._lpm_index.get(plen)
            if level is None:
                level = self._lpm_index[plen] = {}
                self._relevel()
            level[self._lpm_key(key)] = e
        else:
            self._rescan()

    def _unindex(self, e: Entry) -> None:
        key = e.key
        assert key is not None
        if self._kind == _EXACT:
            del self._exact[key]
        elif self._kind == _LPM:
            plen = key[self._lpm_pos][1]
            level = self._lpm_index[plen]
            del level[self._lpm_key(key)]
            if not level:
                del self._lpm_index[plen]
                self._relevel()
        else:
            self._rescan()

    def _lpm_key(self, key: Key) -> Key:
        i = self._lpm_pos
        return key[:i] + (key[i][0],) + key[i + 1:]

    def _relevel(self) -> None:
        # rebuilt and swapped in whole so that a concurrent lookup never sees a half-made list
        self._lpm_levels = [(_prefix_mask(plen, self._lpm_width), self._lpm_index[plen])
                            for plen in sorted(self._lpm_index, reverse=True)]

    def _rescan(self) -> None:
        compiled: list[tuple[int, int, tuple[tuple[int, int, int], ...], Entry]] = []
        for e in sorted(self._entries.values(), key=lambda e: -e.priority):  # stable: FIFO ties
            value = mask = 0
            ranges: list[tuple[int, int, int]] = []
            for j, (f, item) in enumerate(zip(self.table.match_fields, e.key or ())):
                w, kind = f.bitwidth, f.match_type
                if kind == "exact":
                    v, m = item, _full(w)
                elif kind == "lpm":
                    v, m = item[0], _prefix_mask(item[1], w)
                elif kind == "ternary":
                    v, m = item
                elif kind == "optional":
                    v, m = (0, 0) if item is None else (item, _full(w))
                else:
                    v = m = 0
                    if item != (0, _full(w)):
                        ranges.append((j, item[0], item[1]))
                value, mask = (value << w) | v, (mask << w) | m
            compiled.append((value, mask, tuple(ranges), e))
        self._scan = compiled

    def reset_counters(self) -> None:
        for e in [*self._entries.values(), self._default]:
            if e.counts is not None:
                e.counts[0] = e.counts[1] = 0


class CounterState:
    """An indexed counter array (packets and bytes); like BMv2, out-of-range indexes are ignored.

    Cells exist only once counted or written, so a declared size costs nothing until used (the
    size comes from a client's P4Info). Control-plane writes change a cell in place, so the
    data plane never increments a cell that was replaced under it."""

    def __init__(self, counter: Counter):
        self.counter = counter
        self.name = counter.name
        self.size = counter.size
        self._cells: dict[int, _Cell] = {}

    def count(self, index: int, nbytes: int) -> None:
        if 0 <= index < self.size:
            c = self._cells.get(index)
            if c is None:
                c = self._cells.setdefault(index, _Cell())
            c.packets += 1
            c.bytes += nbytes

    def cell(self, index: int) -> _Cell | None:
        """The cell count(index, ...) adds to (None when out of range, as count ignores it),
        for a caller that adds many frames at once (the flow cache)."""
        if not 0 <= index < self.size:
            return None
        c = self._cells.get(index)
        return c if c is not None else self._cells.setdefault(index, _Cell())

    def read(self, index: int) -> tuple[int, int]:
        c = self._cells.get(index)
        return (c.packets, c.bytes) if c is not None else (0, 0)

    def write(self, index: int, packets: int, nbytes: int) -> None:
        c = self._cells.setdefault(index, _Cell())
        c.packets, c.bytes = packets, nbytes


class _Cell:
    """One counter cell; typed attributes, so a compiled build adds to them in place."""

    __slots__ = ("packets", "bytes")

    def __init__(self) -> None:
        self.packets = 0
        self.bytes = 0

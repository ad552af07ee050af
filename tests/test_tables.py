"""The embedded target's table engine: match kinds, priorities, defaults, counters, validation.

FIXTURE_P4INFO has one table per match kind; the P4Runtime server tests reuse it.
"""

from __future__ import annotations

import threading
import tracemalloc

import pytest
from google.protobuf import text_format
from google.rpc import code_pb2
from p4.config.v1 import p4info_pb2
from p4.v1 import p4runtime_pb2 as pb

from p4mtcp.dataplane.tables import (CounterState, P4Error, TableState, decode_action,
                                     decode_match, encode_match)
from p4mtcp.p4info import Counter, P4Schema

FIXTURE_P4INFO = """
tables {
  preamble { id: 1001 name: "Ing.t_exact" alias: "t_exact" }
  match_fields { id: 1 name: "hdr.port" bitwidth: 9 match_type: EXACT }
  match_fields { id: 2 name: "hdr.tag" bitwidth: 32 match_type: EXACT }
  action_refs { id: 2001 }
  action_refs { id: 2002 scope: DEFAULT_ONLY annotations: "@defaultonly" }
  action_refs { id: 2004 scope: TABLE_ONLY annotations: "@tableonly" }
  initial_default_action { action_id: 2002 }
  direct_resource_ids: 4001
  size: 4
}
tables {
  preamble { id: 1002 name: "Ing.t_lpm" alias: "t_lpm" }
  match_fields { id: 1 name: "hdr.dst" bitwidth: 32 match_type: LPM }
  action_refs { id: 2003 }
  action_refs { id: 2002 }
  initial_default_action { action_id: 2002 }
  size: 1024
}
tables {
  preamble { id: 1003 name: "Ing.t_ternary" alias: "t_ternary" }
  match_fields { id: 1 name: "hdr.flags" bitwidth: 16 match_type: TERNARY }
  match_fields { id: 2 name: "hdr.proto" bitwidth: 8 match_type: EXACT }
  action_refs { id: 2001 }
  action_refs { id: 2005 }
  size: 1024
}
tables {
  preamble { id: 1004 name: "Ing.t_range" alias: "t_range" }
  match_fields { id: 1 name: "hdr.l4_port" bitwidth: 16 match_type: RANGE }
  action_refs { id: 2001 }
  action_refs { id: 2002 }
  initial_default_action { action_id: 2001 arguments { param_id: 1 value: "\\x00\\x07" } }
  size: 1024
}
tables {
  preamble { id: 1005 name: "Ing.t_optional" alias: "t_optional" }
  match_fields { id: 1 name: "hdr.vlan" bitwidth: 12 match_type: OPTIONAL }
  match_fields { id: 2 name: "hdr.dst" bitwidth: 32 match_type: LPM }
  action_refs { id: 2001 }
  action_refs { id: 2002 }
  size: 1024
}
tables {
  preamble { id: 1006 name: "Ing.t_const" alias: "t_const" }
  match_fields { id: 1 name: "hdr.port" bitwidth: 9 match_type: EXACT }
  action_refs { id: 2001 }
  action_refs { id: 2002 }
  const_default_action_id: 2002
  size: 16
}
actions { preamble { id: 2001 name: "Ing.set_port" alias: "set_port" }
          params { id: 1 name: "port" bitwidth: 9 } }
actions { preamble { id: 2002 name: "Ing.drop" alias: "drop" } }
actions { preamble { id: 2003 name: "Ing.set_next_hop" alias: "set_next_hop" }
          params { id: 1 name: "next_hop" bitwidth: 32 }
          params { id: 2 name: "port" bitwidth: 9 } }
actions { preamble { id: 2004 name: "Ing.to_cpu" alias: "to_cpu" } }
actions { preamble { id: 2005 name: "NoAction" alias: "NoAction" } }
counters { preamble { id: 3001 name: "Ing.rx" alias: "rx" } spec { unit: BOTH } size: 8 }
counters { preamble { id: 3002 name: "Ing.rx_bytes" alias: "rx_bytes" } spec { unit: BYTES } size: 4 }
direct_counters { preamble { id: 4001 name: "Ing.t_exact_hits" alias: "t_exact_hits" }
                  spec { unit: BOTH } direct_table_id: 1001 }
controller_packet_metadata {
  preamble { id: 5001 name: "packet_in" }
  metadata { id: 1 name: "ingress_port" bitwidth: 9 }
  metadata { id: 2 name: "_pad" bitwidth: 7 }
  metadata { id: 3 name: "reason" bitwidth: 8 }
}
controller_packet_metadata {
  preamble { id: 5002 name: "packet_out" }
  metadata { id: 1 name: "egress_port" bitwidth: 9 }
  metadata { id: 2 name: "_pad" bitwidth: 7 }
}
"""


def fixture_schema() -> P4Schema:
    return P4Schema(text_format.Parse(FIXTURE_P4INFO, p4info_pb2.P4Info()))


@pytest.fixture
def schema() -> P4Schema:
    return fixture_schema()


def table(schema: P4Schema, name: str) -> TableState:
    return TableState(schema.table(name), schema)


def fm_exact(fid: int, value: bytes) -> pb.FieldMatch:
    return pb.FieldMatch(field_id=fid, exact=pb.FieldMatch.Exact(value=value))


def fm_lpm(fid: int, value: bytes, plen: int) -> pb.FieldMatch:
    return pb.FieldMatch(field_id=fid, lpm=pb.FieldMatch.LPM(value=value, prefix_len=plen))


def fm_ternary(fid: int, value: bytes, mask: bytes) -> pb.FieldMatch:
    return pb.FieldMatch(field_id=fid, ternary=pb.FieldMatch.Ternary(value=value, mask=mask))


def fm_range(fid: int, low: bytes, high: bytes) -> pb.FieldMatch:
    return pb.FieldMatch(field_id=fid, range=pb.FieldMatch.Range(low=low, high=high))


def refused(code: int, fn, *args, **kw) -> str:
    with pytest.raises(P4Error) as e:
        fn(*args, **kw)
    assert e.value.code == code
    return e.value.message


def invalid(fn, *args, **kw) -> str:
    return refused(code_pb2.INVALID_ARGUMENT, fn, *args, **kw)


# --- lookups -----------------------------------------------------------------------------------

def test_exact_hit_miss_and_direct_counter(schema):
    t = table(schema, "Ing.t_exact")
    set_port = schema.action("Ing.set_port")
    t.insert((3, 0x0A000001), 0, set_port, (7,))
    assert t.lookup((3, 0x0A000001), 100) == ("Ing.set_port", (7,))
    assert t.lookup((3, 0x0A000002), 60) == ("Ing.drop", ())  # the P4Info's initial default
    assert t.lookup((3, 0x0A000001), 40) == ("Ing.set_port", (7,))
    assert t.get((3, 0x0A000001), 0).counts == [2, 140]
    assert t.default.counts == [0, 0]  # as on BMv2: a miss (default action) is not counted
    t.modify((3, 0x0A000001), 0, set_port, (9,))
    assert t.lookup((3, 0x0A000001), 10) == ("Ing.set_port", (9,))
    assert t.get((3, 0x0A000001), 0).counts == [3, 150]  # MODIFY keeps the counter
    t.delete((3, 0x0A000001), 0)
    assert t.lookup((3, 0x0A000001), 10) == ("Ing.drop", ())
    assert len(t) == 0


def test_lpm_longest_prefix_wins(schema):
    t = table(schema, "Ing.t_lpm")
    nh = schema.action("Ing.set_next_hop")
    t.insert(((0x0A000000, 8),), 0, nh, (1, 1))
    t.insert(((0x0A010000, 16),), 0, nh, (2, 2))
    t.insert(((0x0A010200, 24),), 0, nh, (3, 3))
    t.insert(((0x0A010203, 32),), 0, nh, (4, 4))
    assert t.lookup((0x0A010203,), 1)[1] == (4, 4)
    assert t.lookup((0x0A010204,), 1)[1] == (3, 3)
    assert t.lookup((0x0A01FF01,), 1)[1] == (2, 2)
    assert t.lookup((0x0AFF0001,), 1)[1] == (1, 1)
    assert t.lookup((0x0B000001,), 1) == ("Ing.drop", ())
    t.delete(((0x0A010200, 24),), 0)
    assert t.lookup((0x0A010204,), 1)[1] == (2, 2)


def test_ternary_higher_priority_wins(schema):
    t = table(schema, "Ing.t_ternary")
    sp = schema.action("Ing.set_port")
    t.insert(((0x0002, 0x0002), 6), 10, sp, (1,))
    t.insert(((0x0012, 0x0012), 6), 20, sp, (2,))
    t.insert(((0, 0), 6), 1, sp, (3,))  # flags don't-care
    assert t.lookup((0x0012, 6), 1) == ("Ing.set_port", (2,))
    assert t.lookup((0x0002, 6), 1) == ("Ing.set_port", (1,))
    assert t.lookup((0x0100, 6), 1) == ("Ing.set_port", (3,))
    assert t.lookup((0x0012, 17), 1) == ("NoAction", ())  # no P4Info default: NoAction
    # same match, another priority: a distinct entry (P4Runtime 9.1)
    t.insert(((0x0012, 0x0012), 6), 30, sp, (4,))
    assert t.lookup((0x0012, 6), 1) == ("Ing.set_port", (4,))


def test_range_and_initial_default_with_arguments(schema):
    t = table(schema, "Ing.t_range")
    sp = schema.action("Ing.set_port")
    t.insert(((1000, 2000),), 5, sp, (1,))
    t.insert(((1500, 1600),), 9, sp, (2,))
    assert t.lookup((1000,), 0)[1] == (1,)
    assert t.lookup((1550,), 0)[1] == (2,)
    assert t.lookup((2000,), 0)[1] == (1,)
    assert t.lookup((2001,), 0) == ("Ing.set_port", (7,))


def test_optional_with_lpm_scans(schema):
    t = table(schema, "Ing.t_optional")
    sp = schema.action("Ing.set_port")
    t.insert((None, (0x0A000000, 8)), 1, sp, (1,))
    t.insert((100, (0x0A000000, 8)), 2, sp, (2,))
    assert t.lookup((100, 0x0A000001), 0)[1] == (2,)
    assert t.lookup((101, 0x0A000001), 0)[1] == (1,)
    assert t.lookup((100, 0x0B000001), 0) == ("NoAction", ())


# --- control-plane errors ----------------------------------------------------------------------

def test_duplicate_missing_and_full(schema):
    t = table(schema, "Ing.t_exact")
    sp = schema.action("Ing.set_port")
    for i in range(4):
        t.insert((i, 0), 0, sp, (1,))
    with pytest.raises(P4Error) as e:
        t.insert((0, 0), 0, sp, (1,))
    assert e.value.code == code_pb2.ALREADY_EXISTS
    with pytest.raises(P4Error) as e:
        t.insert((9, 0), 0, sp, (1,))
    assert e.value.code == code_pb2.RESOURCE_EXHAUSTED and "full" in e.value.message
    for op in (t.delete, lambda k, p: t.modify(k, p, sp, (1,))):
        with pytest.raises(P4Error) as e:
            op((8, 8), 0)
        assert e.value.code == code_pb2.NOT_FOUND


def test_priority_rules(schema):
    sp = schema.action("Ing.set_port")
    assert "priority > 0" in invalid(table(schema, "Ing.t_ternary").insert,
                                     ((1, 1), 6), 0, sp, (1,))
    assert "priority must be 0" in invalid(table(schema, "Ing.t_exact").insert,
                                           (1, 1), 5, sp, (1,))
    assert "priority must be 0" in invalid(table(schema, "Ing.t_lpm").insert,
                                           ((0, 1),), 5, schema.action("Ing.drop"), ())


def test_const_default_refuses_changes(schema):
    t = table(schema, "Ing.t_const")
    with pytest.raises(P4Error) as e:
        t.set_default(schema.action("Ing.set_port"), (1,))
    assert e.value.code == code_pb2.PERMISSION_DENIED
    assert t.lookup((1,), 0) == ("Ing.drop", ())


def test_default_modify_and_reset(schema):
    t = table(schema, "Ing.t_exact")
    t.set_default(schema.action("Ing.set_port"), (5,))
    assert t.lookup((1, 1), 0) == ("Ing.set_port", (5,))
    t.set_default(None)
    assert t.lookup((1, 1), 0) == ("Ing.drop", ())


def test_counter_array_ignores_out_of_range():
    c = CounterState(fixture_schema().counter("Ing.rx"))
    c.count(3, 100)
    c.count(3, 50)
    c.count(8, 1000)   # size is 8: ignored, like BMv2
    c.count(-1, 1000)
    assert c.read(3) == (2, 150)
    assert sum(c.read(i)[0] for i in range(8)) == 2 and sum(c.read(i)[1] for i in range(8)) == 150


def test_counter_cells_cost_nothing_until_used():
    """A declared size comes from a client's P4Info: only cells counted or written take memory."""
    huge = Counter(3999, "Ing.huge", 1 << 20, "both")
    tracemalloc.start()
    try:
        c = CounterState(huge)
        c.count(7, 60)
        c.write((1 << 20) - 1, 5, 500)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024  # a dense array of 2**20 cells would take megabytes
    assert (c.read(7), c.read((1 << 20) - 1), c.read(8)) == ((1, 60), (5, 500), (0, 0))


# --- match-key canonicalisation (P4Runtime 9.1.1) ---------------------------------------------

def encoded(t, key) -> list[pb.FieldMatch]:
    entry = pb.TableEntry()
    encode_match(t, key, entry.match)
    return list(entry.match)


def test_decode_accepts_padded_and_encodes_canonical(schema):
    t = schema.table("Ing.t_exact")
    key = decode_match(t, [fm_exact(2, b"\x00\x00\x00\x05"), fm_exact(1, b"\x00\x03")])
    assert key == (3, 5)
    assert [m.exact.value for m in encoded(t, key)] == [b"\x03", b"\x05"]
    lpm = schema.table("Ing.t_lpm")
    assert decode_match(lpm, []) == ((0, 0),)
    assert encoded(lpm, ((0, 0),)) == []  # don't-care omitted
    key = decode_match(lpm, [fm_lpm(1, b"\x0a\x00\x00\x00", 8)])
    assert encoded(lpm, key)[0].lpm.value == b"\x0a\x00\x00\x00"
    tern = schema.table("Ing.t_ternary")
    key = decode_match(tern, [fm_ternary(1, b"\x00\x02", b"\x00\x0f"), fm_exact(2, b"\x06")])
    assert key == ((2, 15), 6)
    assert encoded(tern, key)[0].ternary.mask == b"\x0f"


@pytest.mark.parametrize("name,match,words", [
    ("Ing.t_exact", [fm_exact(1, b"\x01")], "field hdr.tag: exact match field is missing"),
    ("Ing.t_exact", [fm_exact(1, b"\x01"), fm_exact(1, b"\x01")], "more than once"),
    ("Ing.t_exact", [fm_exact(7, b"\x01")], "no match field with id 7"),
    ("Ing.t_exact", [fm_lpm(1, b"\x01", 9), fm_exact(2, b"\x01")], "request has a lpm match"),
    ("Ing.t_lpm", [fm_lpm(1, b"\x0a\x00\x00\x01", 8)], "beyond the /8 prefix"),
    ("Ing.t_lpm", [fm_lpm(1, b"\x00", 0)], "omit a don't-care"),
    ("Ing.t_lpm", [fm_lpm(1, b"\x00", 33)], "prefix length 33"),
    ("Ing.t_ternary", [fm_ternary(1, b"\x03", b"\x01"), fm_exact(2, b"\x06")], "outside the mask"),
    ("Ing.t_ternary", [fm_ternary(1, b"\x00", b"\x00"), fm_exact(2, b"\x06")], "mask is 0"),
    ("Ing.t_range", [fm_range(1, b"\x05", b"\x04")], "low 5 > high 4"),
    ("Ing.t_range", [fm_range(1, b"\x00", b"\xff\xff")], "every value"),
])
def test_decode_rejects_malformed_matches(schema, name, match, words):
    message = invalid(decode_match, schema.table(name), match)
    assert message.startswith(f"table {name}") and words in message


@pytest.mark.parametrize("match,words", [
    ([fm_exact(1, b"\x02\x00"), fm_exact(2, b"\x01")], "field hdr.port: 0x0200"),  # 9 bits
    ([fm_exact(1, b"\x00\x00\x01\xff"), fm_exact(2, b"\x01")], None),  # padded: accepted
    ([fm_exact(1, b""), fm_exact(2, b"\x01")], "field hdr.port: empty byte string"),
])
def test_bytestrings_wider_than_the_field_or_empty_are_out_of_range(schema, match, words):
    """P4Runtime spec, Bytestrings: any length is read, but a value wider than the field's
    bitwidth, or a string of length zero, is refused with OUT_OF_RANGE."""
    t = schema.table("Ing.t_exact")
    if words is None:
        assert decode_match(t, match) == (0x1FF, 1)
    else:
        assert words in refused(code_pb2.OUT_OF_RANGE, decode_match, t, match)


def test_decode_action_checks_table_scope_and_params(schema):
    t = schema.table("Ing.t_exact")
    act = pb.Action(action_id=2001)
    act.params.add(param_id=1, value=b"\x00\x07")
    assert decode_action(schema, t, act, default=False)[1] == (7,)
    assert "not an action of this table" in invalid(
        decode_action, schema, t, pb.Action(action_id=2003), default=False)
    assert "@defaultonly" in invalid(decode_action, schema, t, pb.Action(action_id=2002),
                                     default=False)
    assert "@tableonly" in invalid(decode_action, schema, t, pb.Action(action_id=2004),
                                   default=True)
    assert "missing parameter(s) port" in invalid(
        decode_action, schema, t, pb.Action(action_id=2001), default=False)
    wide = pb.Action(action_id=2001)
    wide.params.add(param_id=1, value=b"\x02\x00")
    assert "parameter port" in refused(code_pb2.OUT_OF_RANGE, decode_action, schema, t, wide,
                                       default=False)


def test_lookups_stay_consistent_while_entries_change(schema):
    """The data plane looks up without the write lock while the control plane writes."""
    lpm, tern = table(schema, "Ing.t_lpm"), table(schema, "Ing.t_ternary")
    nh, sp = schema.action("Ing.set_next_hop"), schema.action("Ing.set_port")
    lpm.insert(((0x0A000000, 8),), 0, nh, (1, 1))
    tern.insert(((0, 0), 6), 1, sp, (1,))
    seen, errors, done = set(), [], threading.Event()

    def data_plane():
        try:
            while not done.is_set():
                seen.add(lpm.lookup((0x0A010203,), 1))
                seen.add(tern.lookup((0x0012, 6), 1))
        except Exception as e:  # any failure in the reader must fail the test
            errors.append(e)

    reader = threading.Thread(target=data_plane)
    reader.start()
    for i in range(300):
        plen = 9 + i % 24
        lpm.insert(((0x0A010203 >> (32 - plen) << (32 - plen), plen),), 0, nh, (2, 2))
        tern.insert(((0x0012, 0xffff), 6), 5, sp, (2,))
        lpm.delete(((0x0A010203 >> (32 - plen) << (32 - plen), plen),), 0)
        tern.delete(((0x0012, 0xffff), 6), 5)
    done.set()
    reader.join(5)
    assert errors == []
    assert seen <= {("Ing.set_next_hop", (1, 1)), ("Ing.set_next_hop", (2, 2)),
                    ("Ing.set_port", (1,)), ("Ing.set_port", (2,))}
    assert ("Ing.set_next_hop", (1, 1)) in seen and ("Ing.set_port", (1,)) in seen

"""The checked-in P4Info says what p4src says: every declaration's @id, names, keys, widths.

p4c is not installed everywhere, so the P4 source is read here with a few patterns (it is written
to keep each declaration on predictable lines); `make -C p4src check` compares against the real
compiler where it is installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from p4.config.v1 import p4info_pb2

from p4mtcp.dataplane.device import MAX_COUNTER_SIZE, MAX_TABLE_SIZE, check_limits
from p4mtcp.p4info import P4Schema
from p4mtcp.p4src import HERE, P4INFO

PREFIX = {"action": p4info_pb2.P4Ids.ACTION, "table": p4info_pb2.P4Ids.TABLE,
          "counter": p4info_pb2.P4Ids.COUNTER, "direct_counter": p4info_pb2.P4Ids.DIRECT_COUNTER,
          "header": p4info_pb2.P4Ids.CONTROLLER_HEADER}
CONTROLS = {"ingress.p4": "NicIngress", "egress.p4": "NicEgress"}
FIELD_WIDTHS = {"standard_metadata.ingress_port": 9, "standard_metadata.egress_spec": 9,
                "hdr.arp.tpa": 32, "hdr.ipv4.src_addr": 32, "hdr.ipv4.dst_addr": 32,
                "hdr.tcp.src_port": 16, "hdr.tcp.dst_port": 16, "meta.rss_bucket": 8,
                "meta.next_hop": 32}


def p4id(kind: str, n: int) -> int:
    return (PREFIX[kind] << 24) | n  # p4c adds the resource-type prefix to a bare @id


@pytest.fixture(scope="module")
def schema() -> P4Schema:
    return P4Schema.from_file(P4INFO)


def sources():
    for path in sorted((HERE / "include").glob("*.p4")):
        yield path.name, path.read_text()


def test_no_noaction_and_every_object_has_an_id():
    for name, text in sources():
        assert "NoAction" not in text, name
        for kind in ("table", "action", "counter", "direct_counter"):
            declared = re.findall(rf"^\s*(?:@id\(\d+\)\s+)?{kind}\b[ (]", text, re.M)
            with_id = re.findall(rf"^\s*@id\(\d+\)\s+{kind}\b[ (]", text, re.M)
            assert len(declared) == len(with_id), f"{name}: a {kind} without @id"


def test_actions_match(schema):
    n = 0
    in_tables = {ref.id for t in schema.p4info.tables for ref in t.action_refs}
    for name, text in sources():
        for num, aname, params in re.findall(r"@id\((\d+)\)\s+action\s+(\w+)\(([^)]*)\)", text):
            a = schema.action(f"{CONTROLS[name]}.{aname}")
            assert a.id == p4id("action", int(num))
            want = [(p.split()[1], int(re.search(r"bit<(\d+)>", p).group(1)))
                    for p in params.split(",") if p.strip()]
            if a.id not in in_tables:
                want = []  # only the program calls it (drop, to_cpu): p4c lists no parameters
            assert [(p.name, p.bitwidth) for p in a.params] == want
            n += 1
    assert n == len(schema.actions)


def test_tables_match(schema):
    n = 0
    for name, text in sources():
        for num, tname, body in re.findall(r"@id\((\d+)\)\s+table\s+(\w+)\s*\{(.*?)\n    \}", text, re.S):
            t = schema.table(f"{CONTROLS[name]}.{tname}")
            assert t.id == p4id("table", int(num))
            keys = re.findall(r"([\w.]+)\s*:\s*(exact|lpm|ternary)\s*;", body)
            assert [(f.name, f.match_type, f.bitwidth) for f in t.match_fields] == \
                [(k, kind, FIELD_WIDTHS[k]) for k, kind in keys]
            actions = re.search(r"actions\s*=\s*\{([^}]*)\}", body).group(1)
            assert [schema.by_id(i).name for i in t.action_ids] == \
                [f"{CONTROLS[name]}.{a.strip()}" for a in actions.split(";") if a.strip()]
            default = re.search(r"default_action\s*=\s*(\w+)\(\)", body).group(1)
            assert t.initial_default == (schema.action(f"{CONTROLS[name]}.{default}").id, ())
            assert t.const_default_action_id == 0  # the agent may change every default
            size = re.search(r"size\s*=\s*(\d+)", body)
            assert t.size == (int(size.group(1)) if size else 1024)
            counter = re.search(r"counters\s*=\s*(\w+)", body)
            if counter:
                dc = schema.direct_counter(f"{CONTROLS[name]}.{counter.group(1)}")
                assert (t.direct_counter_id, dc.table_id) == (dc.id, t.id)
            n += 1
    assert n == len(schema.tables)


def test_counters_match(schema):
    n = 0
    for name, text in sources():
        for num, size, cname in re.findall(r"@id\((\d+)\)\s+counter\((\d+),\s*CounterType\.packets_and_bytes\)\s+(\w+);", text):
            c = schema.counter(f"{CONTROLS[name]}.{cname}")
            assert (c.id, c.size, c.unit) == (p4id("counter", int(num)), int(size), "both")
            n += 1
        for num, cname in re.findall(r"@id\((\d+)\)\s+direct_counter\(CounterType\.packets_and_bytes\)\s+(\w+);", text):
            assert schema.direct_counter(f"{CONTROLS[name]}.{cname}").id == p4id("direct_counter", int(num))
            n += 1
    assert n == len(schema.counters) + len(schema.direct_counters)


def test_controller_headers_match(schema):
    text = (HERE / "include" / "headers.p4").read_text()
    found = re.findall(r'@controller_header\("(\w+)"\)\s*@id\((\d+)\)\s*header\s+\w+\s*\{([^}]*)\}', text)
    assert {h for h, _, _ in found} == set(schema.controller_headers) == {"packet_in", "packet_out"}
    for hname, num, body in found:
        h = schema.controller_header(hname)
        assert h.id == p4id("header", int(num))
        fields = [(f, int(w)) for w, f in re.findall(r"bit<(\d+)>\s+(\w+);", body)]
        assert [(f.name, f.bitwidth) for f in h.fields] == fields
        assert sum(w for _, w in fields) % 8 == 0  # whole bytes
        assert schema.p4info.controller_packet_metadata[int(num) - 1].preamble.annotations == \
            [f'@controller_header("{hname}")']


def test_pkg_info_and_aliases(schema):
    assert schema.p4info.pkg_info.arch == "v1model"
    for t in schema.p4info.tables:
        assert t.preamble.alias == t.preamble.name.rsplit(".", 1)[1]


@pytest.mark.bmv2
@pytest.mark.skipif(shutil.which("p4c-bm2-ss") is None, reason="p4c-bm2-ss is not on PATH")
def test_compiler_emits_the_checked_in_p4info(tmp_path):
    r = subprocess.run(["make", "-C", str(HERE), "check", f"BUILD={tmp_path}"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_nic_program_is_within_the_embedded_targets_limits(schema):
    """The embedded target refuses a P4Info beyond its limits; the NIC's own must pass, and a
    copy with one counter past the limit must not."""
    check_limits(schema)
    assert all(0 < t.size <= MAX_TABLE_SIZE for t in schema.tables.values())
    too_big = p4info_pb2.P4Info()
    too_big.CopyFrom(schema.p4info)
    too_big.counters[0].size = MAX_COUNTER_SIZE + 1
    with pytest.raises(ValueError, match=f"size {MAX_COUNTER_SIZE + 1} not in"):
        check_limits(P4Schema(too_big))

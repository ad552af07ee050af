"""The checked-in P4Info is the one contract between p4src/, the embedded pipeline and the agent.

Always: it matches the embedded target's pipeline (every table, action, field and width), the
names table in docs/ARCHITECTURE.md, and every `@id` in the P4 sources. With p4c on PATH: it says
what `p4c-bm2-ss --p4runtime-files` says about the program (bmv2/p4info_diff.py: any p4c release,
with or without `initial_default_action`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from p4.config.v1 import p4info_pb2

from p4mtcp.dataplane.pipeline import validate
from p4mtcp.p4info import P4Schema
from p4mtcp.p4src import P4INFO, PROGRAM
from p4mtcp.bmv2.launcher import P4C_BM2_SS, compile_program, have
from p4mtcp.bmv2.p4info_diff import differences, load

ROOT = Path(__file__).resolve().parent.parent
ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"
SOURCES = [PROGRAM, *sorted((PROGRAM.parent / "include").glob("*.p4"))]

# The top byte of a P4Info id names the kind of object (p4info.proto's P4Ids.Prefix); p4c adds
# it to an @id value that lacks one.
ID_PREFIX = {"action": p4info_pb2.P4Ids.ACTION, "table": p4info_pb2.P4Ids.TABLE,
             "controller_header": p4info_pb2.P4Ids.CONTROLLER_HEADER,
             "counter": p4info_pb2.P4Ids.COUNTER, "direct_counter": p4info_pb2.P4Ids.DIRECT_COUNTER}


@pytest.fixture(scope="module")
def schema() -> P4Schema:
    return P4Schema.from_file(P4INFO)


# --- the embedded pipeline ------------------------------------------------------------------

def test_embedded_pipeline_accepts_the_checked_in_p4info(schema):
    validate(schema)


def _copy(p4info: p4info_pb2.P4Info) -> p4info_pb2.P4Info:
    msg = p4info_pb2.P4Info()
    msg.CopyFrom(p4info)
    return msg


def _mutations(p4info: p4info_pb2.P4Info):
    """(what, mutated copy) for every width and name the pipeline depends on."""
    for ti, t in enumerate(p4info.tables):
        for fi, f in enumerate(t.match_fields):
            m = _copy(p4info)
            m.tables[ti].match_fields[fi].bitwidth += 1
            yield f"{t.preamble.name}.{f.name} width", m
            m = _copy(p4info)
            m.tables[ti].match_fields[fi].name += "_x"
            yield f"{t.preamble.name}.{f.name} name", m
    for ai, a in enumerate(p4info.actions):
        for pi, p in enumerate(a.params):
            m = _copy(p4info)
            m.actions[ai].params[pi].bitwidth += 1
            yield f"{a.preamble.name}({p.name}) width", m
        m = _copy(p4info)
        m.actions[ai].preamble.name += "_x"
        m.actions[ai].preamble.alias += "_x"
        yield f"action {a.preamble.name} name", m
    for ti, t in enumerate(p4info.tables):
        m = _copy(p4info)
        del m.tables[ti]
        yield f"table {t.preamble.name} missing", m
    for ci, c in enumerate(p4info.counters):
        m = _copy(p4info)
        m.counters[ci].spec.unit = p4info_pb2.CounterSpec.PACKETS
        yield f"counter {c.preamble.name} unit", m
    for hi, h in enumerate(p4info.controller_packet_metadata):
        for fi, f in enumerate(h.metadata):
            m = _copy(p4info)
            m.controller_packet_metadata[hi].metadata[fi].bitwidth += 1
            yield f"{h.preamble.name}.{f.name} width", m


def test_embedded_pipeline_rejects_any_drift(schema):
    """validate() really compares: change any one width or name and it names the problem."""
    accepted = []
    count = 0
    for what, mutated in _mutations(schema.p4info):
        count += 1
        try:
            validate(P4Schema(mutated))
        except ValueError:
            continue
        accepted.append(what)
    assert count > 40, f"only {count} mutations generated"
    assert not accepted, f"the embedded pipeline accepts a P4Info with: {accepted}"


# --- docs/ARCHITECTURE.md's names table ------------------------------------------------------

def _doc_tables() -> list[list[str]]:
    rows = []
    for line in ARCHITECTURE.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and re.fullmatch(r"`Nic(Ingress|Egress)\.\w+`", cells[0]):
            rows.append(cells)
    return rows


def test_architecture_names_table_matches_p4info(schema):
    rows = _doc_tables()
    assert {r[0].strip("`") for r in rows} == set(schema.tables), "tables differ from the doc"
    for name_cell, keys_cell, actions_cell, default_cell in rows:
        table = schema.table(name_cell.strip("`"))
        key_names = re.findall(r"`([\w.]+)`", keys_cell)
        kind = re.search(r"`\s+(exact|lpm|ternary|range|optional)\b", keys_cell).group(1)
        width = re.search(r"bit<(\d+)>", keys_cell)
        assert [f.name for f in table.match_fields] == key_names, table.name
        for f in table.match_fields:
            assert f.match_type == kind, f"{table.name}.{f.name}: {f.match_type}, doc: {kind}"
            if width:
                assert f.bitwidth == int(width.group(1)), f"{table.name}.{f.name} width"
        doc_actions = re.findall(r"`(\w+)\(([^)]*)\)`", actions_cell)
        default = re.search(r"`(\w+)`", default_cell).group(1)
        refs = {schema.by_id(i).name.split(".")[-1] for i in table.action_ids}
        assert refs == {a for a, _ in doc_actions} | {default}, f"{table.name} actions"
        for aname, params in doc_actions:
            action = schema.action(aname)
            doc_params = [tuple(p.split()) for p in params.split(",") if p.strip()]
            got = [(f"bit<{p.bitwidth}>", p.name) for p in action.params]
            assert got == doc_params, f"{aname}: {got}, doc: {doc_params}"
        tmsg = next(t for t in schema.p4info.tables if t.preamble.name == table.name)
        assert schema.by_id(tmsg.initial_default_action.action_id).name.endswith("." + default), (
            f"{table.name}: default action differs from the doc's {default}")


def test_architecture_counters_and_headers_match_p4info(schema):
    doc = ARCHITECTURE.read_text()
    counters = re.findall(r"`(Nic(?:Ingress|Egress)\.\w+)` \((\d+),", doc)
    assert {n for n, _ in counters} == set(schema.counters)
    for name, size in counters:
        c = schema.counter(name)
        assert (c.size, c.unit) == (int(size), "both"), name
    direct = re.findall(r"direct counter `(NicIngress\.\w+)` on `(\w+)`", doc)
    assert {n for n, _ in direct} == set(schema.direct_counters)
    for name, table in direct:
        assert schema.direct_counter(name).table_id == schema.table(table).id
    headers = re.findall(r"`(packet_in|packet_out) \{([^}]*)\}`", doc)
    assert {h for h, _ in headers} == set(schema.controller_headers)
    for hname, body in headers:
        doc_fields = [(int(w), n) for w, n in re.findall(r"bit<(\d+)> (\w+);", body)]
        got = [(f.bitwidth, f.name) for f in schema.controller_header(hname).fields]
        assert got == doc_fields, f"{hname}: {got}, doc: {doc_fields}"


# --- @id annotations in the P4 sources -------------------------------------------------------

def _strip_comments(text: str) -> str:
    return re.sub(r"//[^\n]*|/\*.*?\*/", " ", text, flags=re.S)


def _source_ids() -> list[tuple[str, str, int, str]]:
    """(kind, P4Info name, @id value, file) for every @id in the P4 sources."""
    found = []
    for path in SOURCES:
        text = _strip_comments(path.read_text())
        controls = [(m.start(), m.group(1)) for m in re.finditer(r"\bcontrol\s+(\w+)\s*\(", text)]

        def scope(pos: int) -> str:
            return next((n for start, n in reversed(controls) if start < pos), "")

        total = len(re.findall(r"@id\s*\(", text))
        matched = 0
        objects = (r"@id\((\d+)\)\s*(action|table)\s+(\w+)",
                   r"@id\((\d+)\)\s*(counter|direct_counter)\s*\([^)]*\)\s*(\w+)\s*;")
        for m in (m for pattern in objects for m in re.finditer(pattern, text)):
            name = f"{scope(m.start())}.{m.group(3)}"
            found.append((m.group(2), name, int(m.group(1)), path.name))
            matched += 1
        for m in re.finditer(r'@controller_header\("(\w+)"\)\s*@id\((\d+)\)|'
                             r'@id\((\d+)\)\s*@controller_header\("(\w+)"\)', text):
            name, value = (m.group(1), m.group(2)) if m.group(1) else (m.group(4), m.group(3))
            found.append(("controller_header", name, int(value), path.name))
            matched += 1
        assert matched == total, f"{path.name}: {total - matched} @id annotation(s) not understood"
    return found


def test_every_source_id_is_in_the_p4info_with_its_prefix(schema):
    ids = _source_ids()
    assert len(ids) >= 30, f"only {len(ids)} @id annotations found in {[p.name for p in SOURCES]}"
    index = {"action": schema.actions, "table": schema.tables, "counter": schema.counters,
             "direct_counter": schema.direct_counters,
             "controller_header": schema.controller_headers}
    for kind, name, value, file in ids:
        obj = index[kind].get(name)
        assert obj is not None, f"{file}: {kind} {name} (@id({value})) is not in the P4Info"
        expect = value if value >> 24 else (ID_PREFIX[kind] << 24) | value
        assert obj.id == expect, (
            f"{file}: {kind} {name}: P4Info id {obj.id:#x}, @id gives {expect:#x}")
    in_source = {(kind, name) for kind, name, _, _ in ids}
    for kind, objs in index.items():
        for name in objs:
            assert (kind, name) in in_source, f"P4Info {kind} {name} has no @id in the sources"


# --- p4c's own output ------------------------------------------------------------------------

def _without_defaults(p4info: p4info_pb2.P4Info) -> p4info_pb2.P4Info:
    """What p4c 1.2.4.8 emits: no initial_default_action."""
    msg = _copy(p4info)
    for t in msg.tables:
        t.ClearField("initial_default_action")
    return msg


def test_comparison_accepts_both_compiler_forms_and_still_checks_defaults(schema, tmp_path):
    """Both p4c forms (with and without initial_default_action) compare equal to the checked-in
    P4Info; a changed default is still caught, from the P4Info field or from the BMv2 JSON."""
    ours = schema.p4info
    assert differences(ours, ours) == []
    bare = _without_defaults(ours)
    tables = [t.preamble.name for t in ours.tables]
    defaults = {t.preamble.name: schema.by_id(t.initial_default_action.action_id).name
                for t in ours.tables}
    bmv2_json = tmp_path / "nic.json"
    actions = [{"id": i, "name": a} for i, a in enumerate(sorted(set(defaults.values())))]
    ids = {a["name"]: a["id"] for a in actions}
    doc = {"actions": actions, "pipelines": [{"tables": [
        {"name": t, "default_entry": {"action_id": ids[defaults[t]]}} for t in tables]}]}
    bmv2_json.write_text(json.dumps(doc))
    assert differences(ours, bare, bmv2_json) == []
    assert differences(ours, bare) == ["p4c gave no default actions to compare "
                                       "(pass its BMv2 JSON)"]

    changed = _copy(ours)
    changed.tables[0].initial_default_action.action_id = ours.tables[0].action_refs[0].id
    assert changed.tables[0].initial_default_action != ours.tables[0].initial_default_action
    assert any(tables[0] in d for d in differences(changed, ours))
    assert any(tables[0] in d for d in differences(changed, bare, bmv2_json))

    widened = _copy(bare)
    widened.tables[0].match_fields[0].bitwidth += 1
    assert differences(ours, widened, bmv2_json), "a width change went unnoticed"


@pytest.mark.bmv2
@pytest.mark.skipif(not have(P4C_BM2_SS), reason=f"{P4C_BM2_SS} not found on PATH (install p4c)")
def test_checked_in_p4info_is_what_p4c_emits(tmp_path):
    compiled = compile_program(tmp_path)
    found = differences(load(P4INFO), load(compiled.p4info), compiled.json)
    assert not found, "the checked-in P4Info differs from p4c's:\n" + "\n".join(found)

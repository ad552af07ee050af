"""Does the checked-in P4Info say what p4c says about the program? Compare what matters.

A controller depends on names, ids, match kinds, widths, action references, counters and the
controller headers; p4c's list order and the fields one compiler release writes and another does
not are no part of that contract. p4c 1.2.4.8 writes no `initial_default_action` into a table
(1.2.5.x does), so each table's default action is compared with whichever source the compiler
gives: its P4Info field when present, else the `default_entry` of its BMv2 JSON.

    python -m p4mtcp.bmv2.p4info_diff CHECKED_IN COMPILED [BMV2_JSON]    (p4src/Makefile check)
"""

from __future__ import annotations

import difflib
import json
import sys
from pathlib import Path

from google.protobuf import text_format
from p4.config.v1 import p4info_pb2


def load(path: str | Path) -> p4info_pb2.P4Info:
    msg = p4info_pb2.P4Info()
    text_format.Parse(Path(path).read_text(), msg)
    return msg


def canonical(p4info: p4info_pb2.P4Info) -> str:
    """Text form without default actions, each top-level list in id order."""
    msg = p4info_pb2.P4Info()
    msg.CopyFrom(p4info)
    for table in msg.tables:
        table.ClearField("initial_default_action")
    for field in msg.DESCRIPTOR.fields:
        if field.label == field.LABEL_REPEATED and field.message_type is not None \
                and "preamble" in field.message_type.fields_by_name:
            items = sorted(getattr(msg, field.name), key=lambda x: x.preamble.id)
            copies = [type(i)() for i in items]
            for c, i in zip(copies, items):
                c.CopyFrom(i)
            del getattr(msg, field.name)[:]
            getattr(msg, field.name).extend(copies)
    return text_format.MessageToString(msg)


def default_actions(p4info: p4info_pb2.P4Info) -> dict[str, str]:
    """Table name -> name of its initial default action, for tables whose P4Info says."""
    names = {a.preamble.id: a.preamble.name for a in p4info.actions}
    return {t.preamble.name: names.get(t.initial_default_action.action_id, "?")
            for t in p4info.tables if t.HasField("initial_default_action")}


def json_default_actions(bmv2_json: str | Path) -> dict[str, str]:
    """Table name -> name of its default action, from a BMv2 JSON's `default_entry`."""
    doc = json.loads(Path(bmv2_json).read_text())
    names = {a["id"]: a["name"] for a in doc.get("actions", [])}
    return {t["name"]: names.get(t["default_entry"]["action_id"], "?")
            for p in doc.get("pipelines", []) for t in p.get("tables", [])
            if "default_entry" in t}


def differences(checked_in: p4info_pb2.P4Info, compiled: p4info_pb2.P4Info,
                bmv2_json: str | Path | None = None) -> list[str]:
    """What differs, in words and a unified diff; empty when the two agree on what matters."""
    ours, theirs = canonical(checked_in), canonical(compiled)
    out = list(difflib.unified_diff(ours.splitlines(), theirs.splitlines(),
                                    "checked-in", "p4c", lineterm=""))
    expected = default_actions(checked_in)
    given = default_actions(compiled)
    source = "p4c's P4Info"
    if not given and bmv2_json is not None:
        given, source = json_default_actions(bmv2_json), "p4c's BMv2 JSON"
    if given:
        for table in sorted({t.preamble.name for t in compiled.tables}):
            if expected.get(table) != given.get(table):
                out.append(f"{table}: default action {expected.get(table)} in the checked-in "
                           f"P4Info, {given.get(table)} in {source}")
    elif expected:
        out.append("p4c gave no default actions to compare (pass its BMv2 JSON)")
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3):
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    found = differences(load(args[0]), load(args[1]), args[2] if len(args) == 3 else None)
    for line in found:
        print(line)
    if found:
        print(f"{args[0]} differs from the compiler's {args[1]}", file=sys.stderr)
        return 1
    print("P4Info matches the compiler's output")
    return 0


if __name__ == "__main__":
    sys.exit(main())

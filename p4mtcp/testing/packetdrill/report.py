"""Results of a packetdrill run: the summary on the terminal and a JUnit XML file for CI."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence

from .run import Outcome


def summary(outcomes: Sequence[Outcome]) -> str:
    """One line per script (with the first mismatch or the skip reason), then the totals."""
    lines = [o.headline() for o in outcomes]
    n = Counter(o.status for o in outcomes)
    lines.append(f"{len(outcomes)} scripts: {n['passed']} passed, {n['failed']} failed, "
                 f"{n['skipped']} skipped" + (f", {n['error']} errors" if n["error"] else ""))
    return "\n".join(lines)


def junit_xml(outcomes: Sequence[Outcome], suite: str = "packetdrill") -> bytes:
    """JUnit XML: one testcase per script; failures carry the full diff, skips their reason."""
    n = Counter(o.status for o in outcomes)
    root = ET.Element("testsuite", name=suite, tests=str(len(outcomes)),
                      failures=str(n["failed"]), errors=str(n["error"]),
                      skipped=str(n["skipped"]),
                      time=f"{sum(o.wall_seconds for o in outcomes):.3f}")
    for o in outcomes:
        case = ET.SubElement(root, "testcase", classname=suite, name=o.path,
                             time=f"{o.wall_seconds:.3f}")
        where = f"line {o.line}: " if o.line else ""
        if o.status == "failed":
            ET.SubElement(case, "failure", message=where + o.reason).text = o.detail
        elif o.status == "error":
            ET.SubElement(case, "error", message=where + o.reason)
        elif o.status == "skipped":
            ET.SubElement(case, "skipped", message=where + o.reason)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)

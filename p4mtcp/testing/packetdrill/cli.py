"""`p4mtcp packetdrill [options] SCRIPT.pkt|DIR ...`: run packetdrill scripts on the p4mtcp stack.

Each script runs on a fresh host under test in virtual time. The exit status is 0 when no script
failed (skipped ones do not count against it), 1 when one failed or could not be read, 2 for a
usage error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .parse import setting_value
from .report import junit_xml, summary
from .run import run_path


def scripts(paths: list[str]) -> list[str]:
    """Files as given, directories expanded to their *.pkt files (recursively, sorted)."""
    out: list[str] = []
    for p in map(Path, paths):
        out += sorted(map(str, p.rglob("*.pkt"))) if p.is_dir() else [str(p)]
    return out


def _settings(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"--set {item!r}: expected KEY=VALUE")
        out[key] = setting_value(value)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="p4mtcp packetdrill", description=__doc__.split("\n")[0])
    ap.add_argument("paths", nargs="+", metavar="SCRIPT", help=".pkt files or directories")
    ap.add_argument("--junit", metavar="FILE", help="write a JUnit XML report to FILE")
    ap.add_argument("--nic", action="store_true",
                    help="run frames through the embedded NIC's P4 pipeline too")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="TcpConfig setting for every script, over its own directives "
                         "(e.g. --set initial_window=4 --set rto_min=1)")
    ap.add_argument("--tolerance-usecs", type=int, metavar="N",
                    help="timing tolerance, over the scripts' own --tolerance_usecs")
    ap.add_argument("--tso", action="store_true",
                    help="take a run of contiguous segments where a script expects one larger "
                         "segment (scripts written for Linux with TSO/GSO)")
    ap.add_argument("--ignore-psh", action="store_true",
                    help="do not compare the PSH flag of outbound packets")
    ap.add_argument("-v", "--verbose", action="store_true", help="print each failure's full diff")
    args = ap.parse_args(argv)
    try:
        settings = _settings(args.set)
    except argparse.ArgumentTypeError as exc:
        ap.error(str(exc))
    files = scripts(args.paths)
    if not files:
        ap.error("no .pkt scripts found")
    tol = None if args.tolerance_usecs is None else args.tolerance_usecs / 1e6
    outcomes = []
    for f in files:
        o = run_path(f, settings=settings, nic=args.nic, tolerance=tol, tso=args.tso,
                     ignore_psh=args.ignore_psh)
        outcomes.append(o)
        if args.verbose and o.status == "failed":
            print(o.detail, file=sys.stderr)
    print(summary(outcomes))
    if args.junit:
        Path(args.junit).write_bytes(junit_xml(outcomes))
    return 1 if any(o.status in ("failed", "error") for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())

"""`p4mtcp <command> [args]`: one entry point that dispatches to each program's own main()."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "demo": ("p4mtcp.apps.demo", "the main job: embedded NIC + epserver + epwget, live statistics"),
    "nic": ("p4mtcp.dataplane.nic", "run the embedded P4 target with a P4Runtime server"),
    "agent": ("p4mtcp.apps.agent", "program a NIC for a host's programs and keep it programmed"),
    "epserver": ("p4mtcp.apps.epserver", "HTTP/1.1 static file server, one context per core"),
    "epwget": ("p4mtcp.apps.epwget", "HTTP load generator"),
    "perf": ("p4mtcp.apps.perf", "bulk throughput sender/receiver"),
    "plot": ("p4mtcp.apps.plot", "draw a connection trace (perf client --trace) as a PNG"),
    "ss": ("p4mtcp.apps.ss", "list a running host's connections per core, like ss -tni"),
    "testbed": ("p4mtcp.bmv2.topo", "Mininet topology with a BMv2 or embedded switch"),
    "packetdrill": ("p4mtcp.testing.packetdrill.cli", "run packetdrill scripts on the stack"),
    "accel": ("p4mtcp.accelbuild", "build|status of the optional compiled modules (mypyc)"),
}


def usage() -> str:
    lines = ["usage: p4mtcp <command> [args]", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"p4mtcp: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())

"""`p4mtcp ss`: a running host's TCP connections per core, like `ss -tni`.

    p4mtcp ss -f mtcp.conf [-l | -a] [--state established] [--port 80] [--watch 1] [--json]

Each core process serves its live connections on ``ss_dir/core<N>.sock`` (mtcp.conf's
``ss_dir``; control/sockstat.py), answered from its run loop between batches; this command
asks every core of the host and prints one line per connection: core, state, local and remote
address, send and receive queue, then the sender's MSS, cwnd, ssthresh, SRTT/RTTVAR, RTO, bytes in
flight, delivered and retransmitted. ``--port`` matches either end's port, ``--state`` the TCP
state (``established``, ``fin-wait-1``, ... as ss spells them, or the engine's names). As
with Linux ss, listeners are shown only with ``-l`` (listeners alone) or ``-a`` (everything); a
listener's Recv-Q is its accept queue and its Send-Q the backlog.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from typing import Any

from p4mtcp.control.config import ConfigError, load_mtcp_conf

TIMEOUT = 2.0
"""Seconds to wait for one core's answer (it is given between two of its loop steps)."""


def query(path: str, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
    """One core's connections; OSError when nothing answers at ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        chunks = []
        while chunk := s.recv(1 << 16):
            chunks.append(chunk)
    return [json.loads(line) for line in b"".join(chunks).decode().splitlines() if line]


def query_host(ss_dir: str, cores: int) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """(every core's connections, {core: why it did not answer})."""
    rows: list[dict[str, Any]] = []
    missing: dict[int, str] = {}
    for core in range(cores):
        path = os.path.join(ss_dir, f"core{core}.sock")
        try:
            rows += query(path)
        except (OSError, ValueError) as exc:
            missing[core] = str(exc) if os.path.exists(path) else "not running"
    return rows, missing


def state_name(text: str) -> str:
    """``fin-wait-1`` / ``FIN_WAIT_1`` / ``established`` -> the engine's State name."""
    return text.strip().upper().replace("-", "_")


def _port(addr: str) -> int | None:
    """The port of ``ip:port``; None for a listener's ``0.0.0.0:*``."""
    port = addr.rsplit(":", 1)[1]
    return None if port == "*" else int(port)


def matches(row: dict[str, Any], states: set[str], ports: set[int],
            listening: bool | None = False) -> bool:
    """Whether ``row`` passes the filters; ``listening`` True keeps only listeners, False only
    connections, None both (ss -l, the default, ss -a)."""
    if listening is not None and (row["state"] == "LISTEN") != listening:
        return False
    if states and row["state"] not in states:
        return False
    if ports and not {_port(row["local"]), _port(row["remote"])} & ports:
        return False
    return True


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.1f}"


def format_rows(rows: list[dict[str, Any]]) -> list[str]:
    """ss -tni style: a header, then one line per connection."""
    out = [f"{'Core':<4} {'State':<12} {'Recv-Q':>7} {'Send-Q':>7} {'Local Address:Port':<22} "
           f"{'Peer Address:Port':<22} Info"]
    for r in sorted(rows, key=lambda r: (r["core"], r["local"], r["remote"])):
        if r["state"] == "LISTEN":
            out.append(f"{r['core']:<4} {'listen':<12} {r['recv_q']:>7} {r['send_q']:>7} "
                       f"{r['local']:<22} {r['remote']:<22}")
            continue
        ssthresh = "-" if r["ssthresh"] is None else r["ssthresh"]
        out.append(f"{r['core']:<4} {r['state'].lower().replace('_', '-'):<12} "
                   f"{r['recv_q']:>7} {r['send_q']:>7} {r['local']:<22} {r['remote']:<22} "
                   f"mss:{r['mss']} cwnd:{r['cwnd']} ssthresh:{ssthresh} "
                   f"rtt:{_ms(r['srtt'])}/{_ms(r['rttvar'])} rto:{_ms(r['rto'])} "
                   f"unacked:{r['in_flight']} delivered:{r['delivered']} "
                   f"retrans:{r['retransmits']}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="p4mtcp ss", description=__doc__.split("\n")[0])
    p.add_argument("-f", dest="conf", required=True, help="the host's mtcp.conf")
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("-l", "--listening", action="store_true", help="only listening sockets")
    shown.add_argument("-a", "--all", action="store_true", help="listeners and connections")
    p.add_argument("--state", action="append", default=[],
                   help="only connections in this state (repeatable)")
    p.add_argument("--port", action="append", type=int, default=[],
                   help="only connections with this local or remote port (repeatable)")
    p.add_argument("--watch", type=float, metavar="SECS",
                   help="refresh every SECS seconds until Ctrl-C")
    p.add_argument("--json", action="store_true", help="JSON lines instead of the table")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        cfg = load_mtcp_conf(args.conf)
    except (OSError, ConfigError) as exc:
        print(f"ss: {exc}", file=sys.stderr)
        return 2
    if not cfg.ss_dir:
        print(f"ss: {args.conf} has no ss_dir: its core processes serve no connection table",
              file=sys.stderr)
        return 2
    if args.watch is not None and args.watch <= 0:
        print("ss: --watch needs a positive number of seconds", file=sys.stderr)
        return 2
    states = {state_name(s) for s in args.state}
    ports = set(args.port)
    listening = None if args.all else args.listening
    try:
        while True:
            rows, missing = query_host(cfg.ss_dir, cfg.num_cores)
            shown = [r for r in rows if matches(r, states, ports, listening)]
            if args.watch is not None:
                print("\033[H\033[J", end="")
            lines = [json.dumps(r) for r in shown] if args.json else format_rows(shown)
            lines += [f"# core {c}: {why}" for c, why in sorted(missing.items())]
            print("\n".join(lines), flush=True)
            if args.watch is None:
                return 0 if len(missing) < cfg.num_cores else 1
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # the reader went away (`p4mtcp ss ... | head`): done
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())

"""Running a packetdrill script on a :class:`~p4mtcp.testing.Host`, in virtual time.

Timing follows packetdrill: the first event is at 0; ``+t`` counts from when the previous event
finished, except that consecutive inbound packets count from the previous one's script time; an
outbound packet must leave within [start - tolerance, end + tolerance] (``end`` = start unless a
range ``a~b`` is given); ``*`` accepts any time. The tolerance is ``--tolerance_usecs`` (4 ms by
default, as packetdrill's) or ``--tolerance_percent`` of the time since the previous event when
that is larger. Virtual time makes the stack itself exact; the tolerance absorbs script rounding.

Numbers follow packetdrill's relative numbering: the stack's sequence numbers (``seq`` of ``>``,
``ack`` and SACK blocks of ``<``) count from its initial sequence number; the script's own side
is used as written. An outbound packet's TS val is not checked (packetdrill's default); inbound
TS ecr values name outbound TS vals by their script value, and are mapped to what the stack
really sent (or its latest TS val when the script's value was never seen).

System calls run on the mTCP API (:mod:`p4mtcp.testing.packetdrill.syscalls`); p4mtcp sockets
never block, so a call on a socket the script left blocking that cannot finish yet is retried
after every loop step until it can (its ``a...b`` span is then checked).
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import time as wallclock
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scapy.layers.inet import TCP
from scapy.packet import Packet, Raw

from p4mtcp.control.tcp import TcpConfig

from ..host import LOCAL_IP, REMOTE_IP, Host
from ..match import ANY, MASK, Mismatch, compare, describe_template, payload_of
from .parse import parse_file
from .script import (
    Event, Failure, Option, PacketEvent, Script, ScriptError, Syscall, Unmapped)
from .syscalls import Syscalls

DEFAULT_TOLERANCE = 0.004        # packetdrill's --tolerance_usecs default (4000)
_PSH = 0x08
_SCAPY_FLAGS = {"S": "S", "F": "F", "R": "R", "P": "P", ".": "A", "U": "U", "E": "E", "W": "C"}


@dataclass
class Outcome:
    """One script's result: status is "passed", "failed", "skipped" or "error" (unreadable)."""

    path: str
    status: str
    reason: str = ""       # failure: the first mismatch; skip: why it cannot run on p4mtcp
    line: int | None = None
    detail: str = ""       # the full diff of a failure
    events: int = 0        # events run
    wall_seconds: float = 0.0

    def headline(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{self.status.upper():7} {where}" + (f": {self.reason}" if self.reason else "")


def _options(opts: tuple[Option, ...] | str | None, inbound: bool, ecr_map: dict[int, int],
             last_tsval: int | None) -> list[tuple[str, Any]] | None:
    """packetdrill options as scapy's (None for ``<...>``); inbound TS ecr values are mapped to
    the stack's, outbound TS vals become wildcards."""
    if opts is None:
        return []
    if isinstance(opts, str):      # ELLIPSIS: <...>
        return None
    out: list[tuple[str, Any]] = []
    for o in opts:
        if o.name == "mss":
            out.append(("MSS", o.value))
        elif o.name == "wscale":
            out.append(("WScale", o.value))
        elif o.name == "sackOK":
            out.append(("SAckOK", b""))
        elif o.name == "nop":
            out.append(("NOP", None))
        elif o.name == "eol":
            out.append(("EOL", None))
        elif o.name == "sack":
            out.append(("SAck", tuple(x for block in o.value for x in block)))
        elif o.name == "TS":
            val, ecr = o.value
            if inbound:
                live = ecr_map.get(ecr, ecr if ecr == 0 or last_tsval is None else last_tsval)
                out.append(("Timestamp", (val, live)))
            else:
                out.append(("Timestamp", (ANY, ecr)))
    return out


def _tcp(p: PacketEvent, options: list[tuple[str, Any]] | None, outbound: bool) -> Packet:
    flags = "".join(_SCAPY_FLAGS[c] for c in p.flags)
    fields: dict[str, Any] = {"flags": flags, "seq": p.seq}
    if p.ack is not None:
        fields["ack"] = p.ack
    elif not outbound:
        fields["ack"] = 0
    if p.win is not None:
        fields["window"] = p.win
    if p.urg is not None:
        fields["urgptr"] = p.urg
    if options is not None:
        fields["options"] = options
    return TCP(**fields) / Raw(bytes(p.length))


class Runner:
    """Executes one parsed script; ``settings`` override the script's p4mtcp directives."""

    def __init__(self, script: Script, *, settings: Mapping[str, Any] | None = None,
                 nic: bool = False, tolerance: float | None = None, tso: bool = False,
                 ignore_psh: bool = False):
        self.script = script
        self.tso = tso
        self.ignore_psh = ignore_psh
        merged = dict(script.settings)
        merged.update(settings or {})
        self.nic = bool(merged.pop("nic", nic))
        opts = script.options
        self.tolerance = tolerance if tolerance is not None else (
            int(opts["tolerance_usecs"]) / 1e6 if "tolerance_usecs" in opts else DEFAULT_TOLERANCE)
        self.tolerance_percent = float(opts.get("tolerance_percent", 0))
        if "mss" in opts:
            merged.setdefault("mss", int(opts["mss"]))
        unknown = sorted(set(merged) - {f.name for f in dataclasses.fields(TcpConfig)})
        if unknown:
            raise ValueError(f"unknown setting {', '.join(unknown)} (TcpConfig fields and nic)")
        self.host = Host(tcp=merged, nic=self.nic, local_ip=opts.get("local_ip", LOCAL_IP),
                         remote_ip=opts.get("remote_ip", REMOTE_IP))
        self.calls = Syscalls(self.host, bind_port=int(opts.get("bind_port", 8080)),
                              connect_port=int(opts.get("connect_port", 8080)))
        self.host.on_step = self.calls.retry_pending
        self.ecr_map: dict[int, int] = {}
        self.last_tsval: int | None = None
        self.prev: Event | None = None
        self.prev_start = 0.0

    # ------------------------------------------------------------------ timing

    def _window(self, ev: Event) -> tuple[float, float, bool]:
        """(start, end, checked) in script seconds, packetdrill's rules (module doc)."""
        t = ev.time
        if t.kind == "abs":
            start = t.start
            end = t.end if t.end is not None else start
            return start, end, True
        inbound = isinstance(ev.body, PacketEvent) and ev.body.direction == "<"
        prev_inbound = (self.prev is not None and isinstance(self.prev.body, PacketEvent)
                        and self.prev.body.direction == "<")
        offset = self.prev_start if inbound and prev_inbound else self.host.now
        if t.kind == "any":
            return offset, offset, False
        start = offset + t.start
        end = offset + t.end if t.end is not None else start
        return start, end, True

    def _tol(self, start: float) -> float:
        delta = start - self.prev_start
        return max(self.tolerance, self.tolerance_percent / 100.0 * delta)

    def _late(self, ev: Event, start: float, checked: bool) -> None:
        """Inbound packets and calls run at their time; one already past (an earlier outbound
        packet came late) is a timing error beyond the tolerance."""
        if checked and self.host.now > start + self._tol(start):
            raise Failure(ev.line, f"timing error: expected the event at {start:.6f} s but the "
                                   f"script reached it at {self.host.now:.6f} s")

    # ------------------------------------------------------------------ events

    def run(self) -> int:
        """Run every event; Failure on the first that does not hold. Returns events run."""
        for n, ev in enumerate(self.script.events):
            if n == 0 and (ev.time.kind == "any" or ev.time.start != 0):
                raise Failure(ev.line, "the first event must be at time 0")
            start, end, checked = self._window(ev)
            if isinstance(ev.body, PacketEvent) and ev.body.direction == ">":
                self._outbound(ev, ev.body, start, end, checked)
            else:
                if start > self.host.now:
                    self.host.run_until(start)
                self._late(ev, start, checked)
                if isinstance(ev.body, PacketEvent):
                    self._inbound(ev.body)
                else:
                    self._syscall(ev, ev.body, start)
            self.prev, self.prev_start = ev, start
        self.calls.finish()
        return len(self.script.events)

    def _inbound(self, p: PacketEvent) -> None:
        opts = _options(p.options, True, self.ecr_map, self.last_tsval)
        self.host.inject(_tcp(p, opts, outbound=False))

    def _outbound(self, ev: Event, p: PacketEvent, start: float, end: float, checked: bool) -> None:
        tol = self._tol(start)
        deadline = end + tol if checked else self.host.now + 3600.0
        tpl = _tcp(p, _options(p.options, False, self.ecr_map, self.last_tsval), outbound=True)
        got = self.host.next_segment(deadline)
        script_line = describe_template(tpl)
        if got is None:
            raise Failure(ev.line, f"expected outbound packet at {start:.6f} s, none sent by "
                                   f"{deadline:.6f} s", f"script: {script_line}")
        if self.tso and len(payload_of(got[TCP])) < p.length:
            got = self._coalesce(got, p.length, deadline)
        actual = self.host.show(got)
        if got.checksum_errors:
            raise Failure(ev.line, f"outbound packet with a {got.checksum_errors[0]}",
                          f"actual: {actual}")
        f = self.host.flow(got[TCP].sport, got[TCP].dport)
        if self.ignore_psh:     # PSH is advisory (RFC 9293 3.9.1); senders set it differently
            got = got.copy()
            got[TCP].flags = int(got[TCP].flags) & ~_PSH
            tpl[TCP].flags = int(tpl[TCP].flags) & ~_PSH
        diffs = compare(got, tpl, f.stack_isn or 0)
        if diffs:
            m = Mismatch(f"outbound packet at {got.time:.6f} s differs", diffs,
                         script_line, actual)
            raise Failure(ev.line, m.first(), str(m))
        self._learn_tsval(p, got)
        if checked and not (start - tol <= got.time <= end + tol):
            when = f"{start:.6f}" + (f"~{end:.6f}" if end != start else "")
            raise Failure(ev.line, f"timing error: expected outbound packet at {when} s but it "
                                   f"left at {got.time:.6f} s; tolerance {tol:.6f} s",
                          f"script: {script_line}\nactual: {actual}")

    def _coalesce(self, first: Packet, length: int, deadline: float) -> Packet:
        """Contiguous segments taken as one of ``length`` bytes, the way a Linux sender's TSO/GSO
        super-segment would appear (packetdrill does the same in its wire mode): the payloads
        joined, the flags of all of them, the time of the last."""
        parts = [first]
        end = (first[TCP].seq + len(payload_of(first[TCP]))) & MASK
        total = len(payload_of(first[TCP]))
        while total < length:
            nxt = self.host.next_segment(deadline)
            if nxt is None:
                break
            if nxt[TCP].seq != end or not payload_of(nxt[TCP]):
                self.host.sent.appendleft(nxt)
                break
            parts.append(nxt)
            n = len(payload_of(nxt[TCP]))
            end, total = (end + n) & MASK, total + n
        if len(parts) == 1:
            return first
        merged = first.copy()
        merged[TCP].remove_payload()
        merged[TCP].add_payload(Raw(b"".join(payload_of(x[TCP]) for x in parts)))
        merged[TCP].flags = functools.reduce(operator.or_, (int(x[TCP].flags) for x in parts))
        merged.time = parts[-1].time
        merged.checksum_errors = [e for x in parts for e in x.checksum_errors]
        return merged

    def _learn_tsval(self, p: PacketEvent, got: Packet) -> None:
        live = dict(got[TCP].options).get("Timestamp")
        if live is None:
            return
        self.last_tsval = live[0]
        if isinstance(p.options, tuple):
            for o in p.options:
                if o.name == "TS":
                    self.ecr_map[o.value[0]] = live[0]

    def _syscall(self, ev: Event, call: Syscall, start: float) -> None:
        block_end = None
        t = ev.time
        if t.block_end is not None:     # a blocking call's end: same base as its start
            block_end = (start if t.block_end_rel else start - t.start) + t.block_end
        self.calls.run(ev.line, call, block_end, self._tol(start))


def run_script(script: Script, *, settings: Mapping[str, Any] | None = None, nic: bool = False,
               tolerance: float | None = None, tso: bool = False, ignore_psh: bool = False
               ) -> Outcome:
    """Run one parsed script; never raises for what the script or the stack does."""
    t0 = wallclock.monotonic()
    if script.skip:
        return Outcome(script.path, "skipped", script.skip, script.skip_line)
    if not script.events:
        return Outcome(script.path, "error", "no events in the script")
    try:
        runner = Runner(script, settings=settings, nic=nic, tolerance=tolerance, tso=tso,
                        ignore_psh=ignore_psh)
    except (TypeError, ValueError, OSError) as exc:   # a setting or address refused
        return Outcome(script.path, "error", f"settings: {exc}")
    try:
        n = runner.run()
        out = Outcome(script.path, "passed", events=n)
    except Unmapped as u:
        out = Outcome(script.path, "skipped", u.reason, u.line)
    except Failure as f:
        out = Outcome(script.path, "failed", f.reason, f.line, f.detail)
    finally:
        runner.host.close()
    out.wall_seconds = wallclock.monotonic() - t0
    return out


def run_path(path: str, **kwargs: Any) -> Outcome:
    """Parse and run the script at ``path``; an unreadable script is an "error" outcome."""
    try:
        script = parse_file(path)
    except ScriptError as exc:
        return Outcome(path, "error", str(exc), exc.line)
    except OSError as exc:
        return Outcome(path, "error", f"cannot read: {exc.strerror}")
    return run_script(script, **kwargs)



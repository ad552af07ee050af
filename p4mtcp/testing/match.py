"""Checking a segment the stack sent against a scapy template, and saying how they differ.

A template is a scapy ``TCP()`` or ``IP()/TCP()`` (optionally with a ``Raw`` payload). Only the
fields the template sets are compared; everything left unset is a wildcard. Inside TCP options,
:data:`ANY` stands for any value (``("Timestamp", (ANY, 0))``). Sequence numbers of the stack's
own byte stream (``seq`` of what it sends) are compared relative to its initial sequence number,
as packetdrill and tcpdump print them; the peer's numbers (``ack``, SACK blocks) are the test's
own and compared as they are.

A difference raises :class:`Mismatch`, which lists each differing field as (field, expected,
got) and shows both segments on one line each, in packetdrill's notation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from scapy.layers.inet import IP, TCP
from scapy.packet import Packet, Raw

MASK = 0xFFFFFFFF
_FLAG_CHARS = (("F", 0x01), ("S", 0x02), ("R", 0x04), ("P", 0x08), ("U", 0x20), ("E", 0x40),
               ("W", 0x80), (".", 0x10))
_TCP_FIELDS = ("sport", "dport", "seq", "ack", "dataofs", "reserved", "flags", "window",
               "chksum", "urgptr")
_IP_FIELDS = ("src", "dst", "tos", "ttl", "id", "flags", "frag", "proto", "ihl")


class _Any:
    """Matches any value; prints as packetdrill's wildcard."""

    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "*"


ANY: Any = _Any()
"""Wildcard for a value inside a TCP option of a template."""


class Mismatch(AssertionError):
    """The stack did something else than expected: ``diffs`` is [(field, expected, got)]."""

    def __init__(self, what: str, diffs: Sequence[tuple[str, Any, Any]] = (),
                 expected: str = "", actual: str = ""):
        self.what = what
        self.diffs = list(diffs)
        self.expected = expected
        self.actual = actual
        lines = [what]
        lines += [f"  {f}: expected {e}, got {g}" for f, e, g in self.diffs]
        if expected:
            lines.append(f"  expected: {expected}")
        if actual:
            lines.append(f"  actual:   {actual}")
        super().__init__("\n".join(lines))

    def first(self) -> str:
        """The first difference on one line (for summaries)."""
        if self.diffs:
            f, e, g = self.diffs[0]
            return f"{f}: expected {e}, got {g}"
        return self.what


def flag_text(flags: int) -> str:
    """TCP flags in packetdrill's letters (``S.`` for SYN+ACK, ``.`` for a bare ACK)."""
    return "".join(c for c, bit in _FLAG_CHARS if flags & bit)


def option_text(options: Sequence[tuple[str, Any]]) -> str:
    """TCP options as packetdrill writes them: ``<mss 1460,sackOK,TS val 1 ecr 0,nop,wscale 7>``."""
    out = []
    for name, value in options:
        if name == "MSS":
            out.append(f"mss {value}")
        elif name == "SAckOK":
            out.append("sackOK")
        elif name == "Timestamp":
            out.append(f"TS val {value[0]!r} ecr {value[1]!r}")
        elif name == "NOP":
            out.append("nop")
        elif name == "EOL":
            out.append("eol")
        elif name == "WScale":
            out.append(f"wscale {value!r}")
        elif name == "SAck":
            if value is ANY:
                out.append("sack *")
            else:
                out.append("sack " + " ".join(f"{value[i]!r}:{value[i + 1]!r}"
                                              for i in range(0, len(value) - 1, 2)))
        else:
            out.append(f"{name} {value!r}")
    return "<" + ",".join(out) + ">"


def payload_of(tcp: Packet) -> bytes:
    raw = tcp.getlayer(Raw)
    return bytes(raw.load) if raw is not None else b""


def describe(pkt: Packet, seq_base: int = 0, ack_base: int = 0, direction: str = ">") -> str:
    """One line in packetdrill notation, numbers relative to ``seq_base``/``ack_base``."""
    tcp = pkt[TCP]
    n = len(payload_of(tcp))
    seq = (tcp.seq - seq_base) & MASK
    text = f"{direction} {flag_text(int(tcp.flags))} {seq}:{(seq + n) & MASK}({n})"
    if int(tcp.flags) & 0x10:
        text += f" ack {(tcp.ack - ack_base) & MASK}"
    text += f" win {tcp.window}"
    if tcp.options:
        text += " " + option_text(tcp.options)
    return text


def describe_template(tpl: Packet) -> str:
    """A template in the same notation; unset fields print as ``*``."""
    tcp = _template_layers(tpl)[1]
    f = tcp.fields
    flags = flag_text(int(f["flags"])) if "flags" in f else "*"
    n = len(payload_of(tcp))
    if tcp.getlayer(Raw) is None:
        seq = f"{f['seq']}:*" if "seq" in f else "*"
    else:
        seq = f"{f['seq']}:{(f['seq'] + n) & MASK}({n})" if "seq" in f else f"*({n})"
    text = f"> {flags} {seq}"
    if "ack" in f:
        text += f" ack {f['ack']}"
    if "window" in f:
        text += f" win {f['window']}"
    if f.get("options"):
        text += " " + option_text(f["options"])
    return text


def _template_layers(tpl: Packet) -> tuple[Packet | None, Packet]:
    if not isinstance(tpl, Packet) or TCP not in tpl:
        raise TypeError(f"template {tpl!r} has no TCP layer")
    return (tpl[IP] if IP in tpl else None), tpl[TCP]


def _shown(field: str, value: Any) -> Any:
    return flag_text(int(value)) if field == "flags" else value


def compare_options(expected: Sequence[tuple[str, Any]], got: Sequence[tuple[str, Any]]
                    ) -> list[tuple[str, Any, Any]]:
    """Options compared kind by kind, in order (as packetdrill does); ANY matches any value."""
    if len(expected) != len(got) or any(e[0] != g[0] for e, g in zip(expected, got)):
        return [("tcp.options", option_text(expected), option_text(got))]
    diffs = []
    for (name, ev), (_, gv) in zip(expected, got):
        if ev is ANY:
            continue
        if isinstance(ev, tuple):
            if not isinstance(gv, tuple) or len(ev) != len(gv) or any(
                    e is not ANY and e != g for e, g in zip(ev, gv)):
                diffs.append((f"tcp.options.{name}", ev, gv))
        elif ev != gv:
            diffs.append((f"tcp.options.{name}", ev, gv))
    return diffs


def compare(actual: Packet, template: Packet, seq_base: int = 0) -> list[tuple[str, Any, Any]]:
    """(field, expected, got) for every field the template sets that ``actual`` does not match.

    ``seq_base`` is the stack's initial sequence number: ``seq`` is compared relative to it."""
    ip_tpl, tcp_tpl = _template_layers(template)
    diffs: list[tuple[str, Any, Any]] = []
    if ip_tpl is not None:
        for name in _IP_FIELDS:
            if name in ip_tpl.fields and ip_tpl.fields[name] != actual[IP].getfieldval(name):
                diffs.append((f"ip.{name}", ip_tpl.fields[name], actual[IP].getfieldval(name)))
    tcp = actual[TCP]
    for name in _TCP_FIELDS:
        if name not in tcp_tpl.fields:
            continue
        want = tcp_tpl.fields[name]
        got = tcp.getfieldval(name)
        if name == "seq":
            got = (got - seq_base) & MASK
        if want is ANY:
            continue
        if name == "flags":
            want, got = int(want), int(got)
        if want != got:
            diffs.append((f"tcp.{name}", _shown(name, want), _shown(name, got)))
    if "options" in tcp_tpl.fields:
        diffs += compare_options(tcp_tpl.fields["options"], tcp.options)
    want_payload = payload_of(tcp_tpl)
    got_payload = payload_of(tcp)
    if tcp_tpl.getlayer(Raw) is not None and want_payload != got_payload:
        if len(want_payload) != len(got_payload):
            diffs.append(("tcp.payload length", len(want_payload), len(got_payload)))
        else:
            at = next(i for i, (a, b) in enumerate(zip(want_payload, got_payload)) if a != b)
            diffs.append((f"tcp.payload[{at}]", want_payload[at], got_payload[at]))
    return diffs

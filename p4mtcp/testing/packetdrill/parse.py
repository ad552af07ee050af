"""Reading packetdrill's script language (the TCP/IPv4 part) into :class:`Script`.

Lines are ``TIME EVENT``: a packet (``< S 0:0(0) win 1000 <mss 1000>``), a system call
(``connect(3, ..., ...) = -1 EINPROGRESS (Operation now in progress)``), a shell command in
backticks or a ``%{ python }%`` block. Times are absolute (``0.100``), relative (``+0.1``), any
(``*``), ranges (``0.1~0.2``, ``+0.1~+0.2``) and blocking spans (``0.1...0.2``). ``--name=value``
lines set options, ``//`` and ``/* */`` are comments, and ``// p4mtcp: key=value ...`` sets the
host under test (TcpConfig fields, e.g. ``initial_window=10 rto_min=0.2``).

What p4mtcp cannot run (shell commands, python blocks and their ``tcpi_*`` checks, IPv6, TCP Fast
Open, ECN, UDP/ICMP) does not fail the parse: the script is marked skipped with the first reason
and its line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .script import (
    ELLIPSIS, Call, Event, Option, Or, PacketEvent, Script, ScriptError, Syscall, Time)

_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r]+)
  | (?P<nl>\n)
  | (?P<code>%\{.*?\}%)
  | (?P<shell>`[^`]*`)
  | (?P<string>"[^"]*")
  | (?P<option>^--[A-Za-z0-9_-]+(?:=[^\n]*)?)
  | (?P<ellipsis>\.\.\.)
  | (?P<num>0[xX][0-9a-fA-F]+|\d+\.\d+|\.\d+|\d+)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_-]*)
  | (?P<punct>[<>()\[\]{},=|:+*~.\-!&])
""", re.VERBOSE | re.DOTALL | re.MULTILINE)
_SPANS = re.compile(r'/\*.*?\*/|//[^\n]*|`[^`]*`|"[^"]*"|%\{.*?\}%', re.DOTALL)
_DIRECTIVE = re.compile(r"//\s*p4mtcp:([^\n]*)")
_FLAG_LETTERS = set("SFRPUEW.")
_OPENERS = {"(": ")", "[": "]", "{": "}"}

# What cannot map onto p4mtcp, by the identifier that reveals it.
_UNSUPPORTED_IDENTS = {
    "AF_INET6": "IPv6", "TCP_INFO": "TCP_INFO (tcpi_*) checks", "MSG_FASTOPEN": "TCP Fast Open",
    "TCP_FASTOPEN": "TCP Fast Open", "TCP_FASTOPEN_CONNECT": "TCP Fast Open",
    "TCP_ZEROCOPY_RECEIVE": "TCP zerocopy", "MSG_ZEROCOPY": "MSG_ZEROCOPY",
}
_KNOWN_OPTIONS = {"tolerance_usecs", "tolerance_percent", "ip_version", "bind_port",
                  "connect_port", "local_ip", "remote_ip", "mss"}


class _Tok:
    __slots__ = ("kind", "text", "line")

    def __init__(self, kind: str, text: str, line: int):
        self.kind = kind
        self.text = text
        self.line = line

    def __repr__(self) -> str:
        return repr(self.text)


def _strip_comments(text: str) -> tuple[str, dict[str, Any]]:
    """The text with comments blanked (newlines kept, so line numbers hold) and the p4mtcp
    directives found in them. One left-to-right scan: whichever starts first wins, so "//" in a
    string or shell command stays, and a backtick in a comment is no shell command."""
    settings: dict[str, Any] = {}

    def blank(m: re.Match[str]) -> str:
        found = m.group(0)
        if not found.startswith("/"):
            return found                      # a string, shell command or code block
        d = _DIRECTIVE.match(found)
        if d:
            for item in d.group(1).split():
                key, sep, value = item.partition("=")
                if not sep:
                    raise ValueError(f"p4mtcp directive {item!r} is not key=value")
                settings[key] = setting_value(value)
        return re.sub(r"[^\n]", " ", found)

    return _SPANS.sub(blank, text), settings


def setting_value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def _tokenize(text: str, path: str) -> list[_Tok]:
    toks: list[_Tok] = []
    line = 1
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ScriptError(path, line, f"unexpected character {text[pos]!r}")
        kind = m.lastgroup or ""
        value = m.group(0)
        if kind != "ws":
            toks.append(_Tok(kind, value, line))
        line += value.count("\n")
        pos = m.end()
    return toks


def _statements(toks: list[_Tok]) -> list[list[_Tok]]:
    """Split at newlines outside brackets (a system call's arguments may span lines)."""
    out: list[list[_Tok]] = []
    cur: list[_Tok] = []
    depth = 0
    for t in toks:
        if t.kind == "nl":
            if depth == 0 and cur:
                out.append(cur)
                cur = []
            continue
        if t.text in _OPENERS:
            depth += 1
        elif t.text in (")", "]", "}"):
            depth = max(0, depth - 1)
        cur.append(t)
    if cur:
        out.append(cur)
    return out


class _Unsupported(Exception):
    def __init__(self, reason: str):
        self.reason = reason


class _Line:
    """A cursor over one statement's tokens."""

    def __init__(self, toks: list[_Tok], path: str):
        self.toks = toks
        self.i = 0
        self.path = path
        self.line = toks[0].line

    def peek(self, k: int = 0) -> _Tok | None:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else None

    def kind(self) -> str:
        """The next token's kind, "" at the end of the line."""
        t = self.peek()
        return t.kind if t is not None else ""

    def text(self) -> str:
        """The next token's text, "" at the end of the line."""
        t = self.peek()
        return t.text if t is not None else ""

    def next(self) -> _Tok:
        t = self.peek()
        if t is None:
            raise self.error("unexpected end of line")
        self.i += 1
        return t

    def accept(self, text: str) -> bool:
        t = self.peek()
        if t is not None and t.text == text:
            self.i += 1
            return True
        return False

    def expect(self, text: str) -> _Tok:
        t = self.next()
        if t.text != text:
            raise self.error(f"expected {text!r}, found {t.text!r}")
        return t

    def number(self) -> int:
        neg = self.accept("-")
        t = self.next()
        if t.kind != "num":
            raise self.error(f"expected a number, found {t.text!r}")
        try:
            value = int(t.text, 0)
        except ValueError:
            raise self.error(f"expected an integer, found {t.text!r}") from None
        return -value if neg else value

    def done(self) -> bool:
        return self.i >= len(self.toks)

    def error(self, message: str) -> ScriptError:
        return ScriptError(self.path, (self.peek() or self.toks[-1]).line, message)


def _time(c: _Line) -> Time:
    if c.accept("*"):
        return Time("any")
    rel = c.accept("+")
    t = c.next()
    if t.kind != "num":
        raise c.error(f"expected a time, found {t.text!r}")
    start = float(t.text)
    end = block_end = None
    block_rel = False
    if c.accept("~"):
        c.accept("+")
        end = float(c.next().text)
    if c.accept("..."):
        block_rel = c.accept("+")
        block_end = float(c.next().text)
    return Time("rel" if rel else "abs", start, end, block_end, block_rel)


def _options(c: _Line) -> tuple[Option, ...] | str:
    c.expect("<")
    if c.accept("..."):
        c.expect(">")
        return ELLIPSIS
    opts: list[Option] = []
    while True:
        name = c.next().text
        if name == "mss":
            opts.append(Option("mss", c.number()))
        elif name == "wscale":
            opts.append(Option("wscale", c.number()))
        elif name in ("sackOK", "nop", "eol"):
            opts.append(Option(name))
        elif name == "TS":
            c.expect("val")
            val = c.number()
            c.expect("ecr")
            opts.append(Option("TS", (val, c.number())))
        elif name == "sack":
            blocks = []
            while c.kind() == "num":
                left = c.number()
                c.expect(":")
                blocks.append((left, c.number()))
            opts.append(Option("sack", tuple(blocks)))
        elif name in ("FO", "exp-FO", "exp-tfo", "tfo"):
            raise _Unsupported("TCP Fast Open")
        elif name == "md5":
            raise _Unsupported("TCP MD5 signatures")
        else:
            raise c.error(f"unknown TCP option {name!r}")
        if c.accept(">"):
            return tuple(opts)
        c.expect(",")


def _packet(c: _Line, direction: str) -> PacketEvent:
    t = c.peek()
    if t is not None and t.text == "[":
        raise _Unsupported("ECN/IP header fields ([ect0], [ce], ...)")
    if t is not None and t.text in ("udp", "icmp", "UDP", "ICMP"):
        raise _Unsupported(f"{t.text} packets (p4mtcp speaks TCP)")
    flags = ""
    while c.kind() == "ident" or c.text() == ".":
        text = c.text()
        if text == "." or set(text) <= _FLAG_LETTERS:
            flags += c.next().text
        else:
            break
    if not flags or not set(flags) <= _FLAG_LETTERS:
        raise c.error(f"bad TCP flags {flags!r}")
    if set(flags) & set("EW"):
        raise _Unsupported("ECN (ECE/CWR flags)")
    seq = c.number()
    c.expect(":")
    end = c.number()
    c.expect("(")
    length = c.number()
    c.expect(")")
    if (end - seq) & 0xFFFFFFFF != length:
        raise c.error(f"sequence range {seq}:{end} does not hold ({length}) bytes")
    ack = win = urg = None
    options: tuple[Option, ...] | str | None = None
    while not c.done():
        word = c.text()
        if word == "ack":
            c.next()
            ack = c.number()
        elif word == "win":
            c.next()
            win = c.number()
        elif word == "urg":
            c.next()
            urg = c.number()
        elif word == "<":
            options = _options(c)
        elif word == "(" or word == "[":
            raise _Unsupported("ECN/IP header fields")
        else:
            raise c.error(f"unexpected {word!r} in a packet")
    return PacketEvent(direction, flags, seq, end, length, ack, win, urg, options)


def _expr(c: _Line) -> Any:
    terms = [_primary(c)]
    while c.accept("|"):
        terms.append(_primary(c))
    return terms[0] if len(terms) == 1 else Or(tuple(terms))


def _primary(c: _Line) -> Any:
    t = c.next()
    if t.kind == "ellipsis":
        return ELLIPSIS
    if t.text == "-":
        c.i -= 1
        return c.number()
    if t.kind == "num":
        return int(t.text, 0)
    if t.kind == "string":
        if ":" in t.text:
            raise _Unsupported("IPv6 addresses")
        return t.text[1:-1]
    if t.kind == "ident":
        if t.text in _UNSUPPORTED_IDENTS:
            raise _Unsupported(_UNSUPPORTED_IDENTS[t.text])
        if c.accept("("):
            return Call(t.text, _args(c, ")"))
        return t.text
    if t.text == "[":
        return list(_args(c, "]"))
    if t.text == "{":
        return _struct(c)
    raise c.error(f"unexpected {t.text!r} in arguments")


def _struct(c: _Line) -> dict[str, Any]:
    """``{name=value, ...}`` as a dict. packetdrill also writes fields by position (an iovec
    ``{..., 1000}`` is iov_base then iov_len: keys "0", "1") and array fields with their length
    (``msg_iov(1)=[...]``: the length under "msg_iov(n)")."""
    fields: dict[str, Any] = {}
    position = 0
    while not c.accept("}"):
        if not _named_field(c):
            fields[str(position)] = _expr(c)
            position += 1
        else:
            name = c.next().text
            if c.accept("("):
                count = _args(c, ")")
                fields[f"{name}(n)"] = count[0] if count else None
            c.expect("=")
            fields[name] = _expr(c)
        if not c.accept(","):
            c.expect("}")
            break
    return fields


def _named_field(c: _Line) -> bool:
    """Whether the struct field ahead is ``name=`` or ``name(...)=`` (else a value by position,
    which may itself be a call such as ``htons(80)``)."""
    t = c.peek()
    if t is None or t.kind != "ident":
        return False
    k = 1
    if (tok := c.peek(k)) is not None and tok.text == "(":   # skip the (...) after the name
        depth = 0
        while (tok := c.peek(k)) is not None:
            depth += {"(": 1, ")": -1}.get(tok.text, 0)
            k += 1
            if depth == 0:
                break
    after = c.peek(k)
    return after is not None and after.text == "="


def _args(c: _Line, close: str) -> tuple[Any, ...]:
    args: list[Any] = []
    while not c.accept(close):
        args.append(_expr(c))
        if not c.accept(","):
            c.expect(close)
            break
    return tuple(args)


def _syscall(c: _Line) -> Syscall:
    name = c.next().text
    c.expect("(")
    args = _args(c, ")")
    c.expect("=")
    if c.accept("..."):
        ret: int | str = ELLIPSIS
    else:
        ret = c.number()
    err = None
    t = c.peek()
    if t is not None and t.kind == "ident":
        err = c.next().text
    if c.accept("("):          # the errno's text: free words
        depth = 1
        while depth:
            x = c.next().text
            depth += {"(": 1, ")": -1}.get(x, 0)
    if not c.done():
        raise c.error(f"unexpected {c.text()!r} after the return value")
    return Syscall(name, args, ret, err)


def _event(c: _Line) -> Event:
    time = _time(c)
    t = c.peek()
    if t is None:
        raise c.error("a time with no event")
    if t.kind == "shell":
        raise _Unsupported(f"shell command {t.text} (Linux sysctls and tools do not apply)")
    if t.kind == "code":
        raise _Unsupported("%{ python }% blocks (tcpi_* checks)")
    if t.text in ("<", ">"):
        c.next()
        body: PacketEvent | Syscall = _packet(c, t.text)
    elif t.kind == "ident":
        body = _syscall(c)
    else:
        raise c.error(f"unexpected {t.text!r}")
    return Event(c.line, time, body)


def parse(text: str, path: str = "<script>") -> Script:
    """The script in ``text``; ScriptError (path:line) for what is not packetdrill syntax."""
    try:
        clean, settings = _strip_comments(text)
    except ValueError as exc:
        raise ScriptError(path, 1, str(exc)) from None
    script = Script(path, settings=settings)
    for toks in _statements(_tokenize(clean, path)):
        c = _Line(toks, path)
        first = toks[0]
        try:
            if first.kind == "option":
                name, _, value = first.text[2:].partition("=")
                if name == "ip_version" and value != "ipv4":
                    raise _Unsupported(f"--ip_version={value} (IPv4 only)")
                if name not in _KNOWN_OPTIONS:
                    raise _Unsupported(f"option --{name}")
                script.options[name] = value
                continue
            if first.kind in ("shell", "code"):
                raise _Unsupported("shell command " + first.text if first.kind == "shell"
                                   else "%{ python }% blocks (tcpi_* checks)")
            script.events.append(_event(c))
        except _Unsupported as u:
            if script.skip is None:
                script.skip, script.skip_line = u.reason, c.line
        except ScriptError:
            if script.skip is None:
                raise
            break   # unsupported syntax after a reason to skip: the skip stands
    return script


def parse_file(path: str | Path) -> Script:
    return parse(Path(path).read_text(), str(path))

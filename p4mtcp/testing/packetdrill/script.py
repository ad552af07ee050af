"""A parsed packetdrill script: timed events (packets in and out, system calls) and its settings.

Values mirror the script text; turning them into segments and mTCP calls is the runner's job.
Sequence numbers stay as written (packetdrill's relative numbering is resolved when a segment is
injected or compared).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

ELLIPSIS = "..."
"""An argument, option list or return value the script leaves unchecked."""


class ScriptError(ValueError):
    """The script cannot be read: ``path:line: what``."""

    def __init__(self, path: str, line: int, message: str):
        self.path = path
        self.line = line
        super().__init__(f"{path}:{line}: {message}")


@dataclass(frozen=True)
class Time:
    """When an event happens: ``kind`` is "abs", "rel" or "any"; ``end`` closes a range
    (``a~b``); ``block_end`` is the end of a blocking call (``a...b``), relative or not."""

    kind: str
    start: float = 0.0
    end: float | None = None
    block_end: float | None = None
    block_end_rel: bool = False


@dataclass(frozen=True)
class Option:
    """One TCP option: ``name`` is packetdrill's (mss, sackOK, TS, nop, eol, wscale, sack)."""

    name: str
    value: Any = None   # mss/wscale: int; TS: (val, ecr); sack: ((left, right), ...)


@dataclass(frozen=True)
class PacketEvent:
    direction: str                  # "<" inbound (injected), ">" outbound (expected)
    flags: str                      # packetdrill letters: S F R P . U E W
    seq: int
    end: int
    length: int
    ack: int | None = None
    win: int | None = None
    urg: int | None = None
    options: tuple[Option, ...] | str | None = None   # None: none; ELLIPSIS: unchecked


@dataclass(frozen=True)
class Call:
    """``name(arg, ...)`` inside an argument, e.g. ``htons(8080)``."""

    name: str
    args: tuple[Any, ...]


@dataclass(frozen=True)
class Or:
    """``A|B|...`` of flag names or numbers."""

    terms: tuple[Any, ...]


@dataclass(frozen=True)
class Syscall:
    name: str
    args: tuple[Any, ...]           # ints, names (str), ELLIPSIS, lists, dicts, Or, Call
    ret: int | str                  # int, or ELLIPSIS
    errno: str | None = None        # e.g. "EINPROGRESS" when ret is -1


Body = Union[PacketEvent, Syscall]


@dataclass(frozen=True)
class Event:
    line: int
    time: Time
    body: Body


@dataclass
class Script:
    path: str
    events: list[Event] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)    # --name=value lines
    settings: dict[str, Any] = field(default_factory=dict)   # "// p4mtcp: key=value" directives
    skip: str | None = None          # why the script cannot run on p4mtcp (first reason found)
    skip_line: int | None = None


class Failure(Exception):
    """An event did not go as the script says (line, first difference, full detail)."""

    def __init__(self, line: int, reason: str, detail: str = ""):
        self.line = line
        self.reason = reason
        self.detail = detail or reason
        super().__init__(reason)


class Unmapped(Exception):
    """The script needs something p4mtcp has no counterpart for: it is skipped, not failed."""

    def __init__(self, reason: str, line: int | None = None):
        self.reason = reason
        self.line = line
        super().__init__(reason)

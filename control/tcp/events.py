"""Values the engine hands to its caller: connection states and events."""

from __future__ import annotations

import enum
from typing import Any, NamedTuple


class State(enum.IntEnum):
    """The eleven RFC 9293 connection states (section 3.3.2). IntEnum: cheap hashing in sets."""

    CLOSED = 0
    LISTEN = 1
    SYN_SENT = 2
    SYN_RECEIVED = 3
    ESTABLISHED = 4
    FIN_WAIT_1 = 5
    FIN_WAIT_2 = 6
    CLOSE_WAIT = 7
    CLOSING = 8
    LAST_ACK = 9
    TIME_WAIT = 10


class EventKind(enum.IntEnum):
    """What happened to a socket; ``Event.sock`` is the Connection (or Listener for ACCEPTABLE)."""

    ACCEPTABLE = 1   # a listener has a connection ready for accept()
    CONNECTED = 2    # an active open completed (SYN_SENT -> ESTABLISHED)
    READABLE = 3     # new in-order data can be read
    WRITABLE = 4     # send space available after connect or after a send() that could not finish
    EOF = 5          # the peer's FIN arrived in order: recv() returns b"" once drained
    RESET = 6        # the peer reset the connection (error is ECONNRESET or ECONNREFUSED)
    ERROR = 7        # the connection failed locally (error is ETIMEDOUT)
    CLOSED = 8       # the TCB was freed; the engine forgets the connection


class Event(NamedTuple):
    kind: EventKind
    sock: Any

"""Host: everything a Connection or a Listener asks of the stack that runs it.

The contract is one way: connections and listeners hold a Host and call only this; the stack
implements it (TcpStack) and drives them through their public methods (on_segment, output,
on_timer, deadline). Sans-IO like the rest: "emit" queues bytes for the caller's next poll(),
"now" is the time the caller last gave the stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from .config import TcpConfig
from .events import EventKind
from .stats import TcpStats

if TYPE_CHECKING:
    from .connection import Connection
    from .listener import Listener


class Host(Protocol):
    config: TcpConfig
    stats: TcpStats
    now: float                     # the time of the current receive()/poll()

    def emit(self, src_ip: int, dst_ip: int, segment: bytes) -> None:
        """Queue one built TCP segment for transmission (counted in stats.segs_out)."""

    def emit_run(self, src_ip: int, dst_ip: int, segments: list[bytes]) -> None:
        """Queue built segments, in order (one burst of a connection's output)."""

    def send_rst(self, src_ip: int, dst_ip: int, sport: int, dport: int, seq: int, ack: int,
                 flags: int) -> None:
        """Build and queue a reset (counted in stats.rst_out)."""

    def mark(self, conn: Connection) -> None:
        """``conn`` has output to run at the next poll() (one ACK per batch)."""

    def event(self, kind: EventKind, sock: Connection | Listener) -> None:
        """Queue an event for the application."""

    def path_mtu_for(self, remote_ip: int) -> int:
        """The path MTU learned for ``remote_ip`` (RFC 1191 5), 0 if none is held."""

    def learn_path_mtu(self, remote_ip: int, mtu: int) -> None:
        """A believed fragmentation-needed message: the path to ``remote_ip`` carries ``mtu``."""

    def challenge(self, now: float) -> bool:
        """Whether one more challenge ACK may go out now (RFC 5961 7 rate limit; counted)."""

    def new_connection(self, local_ip: int, local_port: int, remote_ip: int, remote_port: int,
                       now: float, iss: int | None = None) -> Connection:
        """A fresh TCB in the stack's table (ISS from the stack's secret unless given)."""

    def forget(self, conn: Connection) -> None:
        """``conn``'s TCB is deleted: drop it from the table and the timers."""

    def unlisten(self, listener: Listener) -> None:
        """``listener`` closed: drop it from the table."""

"""The port contract every frame pipe keeps, whatever carries the frames.

The NIC process (dataplane/nic.py) and the per-core contexts (control/context.py) both drive
ports through this one protocol, so a link type is written once and works on either side.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

BATCH = 256
"""Frames one `recv_batch()` returns at most: fairness between the ports of one poll loop."""
MAX_FRAME = 65536 + 64
"""The largest frame any link carries (a 64 KiB IPv4 datagram plus L2 headers)."""
MAX_MTU = 9216
"""The largest IPv4 MTU a host may configure (mtcp.conf ``mtu``; 9000 is the usual jumbo frame):
its frames, Ethernet header and a VLAN tag included, fit MAX_FRAME on UNIX and shared-memory
links and one PACKET_MMAP receive block on AF_PACKET (an interface's own MTU must allow them)."""


@dataclass
class PortStats:
    rx_frames: int = 0
    tx_frames: int = 0
    tx_dropped: int = 0      # peer absent, its ring or buffer full, or a frame above MAX_FRAME
    rx_malformed: int = 0    # link messages or ring records that broke the format, dropped
    csum_finished: int = 0   # AF_PACKET frames whose checksum the kernel left to us
    vlan_restored: int = 0   # AF_PACKET frames whose 802.1Q/802.1ad tag the kernel had stripped
    rx_truncated: int = 0    # AF_PACKET frames longer than MAX_FRAME (GRO on?), dropped
    rx_dropped: int = 0      # frames lost because our receive ring was full (shm, PACKET_MMAP)
    tx_oversize: int = 0     # AF_PACKET frames longer than the interface's MTU, dropped


class Port(Protocol):
    """A frame pipe. Ports never block: a full or absent peer costs counted drops.

    A poll loop calls `arm()` right before it blocks on `fileno()`: a port whose peer only
    signals a sleeping reader (a shared-memory ring's doorbell) asks for that signal there, and
    returns False when frames are already waiting, so the loop must not block. Ports whose
    descriptor is readable by itself (sockets) always return True. A loop that is busy and
    will not block asks `pending()` instead: frames wait that `fileno()` does not show (without
    asking the writer for a doorbell it does not need).
    """

    stats: PortStats
    closed_by_peer: bool  # the other end went away (a link's peer died or closed); sticky

    def send(self, frame: bytes) -> bool: ...
    def send_batch(self, frames: Sequence[bytes]) -> int: ...  # n: frames[:n] sent, rest dropped
    def recv_batch(self) -> list[bytes]: ...
    def arm(self) -> bool: ...
    def pending(self) -> bool: ...
    def fileno(self) -> int: ...
    def close(self) -> None: ...


class OneFrameSend:
    """The rest of the protocol for an in-process port that only knows a one-frame `send`
    (test pipes, scripted ports): its descriptor is readable by itself and it has no peer that
    could hang up."""

    closed_by_peer = False
    send: Callable[[bytes], bool | None]  # the subclass's; False: that frame was dropped

    def send_batch(self, frames: Sequence[bytes]) -> int:
        for i, frame in enumerate(frames):
            if self.send(frame) is False:
                return i
        return len(frames)

    def arm(self) -> bool:
        return True

    def pending(self) -> bool:
        return False

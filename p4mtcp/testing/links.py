"""What stands between a test and the core context under test: a scripted port and a link.

The context talks to its NIC through a port (the link layer's port protocol: ``send``,
``send_batch``, ``recv_batch``, ``arm``, ``fileno``, ``close``, ``closed_by_peer``).
:class:`ScriptedPort` is that port with no NIC behind it: frames the test queues are what the
next loop step receives, frames the stack sends are kept for the test. A link decides what
happens on the way: :class:`DirectLink` hands frames over unchanged (the stack computes and
verifies its own checksums); ``nic.NicLink`` runs them through the embedded NIC's P4 pipeline.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Sequence
from typing import Protocol


class ScriptedPort:
    """A core port fed and drained by the test, in the test's thread. Never drops a frame and
    has no peer that could hang up."""

    closed_by_peer = False

    def __init__(self) -> None:
        # Context registers fileno() with poll(); a pipe nobody writes is a valid, idle fd.
        self._rfd, self._wfd = os.pipe()
        self.inbox: deque[bytes] = deque()
        self.outbox: deque[bytes] = deque()
        self.closed = False

    def send(self, frame: bytes) -> bool:
        self.outbox.append(bytes(frame))
        return True

    def send_batch(self, frames: Sequence[bytes]) -> int:
        self.outbox.extend(map(bytes, frames))
        return len(frames)

    def arm(self) -> bool:
        return True  # frames only arrive between loop steps; nothing to ask for

    def recv_batch(self) -> list[bytes]:
        frames = list(self.inbox)
        self.inbox.clear()
        return frames

    def fileno(self) -> int:
        return self._rfd

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self._rfd)
            os.close(self._wfd)


class Link(Protocol):
    """The path between the test's wire and the context's core port."""

    port: ScriptedPort
    offload_checksum: bool  # what the context is told about checksum work

    def to_stack(self, frame: bytes) -> None:
        """A frame arriving from the network."""

    def from_stack(self) -> list[bytes]:
        """Frames the stack sent since the last call, as they leave towards the network."""

    def drops(self) -> dict[str, int]:
        """Frames refused on the way in, by reason (empty when none)."""


class DirectLink:
    """No NIC: frames pass unchanged, so the engine computes and checks checksums itself."""

    offload_checksum = False

    def __init__(self) -> None:
        self.port = ScriptedPort()

    def to_stack(self, frame: bytes) -> None:
        self.port.inbox.append(frame)

    def from_stack(self) -> list[bytes]:
        frames = list(self.port.outbox)
        self.port.outbox.clear()
        return frames

    def drops(self) -> dict[str, int]:
        return {}

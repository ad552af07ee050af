"""StreamChannel state of the P4Runtime server: each stream's outgoing queue, arbitration
(P4Runtime spec 5: the highest election id per device and role is primary) and stream errors.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Callable, Iterable

from google.rpc import code_pb2
from p4.v1 import p4runtime_pb2 as pb

from .tables import P4Error


class Stream:
    """One StreamChannel: what it is waiting to send and what it claimed in arbitration.

    `put` may be called from any thread (arbitration from the loop, packet-ins from the data
    plane); the messages are queued on the server's event loop, in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._out: asyncio.Queue = asyncio.Queue()
        self._lock = threading.Lock()
        self.backlog = 0  # messages put and not yet taken by the RPC
        self.group: tuple[int, str] | None = None  # (device_id, role name)
        self.election: int | None = None

    def put(self, item, limit: int | None = None) -> bool:
        """Queue `item`; False (and nothing queued) when `limit` messages already wait."""
        with self._lock:
            if limit is not None and self.backlog >= limit:
                return False
            self.backlog += 1
        self._loop.call_soon_threadsafe(self._out.put_nowait, item)
        return True

    async def get(self):
        item = await self._out.get()
        with self._lock:
            self.backlog -= 1
        return item


class Arbitration:
    """Primary election per (device id, role): the connected stream with the highest election id.

    `on_change(device_id, has_primary)` runs (under the arbitration lock, so calls never
    interleave) after every change, for the server to route packet-ins only while someone
    can receive them."""

    def __init__(self, on_change: Callable[[int, bool], None] | None = None) -> None:
        self._on_change = on_change
        self._lock = threading.Lock()
        self._groups: dict[tuple[int, str], list[Stream]] = {}
        self._highest: dict[tuple[int, str], int] = {}

    def _primary(self, group: tuple[int, str]) -> Stream | None:
        elected = [s for s in self._groups.get(group, ()) if s.election is not None]
        return max(elected, key=lambda s: s.election, default=None)

    def _notify(self, group: tuple[int, str], streams: Iterable[Stream]) -> None:
        primary = self._primary(group)
        election = primary.election if primary else self._highest.get(group)
        for s in streams:
            msg = pb.StreamMessageResponse()
            a = msg.arbitration
            a.device_id = group[0]
            if group[1]:
                a.role.name = group[1]
            if election is not None:
                a.election_id.high, a.election_id.low = election >> 64, election & (2**64 - 1)
            if s is primary:
                a.status.code, a.status.message = code_pb2.OK, "primary"
            elif primary is not None:
                a.status.code = code_pb2.ALREADY_EXISTS
                a.status.message = "backup: another client is primary"
            else:
                a.status.code, a.status.message = code_pb2.NOT_FOUND, "no primary client"
            s.put(msg)

    def update(self, stream: Stream, device_id: int, role: str, election: int | None) -> None:
        """Apply one MasterArbitrationUpdate; the sender always gets a reply, the others one
        when the primary changed (spec 5.3)."""
        group = (device_id, role)
        with self._lock:
            if stream.group is not None and stream.group != group:
                raise P4Error(code_pb2.FAILED_PRECONDITION,
                              "a stream cannot change its device id or role")
            members = self._groups.setdefault(group, [])
            if election is not None and any(s.election == election for s in members if s is not stream):
                raise P4Error(code_pb2.INVALID_ARGUMENT,
                              f"election id {election} is already used by another client")
            before = self._primary(group)
            stream.group, stream.election = group, election
            if stream not in members:
                members.append(stream)
            if election is not None and election > self._highest.get(group, -1):
                self._highest[group] = election
            after = self._primary(group)
            self._notify(group, members if after is not before else [stream])
            self._changed(device_id)

    def _changed(self, device_id: int) -> None:
        if self._on_change is not None:
            self._on_change(device_id, any(self._primary(g) for g in self._groups
                                           if g[0] == device_id))

    def remove(self, stream: Stream) -> None:
        with self._lock:
            group = stream.group
            members = self._groups.get(group, [])
            if stream not in members:
                return
            was_primary = self._primary(group) is stream
            members.remove(stream)
            if was_primary and members:
                self._notify(group, members)
            self._changed(group[0])

    def is_primary(self, device_id: int, role: str, election: int | None) -> bool:
        with self._lock:
            primary = self._primary((device_id, role))
            return primary is not None and election is not None and primary.election == election

    def primaries(self, device_id: int) -> list[Stream]:
        with self._lock:
            groups = [g for g in self._groups if g[0] == device_id]
            return [p for p in map(self._primary, groups) if p is not None]


def stream_error(stream: Stream, code: int, message: str, packet: pb.PacketOut | None = None,
                 other: bool = False) -> None:
    """A StreamError for the client (P4Runtime spec, Stream Error Reporting); `details` names
    the kind of message at fault: the packet-out, or `other` for one that did not decode."""
    msg = pb.StreamMessageResponse()
    msg.error.canonical_code, msg.error.message = code, message
    if packet is not None:
        msg.error.packet_out.packet_out.CopyFrom(packet)
    elif other:
        msg.error.other.SetInParent()
    stream.put(msg)

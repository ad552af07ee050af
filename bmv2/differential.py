"""Put a frame corpus through one programmed switch and record everything that comes out.

`observe` sends `corpus.Frame`s in batches (one label at a time, so a batch never mixes cases),
waits until every port and the packet-in stream have been quiet for a moment, and files each
output under the frame whose nonce tail it carries (`corpus` explains the tail). Outputs whose
tail no single frame owns (frames cut inside their headers, zero padding) are filed under the frame
they equal (forwarded unchanged), else under their batch's label. Run it against two targets and compare the two `Observation`s: same
ports, same bytes, same packet-ins, same counters.

The tester's ends of the links are AF_PACKET sockets. The kernel takes the outer VLAN tag off a
received frame into PACKET_AUXDATA before any packet socket sees it; `PortTap` puts it back,
so what is recorded is the frame as it was on the wire, as libpcap reports it.
"""

from __future__ import annotations

import queue
import select
import socket
import struct
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import groupby

from p4mtcp.bmv2.controller import Controller
from p4mtcp.bmv2.corpus import Frame
from p4mtcp.link.afpacket import (PACKET_AUXDATA, PACKET_OUTGOING, SOL_PACKET,
                                  TP_STATUS_VLAN_TPID_VALID, TP_STATUS_VLAN_VALID)
from p4mtcp.link.frames import insert_vlan
from p4mtcp.p4src import FLOW_STEER

_AUXDATA = struct.Struct("=IIIHHHH")   # struct tpacket_auxdata
_CMSG_SPACE = socket.CMSG_SPACE(_AUXDATA.size)

Output = tuple[int, bytes]              # (port, frame)
PacketIn = tuple[int, int, bytes]       # (ingress_port, reason, payload)


class PortTap:
    """The tester's end of one switch port: sends frames as given, receives wire frames."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, frame: bytes) -> str | None:
        """None when sent, else the kernel's refusal (the same for every target)."""
        try:
            self.sock.send(frame)
        except OSError as exc:
            return f"send refused: {exc.strerror}"
        return None

    def receive(self, limit: int = 512) -> list[bytes]:
        """Frames that arrived (not our own sends), each with its VLAN tag back in place."""
        out = []
        for _ in range(limit):
            try:
                data, anc, _, addr = self.sock.recvmsg(65535, _CMSG_SPACE)
            except BlockingIOError:
                break
            if addr[2] == PACKET_OUTGOING:
                continue
            for level, kind, cdata in anc:
                if level == SOL_PACKET and kind == PACKET_AUXDATA:
                    status, _, _, _, _, tci, tpid = _AUXDATA.unpack_from(cdata)
                    if status & TP_STATUS_VLAN_VALID:
                        data = insert_vlan(data, tpid if status & TP_STATUS_VLAN_TPID_VALID
                                           else 0, tci)
            out.append(data)
        return out

    def close(self) -> None:
        self.sock.close()


@dataclass
class Observation:
    """What one target did with a corpus."""

    outputs: dict[int, list[Output]] = field(default_factory=lambda: defaultdict(list))
    packet_ins: dict[int, list[PacketIn]] = field(default_factory=lambda: defaultdict(list))
    unmatched: dict[str, list[Output | PacketIn]] = field(
        default_factory=lambda: defaultdict(list))
    refused: dict[int, str] = field(default_factory=dict)
    counters: dict[str, dict] = field(default_factory=dict)

    def of_frame(self, index: int) -> tuple[list[Output], list[PacketIn]]:
        return sorted(self.outputs.get(index, [])), sorted(self.packet_ins.get(index, []))

    def of_label(self, label: str) -> list:
        return sorted(self.unmatched.get(label, []))


def _owners(frames: Sequence[Frame], key: Callable[[Frame], bytes]) -> dict[bytes, int]:
    """key -> index of the one frame with that key (keys two frames share are left out)."""
    counts = Counter(map(key, frames))
    return {key(f): i for i, f in enumerate(frames) if counts[key(f)] == 1}


def observe(ctrl: Controller, sockets: dict[int, PortTap], frames: Sequence[Frame], *,
            batch: int = 64, quiet: float = 0.3, timeout: float = 10.0) -> Observation:
    """Send `frames` (packet-outs through `ctrl`), record every output, then read every counter."""
    obs = Observation()
    by_tail = _owners(frames, lambda f: f.tail)
    by_bytes = _owners(frames, lambda f: f.data)   # forwarded unchanged, tail or not
    by_fd = {s.fileno(): (port, s) for port, s in sockets.items()}

    def file(item: Output | PacketIn, data: bytes, label: str) -> None:
        index = by_tail.get(data[-4:], by_bytes.get(data))
        if index is None:
            obs.unmatched[label].append(item)
        elif len(item) == 2:
            obs.outputs[index].append(item)            # type: ignore[arg-type]
        else:
            obs.packet_ins[index].append(item)         # type: ignore[arg-type]

    def collect(label: str) -> None:
        """Until nothing arrived for `quiet` seconds (at most `timeout`)."""
        end = time.monotonic() + timeout
        last = time.monotonic()
        while time.monotonic() - last < quiet and time.monotonic() < end:
            ready, _, _ = select.select(list(by_fd), [], [], 0.02)
            for fd in ready:
                port, s = by_fd[fd]
                for data in s.receive():
                    file((port, data), data, label)
                    last = time.monotonic()
            while True:
                try:
                    pkt = ctrl.packet_ins.get_nowait()
                except queue.Empty:
                    break
                meta = ctrl.packet_in_metadata(pkt)
                file((meta.get("ingress_port", -1), meta.get("reason", -1), pkt.payload),
                     pkt.payload, label)
                last = time.monotonic()

    indexed = list(enumerate(frames))
    for label, group in groupby(indexed, key=lambda item: item[1].label):
        items = list(group)
        for start in range(0, len(items), batch):
            for index, frame in items[start:start + batch]:
                if frame.packet_out:
                    ctrl.packet_out(frame.data, egress_port=frame.port)
                    continue
                refusal = sockets[frame.port].send(frame.data)
                if refusal:
                    obs.refused[index] = refusal
            collect(label)
    collect("(after the corpus)")
    obs.counters = read_counters(ctrl)
    return obs


def read_counters(ctrl: Controller) -> dict[str, dict]:
    """Every non-zero cell of every counter of the program, and each entry's direct counter
    (a target may or may not list the cells still at zero)."""
    client = ctrl.client
    found: dict[str, dict] = {name: {i: v for i, v in client.read_counter(name).items() if any(v)}
                              for name in ctrl.schema.counters}
    found[f"{FLOW_STEER} direct"] = {repr(k): v for k, v in
                                     client.read_direct_counter(FLOW_STEER).items()}
    return found

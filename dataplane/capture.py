"""Packet capture in the embedded NIC: what the pipeline received and sent, per port, as pcap.

Layout (one classic pcap per port and direction, nanosecond timestamps, scapy's writer)::

    DIR/port<N>-<label>-rx.pcap      frames the pipeline received on port N
    DIR/port<N>-<label>-tx.pcap      frames the pipeline sent out of port N
    DIR/port<N>-<label>-rx.pcap.1    ... older ones after rotation (.1 newest, up to .K-1)

Direction is in the file name rather than in pcapng ``epb_flags`` because scapy's pcapng writer
stamps microseconds; its pcap writer stamps nanoseconds (magic ``a1b23c4d``), which tcpdump
(``--nano``), Wireshark and scapy all read. ``mergecap -w all.pcap DIR/*.pcap`` interleaves them.

Network and core ports carry Ethernet (``LINKTYPE_ETHERNET``). The CPU port's frames start with
the P4Runtime controller header before the Ethernet frame, so they get user link types:
packet-ins (sent to the CPU port, ``tx``) ``LINKTYPE_USER0`` (147) behind the 3-byte
``packet_in`` header, packet-outs (received from it, ``rx``) ``LINKTYPE_USER1`` (148) behind the
2-byte ``packet_out`` header. Wireshark shows them after Preferences > Protocols > DLT_USER:
DLT 147 with header size 3 and payload protocol ``eth_withoutfcs``, DLT 148 with header size 2.

Capturing never blocks the data path: the data-plane thread hands each batch (with one
``time.time_ns()`` stamp) to a bounded queue and a writer thread writes it; when the queue is full
the batch is dropped and counted (``CaptureStats.dropped``). Each file is bounded in size: at
``max_bytes`` it is rotated, and only ``files`` per port and direction are kept.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scapy.utils import RawPcapWriter

from .device import Device

log = logging.getLogger("p4mtcp.capture")

LINKTYPE_ETHERNET = 1
LINKTYPE_PACKET_IN = 147    # LINKTYPE_USER0: packet_in header + Ethernet
LINKTYPE_PACKET_OUT = 148   # LINKTYPE_USER1: packet_out header + Ethernet
SNAPLEN = 262144
RX, TX = "rx", "tx"
DEFAULT_MAX_BYTES = 64 << 20
DEFAULT_FILES = 4
DEFAULT_QUEUE = 4096        # batches
PCAP_HEADER = 24            # global header bytes (for the size bound)
RECORD_HEADER = 16
_LABEL = re.compile(r"[^A-Za-z0-9_.]+")


@dataclass
class CaptureStats:
    frames: int = 0         # frames written
    bytes: int = 0          # bytes written (record headers included)
    dropped: int = 0        # frames dropped because the writer lagged (queue full)
    rotations: int = 0


class _Stream:
    """One port and direction: the current file, rotated at ``max_bytes``."""

    def __init__(self, path: Path, linktype: int, max_bytes: int, files: int):
        self.path = path
        self.linktype = linktype
        self.max_bytes = max_bytes
        self.files = files
        self.size = 0
        self.writer: RawPcapWriter | None = None

    def write(self, ts_ns: int, frames: Sequence[bytes], stats: CaptureStats) -> None:
        sec, nsec = divmod(ts_ns, 1_000_000_000)
        for frame in frames:
            need = RECORD_HEADER + len(frame)
            if self.writer is None or self.size + need > self.max_bytes:
                self._rotate(stats)
            self.writer.write_packet(frame, sec=sec, usec=nsec)  # type: ignore[union-attr]
            self.size += need
            stats.frames += 1
            stats.bytes += need

    def _rotate(self, stats: CaptureStats) -> None:
        if self.writer is not None:
            self.writer.close()
            stats.rotations += 1
            # tcpdump -C/-W style: NAME.1 is the newest old file, NAME.<files-1> the oldest.
            for i in range(self.files - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{i - 1}" if i > 1
                                            else self.path.name)
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{i}"))
            if self.files == 1:
                self.path.unlink(missing_ok=True)
        self.writer = RawPcapWriter(str(self.path), linktype=self.linktype, nano=True,
                                    snaplen=SNAPLEN)
        self.writer.write_header(None)
        self.size = PCAP_HEADER

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class Capture:
    """Captures of every port of one NIC into ``directory``.

    ``labels`` names the ports in file names (e.g. ``{1: "net", 16: "core0"}``); ports without
    a label are captured too, named by number only. The data-plane thread calls
    :meth:`received` / :meth:`sent` with each batch; nothing else of it touches a file.
    """

    def __init__(self, directory: str | os.PathLike[str], cpu_port: int,
                 labels: Mapping[int, str] | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
                 files: int = DEFAULT_FILES, queue_size: int = DEFAULT_QUEUE):
        if max_bytes < PCAP_HEADER + RECORD_HEADER + SNAPLEN:
            raise ValueError(f"capture: max_bytes {max_bytes} is below one full record "
                             f"({PCAP_HEADER + RECORD_HEADER + SNAPLEN} bytes)")
        if files < 1:
            raise ValueError(f"capture: files {files} must be >= 1")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cpu_port = cpu_port
        self.labels = {cpu_port: "cpu", **(labels or {})}
        self.max_bytes = max_bytes
        self.files = files
        self.stats = CaptureStats()
        self._queue: queue.Queue[tuple[int, str, int, Sequence[bytes]] | None] = \
            queue.Queue(queue_size)
        self._streams: dict[tuple[int, str], _Stream] = {}
        self._thread = threading.Thread(target=self._run, name="nic-capture", daemon=True)
        self._thread.start()

    # -- the data-plane side (never blocks) ---------------------------------------------------

    def received(self, port: int, frames: Sequence[bytes]) -> None:
        """Frames the pipeline took in on ``port``."""
        self._offer(port, RX, frames)

    def sent(self, port: int, frames: Sequence[bytes]) -> None:
        """Frames the pipeline sent out of ``port``."""
        self._offer(port, TX, frames)

    def _offer(self, port: int, direction: str, frames: Sequence[bytes]) -> None:
        if not frames:
            return
        try:
            self._queue.put_nowait((port, direction, time.time_ns(), frames))
        except queue.Full:
            self.stats.dropped += len(frames)

    def wrap_packet_in(self, handler: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
        """``handler`` (the server's packet-in sink) that records each frame as sent to the CPU
        port first."""
        cpu = self.cpu_port

        def packet_in(frame: bytes) -> Any:
            self._offer(cpu, TX, (frame,))
            return handler(frame)

        return packet_in

    # -- the writer thread ---------------------------------------------------------------------

    def path(self, port: int, direction: str) -> Path:
        label = _LABEL.sub("_", self.labels.get(port, ""))
        name = f"port{port}-{label}-{direction}.pcap" if label else f"port{port}-{direction}.pcap"
        return self.dir / name

    def _stream(self, port: int, direction: str) -> _Stream:
        key = (port, direction)
        s = self._streams.get(key)
        if s is None:
            if port == self.cpu_port:
                linktype = LINKTYPE_PACKET_OUT if direction == RX else LINKTYPE_PACKET_IN
            else:
                linktype = LINKTYPE_ETHERNET
            s = self._streams[key] = _Stream(self.path(port, direction), linktype,
                                             self.max_bytes, self.files)
        return s

    def _run(self) -> None:
        get = self._queue.get
        while True:
            item = get()
            if item is None:
                break
            port, direction, ts, frames = item
            try:
                self._stream(port, direction).write(ts, frames, self.stats)
            except OSError as exc:  # disk full, directory removed: say so, keep the NIC going
                self.stats.dropped += len(frames)
                log.error("capture of port %d %s: %s", port, direction, exc)
        for s in self._streams.values():
            s.close()

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (bounded by ``timeout``) and close the files."""
        end = time.monotonic() + timeout
        while self._thread.is_alive() and time.monotonic() < end:
            try:
                self._queue.put(None, timeout=0.1)
                break
            except queue.Full:
                continue
        self._thread.join(max(0.0, end - time.monotonic()))


class CapturedDevice(Device):
    """A Device whose packet-ins ``capture`` records: every handler the P4Runtime server
    assigns to ``packet_in_handler`` is wrapped by :meth:`Capture.wrap_packet_in`, so frames the
    pipeline sends to the CPU port are captured on their way to the controller."""

    def __init__(self, capture: Capture, device_id: int = 1, cpu_port: int = 255,
                 flow_cache: bool = True):
        self.capture = capture
        super().__init__(device_id, cpu_port, flow_cache=flow_cache)

    @property  # type: ignore[override]
    def packet_in_handler(self) -> Callable[[bytes], Any] | None:
        return self._packet_in

    @packet_in_handler.setter
    def packet_in_handler(self, handler: Callable[[bytes], Any] | None) -> None:
        self._packet_in = None if handler is None else self.capture.wrap_packet_in(handler)


def label_for(spec: str) -> str:
    """A port's name in capture file names, from its spec: the interface or the link's file
    name (``veth0``, ``unix:/run/p4mtcp/core0`` -> ``core0``)."""
    return re.split(r"[:/]", spec)[-1]

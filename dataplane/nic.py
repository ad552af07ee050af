"""The `p4mtcp nic` process: ports <-> device <-> P4Runtime server.

One data-plane thread owns the pipeline: it polls every port, runs each received batch through
`Device.process` and sends the results out of their egress ports. Packet-outs arrive on gRPC
threads; they are queued and run on the data-plane thread too, so the pipeline is never entered
from two threads at once.

    p4mtcp nic --grpc 127.0.0.1:9559 --cpu-port 255 -i 1@veth0 -i 16@shm:/tmp/x/core0

Before it sleeps, the loop arms every port (`Port.arm`): a shared-memory link then rings its
doorbell for the next frame, and a port whose frames are already waiting is read at once
instead of slept on. While frames keep coming it does not arm (`Port.pending` finds the rings
with frames), so busy writers ring no doorbells. An idle NIC blocks in the kernel, no CPU.
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import select
import signal
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from p4mtcp.link import Port, open_port
from p4mtcp.p4info import P4Schema

from .capture import Capture, CapturedDevice, label_for
from .device import Device

if TYPE_CHECKING:
    from .server import P4RuntimeServer

log = logging.getLogger("p4mtcp.nic")

MAX_PORT = 510  # v1model: 511 is the drop port
FLUSH_EVERY = 32
"""Frames in per flush of the grouped outputs. Flushing once per received batch (up to
link.BATCH) holds the first frame back until the last is processed and leaves the next process
idle meanwhile; 32 keeps the syscall saving and measured best (bench_bulk, bench_short_conn)."""


@dataclass
class NicStats:
    frames_in: int = 0
    frames_out: int = 0
    no_such_port: int = 0      # the pipeline chose an egress port nothing is attached to
    no_packet_in: int = 0      # CPU-port frames while no controller stream is open
    pipeline_errors: int = 0   # the mirror raised (a bug): frame dropped, logged


def parse_port_arg(arg: str) -> tuple[int, str]:
    """`NUM@SPEC` -> (NUM, SPEC); ValueError says what is wrong."""
    num, sep, spec = arg.partition("@")
    if not sep or not spec:
        raise ValueError(f"-i {arg!r}: expected NUM@SPEC, e.g. 1@veth0 or 16@shm:/run/p4mtcp/core0")
    try:
        port = int(num, 0)
    except ValueError:
        raise ValueError(f"-i {arg!r}: port number {num!r} is not an integer") from None
    if not 0 <= port <= MAX_PORT:
        raise ValueError(f"-i {arg!r}: port {port} is outside 0..{MAX_PORT}")
    return port, spec


class Nic:
    """Ports, a Device and (optionally) its P4Runtime server, run in-process.

    `ports` maps port numbers to spec strings or open Port objects. With `grpc_address=None` no
    server is started: tests program `nic.device` directly.
    """

    def __init__(self, ports: Mapping[int, str | Port], cpu_port: int = 255,
                 grpc_address: str | None = "127.0.0.1:9559", device: Device | None = None,
                 p4info: str | None = None, capture: Capture | None = None):
        if cpu_port in ports:
            raise ValueError(f"port {cpu_port} is the CPU port; it cannot also be a frame port")
        self.cpu_port = cpu_port
        self.device = device or Device(cpu_port=cpu_port)
        self.grpc_address = grpc_address
        self.stats = NicStats()
        self._specs = dict(ports)
        self.ports: dict[int, Port] = {}
        self._p4info = p4info
        self.capture = capture  # dataplane/capture.py: pcap of every port, off when None
        self._server: P4RuntimeServer | None = None
        self._dataplane: threading.Thread | None = None
        self._stop = threading.Event()
        self._packet_outs: collections.deque[bytes] = collections.deque()
        self._wake_r = self._wake_w = -1

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> "Nic":
        try:
            for num, spec in self._specs.items():
                self.ports[num] = open_port(spec) if isinstance(spec, str) else spec
            if self._p4info:
                self.device.set_pipeline(P4Schema.from_file(self._p4info).p4info, b"")
            self.device.packet_out_handler = self._queue_packet_out
            if self.grpc_address:
                from .server import serve
                self._server = serve(self.device, self.grpc_address)
        except BaseException:
            self._close_ports()
            raise
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._dataplane = threading.Thread(target=self._run, name="nic-dataplane", daemon=True)
        self._dataplane.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake()
        if self._dataplane is not None:
            self._dataplane.join(timeout=5)
            self._dataplane = None
        if self.capture is not None:
            self.capture.close()
        if self._server is not None:
            self._server.stop(grace=0.5).wait(2)
            self._server = None
        self.device.packet_out_handler = None
        self._close_ports()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def __enter__(self) -> "Nic":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _close_ports(self) -> None:
        for port in self.ports.values():
            port.close()
        self.ports.clear()

    # -- data plane -------------------------------------------------------------------------

    def _queue_packet_out(self, frame: bytes) -> None:
        """Device.packet_out_handler (gRPC thread): run process(cpu_port, frame) on our thread."""
        self._packet_outs.append(frame)
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except OSError:
            pass  # the pipe is already full of wake-ups, or closed at shutdown

    def _run(self) -> None:
        poller = select.epoll()
        port_of: dict[int, int] = {}
        for num, port in self.ports.items():
            port_of[port.fileno()] = num
            poller.register(port.fileno(), select.EPOLLIN)
        wake = self._wake_r
        poller.register(wake, select.EPOLLIN)
        ports = self.ports
        busy = False
        try:
            while not self._stop.is_set():
                # Busy: look for frames without asking any writer for a doorbell. About to
                # sleep: arm every port; one whose frames already wait is read instead.
                if busy:
                    ready = {num for num, port in ports.items() if port.pending()}
                else:
                    ready = {num for num, port in ports.items() if not port.arm()}
                woken = False
                for fd, _ in poller.poll(0 if busy or ready else 0.5):
                    if fd == wake:
                        woken = True
                    else:
                        ready.add(port_of[fd])
                if woken:
                    try:
                        os.read(wake, 4096)
                    except BlockingIOError:
                        pass
                    while self._packet_outs:
                        self.forward(self.cpu_port, [self._packet_outs.popleft()])
                busy = False
                for num in ready:
                    frames = ports[num].recv_batch()
                    if frames:
                        busy = True
                        self.forward(num, frames)
        finally:
            poller.close()

    def forward(self, in_port: int, frames: list[bytes]) -> None:
        """Run frames from in_port through the device and send what came out, grouped per
        egress port: one `send_batch` per port for every FLUSH_EVERY frames in (one syscall on
        a UNIX link), so that the next process starts on the first frames while this one works
        on the rest."""
        for i in range(0, len(frames), FLUSH_EVERY):
            self._flush(self._process(in_port, frames[i:i + FLUSH_EVERY]))

    def _process(self, in_port: int, frames: list[bytes]) -> dict[int, list[bytes]]:
        stats = self.stats
        stats.frames_in += len(frames)
        if self.capture is not None:
            self.capture.received(in_port, frames)
        by_port: dict[int, list[bytes]] = {}
        errors: list[tuple[int, Exception]] = []
        self.device.process_batch(in_port, frames, by_port, errors)
        for i, exc in errors:  # a mirror bug must not take the NIC down; say so loudly
            stats.pipeline_errors += 1
            log.error("pipeline raised on a %d-byte frame from port %d", len(frames[i]), in_port,
                      exc_info=exc)
        return by_port

    def _flush(self, by_port: dict[int, list[bytes]]) -> None:
        ports = self.ports
        stats = self.stats
        for port_num, group in by_port.items():
            if self.capture is not None:
                self.capture.sent(port_num, group)
            port = ports.get(port_num)
            if port is not None:
                stats.frames_out += port.send_batch(group)
            elif port_num == self.cpu_port:
                stats.no_packet_in += len(group)
            else:
                stats.no_such_port += len(group)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="p4mtcp nic",
                                 description="Run the embedded P4 NIC behind a P4Runtime server.")
    ap.add_argument("--grpc", default="127.0.0.1:9559", metavar="ADDR",
                    help="P4Runtime server address (default %(default)s)")
    ap.add_argument("--cpu-port", type=int, default=255,
                    help="v1model port of packet-in/out (default %(default)s, as BMv2 --cpu-port)")
    ap.add_argument("--device-id", type=int, default=1)
    ap.add_argument("-i", "--interface", action="append", default=[], metavar="NUM@SPEC",
                    help="attach a port: NUM@IFNAME (AF_PACKET), NUM@shm:PATH or NUM@unix:PATH "
                         "(a core's link), NUM@unix-host:PATH (connect to another NIC)")
    ap.add_argument("--p4info", metavar="FILE",
                    help="install this P4Info at start (else wait for SetForwardingPipelineConfig)")
    ap.add_argument("--pcap", metavar="DIR",
                    help="capture every port's received and sent frames into DIR "
                         "(pcap per port and direction, ns timestamps; off by default)")
    ap.add_argument("--pcap-max-mb", type=float, default=64.0, metavar="MB",
                    help="rotate a capture file at this size (default %(default)s)")
    ap.add_argument("--pcap-files", type=int, default=4, metavar="K",
                    help="capture files kept per port and direction (default %(default)s)")
    ap.add_argument("--no-flow-cache", dest="flow_cache", action="store_false",
                    help="run every frame through the program's mirror, also when the compiled "
                         "build's flow cache is loaded (P4MTCP_ACCEL=1)")
    ap.add_argument("-v", "--verbose", action="store_true")
    return ap.parse_args(argv)


def from_args(args: argparse.Namespace) -> Nic:
    """The NIC the command line describes, not started; ValueError says what is wrong."""
    if not 1 <= args.cpu_port <= MAX_PORT:
        raise ValueError(f"--cpu-port {args.cpu_port}: must be in 1..{MAX_PORT}")
    ports: dict[int, str] = {}
    for arg in args.interface:
        num, spec = parse_port_arg(arg)
        if num in ports:
            raise ValueError(f"-i {arg!r}: port {num} is already {ports[num]!r}")
        ports[num] = spec
    cap = (Capture(args.pcap, args.cpu_port, {n: label_for(s) for n, s in ports.items()},
                   int(args.pcap_max_mb * 1e6), args.pcap_files) if args.pcap else None)
    device = (CapturedDevice(cap, args.device_id, args.cpu_port, args.flow_cache) if cap
              else Device(args.device_id, args.cpu_port, flow_cache=args.flow_cache))
    return Nic(ports, cpu_port=args.cpu_port, grpc_address=args.grpc, device=device,
               p4info=args.p4info, capture=cap)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="p4mtcp nic: %(message)s")
    try:
        nic = from_args(args)
        nic.start()
    except (ValueError, OSError) as e:
        print(f"p4mtcp nic: {e}", file=sys.stderr)
        return 2
    done = threading.Event()

    def stop(signum: int, frame: object) -> None:
        done.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    log.info("serving P4Runtime on %s, ports %s", args.grpc, sorted(nic.ports))
    while not done.wait(0.5):
        pass
    port_stats = {num: port.stats for num, port in nic.ports.items()}
    nic.stop()
    for num, st in sorted(port_stats.items()):
        log.info("port %d: %s", num, st)
    log.info("%s", nic.stats)
    cache = nic.device.flow_cache_stats()
    log.info("flow cache: %s", cache if cache is not None else "off")
    return 0

"""The NIC process on AF_PACKET veths: lossless frame rate of one target, one direction.

Two veth pairs, each with its far end in a namespace of its own (tests/netns.py), are the
target's network port (1) and core port (16). A tester process, which opens both far ends
(PACKET_MMAP), offers 64-byte frames at a paced rate into one port and counts what comes out of
the other. The lossless rate is the highest offered rate at which every frame came out, the last one about
when the last went in (a rate the target sustains, not one its buffers absorb for a second):
found by doubling, then bisecting. The same frames, program and entries serve every target.
"""

from __future__ import annotations

import multiprocessing as mp
import random
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from p4mtcp.bmv2.frametests import Plan, in_netns

PLAN = Plan(core_ports=(16,))
FRAME_BYTES, FLOWS, SEND_BATCH = 64, 1024, 32
DIRECTIONS = {"network->core": ("net", "core"), "core->network": ("core", "net")}
TRIAL_SECONDS = 1.0
SETTLE = 0.3          # seconds without a new frame that end a trial's collection
ATTEMPTS = 2
KEPT_UP, LATENCY = 1.05, 0.005
"""A trial passes only if its last frame came out within 5 % + 5 ms of the sending time: deep
buffers (a ring, a socket's 8 MiB) would otherwise pass a rate the target cannot sustain."""


def test_frames(direction: str) -> list[bytes]:
    """FLOWS 64-byte TCP frames: from the peer to the host (checksums valid), or from the core
    to the peer (checksums left to the NIC, as the stack sends them when offloading)."""
    rng = random.Random(7)
    local, peer = PLAN.local_ips[0], PLAN.peer_ip
    out = []
    for _ in range(FLOWS):
        sport = rng.randrange(1024, 65536)
        if direction == "network->core":
            pkt = (Ether(src=PLAN.peer_mac, dst=PLAN.nic_mac) / IP(src=peer, dst=local)
                   / TCP(sport=sport, dport=80, flags="A"))
        else:
            pkt = (Ether(src="00:00:00:00:00:00", dst="00:00:00:00:00:00")
                   / IP(src=local, dst=peer, chksum=0) / TCP(sport=80, dport=sport, flags="A",
                                                            chksum=0))
        out.append(bytes(pkt / Raw(b"\xa5" * (FRAME_BYTES - len(pkt)))))
    return out


@dataclass
class Trial:
    offered_kpps: float   # what the tester achieved (it may fall short of the asked rate)
    sent: int
    received: int
    nic_cpu_s: float
    tester_drops: int     # lost in the tester's own receive ring: the tester, not the target
    kept_up: bool         # the last frame came out about when the last went in: not buffered

    @property
    def lossless(self) -> bool:
        return self.received >= self.sent and self.kept_up


def _tester(conn: Any, ends: dict[str, tuple[str, str]]) -> None:
    """The tester process: opens the far ends, then runs ("trial", direction, kpps, count) and
    ("core", spec or None) commands; the latter makes the core end a link to the target's core
    port (a core process's side, e.g. shm-host:PATH) or, with None, the veth again."""
    from p4mtcp.link import open_port
    from p4mtcp.link.afpacket import MmapPacketPort

    ports = {}
    for name, (ns_file, ifname) in ends.items():
        with in_netns(ns_file):
            ports[name] = MmapPacketPort(ifname)
    veth_core = ports["core"]
    frames = {d: test_frames(d) for d in DIRECTIONS}
    conn.send("ready")
    while (cmd := conn.recv()) is not None:
        if cmd[0] == "core":
            if ports["core"] is not veth_core:
                ports["core"].close()
            ports["core"] = veth_core if cmd[1] is None else open_port(cmd[1], 10.0)
            conn.send("ok")
            continue
        _, direction, kpps, count = cmd
        src, dst = (ports[p] for p in DIRECTIONS[direction])
        while dst.recv_batch():
            pass
        before = dst.stats.rx_dropped
        result = _offer(src, dst, frames[direction], kpps * 1000.0, count)
        conn.send((*result, dst.stats.rx_dropped - before))
    for port in {*ports.values(), veth_core}:
        port.close()


def _offer(src: Any, dst: Any, frames: list[bytes], rate: float, count: int
           ) -> tuple[int, int, float, float]:
    """Send `count` frames paced at `rate`/s in batches, counting what arrives meanwhile and
    until SETTLE s pass without a frame: (sent, received, seconds the sending took, seconds
    until the last frame arrived)."""
    sent = received = at = 0
    start = last = time.perf_counter()

    def collect() -> int:
        nonlocal last
        got = len(dst.recv_batch())
        if got:
            last = time.perf_counter()
        return got

    while sent < count:
        ahead = start + sent / rate - time.perf_counter()
        if ahead > 0:
            received += collect()
            if ahead > 0.0003:
                time.sleep(ahead - 0.0002)
            continue
        n = src.send_batch(frames[at:at + min(SEND_BATCH, count - sent)])
        sent += n
        at = (at + n) % (len(frames) - SEND_BATCH)
        received += collect()
    took = time.perf_counter() - start
    while received < sent and time.perf_counter() < last + SETTLE:
        got = collect()
        received += got
        if not got:
            time.sleep(0.001)
    return sent, received, took, last - start


class Tester:
    """The tester process and its pipe; `offer` runs one trial."""

    def __init__(self, ends: dict[str, tuple[str, str]]):
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_tester, args=(child, ends), daemon=True)
        self._proc.start()
        if not self._conn.poll(60) or self._conn.recv() != "ready":
            raise RuntimeError("the tester process did not start")

    def offer(self, direction: str, kpps: float, cpu: Callable[[], float]) -> Trial:
        count = max(2000, int(kpps * 1000 * TRIAL_SECONDS))
        before = cpu()
        self._conn.send(("trial", direction, kpps, count))
        if not self._conn.poll(60):
            raise RuntimeError("the tester did not finish a trial within 60 s")
        sent, received, took, took_rx, tester_drops = self._conn.recv()
        return Trial(sent / took / 1000, sent, received, cpu() - before, tester_drops,
                     took_rx <= took * KEPT_UP + LATENCY)

    def use_core(self, spec: str | None) -> None:
        """Be the core process on `spec` (a connecting spec), or the veth's far end (None)."""
        self._conn.send(("core", spec))
        if not self._conn.poll(30) or self._conn.recv() != "ok":
            raise RuntimeError(f"the tester could not attach to {spec}")

    def close(self) -> None:
        self._conn.send(None)
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()


def lossless_rate(tester: Tester, direction: str, start_kpps: float, cpu: Callable[[], float],
                  max_kpps: float = 2000.0, bisections: int = 5) -> dict:
    """The highest offered rate with no loss, and the trials that found it."""
    trials: list[Trial] = []

    def ok(kpps: float) -> bool:
        """A rate passes if one of ATTEMPTS trials is lossless: on a shared machine a moment
        without the CPU fails a trial that the target sustains otherwise (no false passes:
        a pass needs every frame, on time)."""
        for _ in range(ATTEMPTS):
            t = tester.offer(direction, kpps, cpu)
            trials.append(t)
            if t.lossless:
                return True
        return False

    low, high = 0.0, start_kpps
    while high < max_kpps and ok(high):
        low, high = high, high * 2
    for _ in range(bisections):
        mid = (low + high) / 2
        if ok(mid):
            low = mid
        else:
            high = mid
    good = [t for t in trials if t.lossless]
    best = max(good, key=lambda t: t.offered_kpps, default=None)
    return {"direction": direction, "frame_bytes": FRAME_BYTES,
            "lossless_kpps": round(best.offered_kpps, 1) if best else 0.0,
            "nic_cpu_us_per_frame": round(1e6 * best.nic_cpu_s / best.sent, 2) if best else None,
            "trials": [{"offered_kpps": round(t.offered_kpps, 1), "sent": t.sent,
                        "received": t.received, "kept_up": t.kept_up,
                        "nic_cpu_s": round(t.nic_cpu_s, 3), "tester_drops": t.tester_drops}
                       for t in trials]}


@contextmanager
def veth_ports() -> Iterator[tuple[dict[int, str], dict[str, tuple[str, str]]]]:
    """({NIC port: root-side interface}, {"net"/"core": (netns file, far-end interface)})."""
    from netns import veth_netns

    with ExitStack() as stack:
        net = stack.enter_context(veth_netns(41))
        core = stack.enter_context(veth_netns(42))
        yield ({PLAN.network_port: net.host_if, PLAN.core_ports[0]: core.host_if},
               {"net": (f"/run/netns/{net.ns}", net.ns_if),
                "core": (f"/run/netns/{core.ns}", core.ns_if)})

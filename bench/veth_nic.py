"""The NIC process on AF_PACKET veths: lossless frame rate of one target, one direction.

Two veth pairs, each with its far end in a namespace of its own (tests/netns.py), are the
target's network port (1) and core port (16). A tester process, which opens both far ends
(PACKET_MMAP), offers 64-byte frames at a paced rate into one port and counts what comes out of
the other. The lossless rate is the highest offered rate at which every frame came out: found by
doubling, then bisecting. The same frames, program and entries serve every target.
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
TRIAL_SECONDS = 0.5
SETTLE = 0.3          # seconds without a new frame that end a trial's collection


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

    @property
    def lossless(self) -> bool:
        return self.received >= self.sent


def _tester(conn: Any, ends: dict[str, tuple[str, str]]) -> None:
    """The tester process: opens the far ends, then runs (direction, kpps, count) trials."""
    from p4mtcp.link.afpacket import MmapPacketPort

    ports = {}
    for name, (ns_file, ifname) in ends.items():
        with in_netns(ns_file):
            ports[name] = MmapPacketPort(ifname)
    frames = {d: test_frames(d) for d in DIRECTIONS}
    conn.send("ready")
    while (cmd := conn.recv()) is not None:
        direction, kpps, count = cmd
        src, dst = (ports[p] for p in DIRECTIONS[direction])
        while dst.recv_batch():
            pass
        before = dst.stats.rx_dropped
        sent, received, took = _offer(src, dst, frames[direction], kpps * 1000.0, count)
        conn.send((sent, received, took, dst.stats.rx_dropped - before))
    for port in ports.values():
        port.close()


def _offer(src: Any, dst: Any, frames: list[bytes], rate: float, count: int
           ) -> tuple[int, int, float]:
    """Send `count` frames paced at `rate`/s in batches, counting what arrives meanwhile and
    until SETTLE s pass without a frame: (sent, received, seconds the sending took)."""
    sent = received = at = 0
    start = time.perf_counter()
    while sent < count:
        ahead = start + sent / rate - time.perf_counter()
        if ahead > 0:
            received += len(dst.recv_batch())
            if ahead > 0.0003:
                time.sleep(ahead - 0.0002)
            continue
        n = src.send_batch(frames[at:at + min(SEND_BATCH, count - sent)])
        sent += n
        at = (at + n) % (len(frames) - SEND_BATCH)
        received += len(dst.recv_batch())
    took = time.perf_counter() - start
    quiet = time.perf_counter() + SETTLE
    while received < sent and time.perf_counter() < quiet:
        got = len(dst.recv_batch())
        received += got
        if got:
            quiet = time.perf_counter() + SETTLE
        else:
            time.sleep(0.001)
    return sent, received, took


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
        self._conn.send((direction, kpps, count))
        if not self._conn.poll(60):
            raise RuntimeError("the tester did not finish a trial within 60 s")
        sent, received, took, tester_drops = self._conn.recv()
        return Trial(sent / took / 1000, sent, received, cpu() - before, tester_drops)

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
        t = tester.offer(direction, kpps, cpu)
        trials.append(t)
        return t.lossless

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
                        "received": t.received, "nic_cpu_s": round(t.nic_cpu_s, 3),
                        "tester_drops": t.tester_drops}
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

"""The NIC's flow cache (p4mtcp/flowcache.c, dataplane/flowcache.py) against the program's mirror.

Two devices get the same entries and the same batches: one runs every frame through the mirror,
the other through the flow cache in front of it. Their outputs (ports, bytes, order) and every
counter must agree after each batch, for base frames and for every single-byte change of their
headers (with and without the checksums fixed up after it), truncations and extensions, table
writes between batches, and a cache small enough to evict. Each test also shows that the cache
did forward frames (its hit counter moved), so agreement cannot come from an idle cache.

Needs the compiled build (`p4mtcp accel build`, then P4MTCP_ACCEL=1), which CI runs.
"""

from __future__ import annotations

import dataclasses
import random
import struct

import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.l2 import ARP, Ether

from conftest import DpNic
from p4mtcp.dataplane import flowcache
from p4mtcp.dataplane import pipeline as pl
from p4mtcp.hashing import ones_sum_py
from test_dataplane_pipeline import (CORE0, CPU, GW_IP, LOCAL_IP, LOCAL_MAC, NET, PEER_IP,
                                     PEER_MAC, configure, ip4, rx_frame, tx_frame)

pytestmark = pytest.mark.skipif(
    flowcache.FlowCache is None,
    reason="the flow cache is the compiled build's: p4mtcp accel build, then P4MTCP_ACCEL=1")

NET2 = 2                       # a network port without a port_mac entry: source MAC unchanged
FAR_IP = "192.168.7.9"         # routed out of NET2
NO_NEIGHBOR_IP = "10.0.0.77"   # on-link, no neighbour entry: to the CPU
STEERED = (PEER_IP, 41000)     # the flow with a flow_steer entry (direct counter)


class Nic(DpNic):
    """The embedded NIC with the packaged program and the test's entries."""

    def __init__(self, flow_cache: bool):
        super().__init__(cpu_port=CPU, flow_cache=flow_cache)
        configure(self)
        self.add("port_role", (NET2,), "set_network_port")
        self.add("ipv4_lpm", ((ip4("192.168.7.0"), 24),), "set_next_hop", 0, NET2)
        self.add("neighbor", (ip4(FAR_IP),), "set_dst_mac", 0x0200000000AA)
        self.add("flow_steer", (ip4(STEERED[0]), ip4(LOCAL_IP), STEERED[1], 80),
                 "steer_to_core", CORE0 + 1)

    @property
    def tables(self):
        return self.device.pipeline.tables

    def batch(self, port: int, frames: list[bytes]) -> dict[int, list[bytes]]:
        out: dict[int, list[bytes]] = {}
        errors: list = []
        self.device.process_batch(port, frames, out, errors)
        assert errors == []
        return out

    def counters(self) -> dict:
        """Every counter cell the program may touch, and every direct counter."""
        c = self.device.pipeline.counters
        ports = (NET, NET2, CORE0, CORE0 + 1, CPU, 3)
        cells = {(name, i): c[name].read(i) for name in (pl.RX_PORT, pl.TX_PORT, pl.ICMP_ECHO)
                 for i in ports}
        cells.update(((pl.DROPS, r), c[pl.DROPS].read(r)) for r in range(16))
        for name, table in self.tables.items():
            if table.has_counter:
                cells.update(((name, e.key), tuple(e.counts)) for e in table.entries())
                cells[(name, None)] = tuple(table.default.counts)
        return cells

    def hits(self) -> int:
        return self.device.flow_cache_stats()["hits"]


@pytest.fixture
def pair() -> tuple[Nic, Nic]:
    fast, ref = Nic(flow_cache=True), Nic(flow_cache=False)
    assert fast.device.flow_cache_stats() is not None
    assert ref.device.flow_cache_stats() is None
    return fast, ref


def same(pair: tuple[Nic, Nic], port: int, frames: list[bytes]) -> dict[int, list[bytes]]:
    """Run a batch through both; the outputs and all counters must be equal."""
    fast, ref = pair
    got, want = fast.batch(port, frames), ref.batch(port, frames)
    assert got == want, (port, [f.hex() for f in frames])
    assert fast.counters() == ref.counters(), (port, [f.hex() for f in frames])
    return got


def fix_checksums(frame: bytes) -> bytes:
    """IPv4 and TCP checksums made valid as the program verifies them (the TCP sum covers the
    whole rest of the frame and the length IPv4 gives), wherever the headers now say."""
    f = bytearray(frame)
    if len(f) < 54:
        return frame
    f[24:26] = b"\0\0"
    struct.pack_into("!H", f, 24, ~ones_sum_py(bytes(f[14:34])) & 0xFFFF)
    f[50:52] = b"\0\0"
    src, dst = struct.unpack_from("!II", f, 26)
    l4_len = (struct.unpack_from("!H", f, 16)[0] - 20) & 0xFFFF
    pseudo = (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + f[23] + l4_len
    s = ones_sum_py(bytes(f[34:]), pseudo)
    struct.pack_into("!H", f, 50, ~(s or 0xFFFF) & 0xFFFF)
    return bytes(f)


def rx(sport: int = 40000, payload: bytes = b"", **tcp) -> bytes:
    return rx_frame(sport=sport, payload=payload, **tcp)


BASES = [
    (NET, rx(payload=b"hello")),
    (NET, rx(sport=STEERED[1], payload=b"odd" * 7)),          # flow_steer hit
    (NET, rx(sport=40001, options=[("MSS", 1460), ("NOP", None), ("WScale", 7)])),
    (NET, rx(sport=40002) + bytes(6)),                         # padded to 60 bytes
    (CORE0, tx_frame(payload=b"x" * 101)),
    (CORE0, tx_frame(dst=GW_IP, payload=b"y" * 8, options=[("Timestamp", (1, 2))])),
    (CORE0 + 1, tx_frame(dst=FAR_IP, payload=b"z")),           # no port_mac: source MAC kept
    (CORE0, tx_frame(dst=NO_NEIGHBOR_IP, payload=b"w")),       # neighbour miss: packet-in
]


def mutations(frame: bytes, rng: random.Random) -> list[bytes]:
    """Every header byte (and a few payload bytes) changed to 0, 0xFF, a random value and by
    each single bit; each also with its checksums fixed; truncations and extensions."""
    out = []
    end = min(len(frame), 70)
    for i in range(end):
        for value in {0, 0xFF, rng.randrange(256), *(frame[i] ^ (1 << b) for b in range(8))}:
            if value == frame[i]:
                continue
            f = bytearray(frame)
            f[i] = value
            out.append(bytes(f))
            out.append(fix_checksums(bytes(f)))
    for n in (0, 13, 14, 33, 34, 53, 54, len(frame) - 1, 59, 61):
        if n < len(frame):
            out.append(frame[:n])
            out.append(fix_checksums(frame[:n]))
    for extra in (bytes(1), bytes(6), b"\x01" * 7, bytes(64)):
        out.append(frame + extra)
        out.append(fix_checksums(frame + extra))
    return out


@pytest.mark.parametrize("port,base", BASES, ids=lambda v: str(v)[:40] if isinstance(v, bytes) else v)
def test_every_mutation_of_a_cached_flow_gives_what_the_mirror_gives(pair, port, base):
    rng = random.Random(base)
    same(pair, port, [base, base, base])  # the second frame installs the flow, the third hits
    before = pair[0].hits()
    variants = mutations(base, rng)
    for i in range(0, len(variants), 8):
        same(pair, port, [base, *variants[i:i + 8], base])
    if base == BASES[-1][1]:  # a packet-in is never cached (some mutations of it are)
        before = pair[0].hits()
        assert set(same(pair, port, [base, base])) == {CPU}
        assert pair[0].hits() == before
    else:
        assert pair[0].hits() - before >= 2 * len(range(0, len(variants), 8))


def small_cache(nic: Nic, capacity: int = 8) -> flowcache.CachedPipeline:
    """Put a cache of `capacity` entries in front of nic's program: every flow then probes
    every slot, so a key that matched too much would be found out."""
    pipeline = nic.device.pipeline
    small = flowcache.CachedPipeline(pipeline.program.program, nic.tables, capacity=capacity)
    nic.device.install(dataclasses.replace(pipeline, program=small))
    return small


def test_the_same_flow_on_another_port_is_another_flow(pair):
    small_cache(pair[0])
    frame = tx_frame(payload=b"from a core")
    arriving = fix_checksums(frame)
    same(pair, CORE0, [frame, frame])
    for port in (NET, NET2, 3, CORE0 + 1, CORE0):
        same(pair, port, [frame, arriving, frame])
    assert pair[0].hits() >= 4


def test_order_within_a_batch_is_kept_across_hits_and_misses(pair):
    flows = [rx(sport=42000 + k, payload=bytes([k]) * k) for k in range(6)]
    arp = bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=PEER_MAC) / ARP(op=1, psrc=PEER_IP,
                                                                   pdst=LOCAL_IP))
    ping = bytes(Ether(dst=LOCAL_MAC, src=PEER_MAC) / IP(src=PEER_IP, dst=LOCAL_IP) / ICMP())
    udp = bytes(Ether(dst=LOCAL_MAC, src=PEER_MAC) / IP(src=PEER_IP, dst=LOCAL_IP) / UDP())
    batch = [flows[0], flows[0], arp, flows[1], flows[0], ping, flows[1], udp, *flows, *flows]
    out = same(pair, NET, batch)
    assert sum(map(len, out.values())) == len(batch) - 1  # the UDP datagram is dropped
    same(pair, NET, batch[::-1])
    assert pair[0].hits() > 10


def test_a_table_write_takes_effect_at_the_next_batch(pair):
    fast, ref = pair
    frame = rx(sport=43000, payload=b"steer me")
    first = same(pair, NET, [frame, frame, frame])
    (core,) = first
    other = CORE0 if core == CORE0 + 1 else CORE0 + 1
    for nic in pair:
        nic.add("flow_steer", (ip4(PEER_IP), ip4(LOCAL_IP), 43000, 80), "steer_to_core", other)
    assert same(pair, NET, [frame, frame]) == {other: [frame, frame]}
    for nic in pair:  # the neighbour's MAC changes: frames from a core carry the new one
        nic.tables[pl.NEIGHBOR].modify((ip4(PEER_IP),), 0, nic.schema.action(pl.SET_DST_MAC),
                                       (0x020000000077,))
    out = tx_frame(payload=b"new mac")
    same(pair, CORE0, [out, out, out])
    for nic in pair:
        nic.tables[pl.NEIGHBOR].modify((ip4(PEER_IP),), 0, nic.schema.action(pl.SET_DST_MAC),
                                       (0x020000000078,))
    sent = same(pair, CORE0, [out, out])[NET]
    assert [f[:6] for f in sent] == [bytes.fromhex("020000000078")] * 2
    for nic in pair:  # no route any more: dropped and counted, not forwarded from the cache
        nic.tables[pl.IPV4_LPM].delete(((ip4("10.0.0.0"), 24),), 0)
        nic.tables[pl.IPV4_LPM].delete(((0, 1),), 0)
    assert same(pair, CORE0, [out, out]) == {}
    assert fast.device.pipeline.counters[pl.DROPS].read(pl.DROP_NO_ROUTE)[0] == 2
    assert fast.device.flow_cache_stats()["clears"] >= 3
    assert fast.hits() >= 3


def test_a_full_cache_evicts_without_losing_counts(pair):
    small = small_cache(pair[0])
    flows = [rx(sport=44000 + k, payload=b"e" * (k % 5)) for k in range(40)]
    rng = random.Random(7)
    for _ in range(30):
        same(pair, NET, [rng.choice(flows) for _ in range(16)])
    stats = small.stats()
    assert stats["evictions"] > 0 and stats["hits"] > 0 and stats["entries"] <= 8


def test_a_flood_of_new_flows_is_cached_a_few_per_batch_and_spares_the_flows_in_use(pair):
    """admit: a batch caches at most 8 flows on their first miss, others on their second; a full
    cache evicts its least recently used entry. A flood of SYNs from 480 ports beside 8 flows in
    use costs 8 inserts per batch, and the 8 flows stay cached throughout."""
    small = small_cache(pair[0], capacity=64)
    active = [rx(sport=46000 + k, payload=b"in use") for k in range(8)]
    same(pair, NET, active)
    before = small.stats()
    syns = [rx(sport=45000 + k, flags="S") for k in range(480)]
    for i in range(0, 480, 24):
        same(pair, NET, [*active, *syns[i:i + 24]])
    after = small.stats()
    assert after["inserts"] - before["inserts"] == 8 * 20
    assert after["hits"] - before["hits"] == 8 * 20
    fresh = [rx(sport=47000 + k, flags="S") for k in range(8)]
    again = syns[-4:]  # missed once, not cached: their second miss caches them
    same(pair, NET, [*fresh, *again])
    assert small.stats()["inserts"] - after["inserts"] == 8 + 4


def test_flows_whose_ports_differ_by_the_table_size_do_not_share_slots(pair):
    """The key is mixed before it picks a slot: 16 flows whose source ports are 4096 apart
    (the default capacity) all stay cached."""
    flows = [rx(sport=1024 + 4096 * k) for k in range(16)]
    for _ in range(2):
        same(pair, NET, flows)
    before = pair[0].hits()
    same(pair, NET, flows)
    stats = pair[0].device.flow_cache_stats()
    assert stats["evictions"] == 0 and stats["entries"] == 16 and stats["hits"] == before + 16


def test_bad_arguments_raise_not_crash():
    cache = flowcache.FlowCache(16, CPU)
    frame = rx()
    with pytest.raises(TypeError):
        cache.run(NET, tuple([frame]), 0, {})
    with pytest.raises(ValueError, match="not a port"):
        cache.run(600, [frame], 0, {})
    with pytest.raises(ValueError, match="6 bytes"):
        cache.insert(NET, frame, CORE0, True, b"\x02\x00", b"", None)
    with pytest.raises(ValueError, match="power of two"):
        flowcache.FlowCache(6, CPU)
    with pytest.raises(TypeError):
        cache.admit(NET, bytearray(frame))
    assert cache.admit(NET, frame) is True  # a batch caches its first new flows at once
    assert cache.admit(NET, frame[:40]) is False and cache.admit(CPU, frame) is False
    assert cache.insert(NET, frame[:40], CORE0, False, b"", b"", None) is False
    assert cache.insert(CPU, frame, CORE0, False, b"", b"", None) is False
    assert cache.insert(NET, frame, CORE0, False, b"", b"", ("cells",)) is None
    out: dict = {}
    # a frame that is not bytes, or comes in from the CPU port, is left to the mirror
    assert cache.run(NET, [bytearray(frame), frame], 0, out) == 0 and out == {}
    assert cache.run(CPU, [frame], 0, out) == 0
    assert cache.run(NET, [frame, frame], 0, out) == 2 and out == {CORE0: [frame, frame]}
    assert cache.drain() == [(("cells",), 2, 2 * len(frame))]
    assert cache.drain() == []
    assert cache.clear() == [] and cache.stats()["entries"] == 0

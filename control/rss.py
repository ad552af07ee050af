"""RSS-aware source-port selection (mTCP's trick): connect from a port whose replies come back here.

The NIC steers an arriving segment by ``reta[rss_bucket(flow)]`` (docs/ARCHITECTURE.md). A core
that opens a connection can pick its ephemeral port so that the peer's replies hash to a bucket
the reta maps to its own core port — no table write per connection. Only when no free port maps
to the core does the caller fall back to a ``flow_steer`` entry.

The hash is `p4mtcp.hashing.rss_bucket`, the same function the P4 program computes; the reta is
the one the agent installs (`round_robin_reta`), so both sides agree by construction.
"""

from __future__ import annotations

import random
import struct
import zlib
from collections import OrderedDict
from collections.abc import Callable, Sequence

from p4mtcp.hashing import RETA_SIZE, rss_bucket

EPHEMERAL = (1025, 60999)
"""Source ports picked by the RSS hash (inclusive): mTCP's range less FALLBACK. Each of these
ports steers a given destination to exactly one core, so cores never pick the same one."""

FALLBACK = (61000, 65535)
"""Source ports for the flow_steer fallback (inclusive), above Linux's ephemeral range. A port
chosen regardless of the hash would also be some other core's hash pick; keeping the two sets
apart, and the steering server refusing a 4-tuple another core holds, keeps cores disjoint."""

_KEY = struct.Struct("!IIHH")


def round_robin_reta(core_ports: Sequence[int], size: int = RETA_SIZE) -> tuple[int, ...]:
    """Bucket -> core port, the cores' ports repeated in order (a NIC's default RETA fill)."""
    if not core_ports:
        raise ValueError("a redirection table needs at least one core port")
    return tuple(core_ports[b % len(core_ports)] for b in range(size))


def _ports_for_core(reta: Sequence[int], core_port: int, local_ip: int, remote_ip: int,
                    remote_port: int, lo: int, hi: int) -> list[int]:
    """Every port in lo..hi whose flow with (remote_ip, remote_port) hashes onto `core_port`.

    Same packing as `rss_bucket` (lo ip, hi ip, lo port, hi port; crc32 mod the table size),
    inlined with a precompiled struct because this runs once per port of the range.
    """
    ip_lo, ip_hi = sorted((local_ip, remote_ip))
    size = len(reta)
    pack, crc = _KEY.pack, zlib.crc32
    mine = [reta[b] == core_port for b in range(size)]
    out = []
    for port in range(lo, hi + 1):
        p_lo, p_hi = (port, remote_port) if port <= remote_port else (remote_port, port)
        if mine[crc(pack(ip_lo, ip_hi, p_lo, p_hi)) % size]:
            out.append(port)
    return out


class PortSelector:
    """Picks source ports for one core; remembers each destination's candidate list.

    `reta` is bucket -> NIC core port; `core_port` is the calling core's NIC port. Candidates for a
    (local ip, remote ip, remote port) are computed once and then handed out round-robin from a
    random start, so successive connects to one server walk through different ports.
    """

    def __init__(self, reta: Sequence[int], core_port: int,
                 port_range: tuple[int, int] = EPHEMERAL, cache_size: int = 256,
                 rng: random.Random | None = None,
                 fallback_range: tuple[int, int] = FALLBACK):
        for lo, hi in (port_range, fallback_range):
            if not 1 <= lo <= hi <= 65535:
                raise ValueError(f"port range {lo}..{hi} is not within 1..65535")
        lo, hi = port_range
        if len(reta) != RETA_SIZE:
            raise ValueError(f"reta has {len(reta)} buckets, the NIC hashes into {RETA_SIZE}")
        self.reta = tuple(reta)
        self.core_port = core_port
        self.range = (lo, hi)
        self.fallback_range = fallback_range
        self._cache: OrderedDict[tuple[int, int, int], list[int]] = OrderedDict()
        self._cursor: dict[tuple[int, int, int], int] = {}
        self._cache_size = cache_size
        self._rng = rng or random.Random()
        self.serves_core = core_port in self.reta

    def _candidates(self, key: tuple[int, int, int]) -> list[int]:
        ports = self._cache.get(key)
        if ports is None:
            ports = _ports_for_core(self.reta, self.core_port, *key, *self.range)
            self._cache[key] = ports
            self._cursor[key] = self._rng.randrange(len(ports)) if ports else 0
            if len(self._cache) > self._cache_size:
                old, _ = self._cache.popitem(last=False)
                del self._cursor[old]
        else:
            self._cache.move_to_end(key)
        return ports

    def prepare(self, local_ip: int, remote_ip: int, remote_port: int) -> None:
        """Compute a destination's candidate ports now (mtcp_init_rss) rather than inside the
        first connect to it: one CRC per port of the range, ~0.1 s."""
        if self.serves_core:
            self._candidates((local_ip, remote_ip, remote_port))

    def pick(self, local_ip: int, remote_ip: int, remote_port: int,
             in_use: Callable[[int], bool]) -> int | None:
        """A free source port whose flow the NIC steers to this core, or None (use flow_steer).

        `in_use(port)` says whether (local_ip, port, remote_ip, remote_port) is taken.
        """
        if not self.serves_core:
            return None
        key = (local_ip, remote_ip, remote_port)
        ports = self._candidates(key)
        n = len(ports)
        start = self._cursor[key]
        for i in range(n):
            port = ports[(start + i) % n]
            if not in_use(port):
                self._cursor[key] = (start + i + 1) % n
                return port
        return None

    def pick_any(self, local_ip: int, remote_ip: int, remote_port: int,
                 in_use: Callable[[int], bool]) -> int | None:
        """A free port of the fallback range, regardless of steering (for a flow_steer
        entry); from a random start, so cores asking at once rarely ask for the same one."""
        lo, hi = self.fallback_range
        start = self._rng.randrange(lo, hi + 1)
        span = hi - lo + 1
        for i in range(span):
            port = lo + (start - lo + i) % span
            if not in_use(port):
                return port
        return None

    def core_port_of(self, local_ip: int, local_port: int, remote_ip: int, remote_port: int
                     ) -> int:
        """The core port the NIC steers this flow to by hash (flow_steer entries aside)."""
        return self.reta[rss_bucket(local_ip, local_port, remote_ip, remote_port)]

    def steers_here(self, local_ip: int, local_port: int, remote_ip: int, remote_port: int
                    ) -> bool:
        """True when a bound tuple's replies reach this core (connect's EINVAL check)."""
        return self.core_port_of(local_ip, local_port, remote_ip, remote_port) == self.core_port

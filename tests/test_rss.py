"""RSS-aware source-port selection: chosen ports really hash onto the calling core."""

from __future__ import annotations

import random

import pytest

from p4mtcp.control.rss import EPHEMERAL, FALLBACK, PortSelector, round_robin_reta
from p4mtcp.hashing import RETA_SIZE, rss_bucket

LOCAL, REMOTE, RPORT = 0x0A000001, 0x0A000002, 80


def never(_port: int) -> bool:
    return False


def test_round_robin_reta():
    reta = round_robin_reta([16, 17, 18])
    assert len(reta) == RETA_SIZE
    assert reta[:6] == (16, 17, 18, 16, 17, 18)
    assert {p: reta.count(p) for p in (16, 17, 18)} == {16: 43, 17: 43, 18: 42}
    with pytest.raises(ValueError):
        round_robin_reta([])


@pytest.mark.parametrize("cores", [1, 2, 3, 4])
def test_candidates_are_exactly_the_ports_that_hash_here(cores):
    """Exhaustive over the whole ephemeral range, both directions of each flow."""
    ports = [16 + i for i in range(cores)]
    reta = round_robin_reta(ports)
    lo, hi = EPHEMERAL
    for me in ports:
        sel = PortSelector(reta, me, rng=random.Random(me))
        first = sel.pick(LOCAL, REMOTE, RPORT, never)
        got = set(sel._candidates((LOCAL, REMOTE, RPORT)))
        want = {p for p in range(lo, hi + 1) if reta[rss_bucket(LOCAL, p, REMOTE, RPORT)] == me}
        assert got == want and first in want
        # The reply direction (peer -> us) hashes to the same bucket: the symmetric key.
        assert all(reta[rss_bucket(REMOTE, RPORT, LOCAL, p)] == me for p in got)
        assert all(sel.steers_here(LOCAL, p, REMOTE, RPORT) for p in got)
    # Every port of the range belongs to exactly one core.
    assert sum(len(PortSelector(reta, me)._candidates((LOCAL, REMOTE, RPORT))) for me in ports) \
        == hi - lo + 1


def test_each_core_gets_its_share():
    reta = round_robin_reta([16, 17])
    n = [len(PortSelector(reta, me)._candidates((LOCAL, REMOTE, 443))) for me in (16, 17)]
    total = EPHEMERAL[1] - EPHEMERAL[0] + 1
    assert all(abs(k - total / 2) < total * 0.05 for k in n)


def test_pick_rotates_and_skips_ports_in_use():
    reta = round_robin_reta([16, 17])
    sel = PortSelector(reta, 17, port_range=(40000, 40400), rng=random.Random(1))
    taken: set[int] = set()
    while True:
        port = sel.pick(LOCAL, REMOTE, RPORT, taken.__contains__)
        if port is None:
            break
        assert port not in taken and 40000 <= port <= 40400
        assert reta[rss_bucket(REMOTE, RPORT, LOCAL, port)] == 17
        taken.add(port)
    want = {p for p in range(40000, 40401) if reta[rss_bucket(LOCAL, p, REMOTE, RPORT)] == 17}
    assert taken == want and len(want) > 150     # exhausted exactly the core's ports
    released = sorted(want)[7]
    taken.discard(released)
    assert sel.pick(LOCAL, REMOTE, RPORT, taken.__contains__) == released


def test_successive_picks_differ_without_in_use_feedback():
    sel = PortSelector(round_robin_reta([16, 17]), 16, rng=random.Random(3))
    picks = [sel.pick(LOCAL, REMOTE, RPORT, never) for _ in range(50)]
    assert len(set(picks)) == 50


def test_none_when_no_port_maps_or_core_absent():
    reta = round_robin_reta([16, 17])
    # A one-port range whose only port hashes to the other core.
    port = next(p for p in range(2000, 3000) if reta[rss_bucket(LOCAL, p, REMOTE, RPORT)] == 16)
    sel = PortSelector(reta, 17, port_range=(port, port))
    assert sel.pick(LOCAL, REMOTE, RPORT, never) is None
    assert PortSelector(reta, 16, port_range=(port, port)).pick(LOCAL, REMOTE, RPORT, never) == port
    absent = PortSelector(reta, 18)
    assert not absent.serves_core
    assert absent.pick(LOCAL, REMOTE, RPORT, never) is None
    # The fallback port (for a flow_steer entry) ignores steering but respects in_use.
    any_port = absent.pick_any(LOCAL, REMOTE, RPORT, lambda p: p % 2 == 0)
    assert any_port is not None and any_port % 2 == 1
    # ... from its own range, which no core's hash pick uses: a fallback flow's 4-tuple can
    # never be another core's RSS choice.
    assert FALLBACK[0] <= any_port <= FALLBACK[1] and EPHEMERAL[1] < FALLBACK[0]
    picks = {PortSelector(reta, 16).pick(LOCAL, REMOTE, RPORT, never) for _ in range(500)}
    assert picks and max(picks) <= EPHEMERAL[1]
    assert PortSelector(reta, 16, port_range=(5, 6)).pick_any(LOCAL, REMOTE, RPORT,
                                                                lambda p: True) is None


def test_core_port_of_a_bound_tuple():
    reta = round_robin_reta([16, 17, 18, 19])
    sel = PortSelector(reta, 18)
    rng = random.Random(7)
    for _ in range(200):
        lport, rip, rport = rng.randrange(1, 65536), rng.getrandbits(32), rng.randrange(1, 65536)
        core = sel.core_port_of(LOCAL, lport, rip, rport)
        assert core == reta[rss_bucket(rip, rport, LOCAL, lport)]
        assert sel.steers_here(LOCAL, lport, rip, rport) == (core == 18)


def test_cache_is_bounded():
    sel = PortSelector(round_robin_reta([16, 17]), 16, port_range=(30000, 30100), cache_size=4)
    for rport in range(10):
        assert sel.pick(LOCAL, REMOTE, 1000 + rport, never) is not None
    assert len(sel._cache) == 4 and set(sel._cursor) == set(sel._cache)


@pytest.mark.parametrize("kwargs, problem", [
    ({"port_range": (0, 10)}, "port range"),
    ({"port_range": (100, 10)}, "port range"),
])
def test_bad_arguments(kwargs, problem):
    with pytest.raises(ValueError, match=problem):
        PortSelector(round_robin_reta([16]), 16, **kwargs)
    with pytest.raises(ValueError, match="buckets"):
        PortSelector((16,) * 64, 16)

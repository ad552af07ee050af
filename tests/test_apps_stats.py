"""apps/stats.py: rates from cumulative counters, mTCP-style lines, NIC port orientation."""

from __future__ import annotations

import io

import pytest

from p4mtcp.apps.stats import (Counters, Display, NicStats, Rate, StackStats, progress_line,
                               stat_line)


def test_rate_counts_wire_overhead_and_divides_by_interval():
    r = Rate.of(Counters(rx_pkts=1000, rx_bytes=1_476_000, tx_pkts=500, tx_bytes=38_000), 2.0)
    assert r.rx_pps == 500 and r.tx_pps == 250
    assert r.rx_gbps == pytest.approx((1_476_000 + 24_000) * 8 / 2 / 1e9)
    assert r.tx_gbps == pytest.approx((38_000 + 12_000) * 8 / 2 / 1e9)
    assert Rate.of(Counters(rx_pkts=5), 0).rx_pps == 0


def test_stack_stats_uses_the_last_two_samples_per_core():
    s = StackStats()
    for t, n in ((1.0, 0), (2.0, 100), (3.0, 400)):
        s.ingest({"core": 0, "t": t, "flows": 7,
                  "counters": {"rx_pkts": n, "rx_bytes": n * 100, "tx_pkts": n, "tx_bytes": 0,
                               "drops": 0}})
    s.ingest({"core": 1, "t": 3.0, "flows": 2,
              "counters": {"rx_pkts": 50, "rx_bytes": 0, "tx_pkts": 0, "tx_bytes": 0,
                           "drops": 1}})
    lines = s.lines()
    assert lines[0].startswith("[CPU 0] flows:    7 RX:     300pps")
    assert "RX:       0pps (err:   0)" in lines[1]      # one sample: no rate yet
    assert lines[2].startswith("[  ALL] flows:    9 RX:     300pps")
    assert max(map(len, lines)) <= 80


def test_nic_stats_flip_core_ports_to_the_hosts_view_and_name_drop_reasons():
    n = NicStats({1: "net", 2: "core0"}, core_ports=[2])
    n.ingest(0.0, {1: (0, 0), 2: (0, 0)}, {1: (0, 0), 2: (0, 0)}, {})
    # the core sent 10 frames into the NIC (NIC rx on port 2) and received 20 (NIC tx on 2)
    n.ingest(1.0, {1: (20, 2000), 2: (10, 1000)}, {1: (10, 1000), 2: (20, 2000)}, {2: 3})
    net, core, drops = n.lines()
    assert "RX:      20pps (err:   3)" in net and "TX:      10pps" in net
    assert "RX:      20pps" in core and "TX:      10pps" in core
    assert drops.endswith("bad TCP checksum: 3")


def test_display_without_terminal_prints_plain_lines_and_progress():
    out = io.StringIO()
    d = Display("title", stream=out)
    d.show([stat_line("CPU 0", 1, Rate(1, 0, 2, 0, 0))], progress=(25, 100), unit="requests")
    d.close()
    text = out.getvalue().splitlines()
    assert text[0].startswith("[CPU 0] flows:    1")
    assert text[1] == progress_line(25, 100, "requests")
    assert "25.0% 25/100 requests" in text[1]


def test_display_live_renders_through_rich():
    out = io.StringIO()
    d = Display("title", stream=out, live=True)
    d.show(["line one"], progress=(1, 2))
    d.close()
    assert "line one" in out.getvalue() and "50.0%" in out.getvalue()

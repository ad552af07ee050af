"""mTCP-style per-second statistics: per-core RX/TX pps and Gbit/s, flows, drops.

Two sources feed the same lines: the core processes report their contexts' cumulative counters
(packets and bytes through their core port, open flows, frames they dropped), and the parent
reads the NIC's P4Runtime counters (`rx_port`/`tx_port` per port, `drops` per reason) through
the agent. Rates are differences of cumulative counters over the measured interval, so a late
sample never inflates a rate.

The display is `rich.live` on a terminal and one plain line per row otherwise (logs, pipes).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TextIO

from p4mtcp.p4src import DROP_REASONS

ETHER_OVERHEAD = 24
"""Preamble, start delimiter, FCS and inter-frame gap per frame: what a wire carries beyond the
frame bytes (mTCP counts it too when it prints Gbit/s)."""


@dataclass
class Counters:
    """Cumulative packet/byte counters of one endpoint (a core's context, or a NIC port)."""
    rx_pkts: int = 0
    rx_bytes: int = 0
    tx_pkts: int = 0
    tx_bytes: int = 0
    drops: int = 0

    def __sub__(self, other: "Counters") -> "Counters":
        return Counters(*(getattr(self, f.name) - getattr(other, f.name) for f in fields(self)))

    def __add__(self, other: "Counters") -> "Counters":
        return Counters(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


@dataclass(frozen=True)
class Rate:
    rx_pps: float
    rx_gbps: float
    tx_pps: float
    tx_gbps: float
    drops: int

    @classmethod
    def of(cls, delta: Counters, dt: float) -> "Rate":
        if dt <= 0:
            return cls(0.0, 0.0, 0.0, 0.0, delta.drops)
        return cls(delta.rx_pkts / dt,
                   (delta.rx_bytes + ETHER_OVERHEAD * delta.rx_pkts) * 8 / dt / 1e9,
                   delta.tx_pkts / dt,
                   (delta.tx_bytes + ETHER_OVERHEAD * delta.tx_pkts) * 8 / dt / 1e9,
                   delta.drops)


def stat_line(label: str, flows: int | None, rate: Rate) -> str:
    """One row in mTCP's order (flows, RX pps (err) Gbps, TX pps Gbps), within 80 columns."""
    flows_s = "    -" if flows is None else f"{flows:5d}"
    return (f"[{label:>5}] flows:{flows_s} RX:{rate.rx_pps:8.0f}pps (err:{rate.drops:4d}) "
            f"{rate.rx_gbps:5.2f}Gbps TX:{rate.tx_pps:8.0f}pps {rate.tx_gbps:5.2f}Gbps")


@dataclass
class CoreTrack:
    """The last two samples of one core: enough for a per-second rate."""
    prev: Counters = field(default_factory=Counters)
    cur: Counters = field(default_factory=Counters)
    t_prev: float = 0.0
    t_cur: float | None = None
    flows: int = 0

    def update(self, t: float, counters: Counters, flows: int) -> None:
        if self.t_cur is None:
            self.prev, self.t_prev = counters, t
        else:
            self.prev, self.t_prev = self.cur, self.t_cur
        self.cur, self.t_cur, self.flows = counters, t, flows

    def rate(self) -> Rate:
        if self.t_cur is None:
            return Rate.of(Counters(), 0.0)
        return Rate.of(self.cur - self.prev, self.t_cur - self.t_prev)


class StackStats:
    """Per-core rows from the cores' own reports (kind 'stats': t, counters, flows)."""

    def __init__(self) -> None:
        self.cores: dict[int, CoreTrack] = {}

    def ingest(self, msg: Mapping[str, Any]) -> None:
        track = self.cores.setdefault(msg["core"], CoreTrack())
        track.update(msg["t"], Counters(**msg["counters"]), msg["flows"])

    def lines(self, prefix: str = "CPU") -> list[str]:
        out, total_rate, total_flows = [], None, 0
        for core in sorted(self.cores):
            track = self.cores[core]
            rate = track.rate()
            out.append(stat_line(f"{prefix}{core:2d}" if prefix else f"{core:2d}", track.flows,
                                 rate))
            total_flows += track.flows
            total_rate = rate if total_rate is None else _add_rates(total_rate, rate)
        if total_rate is not None and len(self.cores) > 1:
            out.append(stat_line("ALL", total_flows, total_rate))
        return out


def _add_rates(a: Rate, b: Rate) -> Rate:
    return Rate(a.rx_pps + b.rx_pps, a.rx_gbps + b.rx_gbps, a.tx_pps + b.tx_pps,
                a.tx_gbps + b.tx_gbps, a.drops + b.drops)


class NicStats:
    """Per-port rows from the NIC's counters, as the host sees them.

    A core port's NIC `tx_port` counter is what the core received and its `rx_port` counter what
    the core sent, so core rows are flipped to read from the host's side.
    """

    def __init__(self, ports: Mapping[int, str], core_ports: Iterable[int] = ()):
        self.ports = dict(ports)            # port number -> label ("net", "core0", ...)
        self.core_ports = set(core_ports)
        self.tracks: dict[int, CoreTrack] = {p: CoreTrack() for p in self.ports}
        self.drops: dict[int, int] = {}

    def ingest(self, t: float, rx: Mapping[int, tuple[int, int]],
               tx: Mapping[int, tuple[int, int]], drops: Mapping[int, int]) -> None:
        """rx/tx: port -> (packets, bytes) from `rx_port`/`tx_port`; drops: reason -> packets."""
        total_drops = sum(drops.values())
        self.drops = dict(drops)
        for port, track in self.tracks.items():
            rp, rb = rx.get(port, (0, 0))
            tp, tb = tx.get(port, (0, 0))
            if port in self.core_ports:
                rp, rb, tp, tb = tp, tb, rp, rb
            track.update(t, Counters(rp, rb, tp, tb, total_drops if port not in self.core_ports
                                     else 0), 0)

    def lines(self, name: str = "NIC") -> list[str]:
        out = [stat_line(f"{self.ports[p]:>5}"[-5:], None, self.tracks[p].rate())
               for p in sorted(self.ports)]
        if any(self.drops.values()):
            reasons = ", ".join(f"{drop_reason(r)}: {n}" for r, n in sorted(self.drops.items())
                                if n)
            out.append(f"[{name:>5}] drops: {reasons}")
        return out


def drop_reason(index: int) -> str:
    """`NicIngress.drops` index -> what the P4 program drops for (p4src DROP_REASONS)."""
    return DROP_REASONS[index] if 0 <= index < len(DROP_REASONS) else f"reason {index}"


def counter_sample(counters: Mapping[str, Mapping]) -> tuple[Mapping[int, tuple[int, int]],
                                                             Mapping[int, tuple[int, int]],
                                                             dict[int, int]]:
    """(rx_port, tx_port, drops by reason in packets) from the agent's `nic_counters()`: the
    arguments of `NicStats.ingest` after the time."""
    return (counters["rx_port"], counters["tx_port"],
            {r: pb[0] for r, pb in counters["drops"].items()})


class Display:
    """Live block of lines (rich on a terminal) or plain printed lines otherwise."""

    def __init__(self, title: str, stream: TextIO | None = None, live: bool | None = None):
        self.stream = stream or sys.stdout
        self.title = title
        use_live = self.stream.isatty() if live is None else live
        self._live: Any = None
        if use_live:
            from rich.console import Console
            from rich.live import Live
            self._live = Live(console=Console(file=self.stream), refresh_per_second=4,
                              transient=False)
            self._live.start()

    def show(self, lines: list[str], progress: tuple[float, float] | None = None,
             unit: str = "") -> None:
        bar = [progress_line(*progress, unit)] if progress else []
        if self._live is not None:
            from rich.text import Text
            self._live.update(Text("\n".join([self.title, *lines, *bar])))
        else:
            for line in [*lines, *bar]:
                print(line, file=self.stream)
            self.stream.flush()

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


def progress_line(done: float, total: float, unit: str = "", width: int = 30) -> str:
    """`[#####.....]  42.0% 420/1000 unit` — bounded runs say how far along they are."""
    frac = 0.0 if total <= 0 else max(0.0, min(1.0, done / total))
    filled = int(frac * width)
    return (f"[{'#' * filled}{'.' * (width - filled)}] {frac * 100:5.1f}% "
            f"{done:,.0f}/{total:,.0f} {unit}").rstrip()


def context_sample(mctx: Any, now: float | None = None) -> dict[str, Any]:
    """A 'stats' message body from one context: cumulative counters, open flows, time."""
    st = mctx.stats
    drops = mctx.netif.drops.total()
    flows = st.connects + st.accepts - st.flows_freed
    return {"t": time.monotonic() if now is None else now, "flows": flows,
            "counters": {"rx_pkts": st.rx_packets, "rx_bytes": st.rx_bytes,
                         "tx_pkts": st.tx_packets, "tx_bytes": st.tx_bytes, "drops": drops}}

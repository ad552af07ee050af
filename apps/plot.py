"""`p4mtcp plot TRACE -o PNG`: a connection trace (`perf client --trace`) as a picture.

Three panels over time, sharing the time axis: cwnd and ssthresh; SRTT with its
RTTVAR band and the RTO; throughput (delivered bytes per interval). Fast-recovery episodes are
shaded, retransmission timeouts drawn as red lines, in every panel. Needs matplotlib (the
``plot`` extra: ``pip install 'p4mtcp[plot]'``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from p4mtcp.control.tcp.trace import read_jsonl

BINS = 100
"""Throughput intervals across the trace's duration."""


def episodes(samples: list[dict[str, Any]]) -> tuple[list[tuple[float, float]], list[float]]:
    """(fast-recovery spans (start, end), RTO times) from the samples' events; a span still
    open at the end (or cut by an RTO) ends there."""
    spans, rtos = [], []
    start = None
    for s in samples:
        ev = s["event"]
        if ev == "recovery_start":
            start = s["t"]
        elif ev in ("recovery_end", "rto") and start is not None:
            spans.append((start, s["t"]))
            start = None
        if ev == "rto":
            rtos.append(s["t"])
    if start is not None:
        spans.append((start, samples[-1]["t"]))
    return spans, rtos


def throughput(samples: list[dict[str, Any]], bins: int = BINS
               ) -> tuple[list[float], list[float]]:
    """(interval mid-times, Mbit/s) from the delivered counter, `bins` equal intervals."""
    end = samples[-1]["t"]
    if end <= 0:
        return [], []
    width = end / bins
    edges = [0] * (bins + 1)          # delivered at each interval's end (last sample before it)
    i = 0
    for b in range(bins + 1):
        limit = b * width
        while i + 1 < len(samples) and samples[i + 1]["t"] <= limit:
            i += 1
        edges[b] = samples[i]["delivered"]
    mids = [(b + 0.5) * width for b in range(bins)]
    rates = [(edges[b + 1] - edges[b]) * 8 / width / 1e6 for b in range(bins)]
    return mids, rates


def draw(header: dict[str, Any], samples: list[dict[str, Any]], out: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] for s in samples]
    cwnd = [s["cwnd"] / 1024 for s in samples]
    ss = [(s["t"], s["ssthresh"] / 1024) for s in samples if s["ssthresh"] is not None]
    rtt = [(s["t"], s["srtt"] * 1e3, s["rttvar"] * 1e3) for s in samples if s["srtt"] is not None]
    spans, rtos = episodes(samples)
    mids, rates = throughput(samples)

    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, sharex=True, figsize=(10, 8.5),
                                        gridspec_kw={"height_ratios": [3, 2, 2]})
    ax1.step(t, cwnd, where="post", label="cwnd", color="tab:blue", lw=1.2)
    if ss:
        ax1.step([x for x, _ in ss], [y for _, y in ss], where="post", label="ssthresh",
                 color="tab:orange", lw=1.2)
    ax1.set_ylabel("KiB")
    if rtt:
        rt, srtt, var = zip(*rtt)
        ax2.plot(rt, srtt, label="SRTT", color="tab:green", lw=1.2)
        ax2.fill_between(rt, [a - b for a, b in zip(srtt, var)], [a + b for a, b in zip(srtt, var)],
                         color="tab:green", alpha=0.2, label="SRTT ± RTTVAR")
        ax2.plot(rt, [s["rto"] * 1e3 for s in samples if s["srtt"] is not None], label="RTO",
                 color="tab:purple", lw=0.8, ls="--")
    ax2.set_ylabel("ms")
    ax3.plot(mids, rates, color="tab:red", lw=1.2, label="throughput")
    ax3.set_ylabel("Mbit/s")
    ax3.set_xlabel("time (s)")
    for ax in (ax1, ax2, ax3):
        for i, (a, b) in enumerate(spans):
            ax.axvspan(a, b, color="gold", alpha=0.35, lw=0,
                       label="fast recovery" if i == 0 and ax is ax1 else None)
        for i, x in enumerate(rtos):
            ax.axvline(x, color="red", lw=0.9, label="RTO" if i == 0 and ax is ax1 else None)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=8, ncol=3)
    last = samples[-1]
    fig.suptitle(f"{header.get('local')} → {header.get('remote')}: "
                 f"{last['delivered'] / 1e6:.1f} MB delivered, {last['retransmits']} retransmits, "
                 f"{len(spans)} recoveries, {len(rtos)} RTOs", fontsize=11)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="p4mtcp plot", description=__doc__.split("\n")[0])
    p.add_argument("trace", help="a trace file from `p4mtcp perf client --trace`")
    p.add_argument("-o", dest="out", help="picture to write (default: TRACE.png)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        with open(args.trace) as fh:
            header, samples = read_jsonl(fh)
    except (OSError, ValueError) as exc:
        print(f"plot: {args.trace}: {exc}", file=sys.stderr)
        return 2
    if not samples:
        print(f"plot: {args.trace}: the trace has no samples", file=sys.stderr)
        return 2
    try:
        draw(header, samples, args.out or str(Path(args.trace).with_suffix(".png")))
    except ImportError:
        print("plot: needs matplotlib: pip install 'p4mtcp[plot]'", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""perf: bulk TCP throughput over the mTCP API (iperf-like sender and receiver).

    p4mtcp perf server -f mtcp.conf [--port 5001] [-N cores] [--out FILE] [--connections K]
    p4mtcp perf client HOST -f mtcp.conf [--port 5001] [-N cores] (-n BYTES | --file F | -t SECS)

The client opens one connection per core and writes as fast as the send buffer drains; the server
reads everything each connection brings until its end. Both print Mbit/s every second and the
total at the end. The client half-closes when it has sent everything and waits for the peer to
close, so the totals count bytes the receiver really took. `--verify` hashes the stream on both
sides (SHA-256) for byte-exact checks; `--file`/`--out` move a file, e.g. to or from `nc`.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import sys
import time
from dataclasses import dataclass
from typing import Any, BinaryIO

from p4mtcp import mtcp
from p4mtcp.apps import launch, stats
from p4mtcp.apps.corepoll import CorePoll
from p4mtcp.control.tcp.trace import ConnTrace

PORT = 5001
CHUNK = 256 * 1024    # bytes per read/write call: a quarter of a bulk socket buffer (1 MiB)
PATTERN_LEN = 65521   # a prime: repeated blocks never line up with power-of-two chunk sizes


def pattern() -> bytes:
    """Deterministic, non-repeating-within-a-block payload the sender cycles through."""
    return hashlib.shake_128(b"p4mtcp perf").digest(PATTERN_LEN)


class Source:
    """The sender's bytes: a file's contents or `total` bytes of the cycled pattern."""

    def __init__(self, total: int | None, path: str | None):
        if path is not None:
            with open(path, "rb") as fh:
                self.data = memoryview(fh.read())
            self.total: int | None = len(self.data)
            self.cyclic = False
        else:
            block = pattern()
            self.data = memoryview(block * (1 + 2 * CHUNK // PATTERN_LEN + 1))
            self.total = total
            self.cyclic = True
        self.offset = 0

    def view(self) -> memoryview:
        """Up to CHUNK bytes starting at the current offset (empty when everything is sent)."""
        left = CHUNK if self.total is None else min(CHUNK, self.total - self.offset)
        if left <= 0:
            return self.data[:0]
        if not self.cyclic:
            return self.data[self.offset:self.offset + left]
        start = self.offset % PATTERN_LEN
        return self.data[start:start + left]

    def advance(self, n: int) -> None:
        self.offset += n


@dataclass(frozen=True)
class PerfArgs:
    mode: str                 # "server" | "client"
    conf: str
    cores: int
    host: str
    port: int
    nbytes: int | None        # client: bytes per connection (None: until --time)
    seconds: float            # client: duration when nbytes is None; server: give up after
    file: str | None          # client: send this file
    out: str | None           # server: write what arrives to OUT.<core>.<n>
    connections: int          # server: stop after this many connections ended (0: never)
    verify: bool
    stat_interval: float = 1.0
    trace: str | None = None  # client: write the connection's trace (control/tcp/trace.py)


class Receiver(CorePoll):
    """Server core: accept everything, read each connection to its end."""

    def __init__(self, mtcp, mctx, core: int, args: PerfArgs):
        super().__init__(mtcp, mctx, 1024)
        self.core, self.args = core, args
        self.listener = self._listen(args.port, 128)
        self.conns: dict[int, dict[str, Any]] = {}
        self.finished: list[dict[str, Any]] = []
        self.bytes = 0
        self.n_out = 0

    def step(self, timeout_ms: int) -> None:
        m = self.m
        for ev in m.mtcp_epoll_wait(self.mctx, self.ep, 1024, timeout_ms):
            if ev.data == self.listener:
                self._accept()
            elif ev.events & (m.MTCP_EPOLLIN | m.MTCP_EPOLLERR | m.MTCP_EPOLLHUP):
                self._read(ev.data)

    def _accept(self) -> None:
        m = self.m
        for c in self._accept_ready(self.listener):
            out: BinaryIO | None = None
            if self.args.out:
                out = open(f"{self.args.out}.{self.core}.{self.n_out}", "wb")
                self.n_out += 1
            self.conns[c] = {"bytes": 0, "t0": time.monotonic(), "out": out,
                             "sha": hashlib.sha256() if self.args.verify else None,
                             "peer": m.mtcp_getpeername(self.mctx, c)}
            self._ctl(m.MTCP_EPOLL_CTL_ADD, c, m.MTCP_EPOLLIN)

    def _read(self, sockid: int) -> None:
        st = self.conns.get(sockid)
        if st is None:
            return
        m = self.m
        while True:
            try:
                data = m.mtcp_read(self.mctx, sockid, CHUNK)
            except BlockingIOError:
                return
            except OSError as exc:
                self._end(sockid, st, error=str(exc))
                return
            if not data:
                self._end(sockid, st, error="")
                return
            st["bytes"] += len(data)
            self.bytes += len(data)
            if st["sha"] is not None:
                st["sha"].update(data)
            if st["out"] is not None:
                st["out"].write(data)

    def _end(self, sockid: int, st: dict[str, Any], error: str) -> None:
        self._drop(sockid)
        del self.conns[sockid]
        if st["out"] is not None:
            st["out"].close()
        seconds = time.monotonic() - st["t0"]
        self.finished.append({"bytes": st["bytes"], "seconds": seconds, "error": error,
                              "t_start": st["t0"], "t_end": st["t0"] + seconds,
                              "peer": list(st["peer"]),
                              "sha256": st["sha"].hexdigest() if st["sha"] else None})

    @property
    def done(self) -> bool:
        return 0 < self.args.connections <= len(self.finished)

    @property
    def moved(self) -> int:
        return self.bytes

    def finish(self, why: str) -> list[dict[str, Any]]:
        """End what is still open (marked with `why`); every connection's result."""
        for sockid, st in list(self.conns.items()):
            self._end(sockid, st, error=why)
        self.m.mtcp_close(self.mctx, self.listener)
        return self.finished

    def ok(self) -> bool:
        return (all(not c["error"] for c in self.finished)
                and (self.args.connections == 0 or self.done))


class Sender:
    """Client core: one connection, write until the source is exhausted, then half-close."""

    def __init__(self, mtcp, mctx, args: PerfArgs):
        m = self.m = mtcp
        self.mctx, self.args = mctx, args
        timed = args.nbytes is None and args.file is None
        self.send_until = time.monotonic() + args.seconds if timed else float("inf")
        self.src = Source(args.nbytes, args.file)
        self.sha = hashlib.sha256() if args.verify else None
        self.ep = m.mtcp_epoll_create(mctx, 16)
        self.s = m.mtcp_socket(mctx, m.AF_INET, m.SOCK_STREAM, 0)
        m.mtcp_setsock_nonblock(mctx, self.s)
        try:
            m.mtcp_connect(mctx, self.s, (args.host, args.port))
        except BlockingIOError:
            pass
        m.mtcp_epoll_ctl(mctx, self.ep, m.MTCP_EPOLL_CTL_ADD, self.s,
                         m.MtcpEpollEvent(m.MTCP_EPOLLOUT | m.MTCP_EPOLLIN, self.s))
        self.trace = ConnTrace() if args.trace else None   # sampled from the first ACK on
        if self.trace is not None:
            mctx.get(self.s, "perf --trace").conn.trace = self.trace
        self.t0 = time.monotonic()
        self.t_end: float | None = None
        self.sent = 0
        self.shut = False
        self.closed = False
        self.error = ""

    def step(self, timeout_ms: int) -> None:
        m = self.m
        for ev in m.mtcp_epoll_wait(self.mctx, self.ep, 16, timeout_ms):
            if ev.events & m.MTCP_EPOLLERR:
                err = m.mtcp_getsockopt(self.mctx, self.s, m.SOL_SOCKET, m.SO_ERROR)
                self._close(f"socket error {err}")
                return
            if ev.events & m.MTCP_EPOLLOUT and not self.shut:
                self._write()
            if ev.events & (m.MTCP_EPOLLIN | m.MTCP_EPOLLHUP | m.MTCP_EPOLLRDHUP):
                self._drain()

    def _write(self) -> None:
        m = self.m
        while True:
            view = self.src.view()
            if not view or time.monotonic() >= self.send_until:
                # everything is in the send buffer: half-close, then wait for the peer's close
                m.mtcp_shutdown(self.mctx, self.s, m.SHUT_WR)
                self.shut = True
                self.t_end = time.monotonic()
                m.mtcp_epoll_ctl(self.mctx, self.ep, m.MTCP_EPOLL_CTL_MOD, self.s,
                                 m.MtcpEpollEvent(m.MTCP_EPOLLIN, self.s))
                return
            try:
                n = m.mtcp_write(self.mctx, self.s, view)
            except BlockingIOError:
                return
            except OSError as exc:
                self._close(str(exc))
                return
            if n <= 0:
                return
            if self.sha is not None:
                self.sha.update(view[:n])
            self.src.advance(n)
            self.sent += n

    def _drain(self) -> None:
        m = self.m
        while True:
            try:
                data = m.mtcp_read(self.mctx, self.s, CHUNK)
            except BlockingIOError:
                return
            except OSError as exc:
                self._close(str(exc))
                return
            if not data:
                self._close("" if self.shut else "peer closed before the end of the data")
                return

    def _close(self, error: str) -> None:
        if self.closed:
            return
        self.error = error
        self.closed = True
        self.t_end = self.t_end or time.monotonic()
        self.m.mtcp_close(self.mctx, self.s)

    @property
    def done(self) -> bool:
        return self.closed

    @property
    def moved(self) -> int:
        return self.sent

    def finish(self, why: str) -> list[dict[str, Any]]:
        self._close(why)
        seconds = (self.t_end or time.monotonic()) - self.t0
        return [{"bytes": self.sent, "seconds": seconds, "error": self.error,
                 "t_start": self.t0, "t_end": self.t0 + seconds,
                 "sha256": self.sha.hexdigest() if self.sha else None}]

    def ok(self) -> bool:
        return self.closed and not self.error


def perf_core(core: int, args: PerfArgs, reporter: launch.Reporter, stop) -> int:
    """One core's process: a Receiver or a Sender on its own context until done or stopped."""
    mtcp.mtcp_init(args.conf)
    mctx = mtcp.mtcp_create_context(core)
    try:
        node = (Receiver(mtcp, mctx, core, args) if args.mode == "server"
                else Sender(mtcp, mctx, args))
        reporter.send("ready")
        if args.mode == "server":
            end = launch.deadline(args.seconds)
        else:   # the time to send, plus a grace period to drain and close
            end = launch.deadline((args.seconds if args.seconds > 0 else 600) + 30)
        last = 0

        def sample() -> None:   # bytes moved since the previous sample
            nonlocal last
            reporter.send("stats", **stats.context_sample(mctx), app={"bytes": node.moved - last})
            last = node.moved

        launch.step_until(node.step, stop, end, args.stat_interval, sample,
                          done=lambda: node.done)
        sample()
        results = node.finish("stopped" if stop.is_set() else "timed out")
        if isinstance(node, Sender) and node.trace is not None:
            write_trace(node.trace, args.trace if args.cores == 1 else f"{args.trace}.{core}")
        reporter.send("result", connections=results)
        ok = node.ok()
    finally:
        launch.destroy_context(mtcp, mctx)
    return 0 if ok else 1


def write_trace(trace: ConnTrace, path: str) -> None:
    """The trace as JSON lines (the format is documented in control/tcp/trace.py)."""
    with open(path, "w") as fh:
        fh.writelines(line + "\n" for line in trace.jsonl())


def parse_size(text: str) -> int:
    """`50M`, `1G`, `4096` -> bytes (binary multiples, as iperf)."""
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper()
    n = t[:-1] if t and t[-1] in mult else t
    if not n.isdigit():
        raise argparse.ArgumentTypeError(f"bad size {text!r} (e.g. 4096, 64K, 50M, 1G)")
    return int(n) * mult.get(t[-1], 1)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="p4mtcp perf", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    for mode in ("server", "client"):
        q = sub.add_parser(mode)
        if mode == "client":
            q.add_argument("host", help="server IPv4 address")
            g = q.add_mutually_exclusive_group()
            g.add_argument("-n", dest="nbytes", type=parse_size, help="bytes per connection")
            g.add_argument("--file", help="send this file")
            q.add_argument("--trace", metavar="FILE",
                           help="write the connection's cwnd/RTT trace as JSON lines to FILE "
                                "(FILE.<core> with several cores); draw it with p4mtcp plot")
        else:
            q.add_argument("--out", help="write each connection's bytes to OUT.<core>.<n>")
            q.add_argument("--connections", type=int, default=0,
                           help="exit after this many connections ended (default: never)")
        q.add_argument("-f", dest="conf", required=True, help="mtcp.conf")
        q.add_argument("-N", dest="num_cores", type=int, help="number of cores (default: all)")
        q.add_argument("--core", type=int, help="run only this core")
        q.add_argument("--port", type=int, default=PORT)
        q.add_argument("-t", dest="seconds", type=float, default=0.0,
                       help="client: send for this long (default 10 s without -n/--file); "
                            "server: give up after this long")
        q.add_argument("--verify", action="store_true", help="SHA-256 of the stream")
        q.add_argument("--quiet", action="store_true", help="summary only")
    return p.parse_args(argv)


def build(args: argparse.Namespace) -> tuple[list[int], PerfArgs]:
    cores = launch.parse_cores(args.num_cores, args.core)
    host = getattr(args, "host", "0.0.0.0")
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        raise ValueError(f"host {host!r} must be an IPv4 address") from None
    nbytes = getattr(args, "nbytes", None)
    file = getattr(args, "file", None)
    seconds = args.seconds
    if args.mode == "client" and nbytes is None and file is None and seconds <= 0:
        seconds = 10.0
    return cores, PerfArgs(args.mode, args.conf, args.num_cores or len(cores), host, args.port,
                           nbytes, seconds, file, getattr(args, "out", None),
                           getattr(args, "connections", 0), args.verify,
                           trace=getattr(args, "trace", None))


def mbit(nbytes: int, seconds: float) -> float:
    return nbytes * 8 / seconds / 1e6 if seconds > 0 else 0.0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        cores, pargs = build(args)
    except (ValueError, OSError) as exc:
        print(f"perf: {exc}", file=sys.stderr)
        return 2
    view = stats.Display(f"perf {args.mode}", live=False if args.quiet else None)
    interval: dict[int, int] = {}
    results: dict[int, list[dict[str, Any]]] = {}
    total = [0]

    def on_message(msg: dict[str, Any]) -> None:
        if msg["kind"] == "stats":
            interval[msg["core"]] = interval.get(msg["core"], 0) + msg["app"]["bytes"]
            total[0] += msg["app"]["bytes"]
        elif msg["kind"] == "result":
            results[msg["core"]] = msg["connections"]
        elif msg["kind"] == "exit" and msg["error"]:
            print(f"perf: core {msg['core']}: {msg['error']}", file=sys.stderr)

    def on_tick() -> None:
        lines = [f"[CPU{c:2d}] {mbit(n, 1.0):10.2f} Mbit/s" for c, n in sorted(interval.items())]
        lines.append(f"[  ALL] {mbit(sum(interval.values()), 1.0):10.2f} Mbit/s, "
                     f"{total[0] / 1e6:.1f} MB so far")
        interval.clear()
        if not args.quiet:
            goal = pargs.nbytes * len(cores) if pargs.nbytes else None
            view.show(lines, progress=(total[0] / 1e6, goal / 1e6) if goal else None, unit="MB")

    workers = launch.run_cores(
        launch.CoreWorkers(perf_core, cores, pargs, name=f"perf-{args.mode}"),
        on_message, on_tick, view)
    for core, conns in sorted(results.items()):
        for c in conns:
            err = f" error: {c['error']}" if c["error"] else ""
            sha = f" sha256 {c['sha256']}" if c["sha256"] else ""
            print(f"[CPU{core:2d}] {c['bytes']} bytes in {c['seconds']:.2f} s: "
                  f"{mbit(c['bytes'], c['seconds']):.2f} Mbit/s{sha}{err}")
    moved = sum(c["bytes"] for conns in results.values() for c in conns)
    span = max((c["seconds"] for conns in results.values() for c in conns), default=0.0)
    print(f"[  ALL] {moved} bytes, {mbit(moved, span):.2f} Mbit/s")
    return workers.exit_code()


if __name__ == "__main__":
    sys.exit(main())

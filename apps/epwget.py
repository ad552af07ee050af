"""epwget: mTCP's HTTP load generator, one context and one epoll per core.

`p4mtcp epwget URL TOTAL [-N cores] [-c concurrency] [-o outfile] [-f mtcp.conf]` — mTCP's
arguments: `URL` is `host[:port]/path` (or `http://host[:port]/path`); `TOTAL` requests are
split over the cores, and `-c` (the total number of connections open at once) likewise (mTCP's
default is 100 per core). Each request is one connection: connect, `GET`, read the response to its
Content-Length, close. Every second it prints mTCP's line — connects, MB read/written, completions,
average/maximum response time — and a progress bar. With `-o NAME` every body is written to
`NAME.<core>.<n>`: a process per core shares no counter, so the core is part of the name (mTCP's
threads number the files `NAME.<n>` from one shared counter).
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import sys
import time
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from p4mtcp import mtcp
from p4mtcp.apps import launch, stats
from p4mtcp.apps.corepoll import CorePoll
from p4mtcp.apps.http import HttpError, ResponseReader, build_request, split_url

READ_SIZE = 64 * 1024
DEFAULT_CONCURRENCY = 100    # per core, mTCP's default


@dataclass(frozen=True)
class WgetArgs:
    host: str
    port: int
    path: str
    total: int
    cores: int
    concurrency: int         # per core
    conf: str
    outfile: str | None
    timeout: float           # <= 0: none
    request_size: int = 0    # pad the request to this many bytes (benchmarks); 0: as built
    stat_interval: float = 1.0


def flows_for(core_index: int, ncores: int, total: int) -> int:
    """mTCP's split: total // cores each, the remainder one by one to the first cores."""
    return total // ncores + (1 if core_index < total % ncores else 0)


def padded_request(host: str, path: str, size: int) -> bytes:
    """The GET epwget sends; with `size` > 0 a minimal HTTP/1.0 GET (which closes after the
    response) padded with an `X-Pad` header to exactly `size` bytes, for benchmarks."""
    if size <= 0:
        return build_request(host, path)
    head = f"GET {path} HTTP/1.0\r\nHost: {host}\r\nX-Pad: ".encode("ascii")
    pad = size - len(head) - 4
    if pad < 0:
        raise ValueError(f"request size {size}: the request needs at least "
                         f"{len(head) + 4} bytes")
    return head + b"p" * pad + b"\r\n\r\n"


@dataclass
class Interval:
    """Counters mTCP's epwget prints each second (reset after each report)."""
    connects: int = 0
    reads: int = 0             # bytes
    writes: int = 0            # bytes
    completes: int = 0
    errors: int = 0
    timedout: int = 0
    sum_resp_us: int = 0
    max_resp_us: int = 0

    def take(self) -> dict[str, int]:
        out = dict(self.__dict__)
        self.__init__()  # type: ignore[misc]
        return out


@dataclass
class Flow:
    reader: ResponseReader = field(default_factory=ResponseReader)
    sent: bool = False
    t_start: float = 0.0
    out: BinaryIO | None = None


class CoreClient(CorePoll):
    """One core's connections, driven by `mtcp_epoll_wait` (mTCP's RunWgetMain loop)."""

    def __init__(self, mtcp, mctx, core: int, args: WgetArgs, target: int):
        super().__init__(mtcp, mctx, args.concurrency * 3)
        self.core = core
        self.args = args
        self.target = target
        self.request = padded_request(args.host, args.path, args.request_size)
        # mTCP's epwget: the source ports that steer to this core are chosen before the run.
        self.m.mtcp_init_rss(mctx, 0, 1, args.host, args.port)
        self.flows: dict[int, Flow] = {}
        self.started = self.done = self.errors = self.incompletes = 0
        self.bytes_body = 0
        self.response_size: int | None = None
        self.size_mismatches = 0
        self.files = 0
        self.stat = Interval()

    @property
    def finished(self) -> bool:
        return self.done >= self.target

    def fill(self) -> None:
        """Open connections up to the concurrency limit (mTCP: CreateConnection loop)."""
        while len(self.flows) < self.args.concurrency and self.started < self.target:
            if not self._connect():
                return

    def _connect(self) -> bool:
        m = self.m
        try:
            s = m.mtcp_socket(self.mctx, m.AF_INET, m.SOCK_STREAM, 0)
        except OSError as exc:
            if exc.errno == errno.ENFILE:     # pool full: retry when a connection closes
                return False
            raise
        m.mtcp_setsock_nonblock(self.mctx, s)
        try:
            m.mtcp_connect(self.mctx, s, (self.args.host, self.args.port))
        except OSError as exc:
            if exc.errno != errno.EINPROGRESS:
                m.mtcp_close(self.mctx, s)
                if exc.errno in (errno.EAGAIN, errno.ENOMEM):   # no port/buffer yet: retry later
                    return False
                raise
        self.started += 1
        self.stat.connects += 1
        self.flows[s] = Flow()
        # Edge-triggered for both directions, registered once: the connect's EPOLLOUT sends the
        # request, the response's EPOLLIN reads until EAGAIN or the end; no EPOLL_CTL_MOD in
        # between (mTCP's epwget switches OUT to IN with one), so one call per connection fewer.
        self._ctl(m.MTCP_EPOLL_CTL_ADD, s, m.MTCP_EPOLLOUT | m.MTCP_EPOLLIN | m.MTCP_EPOLLET)
        return True

    def step(self, timeout_ms: int) -> None:
        m = self.m
        for ev in m.mtcp_epoll_wait(self.mctx, self.ep, self.args.concurrency * 3, timeout_ms):
            sockid = ev.data
            flow = self.flows.get(sockid)
            if flow is None:
                continue
            if ev.events & m.MTCP_EPOLLERR:
                self.stat.errors += 1
                try:
                    err = m.mtcp_getsockopt(self.mctx, sockid, m.SOL_SOCKET, m.SO_ERROR)
                except OSError:
                    err = 0
                if err == errno.ETIMEDOUT:
                    self.stat.timedout += 1
                self._finish(sockid, ok=False)
            elif ev.events & m.MTCP_EPOLLIN:
                self._on_readable(sockid, flow)
            elif ev.events & m.MTCP_EPOLLOUT and not flow.sent:
                self._send_request(sockid, flow)
        self.fill()

    def _send_request(self, sockid: int, flow: Flow) -> None:
        m = self.m
        try:
            n = m.mtcp_write(self.mctx, sockid, self.request)
        except OSError:
            self.stat.errors += 1
            self._finish(sockid, ok=False)
            return
        if n != len(self.request):
            # an 8 KiB send buffer always takes a request of a few hundred bytes
            raise RuntimeError(f"socket {sockid}: request write took {n} of "
                               f"{len(self.request)} bytes")
        self.stat.writes += n
        flow.sent = True
        flow.t_start = time.monotonic()
        if self.args.outfile:
            flow.out = open(f"{self.args.outfile}.{self.core}.{self.files}", "wb")
            self.files += 1

    def _on_readable(self, sockid: int, flow: Flow) -> None:
        m = self.m
        while True:
            try:
                data = m.mtcp_read(self.mctx, sockid, READ_SIZE)
            except BlockingIOError:
                return
            except OSError:
                self.stat.errors += 1
                self._finish(sockid, ok=False)
                return
            try:
                if not data:              # the server closed: complete only if nothing is owed
                    flow.reader.eof()
                    self._finish(sockid, ok=True)
                    return
                self.stat.reads += len(data)
                body = flow.reader.feed(data)
            except HttpError:
                self.stat.errors += 1
                self.incompletes += 1
                self._finish(sockid, ok=False)
                return
            if body and flow.out is not None:
                flow.out.write(body)
            if flow.reader.done:
                self._finish(sockid, ok=True)
                return

    def _finish(self, sockid: int, ok: bool) -> None:
        flow = self.flows.pop(sockid)
        self._drop(sockid)
        if flow.out is not None:
            flow.out.close()
        self.done += 1
        if not ok:
            self.errors += 1
            return
        us = int((time.monotonic() - flow.t_start) * 1e6)
        st = self.stat
        st.completes += 1
        st.sum_resp_us += us
        st.max_resp_us = max(st.max_resp_us, us)
        size = flow.reader.received
        self.bytes_body += size
        if self.response_size is None:
            self.response_size = size
        elif size != self.response_size:
            self.size_mismatches += 1

    def close(self) -> None:
        for sockid in list(self.flows):
            self._finish(sockid, ok=False)
        self.m.mtcp_close(self.mctx, self.ep)

    def summary(self) -> dict[str, Any]:
        return {"target": self.target, "done": self.done, "errors": self.errors,
                "incompletes": self.incompletes, "body_bytes": self.bytes_body,
                "response_size": self.response_size, "size_mismatches": self.size_mismatches}


def wget_core(core: int, args: WgetArgs, reporter: launch.Reporter, stop) -> int:
    """One core's process: its own context; runs its share of the requests, then reports."""
    core_index = core % args.cores
    target = flows_for(core_index, args.cores, args.total)
    mtcp.mtcp_init(args.conf)
    mctx = mtcp.mtcp_create_context(core)
    try:
        client = CoreClient(mtcp, mctx, core, args, target)
        reporter.send("ready", target=target)
        end = launch.deadline(args.timeout)
        first_stat = time.monotonic() + args.stat_interval
        t_start = time.monotonic()
        client.fill()

        def sample() -> None:
            reporter.send("stats", **stats.context_sample(mctx), app=client.stat.take())

        launch.step_until(client.step, stop, end, args.stat_interval, sample,
                          done=lambda: client.finished, first_stat=first_stat)
        t_end = time.monotonic()
        timed_out = not client.finished and not stop.is_set()
        client.close()
        sample()
        reporter.send("done", **client.summary(), timed_out=timed_out, t_start=t_start,
                      t_end=t_end)
    finally:
        launch.destroy_context(mtcp, mctx)
    return 0 if client.errors == 0 and client.done >= target else 1


class WgetReport:
    """The parent's view: mTCP's per-second `[ ALL ]` line, progress, and the final summary."""

    def __init__(self, total: int, cores: int):
        self.total = total
        self.cores = cores
        self.interval = Interval()
        self.totals = Interval()
        self.stack = stats.StackStats()
        self.done: dict[int, dict[str, Any]] = {}
        self.t0 = time.monotonic()

    def ingest(self, msg: dict[str, Any]) -> None:
        if msg["kind"] == "stats":
            self.stack.ingest(msg)
            for acc in (self.interval, self.totals):
                for k, v in msg["app"].items():
                    setattr(acc, k, max(getattr(acc, k), v) if k == "max_resp_us"
                            else getattr(acc, k) + v)
        elif msg["kind"] == "done":
            self.done[msg["core"]] = msg

    def line(self) -> str:
        st = self.interval.take()
        avg = st["sum_resp_us"] // st["completes"] if st["completes"] else 0
        return (f"[  ALL] connect: {st['connects']:7d}, read: {st['reads'] / 1e6:6.2f} MB, "
                f"write: {st['writes'] / 1e6:6.2f} MB, completes: {st['completes']:7d} "
                f"(resp_time avg: {avg:6d}, max: {st['max_resp_us']:8d} us)")

    def progress(self) -> tuple[int, int]:
        return self.totals.completes + self.totals.errors, self.total

    def summary(self) -> list[str]:
        elapsed = time.monotonic() - self.t0
        t = self.totals
        avg = t.sum_resp_us // t.completes if t.completes else 0
        lines = [f"[CPU{c:2d}] Completed {d['done']} connections, errors: {d['errors']} "
                 f"incompletes: {d['incompletes']}" for c, d in sorted(self.done.items())]
        lines.append(f"[  ALL] {t.completes} of {self.total} requests completed in "
                     f"{elapsed:.2f} s ({t.completes / elapsed if elapsed else 0:.0f}/s), "
                     f"{t.errors} errors, {t.reads / 1e6:.2f} MB read, resp_time avg {avg} us, "
                     f"max {t.max_resp_us} us")
        return lines

    def ok(self) -> bool:
        return (len(self.done) == self.cores and self.totals.completes == self.total
                and self.totals.errors == 0)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="p4mtcp epwget", description=__doc__.split("\n")[0])
    p.add_argument("url", help="host[:port]/path")
    p.add_argument("total", type=int, help="total number of requests (flows)")
    p.add_argument("-N", dest="num_cores", type=int, help="number of cores (default: all)")
    p.add_argument("-c", dest="concurrency", type=int,
                   help=f"total concurrent connections (default {DEFAULT_CONCURRENCY} per core)")
    p.add_argument("-o", dest="outfile", help="write each body to OUTFILE.<core>.<n>")
    p.add_argument("-f", dest="conf", required=True, help="mtcp.conf")
    p.add_argument("--core", type=int, help="run only this core (one process per core)")
    p.add_argument("--timeout", type=float, default=0.0,
                   help="give up after this many seconds (default: none)")
    p.add_argument("--request-size", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--quiet", action="store_true", help="no per-second lines, summary only")
    args = p.parse_args(argv)
    if args.total <= 0:
        p.error(f"total {args.total}: number of flows must be larger than 0")
    return args


def build(args: argparse.Namespace) -> tuple[list[int], WgetArgs]:
    """Cores and per-core arguments from the command line (ValueError says what is wrong)."""
    host, port, path = split_url(args.url)
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        raise ValueError(f"url {args.url!r}: host must be an IPv4 address (no DNS)") from None
    cores = launch.parse_cores(args.num_cores, args.core)
    ncores = args.num_cores or len(cores)
    ncores = min(ncores, args.total)               # mTCP: never more cores than flows
    cores = [c for c in cores if c < ncores] or cores[:1]
    if args.concurrency is not None and args.concurrency < ncores:
        raise ValueError(f"-c {args.concurrency}: need at least one connection per core "
                         f"({ncores} cores)")
    conc = args.concurrency // ncores if args.concurrency else DEFAULT_CONCURRENCY
    padded_request(host, path, args.request_size)  # reject an impossible size now
    return cores, WgetArgs(host, port, path, args.total, ncores, conc, args.conf, args.outfile,
                           args.timeout, args.request_size)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        cores, wargs = build(args)
    except ValueError as exc:
        print(f"epwget: {exc}", file=sys.stderr)
        return 2
    total = sum(flows_for(c % wargs.cores, wargs.cores, wargs.total) for c in cores)
    report = WgetReport(total, len(cores))
    view = stats.Display(f"epwget {args.url} x{total}", live=False if args.quiet else None)

    def on_message(msg: dict[str, Any]) -> None:
        report.ingest(msg)
        if msg["kind"] == "exit" and msg["error"]:
            print(f"epwget: core {msg['core']}: {msg['error']}", file=sys.stderr)

    def on_tick() -> None:
        if not args.quiet:
            view.show([report.line()], progress=report.progress(), unit="requests")

    workers = launch.run_cores(launch.CoreWorkers(wget_core, cores, wargs, name="epwget"),
                               on_message, on_tick, view)
    for line in report.summary():
        print(line)
    return 0 if report.ok() and workers.exit_code() == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

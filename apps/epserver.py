"""epserver: mTCP's HTTP/1.1 keep-alive static file server, one listener and one epoll per core.

`p4mtcp epserver -p www_dir -f mtcp.conf [-N cores] [-c core] [-b backlog]` — mTCP's flags. Each
core runs in its own process with its own context, listener and epoll (shared-nothing); the NIC
steers every connection to one core's queue, so the listeners never compete for a connection.
The files below `-p` are cached in memory at start, as mTCP's epserver does.

Differences from mTCP's epserver, on purpose: HTTP/1.1 connections persist unless the client
asks to close (RFC 9112 9.3; mTCP only keeps a connection alive on an explicit `Keep-Alive`),
pipelined requests are answered in order, files in subdirectories are served, and a malformed
request gets a 4xx answer instead of a silent hang.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

from p4mtcp import mtcp
from p4mtcp.apps import launch, stats
from p4mtcp.apps.corepoll import CorePoll
from p4mtcp.apps.webfiles import FileCache, Session

MAX_EVENTS = 30000     # mTCP: MAX_FLOW_NUM * 3
READ_SIZE = 64 * 1024


@dataclass(frozen=True)
class ServerArgs:
    www: str
    conf: str
    cores: int
    backlog: int
    port: int
    duration: float          # <= 0: until stopped
    stat_interval: float = 1.0


class CoreServer(CorePoll):
    """One core's listener, epoll and sessions, driven by `mtcp_epoll_wait`."""

    def __init__(self, mtcp, mctx, cache: FileCache, port: int, backlog: int):
        super().__init__(mtcp, mctx, MAX_EVENTS)
        self.cache = cache
        # Responses are written whole as soon as they are ready; Nagle would only hold the tail
        # of one for a delayed ACK.
        self.listener = self._listen(port, backlog, nodelay=True)
        self.sessions: dict[int, Session] = {}
        self.accepted = 0
        self.requests = 0
        self.errors = 0
        self.bytes_out = 0
        self.peers: list[tuple[str, int]] = []    # remote (ip, port) accepted since take_peers

    def step(self, timeout_ms: int) -> None:
        m = self.m
        do_accept = False
        for ev in m.mtcp_epoll_wait(self.mctx, self.ep, MAX_EVENTS, timeout_ms):
            sockid = ev.data
            if sockid == self.listener:
                do_accept = True
            elif ev.events & m.MTCP_EPOLLERR:
                self.errors += 1
                self._close(sockid)
            elif ev.events & m.MTCP_EPOLLIN:
                self._on_readable(sockid)
            elif ev.events & m.MTCP_EPOLLOUT:
                self._flush(sockid)
            elif ev.events & m.MTCP_EPOLLHUP:
                self._close(sockid)
        if do_accept:
            self._accept_all()

    def _accept_all(self) -> None:
        m = self.m
        for c in self._accept_ready(self.listener, wait_when_full=True):
            self.accepted += 1
            self.sessions[c] = Session(self.cache)
            self.peers.append(m.mtcp_getpeername(self.mctx, c))
            self._ctl(m.MTCP_EPOLL_CTL_ADD, c, m.MTCP_EPOLLIN)

    def _on_readable(self, sockid: int) -> None:
        session = self.sessions.get(sockid)
        if session is None:
            return
        while True:
            try:
                data = self.m.mtcp_read(self.mctx, sockid, READ_SIZE)
            except BlockingIOError:
                break
            except OSError:
                self.errors += 1
                self._close(sockid)
                return
            if not data:             # peer closed: nothing more will be asked
                self._close(sockid)
                return
            before = session.requests
            session.feed(data)
            self.requests += session.requests - before
            if len(data) < READ_SIZE:
                break                # drained: the level-triggered EPOLLIN reports anything newer
        self._flush(sockid)

    def _flush(self, sockid: int) -> None:
        session = self.sessions.get(sockid)
        if session is None:
            return
        m = self.m
        while session.pending:
            try:
                n = m.mtcp_write(self.mctx, sockid, session.chunk())
            except BlockingIOError:
                n = 0
            except OSError:
                self.errors += 1
                self._close(sockid)
                return
            if n <= 0:
                # send buffer full: wait for room (mTCP's epserver does the same with EPOLLOUT)
                self._ctl(m.MTCP_EPOLL_CTL_MOD, sockid, m.MTCP_EPOLLIN | m.MTCP_EPOLLOUT)
                return
            self.bytes_out += n
            session.sent(n)
        if session.finished:
            self._close(sockid)
        else:
            self._ctl(m.MTCP_EPOLL_CTL_MOD, sockid, m.MTCP_EPOLLIN)

    def _close(self, sockid: int) -> None:
        if self.sessions.pop(sockid, None) is None:
            return
        self._drop(sockid)

    def close(self) -> None:
        for sockid in list(self.sessions):
            self._close(sockid)
        self.m.mtcp_close(self.mctx, self.listener)
        self.m.mtcp_close(self.mctx, self.ep)

    def take_peers(self) -> list[tuple[str, int]]:
        """The remote (ip, port) of each flow accepted since the last call, handed over once:
        a long-running server keeps nothing per connection it has served."""
        peers, self.peers = self.peers, []
        return peers

    def app_counters(self) -> dict[str, int]:
        return {"accepted": self.accepted, "requests": self.requests, "errors": self.errors,
                "bytes_out": self.bytes_out, "open": len(self.sessions)}


def serve_core(core: int, args: ServerArgs, reporter: launch.Reporter, stop) -> int:
    """One core's process: its own context, listener and epoll until stopped."""
    cache = FileCache(args.www)
    mtcp.mtcp_init(args.conf)
    mctx = mtcp.mtcp_create_context(core)
    try:
        server = CoreServer(mtcp, mctx, cache, args.port, args.backlog)
        reporter.send("ready", files=len(cache.files))

        def sample() -> None:
            reporter.send("stats", **stats.context_sample(mctx), app=server.app_counters())
            peers = server.take_peers()
            if peers:  # each accepted flow is reported once, in the sample after its accept
                reporter.send("peers", peers=peers)

        launch.step_until(server.step, stop, launch.deadline(args.duration),
                          args.stat_interval, sample, first_stat=time.monotonic())
        sample()
        server.close()
    finally:
        launch.destroy_context(mtcp, mctx)
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="p4mtcp epserver", description=__doc__.split("\n")[0])
    p.add_argument("-p", dest="www", required=True, help="directory to serve")
    p.add_argument("-f", dest="conf", required=True, help="mtcp.conf")
    p.add_argument("-N", dest="num_cores", type=int, help="number of cores (default: all)")
    p.add_argument("-c", dest="core", type=int, help="run only this core (one process per core)")
    p.add_argument("-b", dest="backlog", type=int, default=4096, help="listen backlog")
    p.add_argument("--port", type=int, default=80, help="TCP port (mTCP's epserver: 80)")
    p.add_argument("--duration", type=float, default=0.0,
                   help="stop after this many seconds (default: run until Ctrl-C)")
    p.add_argument("--quiet", action="store_true", help="no per-second statistics")
    args = p.parse_args(argv)
    if args.backlog <= 0:
        p.error(f"-b {args.backlog}: backlog must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        cores = launch.parse_cores(args.num_cores, args.core)
        FileCache(args.www)               # fail here, once, rather than in every core process
    except ValueError as exc:
        print(f"epserver: {exc}", file=sys.stderr)
        return 2
    sargs = ServerArgs(args.www, args.conf, args.num_cores or len(cores), args.backlog,
                       args.port, args.duration)
    view = stats.Display("epserver", live=False if args.quiet else None)
    stack = stats.StackStats()

    def on_message(msg: dict) -> None:
        if msg["kind"] == "stats":
            stack.ingest(msg)
        elif msg["kind"] == "exit" and msg["rc"]:
            print(f"epserver: core {msg['core']}: {msg['error']}", file=sys.stderr)

    def on_tick() -> None:
        if not args.quiet:
            view.show(stack.lines())

    workers = launch.CoreWorkers(serve_core, cores, sargs, name="epserver")
    return launch.run_cores(workers, on_message, on_tick, view).exit_code()


if __name__ == "__main__":
    sys.exit(main())

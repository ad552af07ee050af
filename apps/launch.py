"""Process helpers: one process per core (shared-nothing), and helper services such as the NIC.

mTCP runs one application thread per core; with the GIL that has to be one *process* per core.
Each core process creates its own mTCP context and reports to the parent only through a queue of
small dicts (per-second statistics, a final result), so nothing is shared but messages.

Every start has a matching stop that is bounded in time: ask nicely (stop event / SIGTERM), wait,
then kill. `with` blocks guarantee that on errors and on Ctrl-C too.
"""

from __future__ import annotations

import cProfile
import multiprocessing as mp
import os
import pstats
import queue
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

# stdlib-only module (plus p4src's file paths): the one bounded SIGTERM-then-SIGKILL stop.
from p4mtcp.bmv2.launcher import terminate

Message = dict[str, Any]
WorkerFn = Callable[[int, Any, "Reporter", Any], int]
"""target(core, args, reporter, stop_event) -> exit code; runs in the core's own process."""


class Reporter:
    """A core process's line to the parent: `send(kind, **fields)` puts one message on the queue."""


    def __init__(self, q: Any, core: int):
        self._q = q
        self.core = core

    def send(self, kind: str, **fields: Any) -> None:
        """Every message carries the process's CPU seconds so far (`cpu_s`): differences between
        two messages say what a phase of the run cost that core."""
        self._q.put({"kind": kind, "core": self.core, "cpu_s": time.process_time(), **fields})


class _ParentStop:
    """A core's view of its parent's stop event: also set once the parent process is gone, so
    an orphaned core (its parent killed, or interrupted while stopping it) still stops."""

    def __init__(self, event: Any, parent_pid: int):
        self._event = event
        self._parent_pid = parent_pid

    def is_set(self) -> bool:
        if not self._event.is_set() and os.getppid() != self._parent_pid:
            self._event.set()
        return self._event.is_set()

    def set(self) -> None:
        self._event.set()


def _worker_main(target: WorkerFn, core: int, args: Any, q: Any, stop: Any,
                 profile_path: str | None) -> None:
    # Ctrl-C reaches every process in the terminal's group. The parent owns the shutdown: a core
    # that stopped on Ctrl-C by itself could end before the parent saw the interrupt, and the
    # parent would report a core that died. So a core ignores SIGINT and leaves its loop (and
    # destroys its context) when the parent sets the stop event, on SIGTERM, or once the
    # parent is gone.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop = _ParentStop(stop, os.getppid())
    reporter = Reporter(q, core)
    try:
        if profile_path:
            rc = int(_profiled(profile_path, target, core, args, reporter, stop) or 0)
        else:
            rc = int(target(core, args, reporter, stop) or 0)
        reporter.send("exit", rc=rc, error="")
    except BaseException as exc:  # reported to the parent, which decides the exit status
        reporter.send("exit", rc=1, error=f"{type(exc).__name__}: {exc}",
                      trace=traceback.format_exc())
    finally:
        q.close()
        q.join_thread()


def _profiled(path: str, target: WorkerFn, *args: Any) -> int:
    """Run the worker under cProfile and write its statistics (by own time) as text to `path`."""
    prof = cProfile.Profile()
    try:
        return prof.runcall(target, *args)
    finally:
        with open(path, "w") as fh:
            stats = pstats.Stats(prof, stream=fh)
            stats.sort_stats("tottime").print_stats(40)
            stats.sort_stats("cumulative").print_stats(25)


def destroy_context(mtcp: Any, mctx: Any, linger: float = 2.0) -> None:
    """mtcp_destroy_context once the context's closed connections have finished closing.

    An application's last mtcp_close only queues its FIN; destroying the context at once would
    leave that FIN (or the ACK of the peer's) unretransmitted if the link loses it, and the peer
    waiting forever. So the loop keeps running, bounded by `linger` seconds, until every
    connection the context opened or accepted has been freed by the engine.
    """
    st = mctx.stats
    end = time.monotonic() + linger
    if st.connects + st.accepts > st.flows_freed:
        ep = mtcp.mtcp_epoll_create(mctx, 1)
        while st.connects + st.accepts > st.flows_freed and time.monotonic() < end:
            mtcp.mtcp_epoll_wait(mctx, ep, 1, 20)
        mtcp.mtcp_close(mctx, ep)
    mtcp.mtcp_destroy_context(mctx)


def step_until(step: Callable[[int], None], stop: Any, end: float, interval: float,
               on_stat: Callable[[], None], done: Callable[[], bool] = lambda: False,
               first_stat: float | None = None) -> None:
    """A core process's main loop: `step(50)` (ms) until `done()`, `stop` is set or the
    monotonic deadline `end`; `on_stat()` every `interval` s, first at `first_stat` (monotonic;
    default one interval from now), so the parent sees progress while the core is busy."""
    next_stat = time.monotonic() + interval if first_stat is None else first_stat
    while not done() and not stop.is_set() and time.monotonic() < end:
        step(50)
        if time.monotonic() >= next_stat:
            next_stat += interval
            on_stat()


def deadline(seconds: float) -> float:
    """The monotonic time `seconds` from now; no deadline (inf) when `seconds` <= 0."""
    return time.monotonic() + seconds if seconds > 0 else float("inf")


class CoreWorkers:
    """`target` run once per core, each in a fresh 'spawn' process.

    With `profile`, core c's process runs under cProfile and writes `profile % c` (a path with
    one `%d`) when it ends.
    """

    def __init__(self, target: WorkerFn, cores: Sequence[int], args: Any, name: str = "worker",
                 profile: str | None = None):
        ctx = mp.get_context("spawn")
        self.queue = ctx.Queue()
        self.stop_event = ctx.Event()
        self.cores = list(cores)
        self.procs = {core: ctx.Process(target=_worker_main, name=f"{name}-core{core}",
                                        args=(target, core, args, self.queue, self.stop_event,
                                              profile % core if profile else None))
                      for core in self.cores}
        self.results: dict[int, Message] = {}

    def start(self) -> "CoreWorkers":
        for proc in self.procs.values():
            proc.start()
        return self

    def poll(self, timeout: float) -> list[Message]:
        """Messages that arrived within `timeout` s (at least one wait, then whatever is queued)."""
        out: list[Message] = []
        try:
            out.append(self.queue.get(timeout=timeout))
            while True:
                out.append(self.queue.get_nowait())
        except queue.Empty:
            pass
        for msg in out:
            if msg["kind"] == "exit":
                self.results[msg["core"]] = msg
        return out

    def pump(self, on_message: Callable[[Message], None], on_tick: Callable[[], None],
             interval: float = 1.0, timeout: float = float("inf")) -> bool:
        """Dispatch messages until every core has ended; `on_tick` once per `interval`.

        False when `timeout` s passed first (the caller then stops the workers).
        """
        deadline = time.monotonic() + timeout
        next_tick = time.monotonic() + interval
        while self.running():
            now = time.monotonic()
            if now >= deadline:
                return False
            for msg in self.poll(max(0.0, min(next_tick, deadline) - now)):
                on_message(msg)
            if time.monotonic() >= next_tick:
                next_tick += interval
                on_tick()
        for msg in self.poll(0.0):
            on_message(msg)
        return True

    def running(self) -> bool:
        """True while some core has neither reported its exit nor died."""
        return any(core not in self.results and proc.is_alive()
                   for core, proc in self.procs.items())

    def died(self) -> list[int]:
        """Cores whose process ended without reporting (killed, crashed in C)."""
        return [core for core, proc in self.procs.items()
                if core not in self.results and proc.exitcode is not None]

    def finish(self, on_message: Callable[[Message], None], grace: float = 10.0) -> None:
        """Ask every core to stop, hand their last messages to `on_message`, then `stop()`."""
        self.stop_event.set()
        deadline = time.monotonic() + grace
        while self.running() and time.monotonic() < deadline:
            for msg in self.poll(0.05):
                on_message(msg)
        for msg in self.poll(0.0):
            on_message(msg)
        self.stop(grace=1.0)

    def stop(self, grace: float = 5.0) -> None:
        """Ask every core to finish, then terminate and kill stragglers; drains the queue."""
        self.stop_event.set()
        deadline = time.monotonic() + grace
        for proc in self.procs.values():
            while proc.is_alive() and time.monotonic() < deadline:
                self.poll(0.05)
                proc.join(0.05)
        for proc in self.procs.values():
            if proc.is_alive():
                proc.terminate()
                proc.join(1.0)
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)
        self.poll(0.0)

    def exit_code(self) -> int:
        """0 only when every core reported rc 0."""
        if set(self.results) != set(self.cores):
            return 1
        return 0 if all(m["rc"] == 0 for m in self.results.values()) else 1

    def __enter__(self) -> "CoreWorkers":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_cores(workers: CoreWorkers, on_message: Callable[[Message], None],
              on_tick: Callable[[], None], view: Any) -> CoreWorkers:
    """Run `workers` until every core ends or Ctrl-C, then stop them and close `view` (the
    live display `on_tick` draws on), whichever way the run ended."""
    try:
        with workers:
            workers.pump(on_message, on_tick)
    except KeyboardInterrupt:
        pass
    finally:
        view.close()
    return workers


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time process `pid` (all its threads) has used so far (from /proc)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Service:
    """A helper command (e.g. `p4mtcp nic ...`) run as a child process with bounded start/stop."""

    def __init__(self, argv: Sequence[str], name: str, log_path: str | None = None):
        self.argv = list(argv)
        self.name = name
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def start(self) -> "Service":
        self._log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with code {self.proc.returncode}"
                               f"{self._log_tail()}")

    def wait_ready(self, ready: Callable[[], bool], timeout: float) -> None:
        """Poll `ready()` until it holds; RuntimeError if the process dies or time runs out."""
        deadline = time.monotonic() + timeout
        while not ready():
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s"
                                   f"{self._log_tail()}")
            time.sleep(0.05)

    def stop(self, grace: float = 3.0) -> int | None:
        if self.proc is None:
            return None
        rc = terminate(self.proc, grace)
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()
        return rc

    def cpu_seconds(self) -> float:
        """User + system CPU time the running process has used so far (from /proc)."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        return process_cpu_seconds(self.proc.pid)

    def _log_tail(self) -> str:
        if not self.log_path or not os.path.exists(self.log_path):
            return ""
        with open(self.log_path, "rb") as fh:
            fh.seek(max(0, os.path.getsize(self.log_path) - 2000))
            return "; log tail:\n" + fh.read().decode("utf-8", "replace")

    def __enter__(self) -> "Service":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def tcp_listening(host: str, port: int) -> bool:
    """True when something accepts TCP connections on host:port (a gRPC server, say)."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A port the kernel just had free on `host` (for P4Runtime servers of a private fabric)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def python_cmd(*args: str) -> list[str]:
    """argv running `p4mtcp ARGS` with this interpreter (no reliance on PATH)."""
    return [sys.executable, "-m", "p4mtcp.cli", *args]


def parse_cores(num_cores: int | None, core: int | None, available: int | None = None
                ) -> list[int]:
    """The cores to run on, from mTCP's `-N num_cores` and `-c core` flags.

    `-c` alone runs only that core (mTCP's one-process-per-core mode); `-N` alone runs cores
    0..N-1. The default is every CPU the process may use.
    """
    avail = available if available is not None else len(os.sched_getaffinity(0))
    n = avail if num_cores is None else num_cores
    if n < 1:
        raise ValueError(f"-N {n}: need at least one core")
    if core is not None:
        if not 0 <= core < n:
            raise ValueError(f"-c {core}: core must be in 0..{n - 1} (-N {n})")
        return [core]
    return list(range(n))

"""apps/launch.py: per-core 'spawn' processes, their messages, and bounded shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from p4mtcp.apps import launch

from waiting import wait_for


def worker_reports_pid(core, args, reporter, stop):
    reporter.send("hello", pid=os.getpid(), arg=args["x"] * (core + 1))
    return 0


def worker_waits_for_stop(core, args, reporter, stop):
    reporter.send("ready")
    deadline = time.monotonic() + 30
    while not stop.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)
    reporter.send("stopping", clean=stop.is_set())
    return 0


def worker_raises(core, args, reporter, stop):
    if core == 1:
        raise RuntimeError("core 1 broke")
    return 0


def worker_interrupted(core, args, reporter, stop):
    os.kill(os.getpid(), signal.SIGINT)          # what Ctrl-C does to every process of the group
    reporter.send("after_sigint", stopped=stop.is_set())
    return worker_waits_for_stop(core, args, reporter, stop)


def worker_ignores_stop(core, args, reporter, stop):
    reporter.send("ready")
    time.sleep(60)
    return 0


def collect(workers, kinds, timeout=20.0):
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(any(m["kind"] == k for m in got) for k in kinds):
        got += workers.poll(0.1)
    return got


def test_each_core_runs_in_its_own_process():
    with launch.CoreWorkers(worker_reports_pid, [0, 1], {"x": 5}) as w:
        deadline = time.monotonic() + 30
        msgs = []
        while w.running() and time.monotonic() < deadline:
            msgs += w.poll(0.1)
    hello = {m["core"]: m for m in msgs if m["kind"] == "hello"}
    assert set(hello) == {0, 1}
    assert len({hello[0]["pid"], hello[1]["pid"], os.getpid()}) == 3
    assert [hello[0]["arg"], hello[1]["arg"]] == [5, 10]
    assert w.exit_code() == 0


def test_stop_reaches_the_workers_and_they_exit_cleanly():
    w = launch.CoreWorkers(worker_waits_for_stop, [0, 1], None).start()
    try:
        assert len([m for m in collect(w, ["ready"]) if m["kind"] == "ready"]) >= 1
    finally:
        w.stop(grace=10)
    assert all(not p.is_alive() for p in w.procs.values())
    assert w.exit_code() == 0


def test_an_exception_in_one_core_is_reported_with_its_message():
    with launch.CoreWorkers(worker_raises, [0, 1], None) as w:
        deadline = time.monotonic() + 30
        while w.running() and time.monotonic() < deadline:
            w.poll(0.1)
    assert w.results[0]["rc"] == 0
    assert w.results[1]["rc"] == 1 and "core 1 broke" in w.results[1]["error"]
    assert w.exit_code() == 1


def test_ctrl_c_leaves_the_stop_to_the_parent():
    """A core ignores SIGINT (the parent, interrupted too, decides): it keeps running until the
    parent sets the stop event, then ends cleanly — it never ends before the parent knows why."""
    w = launch.CoreWorkers(worker_interrupted, [0, 1], None).start()
    try:
        got: list[dict] = []
        deadline = time.monotonic() + 30
        while sum(m["kind"] == "ready" for m in got) < 2 and time.monotonic() < deadline:
            got += w.poll(0.1)                   # each core: after_sigint, then ready
        assert {m["core"]: m["stopped"] for m in got if m["kind"] == "after_sigint"} == {
            0: False, 1: False}
        assert w.running()
        w.finish(got.append, grace=20)
    finally:
        w.stop()
    assert {m["core"]: m["clean"] for m in got if m["kind"] == "stopping"} == {0: True, 1: True}
    assert w.exit_code() == 0


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


ORPHANING_PARENT = """
import sys, time
sys.path[:0] = sys.argv[1:]
from p4mtcp.apps import launch
from test_apps_launch import collect, worker_waits_for_stop
w = launch.CoreWorkers(worker_waits_for_stop, [0, 1], None).start()
collect(w, ["ready"])
print(*[p.pid for p in w.procs.values()], flush=True)
time.sleep(60)
"""


def test_cores_stop_when_their_parent_dies():
    """An orphaned core (its parent killed, or interrupted while stopping it) stops by itself:
    ignoring SIGINT must not leave it running forever."""
    tests_dir = str(Path(__file__).parent)
    parent = subprocess.Popen([sys.executable, "-c", ORPHANING_PARENT, tests_dir], text=True,
                              stdout=subprocess.PIPE)
    try:
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2 and all(alive(p) for p in pids)
    finally:
        parent.kill()
        parent.wait(10)
    wait_for(lambda: not any(alive(p) for p in pids), 20, "the orphaned cores to stop")


def test_a_worker_that_ignores_stop_is_terminated_within_bounds():
    w = launch.CoreWorkers(worker_ignores_stop, [0], None).start()
    collect(w, ["ready"])
    # SIGTERM is turned into the stop event, which this worker ignores: only SIGKILL ends it.
    w.stop(grace=0.5)
    assert not w.procs[0].is_alive() and w.procs[0].exitcode == -signal.SIGKILL
    assert w.exit_code() == 1


def test_service_reports_death_and_stops_within_bounds(tmp_path):
    log = str(tmp_path / "svc.log")
    svc = launch.Service([sys.executable, "-c", "print('boom'); raise SystemExit(3)"], "svc", log)
    svc.start()
    with pytest.raises(RuntimeError, match="(?s)svc exited with code 3.*boom"):
        svc.wait_ready(lambda: False, timeout=20)
    svc.stop()
    svc = launch.Service([sys.executable, "-c", "import time; time.sleep(60)"], "sleeper")
    with svc:
        with pytest.raises(RuntimeError, match="not ready"):
            svc.wait_ready(lambda: False, timeout=0.3)
    assert svc.proc.returncode is not None


def test_parse_cores_follows_mtcp_flags():
    assert launch.parse_cores(None, None, available=4) == [0, 1, 2, 3]
    assert launch.parse_cores(2, None, available=4) == [0, 1]
    assert launch.parse_cores(2, 1, available=4) == [1]
    with pytest.raises(ValueError, match="-c 2"):
        launch.parse_cores(2, 2)
    with pytest.raises(ValueError, match="-N 0"):
        launch.parse_cores(0, None)


def test_profile_writes_the_workers_hot_functions(tmp_path):
    path = str(tmp_path / "prof_core%d.txt")
    with launch.CoreWorkers(worker_reports_pid, [0], {"x": 1}, profile=path) as w:
        deadline = time.monotonic() + 30
        while w.running() and time.monotonic() < deadline:
            w.poll(0.1)
    text = (tmp_path / "prof_core0.txt").read_text()
    assert "worker_reports_pid" in text and "function calls" in text


def test_finish_delivers_the_messages_sent_while_stopping():
    w = launch.CoreWorkers(worker_waits_for_stop, [0, 1], None).start()
    collect(w, ["ready"])
    got = []
    w.finish(got.append, grace=20)
    stopping = {m["core"]: m["clean"] for m in got if m["kind"] == "stopping"}
    assert stopping == {0: True, 1: True}
    assert {m["core"] for m in got if m["kind"] == "exit"} == {0, 1}


def test_service_cpu_seconds_grow_while_it_computes():
    with launch.Service([sys.executable, "-c", "while True: pass"], "spinner") as svc:
        first = wait_for(svc.cpu_seconds, 30, "the spinner's first CPU tick")
        wait_for(lambda: svc.cpu_seconds() > first, 30, "its CPU time to grow")
    assert svc.cpu_seconds() == 0.0          # stopped: nothing to read


class FakeStack:
    """Just enough of the mTCP API for destroy_context: each wait frees one connection."""

    def __init__(self, open_flows: int, frees: bool = True):
        self.stats = type("S", (), {"connects": open_flows, "accepts": 0, "flows_freed": 0})()
        self.frees = frees
        self.waits = 0
        self.calls: list[str] = []

    def mtcp_epoll_create(self, mctx, size):
        self.calls.append("create")
        return 7

    def mtcp_epoll_wait(self, mctx, ep, maxevents, timeout):
        self.waits += 1
        if self.frees:
            self.stats.flows_freed += 1
        time.sleep(timeout / 1000)
        return []

    def mtcp_close(self, mctx, ep):
        self.calls.append(f"close {ep}")

    def mtcp_destroy_context(self, mctx):
        self.calls.append("destroy")


def test_destroy_context_runs_the_loop_until_closing_connections_are_freed():
    fake = FakeStack(open_flows=3)
    launch.destroy_context(fake, fake)
    assert fake.waits == 3 and fake.calls == ["create", "close 7", "destroy"]
    idle = FakeStack(open_flows=0)
    launch.destroy_context(idle, idle)
    assert idle.waits == 0 and idle.calls == ["destroy"]


def test_destroy_context_gives_up_after_linger():
    stuck = FakeStack(open_flows=1, frees=False)
    t0 = time.monotonic()
    launch.destroy_context(stuck, stuck, linger=0.3)
    assert time.monotonic() - t0 >= 0.3 and stuck.calls[-1] == "destroy"
    assert stuck.waits <= 0.3 / 0.02 + 1     # each wait takes >= 20 ms: it stopped at linger

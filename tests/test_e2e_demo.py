"""The main job, `p4mtcp demo`, as a user runs it: bounded, byte-exact, and clean on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from demo_run import assert_report, demo_cmd, run_demo

pytestmark = pytest.mark.slow


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (from /proc's parent links)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_demo_completes_every_request_and_reports_steering(tmp_path):
    out = run_demo("-n", "400", "-c", "16", "--workdir", str(tmp_path), timeout=180)
    assert_report(out, 400)
    # live statistics were printed while it ran: mTCP's epwget line and per-core stack lines
    assert "[  ALL] connect:" in out and "[CPU 0] flows:" in out


def test_ctrl_c_stops_every_process(tmp_path):
    proc = subprocess.Popen(demo_cmd("-n", "1000000", "--duration", "120", "--workdir",
                                     str(tmp_path)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        seen = ""
        while "epwget (host B):" not in seen:          # the load is running
            assert time.monotonic() < deadline, seen
            line = proc.stdout.readline()
            assert line or proc.poll() is None, seen
            seen += line
        tree = descendants(proc.pid)
        assert len(tree) >= 6          # 2 NICs, 2 server cores, 2 client cores (+ helpers)
        os.killpg(proc.pid, signal.SIGINT)            # what a terminal's Ctrl-C does
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    deadline = time.monotonic() + 10
    while any(alive(p) for p in tree) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in tree if alive(p)], "processes left behind"
    assert "interrupted: stopping every process" in rest
    assert proc.returncode == 1                       # not every request was made

"""Running `p4mtcp demo` as a user does, and the final report every demo run must show."""

from __future__ import annotations

import subprocess
import sys


def demo_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "p4mtcp.cli", "demo", "--plain", *args]


def run_demo(*args: str, timeout: float) -> str:
    """Run the demo to its end; its stdout, after checking that it exited 0 and said no error."""
    done = subprocess.run(demo_cmd(*args), capture_output=True, text=True, timeout=timeout)
    out = done.stdout
    assert done.returncode == 0, out[-2000:] + done.stderr[-2000:]
    assert "error:" not in out, out[-2000:]
    return out


def assert_report(out: str, requests: int) -> None:
    """Every request completed, each on the core the NIC's RSS hash chose, both cores busy."""
    assert f"[  ALL] {requests} of {requests} requests completed" in out
    assert (f"[steering] {requests} of {requests} connections were served by the core the "
            "NIC's RSS hash") in out
    assert "[NIC A] core port 16 (core 0)" in out and "[NIC A] core port 17 (core 1)" in out
    assert "[server core 0] accepted" in out and "[server core 1] accepted" in out

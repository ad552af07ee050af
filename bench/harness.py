"""What the benchmarks share: results location, readiness waits, machine facts, CPU accounting."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

from p4mtcp.apps import launch
from p4mtcp.apps.fabric import Host

RESULTS = Path(__file__).resolve().parent / "results"


def wait_ready(workers: launch.CoreWorkers, msgs: list[dict], timeout: float = 60) -> None:
    """Until every core of `workers` said 'ready'; messages are appended to `msgs`."""
    ready: set[int] = set()
    deadline = time.monotonic() + timeout
    while ready != set(workers.cores):
        for m in workers.poll(0.1):
            msgs.append(m)
            if m["kind"] == "exit":
                raise RuntimeError(f"core {m['core']} exited: {m['error']}")
            if m["kind"] == "ready":
                ready.add(m["core"])
        if time.monotonic() > deadline:
            raise RuntimeError(f"cores {sorted(set(workers.cores) - ready)} not ready")


def busy(msgs: list[dict]) -> float:
    """CPU seconds a group's cores spent between their 'ready' message and their last one."""
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    for m in msgs:
        if m["kind"] == "ready":
            first[m["core"]] = m["cpu_s"]
        last[m["core"]] = m["cpu_s"]
    return sum(last[c] - first.get(c, 0.0) for c in last)


def nic_cpu(hosts: tuple[Host, ...]) -> dict[str, float]:
    """CPU seconds each host's NIC process has used so far."""
    return {f"nic_{h.name}": h.nic.cpu_seconds() for h in hosts}


def cpu_split(nic_before: dict[str, float], nic_after: dict[str, float],
              groups: dict[str, list[dict]]) -> dict[str, float]:
    """Where the CPU time of the measured run went: each NIC process and each app group."""
    out = {k: nic_after[k] - nic_before[k] for k in nic_after}
    out.update({f"{name}_cores": busy(msgs) for name, msgs in groups.items()})
    return {k: round(v, 3) for k, v in out.items()}


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform()}

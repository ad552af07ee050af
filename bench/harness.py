"""What the benchmarks share: results location, readiness waits, machine facts, CPU accounting."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
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


def serve_and_run(servers: launch.CoreWorkers, clients: Callable[[], launch.CoreWorkers],
                  hosts: tuple[Host, ...], timeout: float, what: str
                  ) -> tuple[list[dict], list[dict], dict[str, float], dict[str, float]]:
    """Start `servers`, wait until every core is ready, then create and run `clients()` to the
    end (RuntimeError naming `what` after `timeout` s) and stop the servers. Returns the
    servers' and the clients' messages and the NIC processes' CPU seconds (`nic_cpu`) before
    and after the client run: what `cpu_split` measures."""
    srv_msgs: list[dict] = []
    with servers:
        wait_ready(servers, srv_msgs)
        msgs: list[dict] = []
        nic_before = nic_cpu(hosts)
        with clients() as w:
            if not w.pump(msgs.append, lambda: None, timeout=timeout):
                raise RuntimeError(f"{what} did not finish in {timeout:.0f} s")
        nic_after = nic_cpu(hosts)
        servers.finish(srv_msgs.append)
    return srv_msgs, msgs, nic_before, nic_after


def profile_path(profile_dir: Path | None, role: str) -> str | None:
    """CoreWorkers' `profile` argument: `<role>_core<N>.txt` in `profile_dir`, if profiling."""
    return str(profile_dir / f"{role}_core%d.txt") if profile_dir else None


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


def write_profile(name: str, title: str, run: Callable[[Path], Any], parts: Sequence[str]) -> None:
    """`run(pdir)` writes per-core cProfile texts `parts` into a fresh folder `pdir`; they are
    joined under `title` into RESULTS/<name>_profile.txt and the folder is removed."""
    pdir = RESULTS / f"{name}_prof"
    pdir.mkdir(exist_ok=True)
    run(pdir)
    text = [f"# {title}", ""]
    for part in parts:
        text += [f"## {part[:-4]}", (pdir / part).read_text(), ""]
        (pdir / part).unlink()
    pdir.rmdir()
    (RESULTS / f"{name}_profile.txt").write_text("\n".join(text))


def machine() -> dict[str, Any]:
    """The machine, and whether this run's TCP engine is the compiled build (P4MTCP_ACCEL=1,
    inherited by the core processes)."""
    from p4mtcp.control.tcp import ACCELERATED
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "compiled_tcp_engine": ACCELERATED}

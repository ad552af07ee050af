"""`p4mtcp testbed`: the topology comes up programmed, scripts run on its hosts, and it leaves
nothing behind when it stops (normally or on SIGTERM)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

import pytest

from p4mtcp.control.config import load_host
from p4mtcp.bmv2 import topo
from p4mtcp.bmv2.launcher import terminate
from p4mtcp.bmv2.preflight import missing

ROOT_REASON = missing("embedded")
needs_testbed = pytest.mark.skipif(ROOT_REASON is not None,
                                   reason=f"embedded testbed: {ROOT_REASON}")


def _testbed_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "p4mtcp.cli", "testbed", *args]


def _leftovers() -> list[str]:
    """Testbed interfaces still present in the root namespace."""
    out = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines()
            if line.split()[0].split("@")[0].startswith(("s1-eth", "m1-eth"))]


def test_plan_bounds():
    with pytest.raises(ValueError, match="--hosts 0"):
        topo.TestbedPlan(hosts=0)
    with pytest.raises(ValueError, match="--cores 65"):
        topo.TestbedPlan(cores=65)
    plan = topo.TestbedPlan(hosts=3, cores=4)
    assert [plan.core_port(c) for c in range(4)] == [16, 17, 18, 19]
    assert (plan.host_ip(3), plan.nic_ip(3)) == ("10.0.3.1", "10.0.3.100")


@pytest.mark.skipif(missing("bmv2") is None, reason="BMv2 is installed here")
def test_bmv2_testbed_without_bmv2_says_what_is_missing(capsys):
    assert topo.main(["--switch", "bmv2"]) == 2
    err = capsys.readouterr().err
    assert "cannot run a bmv2 testbed here" in err
    if os.geteuid() == 0:
        assert "not found on PATH; install" in err


@pytest.mark.root
@needs_testbed
def test_script_runs_on_the_programmed_testbed_and_cleans_up(tmp_path):
    """Each kernel host resolves the p4mtcp host's address on its subnet to the NIC's MAC (the
    agent programmed the ARP responder from the written mtcp.conf), then everything goes away."""
    assert not _leftovers(), f"interfaces left by someone else: {_leftovers()}"
    script = tmp_path / "cmds"
    script.write_text("".join(
        f"h{j} curl -s --max-time 1 http://10.0.{j}.100/ ; ip neigh show 10.0.{j}.100\n"
        for j in (1, 2)))
    work = tmp_path / "tb"
    proc = subprocess.run(_testbed_cmd("--switch", "embedded", "--hosts", "2", "--cores", "2",
                                       "--script", str(script), "--workdir", str(work)),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr          # Mininet's CLI prints command output to stderr
    for j in (1, 2):
        assert f"10.0.{j}.100 dev h{j}-eth0 lladdr 02:00:0a:00:0{j}:64" in out, out
    host = load_host(work / "mtcp.conf", work / "arp.conf", work / "route.conf")
    assert host.mtcp.core_links == ("m1-eth0", "m1-eth1")
    assert [str(a) for a in host.mtcp.local_ip] == ["10.0.1.100/24", "10.0.2.100/24"]
    assert not _leftovers()


@pytest.mark.root
@needs_testbed
def test_sigterm_stops_the_testbed_cleanly(tmp_path):
    proc = subprocess.Popen(_testbed_cmd("--switch", "embedded", "--hosts", "1", "--cores", "1",
                                         "--workdir", str(tmp_path)),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, bufsize=0)
    try:
        seen = b""
        deadline = time.monotonic() + 120
        while b"testbed up" not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                seen += chunk
        assert b"testbed up" in seen, seen.decode(errors="replace")
        assert _leftovers(), "the testbed's interfaces are not there while it runs"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 143, "SIGTERM: expected exit status 143 after cleanup"
    finally:
        terminate(proc, 60)               # a failed assertion above: still stop it cleanly
    assert not _leftovers()


@pytest.mark.root
@needs_testbed
def test_switch_that_fails_to_start_leaves_nothing_behind(tmp_path, monkeypatch):
    """A switch process that dies at start-up: the error carries its output, and the half-built
    network (namespaces, links) is torn down."""
    from p4mtcp.bmv2.launcher import SwitchFailed
    from p4mtcp.bmv2.mininet_switches import EmbeddedNicSwitch

    monkeypatch.setattr(EmbeddedNicSwitch, "argv", lambda self, ports: [
        sys.executable, "-c", f"import sys; print('cannot open {sorted(ports)}'); sys.exit(4)"])
    tb = topo.build("embedded", topo.TestbedPlan(hosts=1, cores=2), tmp_path)
    with pytest.raises(SwitchFailed, match=r"exited with code 4(.|\n)*cannot open \[1, 16, 17\]"):
        tb.start()
    assert not _leftovers()

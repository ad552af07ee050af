"""End to end on the research testbed: a kernel host fetches a file from epserver behind the
NIC switch in Mininet (the embedded target; BMv2 too where it is installed), byte-exact, and the
NIC's P4Runtime counters show the traffic spread over the cores."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from ipaddress import IPv4Address

import pytest

from p4mtcp.hashing import rss_bucket
from p4mtcp.p4src import P4INFO
from p4mtcp.bmv2.launcher import terminate
from p4mtcp.bmv2.preflight import missing

pytestmark = [pytest.mark.root, pytest.mark.slow]

FILE_SIZE = 300_000
FETCHES_PER_CORE = 3
HTTP_PORT = 80


@pytest.fixture(params=["embedded", pytest.param("bmv2", marks=pytest.mark.bmv2)])
def testbed(request, tmp_path):
    kind = request.param
    reason = missing(kind)
    if reason:
        pytest.skip(f"{kind} testbed: {reason}")
    if importlib.util.find_spec("p4mtcp.apps.epserver") is None:
        pytest.skip("apps.epserver not available yet")
    if shutil.which("curl") is None:
        pytest.skip("curl not found on PATH; install curl")
    from p4mtcp.bmv2.launcher import compile_program
    from p4mtcp.bmv2.topo import TestbedPlan, build
    device_config = (str(compile_program(tmp_path / "build").json) if kind == "bmv2" else None)
    tb = build(kind, TestbedPlan(hosts=1, cores=2), tmp_path / "testbed", device_config)
    with tb:
        yield tb


def _reta(ctrl) -> dict[int, int]:
    """bucket -> core port, as the agent programmed it (read back over P4Runtime)."""
    return {dict(e.match)["meta.rss_bucket"]: dict(e.params)["port"]
            for e in ctrl.read_table("NicIngress.reta")}


def _source_ports(reta: dict[int, int], client: str, server: str, core_port: int, n: int
                  ) -> list[int]:
    """n client ports whose flows the NIC's hash sends to `core_port`."""
    c, s = int(IPv4Address(client)), int(IPv4Address(server))
    ports = [p for p in range(30000, 40000)
             if reta.get(rss_bucket(c, p, s, HTTP_PORT)) == core_port]
    assert len(ports) >= n, f"no client ports map to core port {core_port}: reta {reta}"
    return ports[:n]


def _wait_http(h1, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = h1.cmd(f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 3 {url}").strip()
        if code == "200":
            return
        time.sleep(0.5)
    raise AssertionError(f"epserver did not answer {url} within {timeout:.0f} s (last: {code!r})")


def test_kernel_host_fetches_file_from_epserver_over_every_core(testbed, tmp_path):
    from p4mtcp.bmv2.controller import Controller

    plan = testbed.plan
    www = tmp_path / "www"
    www.mkdir()
    blob = os.urandom(FILE_SIZE)
    (www / "blob.bin").write_bytes(blob)
    want = hashlib.sha256(blob).hexdigest()
    h1, m1, s1 = testbed.kernel_host(1), testbed.p4host, testbed.switch
    server_ip, client_ip = plan.nic_ip(1), plan.host_ip(1)
    url = f"http://{server_ip}:{HTTP_PORT}/blob.bin"

    log = open(tmp_path / "epserver.log", "wb")
    server = m1.popen([sys.executable, "-m", "p4mtcp.cli", "epserver", "-p", str(www),
                       "-f", str(testbed.conf_path), "-N", str(plan.cores),
                       "--port", str(HTTP_PORT), "--quiet"],
                      stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_http(h1, url, 60.0)
        observer = Controller(s1.grpc, P4INFO, device_id=s1.device_id, arbitrate=False)
        try:
            reta = _reta(observer)
            core_ports = [plan.core_port(c) for c in range(plan.cores)]
            assert set(reta.values()) == set(core_ports), f"reta does not use every core: {reta}"
            before = {p: (observer.read_counter("NicEgress.tx_port", p),
                          observer.read_counter("NicIngress.rx_port", p)) for p in core_ports}
            fetched = {p: 0 for p in core_ports}
            for core_port in core_ports:
                for sport in _source_ports(reta, client_ip, server_ip, core_port,
                                           FETCHES_PER_CORE):
                    out = tmp_path / f"got-{sport}"
                    rc = h1.cmd(f"curl -s --max-time 30 --local-port {sport} -o {out} {url}; "
                                f"echo rc=$?").strip().splitlines()[-1]
                    assert rc == "rc=0", f"curl from port {sport} failed: {rc}"
                    got = out.read_bytes()
                    assert len(got) == FILE_SIZE and hashlib.sha256(got).hexdigest() == want, (
                        f"fetch from port {sport}: {len(got)} bytes, not the file")
                    fetched[core_port] += 1
            after = {p: (observer.read_counter("NicEgress.tx_port", p),
                         observer.read_counter("NicIngress.rx_port", p)) for p in core_ports}
        finally:
            observer.close()
    finally:
        terminate(server, 15, signal.SIGINT)
        log.close()

    seen = f"fetches per core port {fetched}, counters before {before}, after {after}"
    for p in core_ports:
        to_core = after[p][0][0] - before[p][0][0]          # frames the NIC steered to the core
        from_core_bytes = after[p][1][1] - before[p][1][1]  # bytes the core sent to the NIC
        # Each fetch is >= 3 segments in (SYN, ACK, request) and the whole file out.
        assert to_core >= 3 * fetched[p], f"core port {p}: {to_core} frames in; {seen}"
        assert from_core_bytes >= FILE_SIZE * fetched[p], (
            f"core port {p}: {from_core_bytes} bytes out, file {FILE_SIZE} bytes; {seen}")

"""`p4mtcp agent`: the NIC agent as a command of its own, for programs started on their own.

A host of the embedded fabric has its in-process agent stopped; `p4mtcp agent -f mtcp.conf -N 1`
(a separate process, as a user runs it next to `p4mtcp nic`) takes over the NIC: it re-programs
the tables, spreads `reta` over the one core that will run, serves flow_steer requests, and an
epserver on that core answers epwget's requests from the other host. Bad configuration and
`-N` beyond mtcp.conf's cores are refused with the reason.

With `reta` left over both cores, about half of the 200 connections would be steered to a core
with no process and fail; all 200 completing on core 0 shows `-N` reached the NIC.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from p4mtcp.apps import agent as agent_cmd
from p4mtcp.apps import epserver, epwget, launch
from p4mtcp.apps.fabric import Fabric, nic_sample, two_hosts
from p4mtcp.control.agent import stop_control

SERVER_IP = "10.0.0.1"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(launch.python_cmd("agent", *args), capture_output=True, text=True,
                          timeout=60)


@pytest.mark.slow
def test_agent_command_takes_over_a_nic_and_steers_to_the_cores_that_run(tmp_path):
    with Fabric() as fab:
        server, client = two_hosts(fab, 2, 1, SERVER_IP, "10.0.0.2")
        fab.start(timeout=60)
        stop_control(server.steering, server.agent)          # the NIC is left to the command
        server.steering = server.agent = None
        steer_sock = fab.dir / "server" / "steer.sock"
        assert not steer_sock.exists()
        svc = launch.Service(launch.python_cmd("agent", "-f", server.conf, "-N", "1"),
                             "p4mtcp agent", str(tmp_path / "agent.log")).start()
        try:
            svc.wait_ready(steer_sock.exists, timeout=60)
            www = tmp_path / "www"
            www.mkdir()
            body = os.urandom(3000)
            (www / "f.bin").write_bytes(body)
            before = nic_sample(client)
            sargs = epserver.ServerArgs(str(www), server.conf, 1, 64, 80, 0.0)
            with launch.CoreWorkers(epserver.serve_core, [0], sargs) as srv:
                msgs: list[dict] = []
                deadline = time.monotonic() + 60
                while not any(m["kind"] == "ready" for m in msgs):
                    assert time.monotonic() < deadline, msgs
                    msgs += srv.poll(0.1)
                wargs = epwget.WgetArgs(SERVER_IP, 80, "/f.bin", 200, 1, 8, client.conf,
                                        str(tmp_path / "out"), timeout=60)
                wmsgs: list[dict] = []
                with launch.CoreWorkers(epwget.wget_core, [0], wargs) as w:
                    assert w.pump(wmsgs.append, lambda: None, timeout=90)
            done = [m for m in wmsgs if m["kind"] == "done"]
            assert [(d["done"], d["errors"]) for d in done] == [(200, 0)]
            outs = sorted(tmp_path.glob("out.*"))
            assert len(outs) == 200 and all(p.read_bytes() == body for p in outs)
            # The replies came back through the server's NIC as the command programmed it.
            rx, tx, _ = nic_sample(client)
            assert tx[client.core_ports[0]][0] > before[1].get(client.core_ports[0], (0, 0))[0]
        finally:
            rc = svc.stop()
        log = (tmp_path / "agent.log").read_text()
        assert rc == 0, log
        assert "agent: stopped" in log and "net0" in log and "core0" in log


def test_agent_command_refuses_bad_configuration(tmp_path):
    conf = tmp_path / "mtcp.conf"
    conf.write_text("local_ip = 10.0.0.1/24\nnum_cores = 2\nmax_concurrency = many\n")
    r = run_cli("-f", str(conf), "--quiet")
    assert r.returncode == 2
    assert f"{conf}:3" in r.stderr and "max_concurrency" in r.stderr


def test_agent_command_refuses_more_cores_than_configured(tmp_path):
    conf = tmp_path / "mtcp.conf"
    conf.write_text("local_ip = 10.0.0.1/24\nnum_cores = 2\n")
    r = run_cli("-f", str(conf), "-N", "3", "--quiet")
    assert r.returncode == 2 and "-N 3" in r.stderr and "num_cores = 2" in r.stderr
    host = agent_cmd.host_config(str(conf), 1)
    assert host.mtcp.num_cores == 1 and host.mtcp.core_ports == (16,)


def test_agent_command_reports_an_unreachable_nic(tmp_path):
    conf = tmp_path / "mtcp.conf"
    conf.write_text("local_ip = 10.0.0.1/24\nnum_cores = 1\np4runtime = 127.0.0.1:9\n")
    r = run_cli("-f", str(conf), "--quiet", "--timeout", "1")
    assert r.returncode == 1 and "127.0.0.1:9" in r.stderr, r.stderr

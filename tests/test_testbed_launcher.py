"""The switch launcher: command lines, readiness, clean stops, and errors that say what to do.

BMv2 is driven through a stand-in executable on a private PATH that records its argv and opens
the gRPC port it was given (the real binary is exercised by the bmv2-marked testbed tests); the
embedded target is started for real on UNIX-socket ports (no root needed) and answers frames.
"""

from __future__ import annotations

import json
import os
import select
import stat
import sys
import textwrap
import time

import pytest
from scapy.layers.l2 import ARP, Ether

from p4mtcp.bmv2 import launcher
from p4mtcp.bmv2.launcher import (SIMPLE_SWITCH_GRPC, SwitchFailed, ToolMissing, bmv2_argv,
                                     free_port, start_switch)

FAKE_SWITCH = textwrap.dedent("""\
    #!{python}
    import json, os, socket, sys, time
    args = sys.argv[1:]
    with open(os.environ["FAKE_ARGV_FILE"], "w") as fh:
        json.dump(args, fh)
    if os.environ.get("FAKE_FAIL"):
        print("error: cannot open interface veth-missing", flush=True)
        sys.exit(3)
    addr = args[args.index("--grpc-server-addr") + 1]
    host, port = addr.rsplit(":", 1)
    time.sleep(0.3)                      # a slow start: readiness must be waited for
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, int(port)))
    s.listen()
    print("listening", flush=True)
    while True:
        time.sleep(1)
    """)


@pytest.fixture
def fake_bmv2(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / SIMPLE_SWITCH_GRPC
    exe.write_text(FAKE_SWITCH.format(python=sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ARGV_FILE", str(tmp_path / "argv.json"))
    return tmp_path


def test_missing_binaries_name_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolMissing, match="simple_switch_grpc not found on PATH; install BMv2"):
        bmv2_argv({1: "veth0"}, "127.0.0.1:9559")
    with pytest.raises(ToolMissing, match="p4c-bm2-ss not found on PATH; install p4c"):
        launcher.compile_program(tmp_path / "out")


def test_bmv2_command_line(fake_bmv2):
    argv = bmv2_argv({16: "s1-eth16", 1: "s1-eth1"}, "127.0.0.1:50051", device_id=3,
                     log_file="/tmp/s1.bmv2.log", thrift_port=9091)
    assert argv[1:] == ["-i", "1@s1-eth1", "-i", "16@s1-eth16", "--device-id", "3",
                        "--thrift-port", "9091", "--log-file", "/tmp/s1.bmv2.log", "--log-flush",
                        "--no-p4", "--", "--grpc-server-addr", "127.0.0.1:50051",
                        "--cpu-port", "255"]
    with_json = bmv2_argv({1: "veth0"}, "127.0.0.1:1", json="nic.json")
    assert with_json[with_json.index("--") - 1] == "nic.json" and "--no-p4" not in with_json


@pytest.mark.parametrize("ports", [{255: "veth0"}, {511: "veth0"}, {-1: "veth0"}])
def test_port_numbers_are_checked(fake_bmv2, ports):
    with pytest.raises(ValueError, match="port numbers are 0..510 and not the CPU port"):
        bmv2_argv(ports, "127.0.0.1:9559")


@pytest.mark.parametrize("address", ["9559", "localhost", ":9559", "host:http", "h:70000"])
def test_bad_grpc_address(address):
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        launcher.split_address(address)


def test_start_waits_for_grpc_then_stops_cleanly(fake_bmv2):
    grpc = f"127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    sw = start_switch("bmv2", {1: "veth-a", 2: "veth-b"}, grpc, fake_bmv2 / "logs",
                      name="s9", timeout=10)
    try:
        assert time.monotonic() - t0 >= 0.3        # it waited for the slow start
        assert launcher.accepts_connections(grpc) and sw.running
    finally:
        rc = sw.stop(grace=2)
    assert rc is not None and not sw.running
    assert not launcher.accepts_connections(grpc)
    assert "listening" in (fake_bmv2 / "logs" / "s9.log").read_text()


def test_start_failure_reports_exit_code_and_log(fake_bmv2, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL", "1")
    with pytest.raises(SwitchFailed, match=r"exited with code 3(.|\n)*cannot open interface"):
        start_switch("bmv2", {1: "veth-missing"}, f"127.0.0.1:{free_port()}",
                     fake_bmv2 / "logs", timeout=10)


def test_start_refuses_a_busy_grpc_port(fake_bmv2):
    grpc = f"127.0.0.1:{free_port()}"
    with start_switch("bmv2", {1: "veth-a"}, grpc, fake_bmv2 / "logs", name="first"):
        with pytest.raises(SwitchFailed, match="already in use"):
            start_switch("bmv2", {1: "veth-b"}, grpc, fake_bmv2 / "logs", name="second")


def test_unknown_kind():
    with pytest.raises(ValueError, match="expected 'bmv2' or 'embedded'"):
        start_switch("tofino", {1: "x"}, "127.0.0.1:1", "/tmp")


def test_embedded_switch_from_the_launcher_answers_arp(tmp_path):
    """The embedded target started by the launcher, programmed by the testbed controller, answers
    an ARP request arriving on a UNIX-socket port and counts it."""
    from p4mtcp.link import open_port
    from p4mtcp.p4src import P4INFO
    from p4mtcp.bmv2.controller import Controller
    from p4mtcp.bmv2.frametests import Plan, program

    plan = Plan()
    socks = {p: str(tmp_path / f"p{p}.sock") for p in plan.ports}
    grpc = f"127.0.0.1:{free_port()}"
    with start_switch("embedded", {p: f"unix:{path}" for p, path in socks.items()}, grpc,
                      tmp_path / "logs", timeout=30) as sw:
        with Controller(sw.grpc, P4INFO) as ctrl:
            ctrl.set_pipeline(b"")
            program(ctrl, plan)
            peer = open_port(f"unix-host:{socks[plan.network_port]}", connect_timeout=5.0)
            try:
                peer.send(bytes(Ether(src=plan.peer_mac, dst="ff:ff:ff:ff:ff:ff") / ARP(
                    op=1, hwsrc=plan.peer_mac, psrc=plan.peer_ip, pdst=plan.local_ips[1])))
                frames: list[bytes] = []
                deadline = time.monotonic() + 5
                while not frames and time.monotonic() < deadline:
                    select.select([peer.fileno()], [], [], 0.2)
                    frames += peer.recv_batch()
            finally:
                peer.close()
            assert len(frames) == 1, frames
            reply = Ether(frames[0])
            assert (reply[ARP].op, reply[ARP].psrc, reply[ARP].hwsrc) == (
                2, plan.local_ips[1], plan.nic_mac)
            assert ctrl.read_counter("NicIngress.rx_port", plan.network_port)[0] == 1


def test_compile_runs_p4c_and_reports_its_errors(tmp_path, monkeypatch):
    """compile_program's command line, and a failing compile's message carrying p4c's output."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / launcher.P4C_BM2_SS
    exe.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import json, os, sys
        args = sys.argv[1:]
        json.dump(args, open(os.environ["FAKE_ARGV_FILE"], "w"))
        if os.environ.get("FAKE_FAIL"):
            sys.exit("mtcp_nic.p4(3): syntax error")
        open(args[args.index("-o") + 1], "w").write("{{}}")
        open(args[args.index("--p4runtime-files") + 1], "w").write("")
        """))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ARGV_FILE", str(tmp_path / "argv.json"))
    out = launcher.compile_program(tmp_path / "out")
    assert out.json.exists() and out.p4info.exists()
    argv = json.loads((tmp_path / "argv.json").read_text())
    assert argv == ["--arch", "v1model", "--std", "p4-16", "--p4runtime-files", str(out.p4info),
                    "-o", str(out.json), str(launcher.PROGRAM)]
    monkeypatch.setenv("FAKE_FAIL", "1")
    with pytest.raises(RuntimeError, match=r"failed \(exit 1\)(.|\n)*syntax error"):
        launcher.compile_program(tmp_path / "out2")

"""`p4mtcp ss`: core processes serve their connection table (control/sockstat.py) from their
run loop; the command reads it live, per core, with filters."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from mtcp_pair import PORT, SERVER_IP, Pair, write_conf
from p4mtcp import mtcp
from p4mtcp.aio.worker import AioArgs, core_main
from p4mtcp.apps import epserver, launch, ss
from p4mtcp.apps.fabric import Fabric, two_hosts


def test_query_answers_from_the_core_loop(tmp_path):
    pair = Pair(write_conf(tmp_path / "mtcp.conf", ss_dir=tmp_path / "ss"))
    try:
        c, s = pair.connect()
        mtcp.mtcp_write(pair.client, c, b"x" * 5000)
        pair.pump_until(lambda: mtcp.mtcp_socket_ioctl(pair.server, s, mtcp.FIONREAD) == 5000)
        cconn = pair.client._socks[c].conn            # the server's ACK leaves at its next step
        pair.pump_until(lambda: cconn.una == cconn.snd_max)
        answers: dict[int, list] = {}

        def ask(core: int) -> None:
            answers[core] = ss.query(str(tmp_path / "ss" / f"core{core}.sock"))

        threads = [threading.Thread(target=ask, args=(core,)) for core in (0, 1)]
        for t in threads:
            t.start()
        pair.pump_until(lambda: len(answers) == 2)     # answered between loop steps
        for t in threads:
            t.join(5)
        (cli,), (srv, lst) = answers[0], answers[1]
        assert lst == {"core": 1, "state": "LISTEN", "local": f"0.0.0.0:{PORT}",
                       "remote": "0.0.0.0:*", "recv_q": 0, "send_q": 4}   # backlog 4
        assert srv["core"] == 1 and srv["state"] == "ESTABLISHED"
        assert srv["local"] == f"{SERVER_IP}:{PORT}" and srv["remote"] == cli["local"]
        assert srv["recv_q"] == 5000 and srv["send_q"] == 0
        assert cli["delivered"] == 5000 and cli["in_flight"] == 0 and cli["retransmits"] == 0
        assert cli["cwnd"] > 0 and cli["srtt"] is not None and cli["rto"] > 0
        mtcp.mtcp_close(pair.client, c)
    finally:
        pair.close()
    assert not (tmp_path / "ss" / "core0.sock").exists()   # removed with the context


async def idle_clients(host: str, port: int, n: int) -> None:
    """n connections that each send half an HTTP request, then stay open until cancelled."""
    conns = [await asyncio.open_connection(host, port) for _ in range(n)]
    for _, w in conns:
        w.write(b"GET / HTTP/1.1\r\n")
    await asyncio.sleep(3600)


def run_ss(capsys, *args: str, answered: bool = True) -> list[dict]:
    """The rows `p4mtcp ss ARGS --json` prints; with `answered`, every core must answer."""
    rc = ss.main([*args, "--json"])
    out = capsys.readouterr().out.splitlines()
    assert not answered or (rc == 0 and not any(ln.startswith("#") for ln in out)), out
    return [json.loads(line) for line in out if line and not line.startswith("#")]


@pytest.mark.slow
def test_ss_lists_a_running_epserver_hosts_connections(tmp_path, capsys):
    (tmp_path / "www").mkdir()
    with Fabric() as fab:
        server, client = two_hosts(fab, 2, 1)
        fab.start(timeout=60)
        sargs = epserver.ServerArgs(str(tmp_path / "www"), server.conf, 2, 128, 80, 0.0)
        cargs = AioArgs(client.conf, f"{__name__}:idle_clients",
                        {"host": server.ip, "port": 80, "n": 4})
        with launch.CoreWorkers(epserver.serve_core, [0, 1], sargs, name="epserver") as srv, \
                launch.CoreWorkers(core_main, [0], cargs, name="idle") as cli:
            deadline = time.monotonic() + 60
            rows: list[dict] = []
            # four connections up, and each request's first line read by epserver (it arrives
            # with the handshake's last ACK; on a busy machine the core reads it a step later)
            while len(rows) < 4 or any(r["recv_q"] for r in rows):
                assert time.monotonic() < deadline, rows
                assert srv.running() and cli.running()
                rows = run_ss(capsys, "-f", server.conf, "--port", "80", "--state", "established",
                              answered=False)            # the cores may still be starting
                time.sleep(0.2)
            theirs = run_ss(capsys, "-f", client.conf)
            listening = run_ss(capsys, "-f", server.conf, "-l")
            everything = run_ss(capsys, "-f", server.conf, "-a", "--port", "80")
            assert run_ss(capsys, "-f", server.conf, "--state", "fin-wait-1") == []
            assert run_ss(capsys, "-f", server.conf, "--port", "81") == []
    assert {r["local"] for r in rows} == {f"{server.ip}:80"}
    assert sorted(r["remote"] for r in rows) == sorted(r["local"] for r in theirs)
    assert {r["core"] for r in rows} <= {0, 1} and all(r["recv_q"] == 0 for r in rows)
    assert all(r["state"] == "ESTABLISHED" and r["in_flight"] == 0 for r in theirs)
    # ss -l: one listener per server core (epserver binds INADDR_ANY), with its backlog
    assert sorted((r["core"], r["state"], r["local"], r["send_q"]) for r in listening) == \
        [(0, "LISTEN", "0.0.0.0:80", 128), (1, "LISTEN", "0.0.0.0:80", 128)]
    assert sorted((r["core"], r["local"]) for r in everything if r["state"] == "LISTEN") == \
        [(0, "0.0.0.0:80"), (1, "0.0.0.0:80")]
    assert sum(r["state"] == "ESTABLISHED" for r in everything) == 4   # the idle clients' 4


def test_ss_dir_too_long_for_a_socket_path_is_a_config_error(tmp_path, capsys):
    from p4mtcp.control.config import ConfigError, load_mtcp_conf

    conf = write_conf(tmp_path / "mtcp.conf", ss_dir="/tmp/" + "d" * 100)
    with pytest.raises(ConfigError, match="ss_dir .* longer than a UNIX socket path"):
        load_mtcp_conf(conf)
    none = write_conf(tmp_path / "none.conf")
    assert ss.main(["-f", none]) == 2
    assert "has no ss_dir" in capsys.readouterr().err


def test_listener_rows_format_and_filter_like_linux_ss():
    lst = {"core": 0, "state": "LISTEN", "local": "0.0.0.0:80", "remote": "0.0.0.0:*",
           "recv_q": 3, "send_q": 128}
    header, line = ss.format_rows([lst])
    assert line.split() == ["0", "listen", "3", "128", "0.0.0.0:80", "0.0.0.0:*"]
    assert header.split()[:4] == ["Core", "State", "Recv-Q", "Send-Q"]
    assert not ss.matches(lst, set(), set())                    # plain ss: connections only
    assert ss.matches(lst, set(), {80}, listening=True)         # ss -l --port 80
    assert not ss.matches(lst, set(), {81}, listening=None)     # the '*' port matches nothing

"""Connection traces (control/tcp/trace.py): samples from the engine on a simulated lossy
link, bounded memory, the JSON-lines file, and the plot drawn from it."""

from __future__ import annotations

import random

import pytest

from enginedriver import StreamApp
from linkmodel import DropNthData, LinkModel, LinkParams
from p4mtcp.control.tcp import TcpConfig, TcpStack
from p4mtcp.control.tcp.trace import FIELDS, ConnTrace, read_jsonl

A_IP, B_IP = 0x0A000001, 0x0A000002
DATA = random.Random(12).randbytes(2 << 20)
CONFIG = TcpConfig(mss=1460, rcvbuf=256 << 10, sndbuf=256 << 10, idle_timeout=0)


def transfer(trace: ConnTrace | None, drop=None, loss: float = 0.0, seed: int = 1):
    """A -> B, DATA over a 10 ms link; the sender's connection (traced from its SYN)."""
    sender = TcpStack(CONFIG, isn_secret=b"trace-sender-secret")
    receiver = TcpStack(CONFIG, isn_secret=b"trace-receiver-secret")
    listener = receiver.listen(B_IP, 80, 8)
    conn = sender.connect(A_IP, 40000, B_IP, 80, 0.0)
    conn.trace = trace
    client = StreamApp(conn, DATA)
    server: list[StreamApp] = []

    def app(now: float) -> None:
        sender.events()
        receiver.events()
        if not server and (accepted := listener.accept()) is not None:
            server.append(StreamApp(accepted, close_when_sent=False))
        client.pump()
        for s in server:
            s.pump()

    link = LinkModel(sender, receiver, LinkParams(delay=0.01, loss=loss), seed=seed, drop_ab=drop)
    link.run(lambda: bool(server) and server[0].closed and conn.una == conn.snd_max, app,
             time_limit=300,
             max_iterations=200_000)
    assert bytes(server[0].incoming) == DATA
    return conn


def test_one_loss_is_one_recovery_episode_in_the_trace():
    trace = ConnTrace()
    conn = transfer(trace, drop=DropNthData(100))
    s = list(trace.samples)
    events = [x.event for x in s]
    assert events.count("recovery_start") == 1 and events.count("recovery_end") == 1
    start, end = events.index("recovery_start"), events.index("recovery_end")
    assert start < end
    before, during = s[start - 1], s[start]
    assert during.sender.ssthresh == pytest.approx(before.sender.in_flight / 2, abs=1460)   # RFC 5681 (4)
    assert during.sender.cwnd < before.sender.cwnd
    assert s[-1].sender.retransmits == conn.retransmits == 1
    assert s[-1].sender.delivered == len(DATA)
    assert all(a.t <= b.t for a, b in zip(s, s[1:])) and s[0].t == 0.0
    assert s[0].sender.state == "ESTABLISHED" and s[0].sender.srtt == pytest.approx(0.02, rel=0.2)
    assert trace.dropped == 0


def test_samples_only_on_change_and_bounded():
    full = ConnTrace()
    transfer(full, loss=0.01, seed=3)
    values = [(x.event, x.sender) for x in full.samples]
    assert all(a != b for a, b in zip(values, values[1:]))          # no repeated sample
    assert any(x.event == "rto" or x.event == "recovery_start" for x in full.samples)
    small = ConnTrace(limit=50)
    transfer(small, loss=0.01, seed=3)
    assert len(small.samples) == 50 and small.dropped == len(full.samples) - 50
    assert list(small.samples)[-1].sender.delivered == len(DATA)            # the newest are kept


def test_untraced_connection_has_no_trace_and_counts_retransmits():
    conn = transfer(None, drop=DropNthData(10, 20))
    assert conn.trace is None and conn.retransmits == 2


def test_jsonl_round_trip_and_bad_files():
    trace = ConnTrace()
    transfer(trace, drop=DropNthData(100))
    lines = list(trace.jsonl())
    header, samples = read_jsonl(lines)
    assert header["local"] == "10.0.0.1:40000" and header["remote"] == "10.0.0.2:80"
    assert header["fields"] == FIELDS and len(samples) == len(trace.samples)
    assert samples[-1]["delivered"] == len(DATA)
    with pytest.raises(ValueError, match="line 1"):
        read_jsonl(["{}"])
    with pytest.raises(ValueError, match="line 3"):
        read_jsonl([lines[0], lines[1], '{"t": 1}'])


def test_plot_marks_recoveries_and_computes_throughput(tmp_path):
    plot = pytest.importorskip("p4mtcp.apps.plot")
    pytest.importorskip("matplotlib")
    trace = ConnTrace()
    transfer(trace, drop=DropNthData(100, 600))
    path = tmp_path / "t.jsonl"
    path.write_text("".join(line + "\n" for line in trace.jsonl()))
    header, samples = read_jsonl(path.read_text().splitlines())
    spans, rtos = plot.episodes(samples)
    assert len(spans) == 2 and rtos == [] and all(a < b for a, b in spans)
    mids, rates = plot.throughput(samples, bins=10)
    width = samples[-1]["t"] / 10
    moved = samples[-1]["delivered"] - samples[0]["delivered"]     # every byte in some interval
    assert sum(r * width for r in rates) * 1e6 / 8 == pytest.approx(moved, rel=1e-9)
    assert samples[-1]["delivered"] == len(DATA) and moved > len(DATA) - 3000
    assert plot.main([str(path), "-o", str(tmp_path / "t.png")]) == 0
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "bad.jsonl").write_text("not json\n")
    assert plot.main([str(tmp_path / "bad.jsonl")]) == 2


@pytest.mark.slow
def test_perf_client_writes_its_trace(tmp_path):
    """`perf client --trace` on a fabric host: the file holds the connection's samples up to
    the last byte delivered."""
    from p4mtcp.apps import launch, perf
    from p4mtcp.apps.fabric import Fabric, two_hosts

    path = tmp_path / "t.jsonl"
    with Fabric() as fab:
        server, client = two_hosts(fab, 1, 1)
        fab.start(timeout=60)
        sargs = perf.PerfArgs("server", server.conf, 1, "0.0.0.0", 5001, None, 120, None, None,
                              1, False)
        cargs = perf.PerfArgs("client", client.conf, 1, server.ip, 5001, 1 << 20, 0.0, None,
                              None, 0, False, trace=str(path))
        with launch.CoreWorkers(perf.perf_core, [0], sargs) as srv:
            msgs: list[dict] = []
            while not any(m["kind"] == "ready" for m in msgs):
                assert srv.running(), msgs
                msgs += srv.poll(0.2)
            with launch.CoreWorkers(perf.perf_core, [0], cargs) as cli:
                assert cli.pump(lambda m: None, lambda: None, timeout=120)
                assert cli.exit_code() == 0
    header, samples = read_jsonl(path.read_text().splitlines())
    assert header["remote"] == f"{server.ip}:5001" and header["local"].startswith(client.ip)
    assert samples[-1]["delivered"] == 1 << 20 and samples[0]["t"] == 0.0
    assert all(s["cwnd"] > 0 for s in samples)

"""The apps' command lines and the pieces around their loops that need no network."""

from __future__ import annotations

import hashlib

import pytest

from p4mtcp.apps import demo, epserver, epwget, perf


def wget_args(*argv: str):
    return epwget.build(epwget.parse_args(list(argv)))


def test_epwget_splits_flows_and_concurrency_like_mtcp():
    cores, a = wget_args("10.0.0.1:8080/x", "1001", "-N", "2", "-c", "64", "-f", "m.conf")
    assert cores == [0, 1] and a.cores == 2 and a.concurrency == 32
    assert (a.host, a.port, a.path, a.total) == ("10.0.0.1", 8080, "/x", 1001)
    assert [epwget.flows_for(i, 2, 1001) for i in (0, 1)] == [501, 500]
    # more cores than flows: mTCP runs one core per flow
    cores, a = wget_args("10.0.0.1/", "1", "-N", "2", "-f", "m.conf")
    assert cores == [0] and a.cores == 1 and a.concurrency == epwget.DEFAULT_CONCURRENCY


@pytest.mark.parametrize("argv,problem", [
    (("www.example.com/", "10", "-N", "1"), "IPv4 address"),
    (("10.0.0.1/", "10", "-N", "2", "-c", "1"), "at least one connection per core"),
    (("https://10.0.0.1/", "10", "-N", "1"), "only http"),
])
def test_epwget_rejects_bad_arguments_with_the_reason(argv, problem):
    with pytest.raises(ValueError, match=problem):
        wget_args(*argv, "-f", "m.conf")


def test_epwget_main_reports_bad_arguments_and_exit_code(capsys):
    assert epwget.main(["nohost/", "5", "-f", "m.conf"]) == 2
    assert "IPv4 address" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        epwget.main(["10.0.0.1/", "0", "-f", "m.conf"])
    assert exc.value.code == 2


def test_padded_request_has_the_exact_size_and_parses():
    from p4mtcp.apps.http import parse_request
    req = epwget.padded_request("10.0.0.1", "/64", 64)
    assert len(req) == 64 and req.endswith(b"\r\n\r\n")
    parsed = parse_request(req[:-4])
    assert parsed.target == "/64" and not parsed.keep_alive
    with pytest.raises(ValueError, match="at least"):
        epwget.padded_request("10.0.0.1", "/64", 20)


def test_wget_report_sums_cores_and_prints_mtcp_line():
    r = epwget.WgetReport(total=4, cores=2)
    for core, (c, us) in enumerate(((3, 1000), (1, 5000))):
        r.ingest({"kind": "stats", "core": core, "t": 1.0, "flows": 0,
                  "counters": {"rx_pkts": 0, "rx_bytes": 0, "tx_pkts": 0, "tx_bytes": 0,
                               "drops": 0},
                  "app": {"connects": c, "reads": 2_000_000, "writes": 100, "completes": c,
                          "errors": 0, "timedout": 0, "sum_resp_us": us * c,
                          "max_resp_us": us}})
    line = r.line()
    assert "connect:       4" in line and "read:   4.00 MB" in line
    assert "completes:       4 (resp_time avg:   2000, max:     5000 us)" in line
    assert "connect:       0" in r.line()             # the interval was reset
    assert r.progress() == (4, 4)
    assert not r.ok()                                   # no core has reported 'done' yet
    for core in (0, 1):
        r.ingest({"kind": "done", "core": core, "done": 2, "errors": 0, "incompletes": 0})
    assert r.ok()


def test_perf_sizes_and_sources(tmp_path):
    assert [perf.parse_size(s) for s in ("4096", "64K", "50M", "1g")] == [4096, 65536,
                                                                          50 << 20, 1 << 30]
    with pytest.raises(Exception, match="bad size"):
        perf.parse_size("5X")
    src = perf.Source(200_000, None)
    out = bytearray()
    while True:
        v = src.view()
        if not v:
            break
        take = min(len(v), 12_345)             # a socket that takes odd amounts
        out += v[:take]
        src.advance(take)
    block = perf.pattern()
    assert bytes(out) == (block * 4)[:200_000]
    f = tmp_path / "f.bin"
    f.write_bytes(b"abc" * 50_000)
    fsrc = perf.Source(None, str(f))
    assert fsrc.total == 150_000 and bytes(fsrc.view()) == (b"abc" * 50_000)[:perf.CHUNK]


def test_perf_command_line(tmp_path):
    cores, a = perf.build(perf.parse_args(["client", "10.0.0.1", "-f", "m.conf", "-N", "2",
                                           "-n", "1M", "--verify"]))
    assert cores == [0, 1] and a.mode == "client" and a.nbytes == 1 << 20 and a.verify
    cores, a = perf.build(perf.parse_args(["client", "10.0.0.1", "-f", "m.conf", "-N", "1"]))
    assert a.nbytes is None and a.seconds == 10.0           # default: a timed run
    cores, a = perf.build(perf.parse_args(["server", "-f", "m.conf", "-N", "1",
                                           "--connections", "3", "--out", "x"]))
    assert a.mode == "server" and a.connections == 3 and a.out == "x"
    with pytest.raises(ValueError, match="IPv4"):
        perf.build(perf.parse_args(["client", "host", "-f", "m.conf", "-N", "1"]))


def test_epserver_command_line(tmp_path, capsys):
    a = epserver.parse_args(["-p", str(tmp_path), "-f", "m.conf", "-N", "2", "-c", "1",
                             "-b", "100"])
    assert (a.www, a.conf, a.num_cores, a.core, a.backlog) == (str(tmp_path), "m.conf", 2, 1,
                                                               100)
    with pytest.raises(SystemExit):
        epserver.parse_args(["-p", str(tmp_path), "-f", "m.conf", "-b", "0"])
    assert epserver.main(["-p", str(tmp_path / "none"), "-f", "m.conf", "-N", "1"]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert epserver.main(["-p", str(tmp_path), "-f", "m.conf", "-N", "2", "-c", "5"]) == 2


def test_demo_defaults_are_bounded():
    a = demo.parse_args([])
    assert (a.cores, a.client_cores, a.requests) == (2, 2, 5000) and a.duration <= 60
    with pytest.raises(SystemExit):
        demo.parse_args(["-n", "0"])


def test_make_www_is_deterministic(tmp_path):
    body = demo.make_www(tmp_path / "w", 1000)
    assert body == demo.make_www(tmp_path / "v", 1000)
    assert (tmp_path / "w" / "index.html").read_bytes() == body and len(body) == 1000
    assert hashlib.sha256(body).hexdigest() != hashlib.sha256(bytes(1000)).hexdigest()

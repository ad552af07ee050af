"""The packetdrill runner: parsing, timing rules, syscalls, skips, reports and the command."""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from p4mtcp.cli import main as p4mtcp_main
from p4mtcp.testing.packetdrill import ScriptError, parse, run_path, run_script
from p4mtcp.testing.packetdrill.run import Runner
from p4mtcp.testing.packetdrill.script import Option

pytest_plugins = ["pytester"]

SCRIPTS = Path(__file__).parent / "packetdrill"

LISTEN = """\
0    socket(..., SOCK_STREAM, IPPROTO_TCP) = 3
+0   bind(3, ..., ...) = 0
+0   listen(3, 1) = 0
+0   < S 0:0(0) win 65535 <mss 1000>
+0   > S. 0:0(0) ack 1 <mss 1460>
+.1  < . 1:1(0) ack 1 win 65535
+0   accept(3, ..., ...) = 4
"""


def run(text: str, **kwargs):
    return run_script(parse(text, "t.pkt"), **kwargs)


def test_parse_times_packets_options_and_calls():
    s = parse("--tolerance_usecs=10000\n// p4mtcp: initial_window=4 rto_min=0.3\n"
              "0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n"
              "+.1~+.2 > P. 1:1001(1000) ack 1 <nop,nop,TS val 5 ecr 7,nop,nop,sack 1:2 3:4>\n"
              "* < . 1:1(0) ack 1001 win 257 <...>\n"
              "0.1...0.2 connect(3, ..., ...) = -1 EINPROGRESS (Operation now in progress)\n",
              "x.pkt")
    assert s.options == {"tolerance_usecs": "10000"}
    assert s.settings == {"initial_window": 4, "rto_min": 0.3}
    out, inb, call = (e.body for e in s.events[1:])
    assert (s.events[1].time.kind, s.events[1].time.start, s.events[1].time.end) == ("rel", .1, .2)
    assert (out.flags, out.seq, out.end, out.length, out.ack) == ("P.", 1, 1001, 1000, 1)
    assert out.options == (Option("nop"), Option("nop"), Option("TS", (5, 7)), Option("nop"),
                           Option("nop"), Option("sack", ((1, 2), (3, 4))))
    assert s.events[2].time.kind == "any" and inb.options == "..." and inb.win == 257
    assert (call.name, call.ret, call.errno, s.events[3].time.block_end) == (
        "connect", -1, "EINPROGRESS", 0.2)


def test_structs_by_name_by_position_and_with_array_lengths():
    """packetdrill writes struct fields by name, by position (an iovec ``{..., 1000}``) and
    array fields with their length (``msg_iov(1)=``); a positional value may be a call."""
    call = parse("0 sendmsg(4, {msg_name(...)=..., msg_iov(2)=[{..., 10}, "
                 "{iov_base=..., iov_len=5}], msg_flags=0}, 0) = 15\n"
                 "+0 f(3, {htons(80), x=1, {}}) = 0\n", "t.pkt").events
    msg = call[0].body.args[1]
    assert msg["msg_iov(n)"] == 2 and msg["msg_flags"] == 0
    assert msg["msg_iov"] == [{"0": "...", "1": 10}, {"iov_base": "...", "iov_len": 5}]
    other = call[1].body.args[1]
    assert other["0"].name == "htons" and other["0"].args == (80,)
    assert other["x"] == 1 and other["1"] == {}
    with pytest.raises(ScriptError, match="t.pkt:1"):
        parse("0 sendmsg(4, {msg_iov(1)=[{..., 10}] msg_flags=0}, 0) = 10\n", "t.pkt")


def test_comments_hide_shell_commands_and_keep_line_numbers():
    s = parse('/* a\n `not run` */\n// `nor this` "x\n'
              "0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n")
    assert s.skip is None and [e.line for e in s.events] == [4]


def test_addresses_from_script_options():
    runner = Runner(parse("--local_ip=10.1.0.1\n--remote_ip=10.2.0.9\n" + LISTEN, "t.pkt"))
    try:
        runner.run()
        ip = lambda text: int(ipaddress.IPv4Address(text))  # noqa: E731
        assert runner.host.ctx.flows() == [((ip("10.1.0.1"), 8080), (ip("10.2.0.9"), 48000))]
    finally:
        runner.host.close()


def test_parse_errors_name_file_and_line():
    with pytest.raises(ScriptError, match=r"x.pkt:2: sequence range 1:10 does not hold \(5\)"):
        parse("0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0 < . 1:10(5) ack 1\n", "x.pkt")


@pytest.mark.parametrize("line, reason", [
    ("`sysctl -q net.ipv4.tcp_timestamps=0`", "shell command"),
    ("+0 %{ assert tcpi_snd_cwnd == 10 }%", "tcpi_* checks"),
    ("+0 socket(AF_INET6, SOCK_STREAM, IPPROTO_TCP) = 5", "IPv6"),
    ("+0 < [ect0] S 0:0(0) win 100", "ECN"),
    ("+0 < SEW 0:0(0) win 100", "ECN"),
    ("+0 < S 0:0(0) win 100 <mss 1000,FO 1234>", "TCP Fast Open"),
    ("+0 setsockopt(3, SOL_TCP, TCP_INFO, [0], 4) = 0", "TCP_INFO"),
    ("--ip_version=ipv6", "IPv4 only"),
])
def test_what_does_not_map_is_skipped_with_its_reason(line, reason):
    out = run(LISTEN + line + "\n")
    assert out.status == "skipped" and reason in out.reason


def test_unmapped_socket_option_is_skipped_at_run_time():
    out = run(LISTEN + "+0 setsockopt(4, SOL_TCP, TCP_CONGESTION, \"cubic\", 5) = 0\n")
    assert out.status == "skipped" and "TCP_CONGESTION" in out.reason and out.line == 8


def test_the_first_event_is_at_time_zero():
    assert run("+0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n").status == "passed"
    late = run("0.1 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n")
    assert late.status == "failed" and late.reason == "the first event must be at time 0"


def test_first_mismatch_and_full_diff_of_a_failure():
    out = run(LISTEN + "+0 write(4, ..., 10) = 10\n+0 > P. 1:11(10) ack 2\n")
    assert out.status == "failed" and out.line == 9
    assert out.reason == "tcp.ack: expected 2, got 1"
    assert "expected: > P. 1:11(10) ack 2" in out.detail
    assert "actual:   > P. 1:11(10) ack 1 win 8192" in out.detail


def test_timing_tolerance_follows_packetdrill():
    delayed_ack = LISTEN + "+0 < P. 1:11(10) ack 1 win 65535\n+{} > . 1:1(0) ack 11\n"
    assert run(delayed_ack.format(".04")).status == "passed"        # exact
    assert run(delayed_ack.format(".037")).status == "passed"       # 3 ms early: within 4 ms
    late = run(delayed_ack.format(".03"))
    assert late.status == "failed" and "none sent by 0.134000" in late.reason
    early = run(delayed_ack.format(".05"))
    assert early.status == "failed" and "timing error" in early.reason
    assert run(delayed_ack.format(".05"), tolerance=0.011).status == "passed"
    assert run(delayed_ack.format(".03~+.05")).status == "passed"   # a range
    assert run(delayed_ack.replace("+{} >", "* >")).status == "passed"
    # --tolerance_percent: a share of the time since the previous event, when larger
    assert run("--tolerance_percent=50\n" + delayed_ack.format(".03")).status == "passed"


def test_syscall_results_and_errnos_are_checked():
    assert run(LISTEN + "+0 read(4, ..., 10) = -1 EAGAIN (Resource temporarily unavailable)\n"
               ).status == "failed"     # sockets block unless O_NONBLOCK: this read would block
    nonblock = LISTEN + "+0 fcntl(4, F_SETFL, O_RDWR|O_NONBLOCK) = 0\n"
    assert run(nonblock + "+0 read(4, ..., 10) = -1 EAGAIN (Resource temporarily unavailable)\n"
               ).status == "passed"
    wrong = run(nonblock + "+0 read(4, ..., 10) = 0\n")
    assert wrong.status == "failed" and "returned -1 EAGAIN" in wrong.reason


def test_writev_and_readv_move_the_iovec_byte_counts():
    out = run(LISTEN + "+0 writev(4, [{iov_base=..., iov_len=10}, {iov_base=..., iov_len=20}], 2)"
                       " = 30\n+0 > P. 1:31(30) ack 1\n+0 < P. 1:8(7) ack 31 win 65535\n"
                       "+0 readv(4, [{iov_base=..., iov_len=5}, {iov_base=..., iov_len=5}], 2) = 7\n")
    assert out.status == "passed", out.detail
    short = run(LISTEN + "+0 writev(4, [{iov_base=..., iov_len=10}], 1) = 10\n"
                         "+0 > P. 1:12(11) ack 1\n")
    assert short.status == "failed" and "1:11(10)" in short.detail    # 10 bytes went, not 11
    bad = run(LISTEN + "+0 writev(4, [{iov_base=..., iov_len=10}], 2) = 10\n")
    assert bad.status == "failed" and bad.line == 8 and "count 2 for 1 iovec" in bad.reason


def test_sendmsg_recvmsg_sendto_recvfrom_and_positional_iovecs():
    """packetdrill's message calls, written as its own scripts write them: a msghdr with
    ``msg_iov(n)=[{..., N}]``, iovecs by position, the address of a connected socket unused."""
    out = run(LISTEN + (
        "+0 sendmsg(4, {msg_name(...)=..., msg_iov(2)=[{..., 100}, {..., 50}], msg_flags=0}, 0)"
        " = 150\n"
        "+0 > P. 1:151(150) ack 1\n"
        "+0 < . 1:1(0) ack 151 win 65535\n"
        "+0 sendto(4, ..., 40, 0, ..., ...) = 40\n"
        "+0 > P. 151:191(40) ack 1\n"
        "+0 < . 1:1(0) ack 191 win 65535\n"                    # else Nagle holds the next
        "+0 writev(4, [{..., 7}, {iov_base=..., iov_len=3}], 2) = 10\n"
        "+0 > P. 191:201(10) ack 1\n"
        "+0 < P. 1:31(30) ack 201 win 65535\n"
        "+0 recvmsg(4, {msg_name(...)=..., msg_iov(1)=[{..., 20}], msg_flags=0}, MSG_PEEK) = 20\n"
        "+0 recvmsg(4, {msg_name(...)=..., msg_iov(1)=[{..., 25}], msg_flags=0}, 0) = 25\n"
        "+0 recvfrom(4, ..., 100, 0, ..., ...) = 5\n"
        "+0 recvfrom(4, ..., 100, MSG_DONTWAIT, ..., ...) = -1 EAGAIN (Resource temporarily"
        " unavailable)\n"))
    assert out.status == "passed", out.detail
    wrong = run(LISTEN + "+0 sendmsg(4, {msg_name(...)=..., msg_iov(1)=[{..., 100}], "
                         "msg_flags=0}, 0) = 100\n+0 > P. 1:100(99) ack 1\n")
    assert wrong.status == "failed" and "1:101(100)" in wrong.detail     # 100 bytes went
    count = run(LISTEN + "+0 sendmsg(4, {msg_iov(2)=[{..., 100}], msg_flags=0}, 0) = 100\n")
    assert count.status == "failed" and count.line == 8 and "count 2 for 1 iovec" in count.reason


@pytest.mark.parametrize("line, reason", [
    ("+0 sendmsg(4, {msg_iov(1)=[{..., 40}], msg_flags=0}, MSG_MORE) = 40", "MSG_MORE"),
    ("+0 recvmsg(4, {msg_iov(1)=[{..., 10}], msg_flags=0, msg_control=[{cmsg_level=SOL_TCP, "
     "cmsg_type=TCP_CM_INQ, cmsg_data=0}]}, 0) = 10", "msg_control"),
    ("+0 send(4, ..., 10, MSG_ZEROCOPY) = 10", "MSG_ZEROCOPY"),
])
def test_message_features_without_an_mtcp_counterpart_skip_the_script(line, reason):
    out = run(LISTEN + line + "\n")
    assert out.status == "skipped" and reason in out.reason and out.line == 8


def test_blocking_calls_return_when_the_stack_lets_them():
    accept = ("0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0 bind(3, ..., ...) = 0\n"
              "+0 listen(3, 1) = 0\n+0...0.2 accept(3, ..., ...) = 4\n"
              "+.1 < S 0:0(0) win 65535 <mss 1000>\n+0 > S. 0:0(0) ack 1 <mss 1460>\n"
              "+.1 < . 1:1(0) ack 1 win 65535\n+0 close(4) = 0\n")
    assert run(accept).status == "passed"
    late = run(accept.replace("0...0.2", "0...0.1"))
    assert late.status == "failed" and "expected accept() to return at 0.100000" in late.reason
    connect = ("0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0...0.1 connect(3, ..., ...) = 0\n"
               "+0 > S 0:0(0) <...>\n+.1 < S. 0:0(0) ack 1 win 65535 <mss 1000>\n"
               "+0 > . 1:1(0) ack 1\n")
    assert run(connect).status == "passed"
    refused = run(connect.replace("< S. 0:0(0) ack 1 win 65535 <mss 1000>",
                                  "< R. 0:0(0) ack 1 win 0")
                  .replace("= 0\n+0 > S", "= -1 ECONNREFUSED (Connection refused)\n+0 > S")
                  .replace("+0 > . 1:1(0) ack 1\n", ""))
    assert refused.status == "passed", refused.detail


def test_poll_and_epoll_report_readiness():
    script = LISTEN + (
        "+0 poll([{fd=4, events=POLLIN|POLLOUT, revents=POLLOUT}], 1, 0) = 1\n"
        "+0 epoll_create(1) = 5\n"
        "+0 epoll_ctl(5, EPOLL_CTL_ADD, 4, {events=EPOLLIN, fd=4}) = 0\n"
        "+0 epoll_wait(5, {events=EPOLLIN, fd=4}, 1, 0) = 0\n"
        "+0 < P. 1:11(10) ack 1 win 65535\n"
        "+0 epoll_wait(5, {events=EPOLLIN, fd=4}, 1, 0) = 1\n"
        "+0 poll([{fd=4, events=POLLIN, revents=POLLIN}], 1, 0) = 1\n")
    assert run(script).status == "passed"
    assert run(script.replace("revents=POLLIN}", "revents=POLLOUT}")).status == "failed"


def test_settings_come_from_directives_and_the_runner():
    iw2 = LISTEN + ("+0 write(4, ..., 5000) = 5000\n+0 > . 1:1001(1000) ack 1\n"
                    "+0 > . 1001:2001(1000) ack 1\n+.1 < . 1:1(0) ack 2001 win 65535\n"
                    "+0 > . 2001:3001(1000) ack 1\n")
    assert run("// p4mtcp: initial_window=2\n" + iw2).status == "passed"
    assert run(iw2, settings={"initial_window": 2}).status == "passed"
    assert run(iw2).status == "failed"     # ten segments leave with the default window
    bad = run(iw2, settings={"no_such_knob": 1})
    assert bad.status == "error" and "no_such_knob" in bad.reason


def test_tso_option_takes_contiguous_segments_as_one():
    linux_style = LISTEN + "+0 write(4, ..., 3000) = 3000\n+0 > P. 1:3001(3000) ack 1\n"
    assert run(linux_style).status == "failed"        # p4mtcp sends three 1000-byte segments
    assert run(linux_style, tso=True).status == "passed"
    gap = run(LISTEN + "+0 write(4, ..., 1000) = 1000\n+0 > P. 1:3001(3000) ack 1\n", tso=True)
    assert gap.status == "failed" and gap.reason == "tcp.payload length: expected 3000, got 1000"


def test_ignore_psh_option():
    no_push = LISTEN + "+0 write(4, ..., 10) = 10\n+0 > . 1:11(10) ack 1\n"
    failed = run(no_push)
    assert failed.status == "failed" and failed.reason == "tcp.flags: expected ., got P."
    assert run(no_push, ignore_psh=True).status == "passed"


@pytest.mark.parametrize("nic", [False, True], ids=["host", "nic"])
def test_project_scripts_pass(nic):
    outcomes = [run_path(str(p), nic=nic) for p in sorted(SCRIPTS.glob("*.pkt"))]
    assert len(outcomes) >= 8
    assert [(o.path, o.status, o.reason) for o in outcomes if o.status != "passed"] == []


def test_command_summary_exit_status_and_junit(tmp_path, capsys):
    (tmp_path / "ok.pkt").write_text(LISTEN)
    (tmp_path / "bad.pkt").write_text(LISTEN + "+0 > F. 1:1(0) ack 1\n")
    (tmp_path / "linux.pkt").write_text("`sysctl -q net.ipv4.tcp_sack=0`\n" + LISTEN)
    junit = tmp_path / "report.xml"
    assert p4mtcp_main(["packetdrill", str(tmp_path), "--junit", str(junit)]) == 1
    out = capsys.readouterr().out
    assert "FAILED  " + str(tmp_path / "bad.pkt") + ":8: expected outbound packet" in out
    assert "SKIPPED " + str(tmp_path / "linux.pkt") + ":1: shell command" in out
    assert "3 scripts: 1 passed, 1 failed, 1 skipped" in out
    suite = ET.parse(junit).getroot()
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "1", "1")
    assert p4mtcp_main(["packetdrill", str(tmp_path / "ok.pkt"), str(tmp_path / "linux.pkt")]) == 0


def test_pytest_collects_pkt_files_only_where_configured(pytester):
    pytester.makefile(".pkt", ok=LISTEN, bad=LISTEN + "+0 > F. 1:1(0) ack 1\n")
    pytester.makeini("[pytest]\n")
    assert pytester.runpytest().ret == 5   # nothing collected: .pkt files are not tests
    result = pytester.runpytest("--p4mtcp-packetdrill")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*bad.pkt:8: expected outbound packet*"])

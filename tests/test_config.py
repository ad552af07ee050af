"""mtcp.conf / arp.conf / route.conf: values, defaults, round trips and FILE:LINE errors."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p4mtcp.control.config import (
    ArpEntry, ConfigError, HostConfig, Route, check_host, format_arp_conf,
    format_mtcp_conf, format_route_conf, load_host, load_mtcp_conf, parse_arp_conf,
    parse_mtcp_conf, parse_route_conf)

CONF_DIR = Path(__file__).resolve().parent.parent / "apps" / "conf"
BASE = "local_ip = 10.0.0.1/24\n"


def error_of(fn, *args) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        fn(*args)
    return info.value


# --- mtcp.conf values ---------------------------------------------------------------------------

def test_defaults_are_mtcps():
    cfg = parse_mtcp_conf(BASE)
    assert (cfg.max_concurrency, cfg.max_num_buffers, cfg.rcvbuf, cfg.sndbuf) == (
        10000, 10000, 8192, 8192)
    assert (cfg.tcp_timeout, cfg.tcp_timewait) == (30, 0)
    assert (cfg.nic_target, cfg.p4runtime, cfg.device_id, cfg.cpu_port, cfg.core_port_base) == (
        "embedded", "127.0.0.1:9559", 1, 255, 16)
    assert cfg.port == ("net0",) and cfg.network_ports == (1,)
    # The default MAC carries the address, so two hosts on one fabric never share one.
    assert cfg.host_mac == ("02:00:0a:00:00:01",)
    assert cfg.p4_device_config is None and cfg.p4info.endswith("mtcp_nic.p4info.txtpb")


def test_values_comments_and_whitespace():
    cfg = parse_mtcp_conf(
        "# a comment line\n\n"
        "num_cores=4   # trailing comment\n"
        "  max_concurrency =   20  \n"
        "tcp_timeout = -1\n"
        "port = eth1 eth2\n"
        "network_ports = 3 4\n"
        "local_ip = 192.168.1.2/24 192.168.2.2/25\n"
        "host_mac = AA:BB:CC:DD:EE:01 aa:bb:cc:dd:ee:02\n"
        "stat_print = eth2\n"
        "election_id = 0x10000000000000001\n"
        "core_port_base = 32\n"
        "core_links = unix:/tmp/c0 unix:/tmp/c1 unix:/tmp/c2 unix:/tmp/c3\n")
    assert cfg.num_cores == 4 and cfg.max_concurrency == 20 and cfg.tcp_timeout == -1
    assert cfg.port == ("eth1", "eth2") and cfg.network_ports == (3, 4)
    assert cfg.local_ip == (ipaddress.IPv4Interface("192.168.1.2/24"),
                            ipaddress.IPv4Interface("192.168.2.2/25"))
    assert cfg.host_mac == ("aa:bb:cc:dd:ee:01", "aa:bb:cc:dd:ee:02")
    assert cfg.election_id == (1 << 64) + 1
    assert cfg.core_ports == (32, 33, 34, 35) and cfg.core_port(2) == 34
    assert cfg.core_link(1) == "unix-host:/tmp/c1"
    assert cfg.interface("eth2") == 1


def test_relative_paths_are_relative_to_the_file(tmp_path):
    (tmp_path / "mtcp.conf").write_text(BASE + "p4info = nic/x.txtpb\np4_device_config = y.json\n")
    cfg = load_mtcp_conf(tmp_path / "mtcp.conf")
    assert cfg.p4info == str(tmp_path / "nic" / "x.txtpb")
    assert cfg.p4_device_config == str(tmp_path / "y.json")


@pytest.mark.parametrize("text, line, problem", [
    ("num_cores 4\n", 2, "expected 'key = value', got 'num_cores 4'"),
    ("\n# c\nfoo = 1\n", 4, "unknown key 'foo'"),
    ("io = dpdk\n", 2, "mTCP key 'io' is not used here"),
    ("num_mem_ch = 4\n", 2, "mTCP key 'num_mem_ch' is not used here"),
    ("rcvbuf = 1\nrcvbuf = 2\n", 3, "duplicate key 'rcvbuf' (first set on line 2)"),
    ("sndbuf =\n", 2, "key 'sndbuf' has no value"),
    ("max_concurrency = lots\n", 2, "max_concurrency: 'lots' is not an integer"),
    ("max_concurrency = 0\n", 2, "max_concurrency: 0 is out of range (must be >= 1)"),
    ("num_cores = 300\n", 2, "num_cores: 300 is out of range (must be in 1..256)"),
    ("tcp_timewait = -1\n", 2, "tcp_timewait: -1 is out of range"),
    ("cpu_port = 511\n", 2, "cpu_port: 511 is out of range (must be in 1..510)"),
    ("nic_target = tofino\n", 2, "nic_target: 'tofino' is not one of embedded, bmv2"),
    ("p4runtime = localhost\n", 2, "p4runtime: 'localhost' is not host:port"),
    ("p4runtime = h:99999\n", 2, "p4runtime: 'h:99999' is not host:port"),
    ("port = a b a\n", 2, "port: a name is listed twice"),
    ("port = a/b\n", 2, "port: 'a/b' is not an interface name"),
    ("host_mac = 02:00:00:00:00\n", 2, "host_mac: '02:00:00:00:00' is not a MAC address"),
    ("network_ports = 1 2\n", 2, "network_ports has 2 item(s) but port names 1 interface(s)"),
    ("stat_print = eth9\n", 2, "stat_print names 'eth9', which is not in port"),
    ("cpu_port = 16\n", 2, "cpu_port 16 is also a network or core port"),
    ("network_ports = 17\nnum_cores = 2\n", 2, "port 17 is both a network port and a core port"),
    ("num_cores = 2\ncore_links = unix:/a\n", 3, "core_links has 1 item(s) but num_cores is 2"),
    ("core_port_base = 500\nnum_cores = 20\n", 2, "core ports 500..519 exceed port 510"),
])
def test_mtcp_conf_errors_name_file_line_and_problem(text, line, problem):
    err = error_of(parse_mtcp_conf, BASE + text, "/etc/mtcp.conf")   # BASE is line 1
    assert (err.file, err.line) == ("/etc/mtcp.conf", line)
    assert str(err).startswith(f"/etc/mtcp.conf:{line}: {problem}")


@pytest.mark.parametrize("value, problem", [
    ("10.0.0.1", "'10.0.0.1' lacks its /prefix"),
    ("10.0.0.300/24", "is not an IPv4 addr/prefix"),
    ("10.0.0.1/33", "is not an IPv4 addr/prefix"),
])
def test_bad_local_ip(value, problem):
    err = error_of(parse_mtcp_conf, f"local_ip = {value}\n")
    assert err.line == 1 and problem in str(err)


def test_missing_local_ip_names_the_file():
    err = error_of(parse_mtcp_conf, "num_cores = 1\n", "h.conf")
    assert str(err) == "h.conf: missing required key 'local_ip'"


def test_unreadable_file(tmp_path):
    err = error_of(load_mtcp_conf, tmp_path / "nope.conf")
    assert str(err).startswith(f"{tmp_path / 'nope.conf'}: cannot read")


def test_mtcp_conf_round_trip():
    cfg = parse_mtcp_conf(
        "num_cores = 3\nport = a b\nlocal_ip = 10.0.0.1/24 10.1.0.1/16\nstat_print = b\n"
        "network_links = unix:/x veth1\ncore_links = unix:/c0 unix:/c1 unix:/c2\n"
        "nic_target = bmv2\np4runtime = [::1]:50001\nelection_id = 7\ntcp_timeout = 0\n")
    text = format_mtcp_conf(cfg)
    assert parse_mtcp_conf(text) == cfg
    assert "nic_target = bmv2" in text and "network_links = unix:/x veth1" in text


def test_getconf_setconf_struct():
    cfg = parse_mtcp_conf(BASE + "num_cores = 2\n")
    conf = cfg.conf()
    assert dataclasses.asdict(conf) == {
        "num_cores": 2, "max_concurrency": 10000, "max_num_buffers": 10000,
        "rcvbuf_size": 8192, "sndbuf_size": 8192, "tcp_timewait": 0, "tcp_timeout": 30}
    conf.max_concurrency, conf.rcvbuf_size, conf.tcp_timeout = 64, 16384, -1
    new = cfg.with_conf(conf)
    assert (new.max_concurrency, new.rcvbuf, new.tcp_timeout) == (64, 16384, -1)
    assert new.conf() == conf and cfg.max_concurrency == 10000   # the original is unchanged
    for name, bad in (("num_cores", 0), ("sndbuf_size", -5), ("tcp_timewait", -1),
                      ("max_concurrency", "10")):
        broken = dataclasses.replace(conf, **{name: bad})
        with pytest.raises(ValueError, match=name):
            cfg.with_conf(broken)
    with pytest.raises(ValueError, match="core port"):      # cross-key rules hold too
        cfg.with_conf(dataclasses.replace(conf, num_cores=250))


# --- arp.conf and route.conf --------------------------------------------------------------------

def test_arp_and_route_values():
    arp = parse_arp_conf("# neighbours\nARP_ENTRY 2\n10.0.0.2/32 AA:00:00:00:00:02\n\n"
                         "10.9.0.7/16 02:00:00:00:00:fe  # gateway\n")
    assert arp == (ArpEntry(ipaddress.IPv4Network("10.0.0.2/32"), "aa:00:00:00:00:02"),
                   ArpEntry(ipaddress.IPv4Network("10.9.0.0/16"), "02:00:00:00:00:fe"))
    assert [e.line for e in arp] == [3, 5]
    routes = parse_route_conf("ROUTES 1\n10.2.3.4/8 net0\n")
    assert routes == (Route(ipaddress.IPv4Network("10.0.0.0/8"), "net0"),)
    assert parse_arp_conf("ARP_ENTRY 0\n") == ()


@pytest.mark.parametrize("parse, text, line, problem", [
    (parse_arp_conf, "10.0.0.2/32 02:00:00:00:00:01\n", 1, "expected 'ARP_ENTRY <count>'"),
    (parse_arp_conf, "ARP_ENTRY\n", 1, "expected 'ARP_ENTRY <count>', got 'ARP_ENTRY'"),
    (parse_arp_conf, "ARP_ENTRY x\n", 1, "ARP_ENTRY: 'x' is not an integer"),
    (parse_arp_conf, "ARP_ENTRY -1\n", 1, "ARP_ENTRY: -1 is out of range"),
    (parse_arp_conf, "ARP_ENTRY 2\n10.0.0.2/32 02:00:00:00:00:01\n", 1,
     "ARP_ENTRY says 2 entries but the file has 1"),
    (parse_arp_conf, "# c\nARP_ENTRY 0\n10.0.0.2/32 02:00:00:00:00:01\n", 2,
     "ARP_ENTRY says 0 entries but the file has 1"),
    (parse_arp_conf, "ARP_ENTRY 1\n10.0.0.2/32\n", 2, "expected 'addr/prefix mac'"),
    (parse_arp_conf, "ARP_ENTRY 1\n10.0.0.2 02:00:00:00:00:01\n", 2,
     "'10.0.0.2' lacks its /prefix"),
    (parse_arp_conf, "ARP_ENTRY 1\n10.0.0.2/32 02-00-00-00-00-01\n", 2,
     "'02-00-00-00-00-01' is not a MAC address"),
    (parse_arp_conf, "ARP_ENTRY 2\n10.0.0.2/32 02:00:00:00:00:01\n10.0.0.2/32 02:00:00:00:00:03\n",
     3, "10.0.0.2/32 already listed on line 2"),
    (parse_arp_conf, "ARP_ENTRY 1\nARP_ENTRY 1\n", 2, "second ARP_ENTRY line (first on line 1)"),
    (parse_route_conf, "ROUTE 1\n", 1, "expected 'ROUTES <count>', got 'ROUTE 1'"),
    (parse_route_conf, "ROUTES 1\n10.0.0.0/24 net0 extra\n", 2, "expected 'addr/prefix dev'"),
    (parse_route_conf, "ROUTES 1\n10.0.0/24 net0\n", 2, "'10.0.0/24' is not an IPv4 addr/prefix"),
    (parse_route_conf, "ROUTES 3\n10.0.0.0/24 net0\n", 1,
     "ROUTES says 3 entries but the file has 1"),
])
def test_counted_file_errors(parse, text, line, problem):
    err = error_of(parse, text, "conf/x.conf")
    assert err.line == line
    assert str(err).startswith(f"conf/x.conf:{line}: {problem}")


def test_empty_counted_file():
    assert str(error_of(parse_route_conf, "# nothing\n", "r.conf")) == (
        "r.conf: missing 'ROUTES <count>' line")


def test_cross_file_rules():
    mtcp = parse_mtcp_conf(BASE)
    routes = parse_route_conf("ROUTES 2\n10.5.0.0/16 net0\n10.6.0.0/16 eth7\n")
    err = error_of(check_host, HostConfig(mtcp, (), routes), "a.conf", "r.conf")
    assert str(err) == "r.conf:3: device 'eth7' is not in mtcp.conf's port list (net0)"
    arp = parse_arp_conf("ARP_ENTRY 2\n10.0.0.9/32 02:00:00:00:00:09\n"
                         "172.16.0.1/32 02:00:00:00:00:01\n")
    err = error_of(check_host, HostConfig(mtcp, arp, ()), "a.conf", "r.conf")
    assert str(err).startswith("a.conf:3: 172.16.0.1/32 is not reachable")


def test_routes_lpm_and_connected():
    host = HostConfig(parse_mtcp_conf(BASE),
                      routes=parse_route_conf("ROUTES 2\n10.0.0.0/8 net0\n10.0.0.0/24 net0\n"))
    # route.conf names 10.0.0.0/24 itself, so the connected subnet adds nothing.
    assert [str(r.network) for r in host.all_routes()] == ["10.0.0.0/8", "10.0.0.0/24"]
    assert host.route_for(ipaddress.IPv4Address("10.0.0.7")).network.prefixlen == 24
    assert host.route_for(ipaddress.IPv4Address("10.7.0.7")).network.prefixlen == 8
    assert host.route_for(ipaddress.IPv4Address("11.0.0.1")) is None


_nets = st.builds(lambda a, p: ipaddress.IPv4Network((a, p), strict=False),
                  st.integers(0, 2**32 - 1), st.integers(0, 32))
_macs = st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b))


@given(st.lists(st.tuples(_nets, _macs), unique_by=lambda t: t[0], max_size=20))
def test_arp_round_trip(pairs):
    entries = tuple(ArpEntry(n, m) for n, m in pairs)
    assert parse_arp_conf(format_arp_conf(entries)) == entries


@given(st.lists(st.tuples(_nets, st.sampled_from(["net0", "eth1", "veth-a"])),
                unique_by=lambda t: t[0], max_size=20))
def test_route_round_trip(pairs):
    routes = tuple(Route(n, d) for n, d in pairs)
    assert parse_route_conf(format_route_conf(routes)) == routes


def test_sample_files_parse_and_agree():
    host = load_host(CONF_DIR / "mtcp.conf", CONF_DIR / "arp.conf", CONF_DIR / "route.conf")
    assert host.mtcp.num_cores >= 1 and host.mtcp.local_ip
    assert host.arp and host.routes
    # Every sample neighbour is reachable, and the samples survive a format/parse round trip.
    for e in host.arp:
        assert host.route_for(e.network.network_address) is not None
    assert parse_mtcp_conf(format_mtcp_conf(host.mtcp)) == host.mtcp
    assert parse_arp_conf(format_arp_conf(host.arp)) == host.arp
    assert parse_route_conf(format_route_conf(host.routes)) == host.routes

"""mtcp.conf `mtu`: parsed, validated with FILE:LINE and the allowed range, turned into the MSS
the engine announces, and carried by every link type of the embedded path."""

from __future__ import annotations

import pytest

from p4mtcp.control.config import (
    MIN_MTU, ConfigError, format_mtcp_conf, load_mtcp_conf, parse_mtcp_conf)
from p4mtcp.link import MAX_FRAME, MAX_MTU, afpacket, shmring, unix
from p4mtcp.link.frames import ETH_HLEN, VLAN_HLEN

BASE = "local_ip = 10.0.0.1/24\n"
ETH_VLAN = ETH_HLEN + VLAN_HLEN   # Ethernet header and one 802.1Q tag


def test_default_mtu_is_ethernets_and_mss_is_mtu_minus_40():
    cfg = parse_mtcp_conf(BASE)
    assert (cfg.mtu, cfg.mss) == (1500, 1460)


def test_jumbo_mtu_sets_the_mss_and_round_trips():
    cfg = parse_mtcp_conf(BASE + "mtu = 9000\n")
    assert (cfg.mtu, cfg.mss) == (9000, 8960)
    text = format_mtcp_conf(cfg)
    assert "mtu = 9000" in text and parse_mtcp_conf(text) == cfg


@pytest.mark.parametrize("value, problem", [
    ("100", f"mtu: 100 is out of range (must be in {MIN_MTU}..{MAX_MTU})"),
    (str(MAX_MTU + 1), f"mtu: {MAX_MTU + 1} is out of range (must be in {MIN_MTU}..{MAX_MTU})"),
    ("jumbo", "mtu: 'jumbo' is not an integer"),
    ("9000.0", "mtu: '9000.0' is not an integer"),
])
def test_bad_mtu_names_file_line_and_range(tmp_path, value, problem):
    conf = tmp_path / "mtcp.conf"
    conf.write_text(BASE + "# jumbo frames\n" + f"mtu = {value}\n")
    with pytest.raises(ConfigError) as info:
        load_mtcp_conf(conf)
    assert (info.value.file, info.value.line) == (str(conf), 3)
    assert str(info.value) == f"{conf}:3: {problem}"


def test_bounds_are_accepted():
    assert parse_mtcp_conf(BASE + f"mtu = {MIN_MTU}\n").mss == 536     # RFC 9293 3.7.1 default
    assert parse_mtcp_conf(BASE + f"mtu = {MAX_MTU}\n").mss == MAX_MTU - 40


def test_every_link_type_carries_a_max_mtu_frame():
    frame = MAX_MTU + ETH_VLAN
    assert frame <= MAX_FRAME                       # UNIX links and shm rings refuse above it
    assert frame + 256 <= afpacket.RX_BLOCK          # one PACKET_MMAP block holds one, headers too
    assert frame + 48 <= afpacket.TX_SLOT            # and one transmit slot, its header too
    assert frame + 8 <= unix.MAX_MESSAGE             # one SOCK_SEQPACKET message holds one
    assert 8 * (frame + 8) <= shmring.MIN_CAPACITY   # a ring holds several records of one

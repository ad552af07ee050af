"""Device: pipeline validation against the Python mirror, whole-pipeline swaps, CPU-port routing."""

from __future__ import annotations

import pytest
from scapy.layers.l2 import ARP, Ether

from p4mtcp.dataplane.device import Device, P4DeviceConfig, unwrap_device_config
from p4mtcp.p4info import P4Schema
from p4mtcp.p4src import P4INFO
from test_p4runtime_server import CPU, STAND_IN, fixture_p4info


def nic_p4info():
    return P4Schema.from_file(P4INFO).p4info


def test_no_pipeline_processes_nothing():
    d = Device()
    assert d.schema is None
    assert d.process(1, bytes(60)) == []


def test_a_p4info_the_mirror_does_not_implement_is_refused():
    d = Device()
    with pytest.raises(ValueError, match="NicIngress"):
        d.set_pipeline(fixture_p4info(), b"")
    changed = nic_p4info()
    changed.tables[0].match_fields[0].bitwidth = 16  # port_role keyed on a wider port
    with pytest.raises(ValueError, match="NicIngress.port_role"):
        d.set_pipeline(changed, b"")
    assert d.pipeline is None
    d.set_pipeline(nic_p4info(), b"")
    assert set(d.schema.tables) >= {"NicIngress.port_role", "NicIngress.ipv4_lpm"}


def test_set_pipeline_swaps_in_fresh_state():
    d = Device(pipeline_module=STAND_IN)
    d.set_pipeline(fixture_p4info(), b"")
    old = d.pipeline
    old.tables["Ing.t_exact"].insert((1, 1), 0, d.schema.action("Ing.set_port"), (2,))
    assert d.process(1, b"\x00\x00\x00\x01") == [(2, b"\x00\x00\x00\x01")]
    d.set_pipeline(fixture_p4info(), b"")
    assert d.pipeline is not old and len(d.pipeline.tables["Ing.t_exact"]) == 0
    assert d.process(1, b"\x00\x00\x00\x01") == []  # the new pipeline's default: drop


def test_cpu_port_frames_go_to_the_packet_in_handler_when_there_is_one():
    d = Device(cpu_port=CPU)
    d.set_pipeline(nic_p4info(), b"")
    schema = d.schema
    d.pipeline.tables["NicIngress.port_role"].insert(
        (1,), 0, schema.action("NicIngress.set_network_port"), ())
    reply = bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:09")
                  / ARP(op=2, psrc="10.0.0.9", pdst="10.0.0.2"))
    (port, frame), = d.process(1, reply)  # no handler: returned to the caller
    assert port == CPU and frame[3:3 + len(reply)] == reply
    got: list[bytes] = []
    d.packet_in_handler = got.append
    assert d.process(1, reply) == []
    assert got == [frame]


def test_device_config_wrapped_or_raw():
    inner = b'{"target": "bmv2"}'
    assert unwrap_device_config(P4DeviceConfig(device_data=inner).SerializeToString()) == inner
    for raw in (inner, b"", b"\x00\x01\x02", "plain text".encode()):
        assert unwrap_device_config(raw) == raw

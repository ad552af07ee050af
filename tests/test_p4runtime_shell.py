"""The real p4runtime-shell against the embedded target running the NIC program.

The shell pushes the checked-in P4Info, then programs every table, gets the specification's
error codes, reads counters moved by real frames, and exchanges PacketOut/PacketIn.
"""

from __future__ import annotations

import time
import types

import grpc
import p4runtime_sh.shell as sh
import pytest
from google.rpc import code_pb2
from p4.v1 import p4runtime_pb2 as pb
from p4runtime_sh.p4runtime import P4RuntimeClient, P4RuntimeWriteException
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import ARP, Ether

from p4mtcp.dataplane.device import Device
from p4mtcp.dataplane.server import serve
from p4mtcp.p4info import P4Schema
from p4mtcp.p4src import P4INFO
from test_p4runtime_server import free_port

CPU = 255
SCHEMA = P4Schema.from_file(P4INFO)


@pytest.fixture(scope="module")
def nic(tmp_path_factory):
    device = Device(device_id=1, cpu_port=CPU)
    sent: list[list[tuple[int, bytes]]] = []  # what each packet-out made the program send
    device.packet_out_handler = lambda frame: sent.append(device.process(CPU, frame))
    address = f"127.0.0.1:{free_port()}"
    server = serve(device, address)
    # the embedded target needs no compiled program; the shell still sends a device config
    config = tmp_path_factory.mktemp("p4") / "mtcp_nic.json"
    config.write_text("{}")
    sh.setup(device_id=1, grpc_addr=address, election_id=(0, 1),
             config=sh.FwdPipeConfig(str(P4INFO), str(config)), verbose=False)
    yield types.SimpleNamespace(device=device, address=address, sent=sent)
    sh.teardown()
    server.stop(grace=None).wait(5)


@pytest.fixture(autouse=True)
def empty_tables(nic):
    yield
    for name in SCHEMA.tables:
        sh.TableEntry(name).read(lambda e: e.delete())


def field_value(f, i: int) -> str:
    """A valid shell match string for any match kind."""
    return {"exact": f"{i + 1}", "lpm": f"{10 << (f.bitwidth - 8)}/8", "ternary": f"{i + 1}&&&0xff",
            "range": "1..5", "optional": f"{i + 1}"}[f.match_type]


def entry(table_name: str, action_name: str, *params: int) -> sh.TableEntry:
    t = SCHEMA.table(table_name)
    te = sh.TableEntry(table_name)
    for i, f in enumerate(t.match_fields):
        te.match[f.name] = field_value(f, i)
    if t.needs_priority:
        te.priority = 10
    te.action = sh.Action(action_name)
    for p, v in zip(SCHEMA.action(action_name).params, params):
        te.action[p.name] = str(v)
    return te


def normalized(te: pb.TableEntry) -> tuple:
    """An entry with every byte string as an int: the shell sends padded values, the target
    answers with canonical ones, and both mean the same entry."""
    def ints(*values: bytes) -> tuple[int, ...]:
        return tuple(int.from_bytes(v, "big") for v in values)
    match = []
    for m in te.match:
        kind = m.WhichOneof("field_match_type")
        part = getattr(m, kind)
        match.append((m.field_id, kind, ints(*(v for _, v in part.ListFields()
                                               if isinstance(v, bytes))),
                      getattr(part, "prefix_len", None)))
    action = te.action.action
    return (te.table_id, te.priority, te.is_default_action, tuple(match), action.action_id,
            tuple((p.param_id, ints(p.value)) for p in action.params))


def canonical(te: pb.TableEntry) -> bool:
    """P4Runtime 8.4: no leading zero bytes (a zero value is one zero byte)."""
    values = [v for m in te.match for _, part in m.ListFields() if _.name != "field_id"
              for _, v in part.ListFields() if isinstance(v, bytes)]
    values += [p.value for p in te.action.action.params]
    return all(v and (len(v) == 1 or v[0] != 0) for v in values)


def write_codes(exc: P4RuntimeWriteException) -> list[int]:
    return [err.canonical_code for _, err in exc.errors]


def test_api_version(nic):
    assert sh.APIVersion() == "1.4.1"


@pytest.mark.parametrize("table_name", sorted(SCHEMA.tables))
def test_insert_modify_read_delete_every_table(nic, table_name):
    t = SCHEMA.table(table_name)
    actions = [SCHEMA.by_id(i) for i in t.action_ids if i not in t.default_only_action_ids]
    first = max(actions, key=lambda a: len(a.params))  # exercise parameters where there are some
    te = entry(table_name, first.name, *range(1, len(first.params) + 1))
    te.insert()
    (got,) = sh.TableEntry(table_name).read()
    assert normalized(got.msg()) == normalized(te.msg()) and canonical(got.msg())

    if first.params:
        changed = entry(table_name, first.name, *range(2, len(first.params) + 2))
    else:
        changed = entry(table_name, next(a for a in actions if a is not first).name)
    changed.modify()
    (got,) = sh.TableEntry(table_name).read()
    assert normalized(got.msg()) == normalized(changed.msg()) != normalized(te.msg())
    state = nic.device.pipeline.tables[table_name]
    assert state.get(state.entries()[0].key, 0).action.name == changed.action.action_name

    changed.delete()
    assert list(sh.TableEntry(table_name).read()) == []


def test_duplicate_insert_is_already_exists(nic):
    entry("NicIngress.reta", "NicIngress.steer_to_core", 16).insert()
    with pytest.raises(P4RuntimeWriteException) as e:
        entry("NicIngress.reta", "NicIngress.steer_to_core", 17).insert()
    assert write_codes(e.value) == [code_pb2.ALREADY_EXISTS]


def test_missing_delete_is_not_found(nic):
    with pytest.raises(P4RuntimeWriteException) as e:
        entry("NicIngress.neighbor", "NicIngress.set_dst_mac", 1).delete()
    assert write_codes(e.value) == [code_pb2.NOT_FOUND]


def test_non_primary_write_is_permission_denied(nic):
    backup = P4RuntimeClient(1, nic.address, (0, 0))  # lower election id than the shell's
    try:
        update = pb.Update(type=pb.Update.INSERT)
        update.entity.table_entry.CopyFrom(
            entry("NicIngress.port_mac", "NicIngress.set_src_mac", 2).msg())
        with pytest.raises(grpc.RpcError) as e:
            backup.write_update(update)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        backup.tear_down()
    assert list(sh.TableEntry("NicIngress.port_mac").read()) == []


def test_malformed_entries_are_invalid_argument(nic):
    partial = sh.TableEntry("NicIngress.flow_steer")(action="NicIngress.use_rss")
    partial.match["hdr.ipv4.src_addr"] = "10.0.0.1"  # the other exact fields are missing
    with pytest.raises(P4RuntimeWriteException) as e:
        partial.insert()
    assert write_codes(e.value) == [code_pb2.INVALID_ARGUMENT]
    assert "hdr.ipv4.dst_addr" in e.value.errors[0][1].message

    prioritised = entry("NicIngress.local_ipv4", "NicIngress.set_local")
    prioritised.priority = 5  # exact-only table: priority must be 0
    with pytest.raises(P4RuntimeWriteException) as e:
        prioritised.insert()
    assert write_codes(e.value) == [code_pb2.INVALID_ARGUMENT]

    no_params = sh.TableEntry("NicIngress.reta")(action="NicIngress.steer_to_core")
    no_params.match["meta.rss_bucket"] = "3"  # steer_to_core needs its port parameter
    with pytest.raises(P4RuntimeWriteException) as e:
        no_params.insert()
    assert write_codes(e.value) == [code_pb2.INVALID_ARGUMENT]


def test_default_entry_modify_read_and_reset(nic):
    default = sh.TableEntry("NicIngress.reta")(is_default=True)
    default.action = sh.Action("NicIngress.steer_to_core")
    default.action["port"] = "16"
    default.modify()
    (got,) = sh.TableEntry("NicIngress.reta")(is_default=True).read()
    assert got.is_default and got.action.action_name == "NicIngress.steer_to_core"
    assert nic.device.pipeline.tables["NicIngress.reta"].lookup((99,), 0) == \
        ("NicIngress.steer_to_core", (16,))
    with pytest.raises(P4RuntimeWriteException) as e:
        default.insert()
    assert write_codes(e.value) == [code_pb2.INVALID_ARGUMENT]
    sh.TableEntry("NicIngress.reta")(is_default=True).modify()  # no action: the program's default
    (got,) = sh.TableEntry("NicIngress.reta")(is_default=True).read()
    assert got.action.action_name == "NicIngress.no_core"


def counter(name: str, index: int) -> tuple[int, int]:
    c = sh.CounterEntry(name)
    c.index = index
    (got,) = c.read()
    return got.packet_count, got.byte_count


def test_counters_follow_frames(nic):
    frame = bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:02") / IP() / TCP())
    before = counter("NicIngress.drops", 4)
    assert nic.device.process(9, frame) == []  # port 9 has no port_role entry: unknown port
    assert counter("NicIngress.drops", 4) == (before[0] + 1, before[1] + len(frame))
    assert len(list(sh.CounterEntry("NicIngress.drops").read())) == 16  # index unset: all


def test_flow_steer_direct_counter(nic):
    role = sh.TableEntry("NicIngress.port_role")(action="NicIngress.set_network_port")
    role.match["ingress_port"] = "1"
    role.insert()
    local = sh.TableEntry("NicIngress.local_ipv4")(action="NicIngress.set_local")
    local.match["dst_addr"] = "10.0.0.2"
    local.insert()
    steer = sh.TableEntry("NicIngress.flow_steer")(action="NicIngress.steer_to_core")
    steer.match.set(src_addr="10.0.0.1", dst_addr="10.0.0.2", src_port="40000", dst_port="80")
    steer.action["port"] = "16"
    steer.insert()
    frame = bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:02")
                  / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=40000, dport=80) / b"hello")
    out = nic.device.process(1, frame)
    assert [port for port, _ in out] == [16]
    hits = sh.DirectCounterEntry("NicIngress.flow_steer_hits")
    hits.table_entry = steer
    (got,) = hits.read()
    assert (got.packet_count, got.byte_count) == (1, len(frame))


def test_packet_out_leaves_by_its_egress_port(nic):
    frame = bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src="02:00:00:00:00:01")
                  / ARP(op=1, psrc="10.0.0.2", pdst="10.0.0.9"))
    sh.PacketOut(payload=frame, egress_port="2").send()
    deadline = time.monotonic() + 5
    while not nic.sent and time.monotonic() < deadline:
        time.sleep(0.01)
    assert nic.sent == [[(2, frame)]]


def test_packet_in_reaches_the_shell(nic):
    packet_in = sh.PacketIn()
    role = sh.TableEntry("NicIngress.port_role")(action="NicIngress.set_network_port")
    role.match["ingress_port"] = "3"
    role.insert()
    frame = bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:09")
                  / ARP(op=2, hwsrc="02:00:00:00:00:09", psrc="10.0.0.9",
                        hwdst="02:00:00:00:00:01", pdst="10.0.0.2"))
    assert nic.device.process(3, frame) == []  # to the CPU port: handed to the server
    (msg,) = packet_in.sniff(timeout=2)
    assert msg.packet.payload[:len(frame)] == frame
    names = {m.id: m.name for m in SCHEMA.controller_header("packet_in").fields}
    md = {names[m.metadata_id]: m.value for m in msg.packet.metadata}
    assert md["ingress_port"] == b"\x03" and md["reason"] == b"\x01"  # 1: ARP

"""P4Runtime conformance of the embedded target at the gRPC level, with the p4runtime stubs.

The device runs a small stand-in program over the fixture P4Info (one table per match kind) so
that the server's wiring is tested apart from the NIC program: frames forward by `Ing.t_exact`,
go to the CPU port with a packet_in header, and come from it with a packet_out header.
"""

from __future__ import annotations

import asyncio
import queue
import socket
import threading
import time
import types

import grpc
import pytest
from google.protobuf import text_format
from google.rpc import code_pb2, status_pb2
from p4.config.v1 import p4info_pb2
from p4.v1 import p4runtime_pb2 as pb
from p4.v1 import p4runtime_pb2_grpc

from p4mtcp.dataplane.device import Device, P4DeviceConfig
from p4mtcp.dataplane.server import NO_PIPELINE, PACKET_IN_BACKLOG, serve
from p4mtcp.dataplane.streams import Stream
from test_tables import FIXTURE_P4INFO

CPU = 255
BIG = 256 * 1024 * 1024
T_EXACT, T_LPM, T_TERNARY, T_RANGE, T_OPTIONAL, T_CONST = 1001, 1002, 1003, 1004, 1005, 1006
SET_PORT, DROP, SET_NEXT_HOP, TO_CPU = 2001, 2002, 2003, 2004
RX, RX_BYTES, HITS = 3001, 3002, 4001
A = pb.SetForwardingPipelineConfigRequest


class StandIn:
    """Just enough of a NIC program to move frames between ports, the CPU and the counters."""

    def __init__(self, tables, counters, cpu_port=CPU):
        self.t_exact, self.cpu_port = tables["Ing.t_exact"], cpu_port
        self.rx, self.rx_bytes = counters["Ing.rx"], counters["Ing.rx_bytes"]

    def process(self, in_port: int, frame: bytes) -> list[tuple[int, bytes]]:
        if in_port == self.cpu_port:  # packet_out { bit<9> egress_port; bit<7> _pad; }
            return [(int.from_bytes(frame[:2], "big") >> 7, frame[2:])]
        self.rx.count(in_port, len(frame))
        self.rx_bytes.count(in_port % 4, len(frame))
        action, params = self.t_exact.lookup((in_port, int.from_bytes(frame[:4], "big")), len(frame))
        if action == "Ing.set_port":
            return [(params[0], frame)]
        if action == "Ing.to_cpu":  # packet_in { bit<9> ingress_port; bit<7> _pad; bit<8> reason; }
            return [(self.cpu_port, ((in_port << 15) | 1).to_bytes(3, "big") + frame)]
        return []


def _validate(schema) -> None:
    if "Ing.t_exact" not in schema.tables:
        raise ValueError("P4Info does not match the embedded pipeline: no table Ing.t_exact")


STAND_IN = types.SimpleNamespace(validate=_validate, NicPipeline=StandIn)


def fixture_p4info() -> p4info_pb2.P4Info:
    return text_format.Parse(FIXTURE_P4INFO, p4info_pb2.P4Info())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    """A bare P4Runtime client: one channel, one stream, queues for what the stream brings."""

    def __init__(self, address: str, device_id: int = 1):
        self.device_id = device_id
        self.channel = grpc.insecure_channel(address, options=[
            ("grpc.max_send_message_length", BIG), ("grpc.max_receive_message_length", BIG)])
        self.stub = p4runtime_pb2_grpc.P4RuntimeStub(self.channel)
        self.election = (0, 0)
        self._out: queue.Queue = queue.Queue()
        self.inbox: queue.Queue = queue.Queue()
        self.stream = self.stub.StreamChannel(iter(self._out.get, None))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for msg in self.stream:
                self.inbox.put(msg)
        except grpc.RpcError as e:
            self.inbox.put(e)

    def send(self, msg: pb.StreamMessageRequest) -> None:
        self._out.put(msg)

    def receive(self, kind: str, timeout: float = 3.0):
        """The next stream message of this kind (others are dropped); an RpcError if the stream ended."""
        while True:
            msg = self.inbox.get(timeout=timeout)
            if isinstance(msg, grpc.RpcError) or msg.WhichOneof("update") == kind:
                return msg

    def arbitrate(self, low: int, device_id: int | None = None, role: str = ""):
        self.election = (0, low)
        req = pb.StreamMessageRequest()
        req.arbitration.device_id = self.device_id if device_id is None else device_id
        req.arbitration.election_id.low = low
        if role:
            req.arbitration.role.name = role
        self.send(req)
        return self.receive("arbitration")

    def _stamp(self, req):
        req.device_id = self.device_id
        req.election_id.high, req.election_id.low = self.election
        return req

    def set_pipeline(self, p4info=None, device_config: bytes = b"cfg", action=A.VERIFY_AND_COMMIT,
                     cookie: int = 0):
        req = self._stamp(A(action=action))
        if p4info is not None:
            req.config.p4info.CopyFrom(p4info)
        req.config.p4_device_config = device_config
        req.config.cookie.cookie = cookie
        return self.stub.SetForwardingPipelineConfig(req)

    def commit(self, config: pb.ForwardingPipelineConfig | None = None):
        req = self._stamp(A(action=A.COMMIT))
        if config is not None:
            req.config.CopyFrom(config)
        return self.stub.SetForwardingPipelineConfig(req)

    def get_pipeline(self, response_type=pb.GetForwardingPipelineConfigRequest.ALL):
        return self.stub.GetForwardingPipelineConfig(pb.GetForwardingPipelineConfigRequest(
            device_id=self.device_id, response_type=response_type)).config

    def write(self, *updates: pb.Update, device_id: int | None = None,
              timeout: float | None = None):
        req = self._stamp(pb.WriteRequest(updates=updates))
        if device_id is not None:
            req.device_id = device_id
        return self.stub.Write(req, timeout=timeout)

    def read(self, *entities: pb.Entity, device_id: int | None = None,
             timeout: float | None = None) -> list[pb.Entity]:
        req = pb.ReadRequest(device_id=self.device_id if device_id is None else device_id,
                             entities=entities)
        return [e for rep in self.stub.Read(req, timeout=timeout) for e in rep.entities]

    def close(self) -> None:
        self._out.put(None)
        self.stream.cancel()
        self.channel.close()


# --- message builders -------------------------------------------------------------------------

def update(kind: int, **entity) -> pb.Update:
    return pb.Update(type=kind, entity=pb.Entity(**entity))


INSERT, MODIFY, DELETE = pb.Update.INSERT, pb.Update.MODIFY, pb.Update.DELETE


def exact_entry(port: bytes, tag: bytes, action: int = SET_PORT, *params: bytes) -> pb.TableEntry:
    te = pb.TableEntry(table_id=T_EXACT)
    te.match.add(field_id=1, exact=pb.FieldMatch.Exact(value=port))
    te.match.add(field_id=2, exact=pb.FieldMatch.Exact(value=tag))
    if action:
        te.action.action.action_id = action
        for i, v in enumerate(params or ((b"\x01",) if action == SET_PORT else ()), 1):
            te.action.action.params.add(param_id=i, value=v)
    return te


def lpm_entry(value: bytes, plen: int, next_hop: bytes = b"\x01", port: bytes = b"\x02"):
    te = pb.TableEntry(table_id=T_LPM)
    te.match.add(field_id=1, lpm=pb.FieldMatch.LPM(value=value, prefix_len=plen))
    te.action.action.action_id = SET_NEXT_HOP
    te.action.action.params.add(param_id=1, value=next_hop)
    te.action.action.params.add(param_id=2, value=port)
    return te


def ternary_entry(value: bytes, mask: bytes, proto: bytes, priority: int, port: bytes = b"\x01"):
    te = pb.TableEntry(table_id=T_TERNARY, priority=priority)
    te.match.add(field_id=1, ternary=pb.FieldMatch.Ternary(value=value, mask=mask))
    te.match.add(field_id=2, exact=pb.FieldMatch.Exact(value=proto))
    te.action.action.action_id = SET_PORT
    te.action.action.params.add(param_id=1, value=port)
    return te


def write_error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        call()
    return e.value


def per_update_errors(err: grpc.RpcError) -> list[pb.Error]:
    """The p4.v1.Error list of a failed Write (P4Runtime 12.3), from grpc-status-details-bin."""
    assert err.code() == grpc.StatusCode.UNKNOWN
    details = dict(err.trailing_metadata())["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(details)
    assert status.code == code_pb2.UNKNOWN
    errors = []
    for any_ in status.details:
        e = pb.Error()
        assert any_.Unpack(e)
        errors.append(e)
    return errors


# --- fixtures ---------------------------------------------------------------------------------

@pytest.fixture
def target():
    device = Device(device_id=1, cpu_port=CPU, pipeline_module=STAND_IN)
    address = f"127.0.0.1:{free_port()}"
    server = serve(device, address)
    clients: list[Client] = []

    def connect(device_id: int = 1) -> Client:
        c = Client(address, device_id)
        clients.append(c)
        return c

    yield types.SimpleNamespace(device=device, address=address, connect=connect, server=server)
    for c in clients:
        c.close()
    server.stop(grace=None).wait(5)


@pytest.fixture
def primary(target):
    c = target.connect()
    assert c.arbitrate(1).arbitration.status.code == code_pb2.OK
    c.set_pipeline(fixture_p4info())
    return c


# --- capabilities, pipeline config --------------------------------------------------------------

def test_capabilities_reports_the_p4runtime_version(target):
    c = target.connect()
    rep = c.stub.Capabilities(pb.CapabilitiesRequest())
    assert rep.p4runtime_api_version == "1.4.1"


def test_nothing_works_before_a_pipeline(target):
    c = target.connect()
    c.arbitrate(1)
    err = write_error(lambda: c.write(update(INSERT, table_entry=exact_entry(b"\x01", b"\x01"))))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and err.details() == NO_PIPELINE
    err = write_error(lambda: c.read(pb.Entity(table_entry=pb.TableEntry())))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and err.details() == NO_PIPELINE
    assert write_error(c.get_pipeline).code() == grpc.StatusCode.FAILED_PRECONDITION


def test_wrong_device_id_is_not_found(primary, target):
    err = write_error(lambda: primary.write(update(INSERT, table_entry=exact_entry(b"\x01", b"\x01")),
                                            device_id=7))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "device id 7" in err.details()
    assert write_error(lambda: primary.read(pb.Entity(table_entry=pb.TableEntry()),
                                            device_id=7)).code() == grpc.StatusCode.NOT_FOUND
    other = target.connect(device_id=7)
    err = other.arbitrate(1)
    assert isinstance(err, grpc.RpcError) and err.code() == grpc.StatusCode.NOT_FOUND


def test_pipeline_config_actions(target):
    c = target.connect()
    c.arbitrate(1)
    c.set_pipeline(fixture_p4info(), action=A.VERIFY)
    assert target.device.pipeline is None  # VERIFY checks only
    err = write_error(c.commit)  # P4Runtime spec: COMMIT with no saved config is NOT_FOUND
    assert err.code() == grpc.StatusCode.NOT_FOUND and "VERIFY_AND_SAVE" in err.details()
    c.set_pipeline(fixture_p4info(), action=A.VERIFY_AND_SAVE, cookie=5)
    assert target.device.pipeline is None
    err = write_error(lambda: c.commit(pb.ForwardingPipelineConfig(p4_device_config=b"x")))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT  # and with a config, INVALID_ARGUMENT
    assert target.device.pipeline is None
    c.commit()
    assert c.get_pipeline().cookie.cookie == 5
    c.write(update(INSERT, table_entry=exact_entry(b"\x01", b"\x01")))
    c.set_pipeline(fixture_p4info(), b"new", action=A.RECONCILE_AND_COMMIT, cookie=6)
    assert len(c.read(pb.Entity(table_entry=pb.TableEntry(table_id=T_EXACT)))) == 1  # kept
    assert c.get_pipeline().p4_device_config == b"new"
    changed = fixture_p4info()
    changed.tables[1].size = 7
    err = write_error(lambda: c.set_pipeline(changed, action=A.RECONCILE_AND_COMMIT))
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED
    c.set_pipeline(fixture_p4info())  # VERIFY_AND_COMMIT: a fresh, empty pipeline
    assert c.read(pb.Entity(table_entry=pb.TableEntry(table_id=T_EXACT))) == []
    assert write_error(lambda: c.set_pipeline(fixture_p4info(), action=A.UNSPECIFIED)).code() \
        == grpc.StatusCode.INVALID_ARGUMENT


def test_pipeline_the_mirror_does_not_implement_is_refused(target):
    c = target.connect()
    c.arbitrate(1)
    p4info = fixture_p4info()
    del p4info.tables[0]
    del p4info.direct_counters[:]
    err = write_error(lambda: c.set_pipeline(p4info))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "no table Ing.t_exact" in err.details()
    assert target.device.pipeline is None


def test_device_config_raw_or_wrapped_and_get_response_types(target):
    c = target.connect()
    c.arbitrate(1)
    wrapped = P4DeviceConfig(device_data=b'{"program": "mtcp_nic"}')
    wrapped.extras.kv["target"] = "embedded"
    c.set_pipeline(fixture_p4info(), wrapped.SerializeToString(), cookie=42)
    assert target.device.pipeline.device_data == b'{"program": "mtcp_nic"}'
    R = pb.GetForwardingPipelineConfigRequest
    full = c.get_pipeline(R.ALL)
    assert full.p4info == fixture_p4info() and full.cookie.cookie == 42
    assert full.p4_device_config == wrapped.SerializeToString()  # returned as it was sent
    only = c.get_pipeline(R.COOKIE_ONLY)
    assert only.cookie.cookie == 42 and not only.HasField("p4info") and not only.p4_device_config
    assert not c.get_pipeline(R.P4INFO_AND_COOKIE).p4_device_config
    assert not c.get_pipeline(R.DEVICE_CONFIG_AND_COOKIE).HasField("p4info")
    c.set_pipeline(fixture_p4info(), b'{"raw": true}')
    assert target.device.pipeline.device_data == b'{"raw": true}'


def test_big_messages_pass(target):
    c = target.connect()
    c.arbitrate(1)
    blob = bytes(range(256)) * (6 * 1024 * 1024 // 256)  # 6 MiB, past gRPC's 4 MiB default
    c.set_pipeline(fixture_p4info(), blob)
    assert c.get_pipeline().p4_device_config == blob


# --- arbitration ------------------------------------------------------------------------------

def test_arbitration_two_clients(target):
    a, b = target.connect(), target.connect()
    rep = a.arbitrate(10)
    assert rep.arbitration.status.code == code_pb2.OK
    a.set_pipeline(fixture_p4info())
    rep = b.arbitrate(5)
    assert rep.arbitration.status.code == code_pb2.ALREADY_EXISTS  # backup
    assert rep.arbitration.election_id.low == 10
    err = write_error(lambda: b.write(update(INSERT, table_entry=exact_entry(b"\x01", b"\x01"))))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert write_error(lambda: b.set_pipeline(fixture_p4info())).code() \
        == grpc.StatusCode.PERMISSION_DENIED
    assert b.read(pb.Entity(table_entry=pb.TableEntry())) == []  # backups may read

    rep = b.arbitrate(20)  # b takes over; both are told
    assert rep.arbitration.status.code == code_pb2.OK
    note = a.receive("arbitration")
    assert note.arbitration.status.code == code_pb2.ALREADY_EXISTS
    assert note.arbitration.election_id.low == 20
    assert write_error(lambda: a.write(update(INSERT, table_entry=exact_entry(b"\x01", b"\x01")))
                       ).code() == grpc.StatusCode.PERMISSION_DENIED
    b.write(update(INSERT, table_entry=exact_entry(b"\x01", b"\x01")))

    b.close()  # the primary leaves: the highest remaining client becomes primary
    assert a.receive("arbitration").arbitration.status.code == code_pb2.OK
    a.write(update(INSERT, table_entry=exact_entry(b"\x02", b"\x01")))


def test_duplicate_election_id_ends_the_stream(target):
    a, b = target.connect(), target.connect()
    a.arbitrate(3)
    err = b.arbitrate(3)
    assert isinstance(err, grpc.RpcError) and err.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_roles_elect_separately(target):
    a, b = target.connect(), target.connect()
    assert a.arbitrate(1).arbitration.status.code == code_pb2.OK
    rep = b.arbitrate(1, role="agent")
    assert rep.arbitration.status.code == code_pb2.OK and rep.arbitration.role.name == "agent"


def test_write_without_arbitration_is_denied(target):
    c = target.connect()
    err = write_error(lambda: c.write(update(INSERT, table_entry=exact_entry(b"\x01", b"\x01"))))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED


# --- writes -----------------------------------------------------------------------------------

def test_per_update_errors_in_grpc_status_details(primary):
    good1 = update(INSERT, table_entry=exact_entry(b"\x01", b"\x01"))
    dup = update(INSERT, table_entry=exact_entry(b"\x01", b"\x01"))
    missing = update(DELETE, table_entry=exact_entry(b"\x09", b"\x09"))
    malformed = update(INSERT, table_entry=lpm_entry(b"\x0a\x00\x00\x01", 8))
    good2 = update(INSERT, table_entry=lpm_entry(b"\x0a\x00\x00\x00", 8))
    err = write_error(lambda: primary.write(good1, dup, missing, malformed, good2))
    errors = per_update_errors(err)
    assert [e.canonical_code for e in errors] == [
        code_pb2.OK, code_pb2.ALREADY_EXISTS, code_pb2.NOT_FOUND, code_pb2.INVALID_ARGUMENT,
        code_pb2.OK]
    assert "Ing.t_lpm" in errors[3].message and "hdr.dst" in errors[3].message
    assert errors[0].message == "" and errors[4].message == ""
    # CONTINUE_ON_ERROR: the good updates were applied
    assert len(primary.read(pb.Entity(table_entry=pb.TableEntry(table_id=T_EXACT)))) == 1
    assert len(primary.read(pb.Entity(table_entry=pb.TableEntry(table_id=T_LPM)))) == 1


def single_error(client: Client, *updates: pb.Update) -> pb.Error:
    (e,) = per_update_errors(write_error(lambda: client.write(*updates)))
    return e


def test_modify_missing_and_full_table(primary):
    e = single_error(primary, update(MODIFY, table_entry=exact_entry(b"\x01", b"\x01")))
    assert e.canonical_code == code_pb2.NOT_FOUND
    primary.write(*(update(INSERT, table_entry=exact_entry(bytes([i]), b"\x00")) for i in range(4)))
    e = single_error(primary, update(INSERT, table_entry=exact_entry(b"\x05", b"\x00")))
    assert e.canonical_code == code_pb2.RESOURCE_EXHAUSTED and "Ing.t_exact" in e.message


@pytest.mark.parametrize("make,code,words", [
    (lambda: update(INSERT, table_entry=pb.TableEntry(table_id=999)),
     code_pb2.INVALID_ARGUMENT, "no table with id 999"),
    (lambda: update(INSERT, table_entry=exact_entry(b"\x01", b"\x01", 0)),
     code_pb2.INVALID_ARGUMENT, "entry has no action"),
    # P4Runtime spec, Bytestrings: wider than the field, or empty, is OUT_OF_RANGE
    (lambda: update(INSERT, table_entry=exact_entry(b"\x02\x00", b"\x01")),
     code_pb2.OUT_OF_RANGE, "field hdr.port: 0x0200 does not fit in bit<9>"),
    (lambda: update(INSERT, table_entry=exact_entry(b"\x01", b"")),
     code_pb2.OUT_OF_RANGE, "empty byte string"),
    (lambda: update(INSERT, table_entry=exact_entry(b"\x01", b"\x01", SET_PORT, b"\x00\x02\x00")),
     code_pb2.OUT_OF_RANGE, "parameter port of Ing.set_port"),
    (lambda: update(INSERT, table_entry=exact_entry(b"\x01", b"\x01", SET_NEXT_HOP)),
     code_pb2.INVALID_ARGUMENT, "not an action of this table"),
    (lambda: update(INSERT, table_entry=ternary_entry(b"\x01", b"\x01", b"\x06", 0)),
     code_pb2.INVALID_ARGUMENT, "priority > 0"),
    (lambda: pb.Update(type=pb.Update.UNSPECIFIED,
                       entity=pb.Entity(table_entry=exact_entry(b"\x01", b"\x01"))),
     code_pb2.INVALID_ARGUMENT, "UNSPECIFIED"),
    (lambda: pb.Update(type=INSERT), code_pb2.INVALID_ARGUMENT, "no entity"),
    (lambda: update(INSERT, register_entry=pb.RegisterEntry(register_id=1)),
     code_pb2.UNIMPLEMENTED, "register_entry"),
    (lambda: update(INSERT, counter_entry=pb.CounterEntry(counter_id=RX)),
     code_pb2.INVALID_ARGUMENT, "can only be modified"),
])
def test_malformed_updates_say_what(primary, make, code, words):
    e = single_error(primary, make())
    assert e.canonical_code == code and words in e.message


# --- reads ------------------------------------------------------------------------------------

def test_padded_values_accepted_canonical_values_returned(primary):
    primary.write(update(INSERT, table_entry=exact_entry(b"\x00\x03", b"\x00\x00\x00\x07",
                                                         SET_PORT, b"\x00\x05")),
                  update(INSERT, table_entry=ternary_entry(b"\x00\x02", b"\x00\x0f", b"\x06", 9)))
    (e,) = primary.read(pb.Entity(table_entry=pb.TableEntry(table_id=T_EXACT)))
    assert [m.exact.value for m in e.table_entry.match] == [b"\x03", b"\x07"]
    assert e.table_entry.action.action.params[0].value == b"\x05"
    (e,) = primary.read(pb.Entity(table_entry=pb.TableEntry(table_id=T_TERNARY)))
    assert e.table_entry.priority == 9
    assert (e.table_entry.match[0].ternary.value, e.table_entry.match[0].ternary.mask) == \
        (b"\x02", b"\x0f")
    # the canonical form reads back the same entry (read/write symmetry)
    assert primary.read(pb.Entity(table_entry=e.table_entry)) == [e]


def test_wildcard_reads(primary):
    primary.write(update(INSERT, table_entry=exact_entry(b"\x01", b"\x01")),
                  update(INSERT, table_entry=exact_entry(b"\x02", b"\x01")),
                  update(INSERT, table_entry=lpm_entry(b"\x0a\x00\x00\x00", 8)))
    everything = primary.read(pb.Entity(table_entry=pb.TableEntry()))  # table_id 0: all tables
    assert sorted(e.table_entry.table_id for e in everything) == [T_EXACT, T_EXACT, T_LPM]
    assert all(not e.table_entry.is_default_action for e in everything)
    assert len(primary.read(pb.Entity(table_entry=pb.TableEntry(table_id=T_EXACT)))) == 2
    one = primary.read(pb.Entity(table_entry=exact_entry(b"\x02", b"\x01", 0)))
    assert len(one) == 1 and one[0].table_entry.match[0].exact.value == b"\x02"
    assert primary.read(pb.Entity(table_entry=exact_entry(b"\x03", b"\x01", 0))) == []
    primary.write(update(DELETE, table_entry=exact_entry(b"\x01", b"\x01", 0)))
    assert len(primary.read(pb.Entity(table_entry=pb.TableEntry(table_id=T_EXACT)))) == 1


def test_default_entries(primary):
    default = pb.TableEntry(table_id=T_LPM, is_default_action=True)
    (e,) = primary.read(pb.Entity(table_entry=default))
    assert e.table_entry.is_default_action and e.table_entry.action.action.action_id == DROP
    for kind in (INSERT, DELETE):  # P4Runtime 9.1.4: the default entry can only be modified
        err = single_error(primary, update(kind, table_entry=default))
        assert err.canonical_code == code_pb2.INVALID_ARGUMENT
    changed = pb.TableEntry(table_id=T_LPM, is_default_action=True)
    changed.action.action.action_id = SET_NEXT_HOP
    changed.action.action.params.add(param_id=1, value=b"\x00\x00\x00\x09")
    changed.action.action.params.add(param_id=2, value=b"\x00\x04")
    primary.write(update(MODIFY, table_entry=changed))
    (e,) = primary.read(pb.Entity(table_entry=default))
    assert [p.value for p in e.table_entry.action.action.params] == [b"\x09", b"\x04"]
    primary.write(update(MODIFY, table_entry=default))  # no action: back to the program's
    (e,) = primary.read(pb.Entity(table_entry=default))
    assert e.table_entry.action.action.action_id == DROP
    const = pb.TableEntry(table_id=T_CONST, is_default_action=True)
    const.action.action.action_id = DROP
    assert single_error(primary, update(MODIFY, table_entry=const)).canonical_code \
        == code_pb2.PERMISSION_DENIED
    assert primary.read(pb.Entity(table_entry=pb.TableEntry(table_id=T_LPM))) == []


def test_default_entry_change_reaches_the_data_plane(primary, target):
    t = target.device.pipeline.tables["Ing.t_exact"]
    assert target.device.process(1, b"\x00\x00\x00\x01data") == []  # default: drop
    changed = pb.TableEntry(table_id=T_EXACT, is_default_action=True)
    changed.action.action.action_id = SET_PORT
    changed.action.action.params.add(param_id=1, value=b"\x06")
    primary.write(update(MODIFY, table_entry=changed))
    assert target.device.process(1, b"\x00\x00\x00\x01data") == [(6, b"\x00\x00\x00\x01data")]
    assert t.default.counts == [0, 0]  # as on BMv2: the default action's runs are not counted


# --- counters ---------------------------------------------------------------------------------

def test_counters_and_direct_counters(primary, target):
    primary.write(update(INSERT, table_entry=exact_entry(b"\x02", b"\x0a\x00\x00\x01",
                                                         SET_PORT, b"\x03")))
    dev = target.device
    frames = [b"\x0a\x00\x00\x01" + bytes(60), b"\x0a\x00\x00\x01" + bytes(100),
              b"\x0b\x00\x00\x01" + bytes(10)]
    outs = [dev.process(2, f) for f in frames]
    assert outs == [[(3, frames[0])], [(3, frames[1])], []]

    (ce,) = primary.read(pb.Entity(counter_entry=pb.CounterEntry(
        counter_id=RX, index=pb.Index(index=2))))
    assert (ce.counter_entry.data.packet_count, ce.counter_entry.data.byte_count) == (3, 182)
    all_rx = primary.read(pb.Entity(counter_entry=pb.CounterEntry(counter_id=RX)))
    assert [e.counter_entry.index.index for e in all_rx] == list(range(8))
    everything = primary.read(pb.Entity(counter_entry=pb.CounterEntry()))  # counter_id 0
    assert len(everything) == 8 + 4
    byte_only = [e.counter_entry for e in everything if e.counter_entry.counter_id == RX_BYTES]
    # a BYTES counter reports bytes only
    assert [(d.data.packet_count, d.data.byte_count) for d in byte_only] == \
        [(0, 0), (0, 0), (0, 182), (0, 0)]

    entry = exact_entry(b"\x02", b"\x0a\x00\x00\x01", 0)
    (dc,) = primary.read(pb.Entity(direct_counter_entry=pb.DirectCounterEntry(table_entry=entry)))
    assert (dc.direct_counter_entry.data.packet_count, dc.direct_counter_entry.data.byte_count) \
        == (2, 168)
    wild = primary.read(pb.Entity(direct_counter_entry=pb.DirectCounterEntry(
        table_entry=pb.TableEntry(table_id=T_EXACT))))
    assert len(wild) == 1
    (d,) = primary.read(pb.Entity(direct_counter_entry=pb.DirectCounterEntry(
        table_entry=pb.TableEntry(table_id=T_EXACT, is_default_action=True))))
    # the miss ran the default action; as on BMv2 (counters move only on a hit) it is not counted
    assert (d.direct_counter_entry.data.packet_count, d.direct_counter_entry.data.byte_count) \
        == (0, 0)
    asked = pb.TableEntry(table_id=T_EXACT)
    asked.counter_data.SetInParent()
    (te,) = primary.read(pb.Entity(table_entry=asked))
    assert te.table_entry.counter_data.packet_count == 2

    # counters are writable (MODIFY), e.g. to clear them
    primary.write(update(MODIFY, counter_entry=pb.CounterEntry(counter_id=RX)))
    primary.write(update(MODIFY, direct_counter_entry=pb.DirectCounterEntry(table_entry=entry)))
    assert all(e.counter_entry.data.packet_count == 0 for e in primary.read(
        pb.Entity(counter_entry=pb.CounterEntry(counter_id=RX))))
    (dc,) = primary.read(pb.Entity(direct_counter_entry=pb.DirectCounterEntry(table_entry=entry)))
    assert dc.direct_counter_entry.data.packet_count == 0


def test_counter_errors(primary):
    err = write_error(lambda: primary.read(pb.Entity(counter_entry=pb.CounterEntry(
        counter_id=RX, index=pb.Index(index=8)))))
    assert err.code() == grpc.StatusCode.OUT_OF_RANGE
    err = write_error(lambda: primary.read(pb.Entity(counter_entry=pb.CounterEntry(counter_id=77))))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "77" in err.details()
    err = write_error(lambda: primary.read(pb.Entity(direct_counter_entry=pb.DirectCounterEntry(
        table_entry=pb.TableEntry(table_id=T_LPM)))))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "no direct counter" in err.details()


# --- packet I/O -------------------------------------------------------------------------------

def test_packet_out_from_primary_reaches_the_program(primary, target):
    sent: list[list[tuple[int, bytes]]] = []
    target.device.packet_out_handler = lambda frame: sent.append(target.device.process(CPU, frame))
    req = pb.StreamMessageRequest()
    req.packet.payload = b"\xff" * 6 + b"payload"
    req.packet.metadata.add(metadata_id=1, value=b"\x00\x04")  # egress_port 4, padded
    primary.send(req)
    # a fence: the stream is handled in order, so the packet-out was handled before this reply
    primary.send(pb.StreamMessageRequest(arbitration=pb.MasterArbitrationUpdate(
        device_id=1, election_id=pb.Uint128(low=1))))
    primary.receive("arbitration")
    assert sent == [[(4, b"\xff" * 6 + b"payload")]]

    backup = target.connect()
    backup.arbitrate(0)
    backup.send(req)  # not primary: refused on the stream
    err = backup.receive("error")
    assert err.error.canonical_code == code_pb2.PERMISSION_DENIED
    assert err.error.packet_out.packet_out.payload == req.packet.payload
    bad = pb.StreamMessageRequest()
    bad.packet.metadata.add(metadata_id=9, value=b"\x01")
    primary.send(bad)
    assert primary.receive("error").error.canonical_code == code_pb2.INVALID_ARGUMENT
    for value in (b"\x02\x00", b""):  # P4Runtime spec, Bytestrings: too wide or empty
        wide = pb.StreamMessageRequest()
        wide.packet.metadata.add(metadata_id=1, value=value)  # egress_port is bit<9>
        primary.send(wide)
        err = primary.receive("error").error
        assert err.canonical_code == code_pb2.OUT_OF_RANGE and "egress_port" in err.message
    assert len(sent) == 1


def test_packet_in_goes_to_the_primary_only(primary, target):
    primary.write(update(INSERT, table_entry=exact_entry(b"\x05", b"\x0a\x00\x00\x02", TO_CPU)))
    backup = target.connect()
    backup.arbitrate(0)
    frame = b"\x0a\x00\x00\x02" + b"arp?" * 10
    assert target.device.process(5, frame) == []  # went to the packet-in handler
    msg = primary.receive("packet")
    assert msg.packet.payload == frame
    md = {m.metadata_id: m.value for m in msg.packet.metadata}
    assert md == {1: b"\x05", 2: b"\x00", 3: b"\x01"}  # canonical byte strings
    with pytest.raises(queue.Empty):
        backup.receive("packet", timeout=0.3)


def test_packet_in_without_a_primary_is_returned_to_the_caller(primary, target):
    primary.write(update(INSERT, table_entry=exact_entry(b"\x05", b"\x0a\x00\x00\x02", TO_CPU)))
    primary.close()
    deadline = time.monotonic() + 5
    while target.device.packet_in_handler is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    frame = b"\x0a\x00\x00\x02" + b"arp?"
    assert target.device.process(5, frame) == [(CPU, b"\x02\x80\x01" + frame)]


def test_packet_ins_for_a_client_that_does_not_read_are_bounded(target):
    """A stalled controller costs a bounded queue, and the drops are counted, not hidden."""
    dev = target.device
    dev.set_pipeline(fixture_p4info(), b"")
    schema = dev.schema
    dev.pipeline.tables["Ing.t_exact"].insert((5, 1), 0, schema.action("Ing.to_cpu"), ())
    servicer = target.server.p4runtime
    stalled = Stream(asyncio.new_event_loop())  # a loop that never runs
    servicer.arbitration.update(stalled, 1, "", 9)  # primary, but nobody drains its queue
    extra = 25
    for _ in range(PACKET_IN_BACKLOG + extra):
        assert dev.process(5, b"\x00\x00\x00\x01") == []
    assert stalled.backlog == PACKET_IN_BACKLOG
    assert servicer.packet_in_dropped == extra + 1  # + the slot of the arbitration reply


def test_a_taken_address_is_an_error_not_a_shared_port(target):
    with pytest.raises(OSError, match="cannot listen on"):
        serve(Device(), target.address)


def test_only_continue_on_error_atomicity(primary):
    req = primary._stamp(pb.WriteRequest(
        updates=[update(INSERT, table_entry=exact_entry(b"\x01", b"\x01"))],
        atomicity=pb.WriteRequest.ROLLBACK_ON_ERROR))
    err = write_error(lambda: primary.stub.Write(req))
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED and "CONTINUE_ON_ERROR" in err.details()
    assert primary.read(pb.Entity(table_entry=pb.TableEntry(table_id=T_EXACT))) == []

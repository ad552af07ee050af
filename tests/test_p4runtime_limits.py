"""What the embedded target refuses and how it reports it, each with the status code the
P4Runtime spec names: P4Infos it cannot realize (SetForwardingPipelineConfig: INVALID_ARGUMENT),
and the per-update errors of Write batches too big for a per-update list in a client's trailers.
"""

from __future__ import annotations

import random
import tracemalloc

import grpc
import pytest
from google.rpc import code_pb2
from p4.v1 import p4runtime_pb2 as pb
from p4.v1 import p4runtime_pb2_grpc

from p4mtcp.control.p4rt import P4RuntimeError
from p4mtcp.dataplane.device import MAX_BITWIDTH, MAX_COUNTER_SIZE, MAX_TABLE_SIZE, Device
from p4mtcp.write_errors import (DETAILS_BUDGET, format_indexes, parse_indexes, update_errors,
                                 write_status)
from test_p4runtime_server import (INSERT, STAND_IN, fixture_p4info, lpm_entry,  # noqa: F401
                                   primary, target, update, write_error)


def _set(path: str, value):
    """A P4Info edit: `path` is attribute/index steps from the message, e.g. "tables.1.size"."""
    def edit(p4info):
        *steps, last = path.split(".")
        obj = p4info
        for step in steps:
            obj = obj[int(step)] if step.isdigit() else getattr(obj, step)
        setattr(obj, last, value)
    return edit


@pytest.mark.parametrize("edit,words", [
    (_set("counters.0.size", 50_000_000),
     f"counter Ing.rx: size 50000000 not in 1..{MAX_COUNTER_SIZE}"),
    (_set("counters.0.size", 0), "counter Ing.rx: size 0 not in"),
    (_set("counters.1.size", -5), "counter Ing.rx_bytes: size -5 not in"),
    (_set("tables.1.size", 0), "table Ing.t_lpm: size 0 not in"),
    (_set("tables.1.size", 2 * MAX_TABLE_SIZE), f"size {2 * MAX_TABLE_SIZE} not in"),
    (_set("tables.1.preamble.id", 1001), "id 0x3e9 is used by both 'Ing.t_exact' and 'Ing.t_lpm'"),
    (_set("actions.1.preamble.id", 2001), "is used by both 'Ing.set_port' and 'Ing.drop'"),
    (_set("counters.1.preamble.id", 1002), "is used by both 'Ing.t_lpm' and 'Ing.rx_bytes'"),
    (_set("tables.2.preamble.id", 0), "'Ing.t_ternary' has id 0"),
    (_set("tables.1.preamble.name", "Ing.t_exact"), "two objects named 'Ing.t_exact'"),
    (_set("tables.0.match_fields.1.id", 1), "Ing.t_exact: 'hdr.tag' has a repeated id 1"),
    (_set("actions.2.params.1.id", 1), "Ing.set_next_hop: 'port' has a repeated id 1"),
    (_set("controller_packet_metadata.0.metadata.0.id", 0), "packet_in: 'ingress_port' has id 0"),
    (_set("actions.0.params.0.bitwidth", 0), "parameter port: bitwidth 0 not in"),
    (_set("tables.1.match_fields.0.bitwidth", 2**31 - 1),
     f"bitwidth {2**31 - 1} not in 1..{MAX_BITWIDTH}"),
])
def test_p4info_the_target_cannot_realize_is_invalid_argument(target, edit, words):
    """P4Runtime spec, SetForwardingPipelineConfig: a config the target cannot realize is
    INVALID_ARGUMENT. These were accepted before (a 50,000,000-cell counter took ~780 MB; a
    duplicate id made later writes fail with UNKNOWN), or failed later."""
    c = target.connect()
    c.arbitrate(1)
    p4info = fixture_p4info()
    edit(p4info)
    err = write_error(lambda: c.set_pipeline(p4info))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and words in err.details(), err.details()
    assert target.device.pipeline is None


@pytest.mark.parametrize("size,refused", [(50_000_000, True), (MAX_COUNTER_SIZE, False)])
def test_a_declared_counter_size_costs_no_memory(size, refused):
    """Refused before anything is allocated, and within the limit allocated only when used
    (a 50,000,000-cell counter used to cost ~780 MB at SetForwardingPipelineConfig)."""
    p4info = fixture_p4info()
    p4info.counters[0].size = size
    device = Device(pipeline_module=STAND_IN)
    tracemalloc.start()
    try:
        if refused:
            with pytest.raises(ValueError, match="counter Ing.rx: size 50000000"):
                device.build(p4info, b"")
        else:
            assert device.build(p4info, b"").counters["Ing.rx"].size == size
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * 1024 * 1024, f"{peak / 1e6:.1f} MB"


def lpm_updates(n: int, seed: int) -> tuple[list[pb.Update], dict[int, int]]:
    """`n` inserts into Ing.t_lpm (1024 entries), some repeating a key, some with a parameter
    too wide, at random places; with the code each must fail with (the spec's rules)."""
    rng = random.Random(seed)
    updates, expected, installed = [], {}, set()
    for i in range(n):
        key = rng.randrange(n)
        wide = rng.random() < 0.1
        updates.append(update(INSERT, table_entry=lpm_entry(
            key.to_bytes(4, "big"), 32, port=b"\x02\x00" if wide else b"\x02")))
        if wide:
            expected[i] = code_pb2.OUT_OF_RANGE
        elif key in installed:
            expected[i] = code_pb2.ALREADY_EXISTS
        elif len(installed) >= 1024:
            expected[i] = code_pb2.RESOURCE_EXHAUSTED
        else:
            installed.add(key)
    return updates, expected


@pytest.mark.parametrize("n", [200, 1000, 10_000])
def test_batch_failures_reach_a_default_client(primary, target, n):
    """A default grpcio client drops trailers over 8-16 KiB: a 1,000-update batch with ~500
    failures used to end in RESOURCE_EXHAUSTED "Stream removed" without the errors."""
    updates, expected = lpm_updates(n, seed=n)
    assert len(expected) > n // 5
    channel = grpc.insecure_channel(target.address, options=[  # default metadata limits
        ("grpc.max_send_message_length", 64 << 20)])
    stub = p4runtime_pb2_grpc.P4RuntimeStub(channel)
    req = pb.WriteRequest(device_id=1, election_id=pb.Uint128(low=1), updates=updates)
    try:
        err = write_error(lambda: stub.Write(req, timeout=60))
    finally:
        channel.close()
    assert err.code() == grpc.StatusCode.UNKNOWN, err.details()
    trailer = dict(err.trailing_metadata())["grpc-status-details-bin"]
    assert len(trailer) <= DETAILS_BUDGET
    got = P4RuntimeError.from_rpc("Write", err, updates)
    assert {u.index: u.code for u in got.updates} == {
        i: code_pb2.Code.Name(c) for i, c in expected.items()}
    assert all(u.table == "?" or u.table == "Ing.t_lpm" for u in got.updates)
    if n == 200:  # small enough for the spec's one p4.Error per update, in order
        assert f"{len(expected)} of 200 updates failed" == err.details()


def test_grouped_report_that_cannot_list_everything_says_so():
    results = [(code_pb2.INVALID_ARGUMENT, f"update {i} is bad in its own way")
               for i in range(10_000)]
    status = write_status(results)
    assert status.ByteSize() <= DETAILS_BUDGET
    reported = list(update_errors(status, 10_000))
    listed = [i for i, _, _ in reported if i >= 0]
    (note,) = [m for i, _, m in reported if i < 0]
    assert listed == list(range(len(listed))) and 0 < len(listed) < 10_000
    assert note.startswith(f"{10_000 - len(listed)} more failed updates are not listed")


def test_update_indexes_as_runs():
    assert format_indexes([0, 1, 2, 3, 5, 7, 9, 20, 21, 40]) == "0-3,5-9/2,20-21,40"
    picked = sorted(random.Random(7).sample(range(100_000), 3000))
    assert parse_indexes(format_indexes(picked)) == picked

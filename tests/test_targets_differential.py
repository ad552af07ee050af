"""BMv2 and the embedded target, side by side: same veths, same entries, same P4Info.

One seeded corpus of more than 2,000 frames (bmv2/corpus.py: every branch of the NIC program,
malformed frames of every kind, VLAN tags, core traffic, packet-outs) goes through BMv2 and then
through `p4mtcp nic` on the very same interfaces; each frame's outputs (port and exact bytes),
its packet-ins, and at the end every counter must be the same. Both targets read the same veths,
so whatever the kernel does to a frame on its way (it refuses to send a runt, it lifts a VLAN
tag into PACKET_AUXDATA) it does for both.

Then one list of P4Runtime requests, good and bad, to both: the same status codes, except the
deliberate differences in `KNOWN_DIFFERENCES` (also in bmv2/README.md, "Known differences").
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from p4.v1 import p4runtime_pb2 as p4r

from netns import (disable_offloads, netns_unavailable_reason, ns_run, run, sweep_stale_namespaces,
                   sysctl)
from p4mtcp.bmv2 import corpus
from p4mtcp.bmv2.controller import Controller
from p4mtcp.bmv2.differential import Observation, PortTap, observe
from p4mtcp.bmv2.frametests import Plan, ip_int, program, raw_socket
from p4mtcp.bmv2.launcher import (P4C_BM2_SS, SIMPLE_SWITCH_GRPC, SwitchProcess, bmv2_argv,
                                  compile_program, embedded_argv, free_port, have)
from p4mtcp.control.p4rt import P4RuntimeError
from p4mtcp.p4src import DROPS, ICMP_ECHO, LOCAL_IPV4, P4INFO, RX_PORT

pytestmark = [pytest.mark.bmv2, pytest.mark.root]

PLAN = Plan()
PORTS = (*PLAN.ports, corpus.UNKNOWN_PORT)
SEED = 10
DEVICE_ID = 1

def _skip_reason() -> str | None:
    for tool in (SIMPLE_SWITCH_GRPC, P4C_BM2_SS):
        if not have(tool):
            return f"{tool} not found on PATH (install BMv2 and p4c, bmv2/README.md)"
    return netns_unavailable_reason()


@contextlib.contextmanager
def links() -> Iterator[tuple[dict[int, str], dict[int, PortTap]]]:
    """One veth per switch port: the switch end in this namespace, the tester end in a
    namespace of its own (no addresses, no IPv6: its kernel sends nothing of its own)."""
    tag = uuid.uuid4().hex[:5]
    ns = f"p4t-{os.getpid()}-{tag}"
    switch_ifs = {port: f"dfs{tag}{port}" for port in PORTS}
    sockets: dict[int, PortTap] = {}
    try:
        run(["ip", "netns", "add", ns])
        ns_run(ns, ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])
        for port, ifname in switch_ifs.items():
            peer = f"dft{tag}{port}"
            run(["ip", "link", "add", ifname, "type", "veth", "peer", "name", peer, "netns", ns])
            sysctl(f"net.ipv6.conf.{ifname}.disable_ipv6", "1")
            disable_offloads(ifname)
            disable_offloads(peer, ns=ns)
            run(["ip", "link", "set", ifname, "up"])
            ns_run(ns, ["ip", "link", "set", peer, "up"])
            sockets[port] = PortTap(raw_socket(peer, f"/run/netns/{ns}"))
        yield switch_ifs, sockets
    finally:
        for s in sockets.values():
            s.close()
        for ifname in switch_ifs.values():
            run(["ip", "link", "del", ifname], check=False)
        run(["ip", "netns", "del", ns], check=False)


@dataclass
class Run:
    """What one target did: the corpus observation and the P4Runtime status codes."""
    frames: Observation
    p4runtime: dict[str, str]


def _run_target(kind: str, switch_ifs: dict[int, str], sockets: dict[int, PortTap],
                frames: list[corpus.Frame], device_config: bytes, log_dir: Path) -> Run:
    grpc_addr = f"127.0.0.1:{free_port()}"
    argv = (bmv2_argv(switch_ifs, grpc_addr, device_id=DEVICE_ID, thrift_port=free_port())
            if kind == "bmv2" else embedded_argv(switch_ifs, grpc_addr, device_id=DEVICE_ID))
    with SwitchProcess(argv, grpc_addr, kind, log_dir / f"{kind}.log").start():
        with Controller(grpc_addr, P4INFO, device_id=DEVICE_ID) as ctrl:
            ctrl.set_pipeline(device_config)
            program(ctrl, PLAN)
            corpus.extra_entries(ctrl, PLAN)
            for s in sockets.values():          # anything from before the pipeline was up
                s.receive()
            observation = observe(ctrl, sockets, frames)
            statuses = {label: request(ctrl) for label, request in REQUESTS}
    return Run(observation, statuses)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Run]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    sweep_stale_namespaces()
    work = tmp_path_factory.mktemp("differential")
    device_config = compile_program(work / "build").json.read_bytes()
    with links() as (switch_ifs, sockets):
        return {kind: _run_target(kind, switch_ifs, sockets, FRAMES, device_config, work)
                for kind in ("bmv2", "embedded")}


FRAMES = corpus.build(PLAN, SEED)
LABELS = sorted({f.label for f in FRAMES})


def test_corpus_is_large_and_covers_every_case():
    assert len(FRAMES) >= 2000
    prefixes = {label.split("/")[0] for label in LABELS}
    assert prefixes >= {"tcp", "checksum", "ipv4", "length", "truncated", "arp", "ethertype",
                        "vlan", "core", "icmp", "port", "packet-out"}


def _describe(frame: corpus.Frame) -> str:
    return f"{frame.label} #{FRAMES.index(frame)} port {frame.port} ({len(frame.data)} B)"


@pytest.mark.parametrize("label", LABELS)
def test_every_frame_has_the_same_outputs_on_both_targets(runs, label):
    bmv2, embedded = runs["bmv2"].frames, runs["embedded"].frames
    differ = []
    for i, frame in enumerate(FRAMES):
        if frame.label != label:
            continue
        b, e = bmv2.of_frame(i), embedded.of_frame(i)
        if b != e or bmv2.refused.get(i) != embedded.refused.get(i):
            differ.append(f"{_describe(frame)}: bmv2 {_summary(b)}, embedded {_summary(e)}")
    if bmv2.of_label(label) != embedded.of_label(label):
        differ.append(f"{label}, outputs owned by no single frame: "
                      f"bmv2 {_summary_items(bmv2.of_label(label))}, "
                      f"embedded {_summary_items(embedded.of_label(label))}")
    assert not differ, f"{len(differ)} difference(s):\n" + "\n".join(differ[:10])


def _summary(outs) -> str:
    frames, packet_ins = outs
    return _summary_items(frames + packet_ins)


def _summary_items(items) -> str:
    parts = []
    for item in items:
        if len(item) == 2:
            parts.append(f"port {item[0]}: {item[1][:20].hex()}..({len(item[1])} B)")
        else:
            parts.append(f"packet-in port {item[0]} reason {item[1]} ({len(item[2])} B)")
    return "[" + "; ".join(parts) + "]" if parts else "nothing"


def test_the_corpus_did_something_on_each_target(runs):
    """Guard against two empty runs agreeing: frames were forwarded, answered, sent to the CPU,
    and dropped with several reasons."""
    for kind, r in runs.items():
        obs = r.frames
        assert sum(map(len, obs.outputs.values())) > 800, kind
        assert sum(map(len, obs.packet_ins.values())) > 50, kind
        assert len(obs.counters[DROPS]) >= 7, f"{kind}: drop reasons seen {obs.counters[DROPS]}"
        assert obs.counters[RX_PORT][PLAN.network_port][0] > 1000, kind
        assert obs.counters[ICMP_ECHO][PLAN.network_port][0] >= 100, kind


def test_every_counter_is_the_same(runs):
    b, e = runs["bmv2"].frames.counters, runs["embedded"].frames.counters
    differ = {name: {k: (b[name].get(k), e[name].get(k))
                     for k in set(b[name]) | set(e[name]) if b[name].get(k) != e[name].get(k)}
              for name in b}
    differ = {n: d for n, d in differ.items() if d}
    assert not differ, f"counters differ (bmv2, embedded): {differ}"


# --- P4Runtime ----------------------------------------------------------------------------------

def _code(call: Callable[[], object]) -> str:
    """OK or the gRPC code, with each failed update's canonical code for a Write."""
    try:
        call()
    except P4RuntimeError as exc:
        return exc.code + "".join(f" [{u.index}:{u.code}]" for u in exc.updates)
    except grpc.RpcError as exc:
        return exc.code().name
    return "OK"


def _raw_write(ctrl: Controller, build: Callable[[p4r.TableEntry], None], kind=p4r.Update.INSERT,
               device_id: int = DEVICE_ID, election_low: int = 1) -> str:
    """One Write of one table entry built field by field (to say what the typed client won't)."""
    req = p4r.WriteRequest(device_id=device_id, election_id=p4r.Uint128(low=election_low),
                           atomicity=p4r.WriteRequest.CONTINUE_ON_ERROR)
    u = req.updates.add(type=kind)
    build(u.entity.table_entry)

    def call() -> None:
        try:
            ctrl.client.stub.Write(req, timeout=10)
        except grpc.RpcError as err:
            raise P4RuntimeError.from_rpc("Write", err, req.updates, ctrl.schema) from None
    return _code(call)


def _entry(ctrl: Controller, table: str, values: list[bytes | tuple[bytes, int]], action: str,
           params: list[bytes] = (), field_ids: list[int] | None = None,
           table_id: int | None = None,
           action_id: int | None = None, priority: int = 0, default: bool = False):
    schema = ctrl.schema
    t = schema.table(table)

    def build(te: p4r.TableEntry) -> None:
        te.table_id = t.id if table_id is None else table_id
        te.priority = priority
        te.is_default_action = default
        for n, value in enumerate(values):
            fid = field_ids[n] if field_ids else t.match_fields[n].id
            m = te.match.add(field_id=fid)
            if isinstance(value, tuple):
                m.lpm.value, m.lpm.prefix_len = value
            else:
                m.exact.value = value
        a = schema.action(action)
        te.action.action.action_id = a.id if action_id is None else action_id
        for n, value in enumerate(params):
            te.action.action.params.add(param_id=n + 1, value=value)
    return build


def _ip(text: str) -> bytes:
    return ip_int(text).to_bytes(4, "big")


def _read(ctrl: Controller, entity: p4r.Entity, device_id: int = DEVICE_ID) -> str:
    req = p4r.ReadRequest(device_id=device_id, entities=[entity])
    return _code(lambda: list(ctrl.client.stub.Read(req, timeout=10)))


def _counter(ctrl: Controller, name: str, index: int | None) -> p4r.Entity:
    c = p4r.CounterEntry(counter_id=ctrl.schema.counter(name).id)
    if index is not None:
        c.index.index = index
    return p4r.Entity(counter_entry=c)


NEW_IP = _ip("10.0.0.200")
W = _raw_write

REQUESTS: list[tuple[str, Callable[[Controller], str]]] = [
    ("insert", lambda c: W(c, _entry(c, LOCAL_IPV4, [NEW_IP], "NicIngress.set_local"))),
    ("insert again", lambda c: W(c, _entry(c, LOCAL_IPV4, [NEW_IP], "NicIngress.set_local"))),
    ("modify", lambda c: W(c, _entry(c, LOCAL_IPV4, [NEW_IP], "NicIngress.not_local"),
                           p4r.Update.MODIFY)),
    ("modify missing", lambda c: W(c, _entry(c, LOCAL_IPV4, [_ip("10.0.0.201")],
                                             "NicIngress.set_local"), p4r.Update.MODIFY)),
    ("delete", lambda c: W(c, _entry(c, LOCAL_IPV4, [NEW_IP], "NicIngress.set_local"),
                           p4r.Update.DELETE)),
    ("delete missing", lambda c: W(c, _entry(c, LOCAL_IPV4, [NEW_IP], "NicIngress.set_local"),
                                   p4r.Update.DELETE)),
    ("unknown table", lambda c: W(c, _entry(c, LOCAL_IPV4, [NEW_IP], "NicIngress.set_local",
                                            table_id=0x02FFFFFF))),
    ("unknown action", lambda c: W(c, _entry(c, LOCAL_IPV4, [NEW_IP], "NicIngress.set_local",
                                             action_id=0x01FFFFFF))),
    ("action not in table", lambda c: W(c, _entry(c, LOCAL_IPV4, [NEW_IP], "NicIngress.nop"))),
    ("missing param", lambda c: W(c, _entry(c, "NicIngress.arp_responder", [NEW_IP],
                                            "NicIngress.arp_reply"))),
    ("extra param", lambda c: W(c, _entry(c, "NicIngress.arp_responder", [NEW_IP],
                                          "NicIngress.arp_reply", [b"\x02" * 6, b"\x01"]))),
    ("param too wide", lambda c: W(c, _entry(c, "NicIngress.arp_responder", [NEW_IP],
                                             "NicIngress.arp_reply", [b"\x01" * 7]))),
    ("param padded", lambda c: W(c, _entry(c, "NicIngress.arp_responder", [NEW_IP],
                                           "NicIngress.arp_reply",
                                           [b"\x00\x00\x02" + b"\x01" * 5]))),
    ("match value too wide", lambda c: W(c, _entry(c, LOCAL_IPV4, [b"\x01" + NEW_IP],
                                                   "NicIngress.set_local"))),
    ("match value empty", lambda c: W(c, _entry(c, LOCAL_IPV4, [b""], "NicIngress.set_local"))),
    ("unknown match field", lambda c: W(c, _entry(c, LOCAL_IPV4, [NEW_IP], "NicIngress.set_local",
                                                  field_ids=[9]))),
    ("lpm prefix too long", lambda c: W(c, _entry(c, "NicIngress.ipv4_lpm",
                                                  [(_ip("10.9.0.0"), 33)], "NicIngress.no_route"))),
    ("lpm host bits set", lambda c: W(c, _entry(c, "NicIngress.ipv4_lpm", [(_ip("10.9.0.1"), 16)],
                                                "NicIngress.no_route"))),
    ("lpm prefix zero", lambda c: W(c, _entry(c, "NicIngress.ipv4_lpm", [(_ip("0.0.0.0"), 0)],
                                              "NicIngress.no_route"))),
    ("lpm", lambda c: W(c, _entry(c, "NicIngress.ipv4_lpm", [(_ip("10.9.0.0"), 16)],
                                  "NicIngress.no_route"))),
    ("priority on exact table", lambda c: W(c, _entry(c, LOCAL_IPV4, [_ip("10.0.0.202")],
                                                      "NicIngress.set_local", priority=10))),
    ("insert default", lambda c: W(c, _entry(c, LOCAL_IPV4, [], "NicIngress.not_local",
                                             default=True))),
    ("modify default", lambda c: W(c, _entry(c, LOCAL_IPV4, [], "NicIngress.not_local",
                                             default=True), p4r.Update.MODIFY)),
    ("stale election id", lambda c: W(c, _entry(c, LOCAL_IPV4, [_ip("10.0.0.203")],
                                                "NicIngress.set_local"), election_low=0)),
    ("unknown device", lambda c: W(c, _entry(c, LOCAL_IPV4, [_ip("10.0.0.204")],
                                             "NicIngress.set_local"), device_id=77)),
    ("unspecified update", lambda c: W(c, _entry(c, LOCAL_IPV4, [_ip("10.0.0.205")],
                                                 "NicIngress.set_local"), p4r.Update.UNSPECIFIED)),
    ("read table", lambda c: _read(c, p4r.Entity(table_entry=p4r.TableEntry(
        table_id=c.schema.table(LOCAL_IPV4).id)))),
    ("read every table", lambda c: _read(c, p4r.Entity(table_entry=p4r.TableEntry()))),
    ("read unknown table", lambda c: _read(c, p4r.Entity(table_entry=p4r.TableEntry(
        table_id=0x02FFFFFF)))),
    ("read counter cell", lambda c: _read(c, _counter(c, RX_PORT, 1))),
    ("read counter", lambda c: _read(c, _counter(c, DROPS, None))),
    ("read counter out of range", lambda c: _read(c, _counter(c, DROPS, 16))),
    ("read unknown counter", lambda c: _read(c, p4r.Entity(counter_entry=p4r.CounterEntry(
        counter_id=0x12FFFFFF)))),
    ("read unknown device", lambda c: _read(c, _counter(c, DROPS, 0), device_id=77)),
    ("get pipeline", lambda c: _code(lambda: c.client.stub.GetForwardingPipelineConfig(
        p4r.GetForwardingPipelineConfigRequest(device_id=DEVICE_ID), timeout=10))),
]

# The deliberate differences: label -> (BMv2's code, the embedded target's code, why). The
# embedded target follows the P4Runtime spec; bmv2/README.md "Known differences" says the same.
KNOWN_DIFFERENCES: dict[str, tuple[str, str, str]] = {
    "read counter out of range": (
        "UNKNOWN", "OUT_OF_RANGE",
        "an index past the counter's size is OUT_OF_RANGE (P4Runtime 9.5, 'Canonical error "
        "codes'); BMv2 fails the Read with UNKNOWN"),
    "read unknown device": (
        "FAILED_PRECONDITION", "NOT_FOUND",
        "a device id the server does not serve is NOT_FOUND; BMv2 answers as for a device with "
        "no pipeline yet"),
    "unknown device": (
        "PERMISSION_DENIED", "NOT_FOUND",
        "a device id the server does not serve is NOT_FOUND; BMv2 checks the election id first "
        "and finds no primary for that device"),
    "match value empty": (
        "OK", "UNKNOWN [0:OUT_OF_RANGE]",
        "P4Runtime 8.4 Bytestrings: a zero-length value is never valid; BMv2 takes it as 0"),
    "match value too wide": (
        "UNKNOWN [0:INVALID_ARGUMENT]", "UNKNOWN [0:OUT_OF_RANGE]",
        "P4Runtime 8.4: a value that does not fit its bitwidth is OUT_OF_RANGE"),
    "param too wide": (
        "UNKNOWN [0:INVALID_ARGUMENT]", "UNKNOWN [0:OUT_OF_RANGE]",
        "P4Runtime 8.4: a value that does not fit its bitwidth is OUT_OF_RANGE"),
}


def test_p4runtime_requests_get_the_same_codes(runs):
    b, e = runs["bmv2"].p4runtime, runs["embedded"].p4runtime
    assert len(b) == len(REQUESTS) and set(b) == set(e)
    assert b["insert"] == "OK" and b["insert again"] != "OK", b
    differ = []
    for label, _ in REQUESTS:
        expect = KNOWN_DIFFERENCES.get(label)
        got = (b[label], e[label])
        if expect is None and got[0] != got[1]:
            differ.append(f"{label}: bmv2 {got[0]}, embedded {got[1]}")
        elif expect is not None and got != expect[:2]:
            differ.append(f"{label}: bmv2 {got[0]}, embedded {got[1]}; documented: "
                          f"bmv2 {expect[0]}, embedded {expect[1]}")
    assert not differ, "\n".join(differ)


def test_known_differences_are_documented_in_bmv2_readme():
    text = (Path(__file__).resolve().parent.parent / "bmv2" / "README.md").read_text()
    section = text.split("## Known differences", 1)
    assert len(section) == 2, "bmv2/README.md has no 'Known differences' section"
    for label, (bmv2_code, embedded_code, _) in KNOWN_DIFFERENCES.items():
        assert label in section[1], f"{label} is not in bmv2/README.md's Known differences"

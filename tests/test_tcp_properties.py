"""Property tests: random and mutated segments fed to the engine in every RFC 9293 state.

Each state is reached by a scripted exchange between the engine under test (E) and a peer
engine (P); hypothesis then feeds E a sequence of segments — raw garbage, or a segment built for
E's connection with mutated sequence number, acknowledgment, flags, window, options, data offset
and payload — interleaved with clock jumps.  After every step:

- nothing raises out of receive / poll / events / next_deadline;
- SND.UNA <= SND.NXT <= SND.MAX, and SND.UNA, SND.MAX and RCV.NXT never move backwards;
- the bytes the application can read only ever grow at the end: what was delivered (read or
  readable) never changes, and it starts with exactly what P really sent;
- every payload E transmits for the connection is the application's data at that offset and
  lies below SND.MAX;
- in LISTEN: the listener keeps listening, and answers only with a SYN-ACK for a SYN it got or
  the RST RFC 9293 3.10.7.2 prescribes for an ACK.

A second property drives two engines through random application calls (sometimes an abort) over
a network that loses, duplicates and reorders at random, then heals it: each side must then read
exactly what the other wrote, and both must reach EOF; after a reset or timeout each side read a
prefix of the other's bytes and the failed side is CLOSED with its error.
"""

from __future__ import annotations

import errno
import random
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p4mtcp.control.tcp import Connection, Listener, State, TcpConfig, TcpStack

E_IP, P_IP = 0x0A000001, 0x0A000002
E_PORT, P_PORT = 40000, 80
MASK = 0xFFFFFFFF
HEADER = struct.Struct("!HHIIBBHHH")
CONFIG = TcpConfig(rcvbuf=16384, sndbuf=16384, offload_checksum=True, timewait=30.0,
                   idle_timeout=0)
P_DATA = random.Random(1).randbytes(6000)       # what the peer sends to E before the fuzzing
E_DATA = random.Random(2).randbytes(6000)       # what E's application writes
STEP_LIMIT = 200                                # rounds per scripted exchange


@dataclass
class Scene:
    """E, its connection (or listener) in the target state, the peer, and the clock."""

    e: TcpStack
    p: TcpStack
    conn: Connection | None
    listener: Listener | None = None
    now: float = 1.0
    read: bytearray = field(default_factory=bytearray)   # what E's app already consumed
    written: int = 0                                     # bytes of E_DATA E's app queued
    history: list[bytes] = field(default_factory=list)   # every segment P sent E, for replays

    def flush(self, e_to_p: bool = True, p_to_e: bool = True, rounds: int = STEP_LIMIT) -> None:
        """Move segments both ways until both stacks are quiet (or drop one direction)."""
        for _ in range(rounds):
            out_e, out_p = self.e.poll(self.now), self.p.poll(self.now)
            if not out_e and not out_p:
                return
            for src, dst, seg in out_e:
                if e_to_p:
                    self.p.receive(src, dst, seg, self.now)
            for src, dst, seg in out_p:
                self.history.append(seg)
                if p_to_e:
                    self.e.receive(src, dst, seg, self.now)
            self.now += 0.001
        raise AssertionError("scripted exchange did not settle")


def _connected() -> tuple[Scene, Connection]:
    """E actively opened to P, data exchanged both ways, E read half of P's data."""
    e = TcpStack(CONFIG, isn_secret=b"engine-under-test-0")
    p = TcpStack(CONFIG, isn_secret=b"peer-engine-secret-1")
    lst = p.listen(P_IP, P_PORT, 4)
    scene = Scene(e, p, e.connect(E_IP, E_PORT, P_IP, P_PORT, 1.0))
    scene.flush()
    peer = lst.accept()
    assert peer is not None and scene.conn is not None
    assert peer.send(P_DATA) == len(P_DATA)
    scene.written = scene.conn.send(E_DATA)
    scene.flush()
    while len(peer.recv(1 << 16)):
        pass
    scene.read += scene.conn.recv(3000)
    scene.flush()
    return scene, peer


def _drain(scene: Scene) -> None:
    assert scene.conn is not None
    while True:
        chunk = scene.conn.recv(1 << 16)
        if not chunk:
            return
        scene.read += chunk


def reach(state: State) -> Scene:
    """A fresh Scene whose connection (or listener) is in `state`."""
    if state is State.LISTEN:
        e = TcpStack(CONFIG, isn_secret=b"engine-under-test-0")
        p = TcpStack(CONFIG, isn_secret=b"peer-engine-secret-1")
        return Scene(e, p, None, listener=e.listen(E_IP, E_PORT, 4))
    if state is State.SYN_SENT:
        e = TcpStack(CONFIG, isn_secret=b"engine-under-test-0")
        p = TcpStack(CONFIG, isn_secret=b"peer-engine-secret-1")
        scene = Scene(e, p, e.connect(E_IP, E_PORT, P_IP, P_PORT, 1.0))
        scene.e.poll(scene.now)                          # the SYN is lost
        return scene
    if state is State.SYN_RECEIVED:                      # simultaneous open, SYN-ACKs lost
        e = TcpStack(CONFIG, isn_secret=b"engine-under-test-0")
        p = TcpStack(CONFIG, isn_secret=b"peer-engine-secret-1")
        scene = Scene(e, p, e.connect(E_IP, E_PORT, P_IP, P_PORT, 1.0))
        p.connect(P_IP, P_PORT, E_IP, E_PORT, 1.0)
        syn_e, syn_p = e.poll(1.0), p.poll(1.0)
        for src, dst, seg in syn_p:
            scene.history.append(seg)
            e.receive(src, dst, seg, 1.0)
        for src, dst, seg in syn_e:
            p.receive(src, dst, seg, 1.0)
        return scene
    scene, peer = _connected()
    conn = scene.conn
    assert conn is not None
    if state in (State.FIN_WAIT_1, State.FIN_WAIT_2, State.CLOSING, State.TIME_WAIT):
        _drain(scene)
        conn.shutdown(socket.SHUT_WR)
        if state is State.FIN_WAIT_1:
            scene.flush(e_to_p=False)                    # our FIN is lost
        elif state is State.FIN_WAIT_2:
            scene.flush()
        elif state is State.CLOSING:
            fin_e = scene.e.poll(scene.now)              # held back
            peer.shutdown(socket.SHUT_WR)
            for src, dst, seg in scene.p.poll(scene.now):
                scene.history.append(seg)
                scene.e.receive(src, dst, seg, scene.now)
            scene.e.poll(scene.now)                      # E's ACK of P's FIN is lost
            del fin_e
        else:
            scene.flush()
            peer.shutdown(socket.SHUT_WR)
            scene.flush()
    elif state in (State.CLOSE_WAIT, State.LAST_ACK):
        peer.shutdown(socket.SHUT_WR)
        scene.flush()
        if state is State.LAST_ACK:
            _drain(scene)
            conn.shutdown(socket.SHUT_WR)
            scene.flush(e_to_p=False)
    assert conn.state is state, f"script reached {conn.state}, wanted {state}"
    return scene


# -- segment strategies ------------------------------------------------------------------------

FLAG_SETS = [0x10, 0x18, 0x11, 0x19, 0x04, 0x14, 0x02, 0x12, 0x01, 0x00, 0x06, 0x03, 0x07, 0x3F]
WINDOW = CONFIG.rcvbuf


def offsets() -> st.SearchStrategy[int]:
    """Sequence deltas: window edges, near the current point, anywhere in the window's
    neighbourhood, and anywhere in 32 bits — equally likely."""
    return st.one_of(
        st.sampled_from([0, 1, -1, WINDOW - 1, WINDOW, WINDOW + 1, -WINDOW, 1 << 31, -(1 << 31)]),
        st.integers(-3000, 3000),
        st.integers(-3 * WINDOW, 3 * WINDOW),
        st.integers(0, MASK))


@st.composite
def option_specs(draw: st.DrawFn) -> tuple[str, tuple[int, ...]]:
    """An option list to build against the connection: (kind, parameters)."""
    kind = draw(st.sampled_from(["none", "ts_valid", "ts_valid", "ts_any", "sack_near",
                                 "sack_any", "syn", "garbage"]))
    if kind in ("ts_valid", "ts_any"):
        return kind, (draw(st.integers(0, 5000)) if kind == "ts_valid"
                      else draw(st.integers(0, MASK)), draw(st.integers(0, MASK)))
    if kind in ("sack_near", "sack_any"):
        n = draw(st.integers(1, 4))
        gen = st.integers(-3000, 12000) if kind == "sack_near" else st.integers(0, MASK)
        return kind, tuple(draw(gen) for _ in range(2 * n))
    if kind == "garbage":
        return kind, tuple(draw(st.binary(max_size=40)))
    return kind, ()


@dataclass(frozen=True)
class Mutation:
    """A segment for E's connection, relative to E's current RCV.NXT, SND.UNA and TS.Recent."""

    seq_delta: int
    ack_delta: int
    flags: int
    window: int
    options: tuple[str, tuple[int, ...]]
    payload_len: int
    data_offset: int | None        # None: the correct one
    other_tuple: bool              # from a different peer port instead


@st.composite
def mutations(draw: st.DrawFn) -> Mutation:
    return Mutation(
        seq_delta=draw(offsets()), ack_delta=draw(offsets()),
        flags=draw(st.one_of(st.sampled_from(FLAG_SETS), st.integers(0, 255))),
        window=draw(st.integers(0, 65535)), options=draw(option_specs()),
        payload_len=draw(st.sampled_from([0, 0, 1, 100, 1460, 3000])),
        data_offset=draw(st.one_of(st.none(), st.none(), st.integers(0, 15))),
        other_tuple=draw(st.integers(0, 7)) == 0)


@dataclass(frozen=True)
class Replay:
    """An old segment of P's from the scripted exchange, resent as is or with one bit flipped."""

    index: int             # into Scene.history, modulo its length
    flip_bit: int | None   # bit to invert, modulo the segment's length in bits


replays = st.builds(Replay, st.integers(0, 1 << 16), st.one_of(st.none(), st.integers(0, 1 << 16)))

# (raw bytes, a mutation or a replay; seconds to advance, -1: to the next deadline)
Step = tuple[bytes | Mutation | Replay, float]
steps = st.lists(st.tuples(
    st.one_of(st.binary(max_size=80), mutations(), mutations(), replays),
    st.sampled_from([0.0, 0.0, 0.001, 0.05, 0.3, 2.0, -1.0])), min_size=1, max_size=8)


def _options(spec: tuple[str, tuple[int, ...]], ts_recent: int, snd_una: int) -> bytes:
    kind, args = spec
    if kind in ("ts_valid", "ts_any"):
        tsval = (ts_recent + args[0]) & MASK if kind == "ts_valid" else args[0]
        return b"\x01\x01\x08\x0a" + struct.pack("!II", tsval, args[1])
    if kind in ("sack_near", "sack_any"):
        base = snd_una if kind == "sack_near" else 0
        edges = [(base + a) & MASK for a in args]
        return b"\x01\x01\x05" + bytes([2 + 4 * len(edges)]) + struct.pack(
            f"!{len(edges)}I", *edges)
    if kind == "syn":
        return bytes.fromhex("020405b4" "01030307" "0402")
    return bytes(args)


def replay(scene: Scene, r: Replay) -> bytes:
    if not scene.history:
        return b""
    seg = bytearray(scene.history[r.index % len(scene.history)])
    if r.flip_bit is not None:
        bit = r.flip_bit % (8 * len(seg))
        seg[bit // 8] ^= 1 << (bit % 8)
    return bytes(seg)


def build(scene: Scene, m: Mutation, rng: random.Random) -> tuple[int, int, bytes]:
    """(src_ip, dst_ip, tcp bytes) for the mutation against E's connection as it is now."""
    conn = scene.conn
    if conn is not None:
        rcv_nxt = (conn.irs + conn.rcv.nxt) & MASK
        snd_una = (conn.iss + conn.una) & MASK
        ts_recent = conn.ts_recent
    else:                                           # a listener: any numbers will do
        rcv_nxt, snd_una, ts_recent = 1000, 5000, 0
    opts = _options(m.options, ts_recent, snd_una)
    opts += b"\0" * (-len(opts) % 4)
    off = (20 + len(opts)) // 4 if m.data_offset is None else m.data_offset
    sport = P_PORT + 1 if m.other_tuple else P_PORT
    header = HEADER.pack(sport, E_PORT, (rcv_nxt + m.seq_delta) & MASK,
                         (snd_una + m.ack_delta) & MASK, off << 4, m.flags, m.window, 0, 0)
    return P_IP, E_IP, header + opts + rng.randbytes(m.payload_len)


# -- the invariants ------------------------------------------------------------------------------

class Watch:
    """Remembers what must not move backwards or change, and checks it after every step."""

    def __init__(self, scene: Scene) -> None:
        self.scene = scene
        conn = scene.conn
        self.una = conn.una if conn else 0
        self.snd_max = conn.snd_max if conn else 0
        self.rcv_nxt = conn.rcv.nxt if conn else 0
        self.stream = bytes(scene.read) + (conn.recv(1 << 20, peek=True) if conn else b"")
        self.legit = len(self.stream)          # in-order bytes P really sent that E had
        self.syns: set[tuple[int, int]] = set()  # LISTEN: (peer port, ISN + 1) of SYNs in
        self.acks: set[tuple[int, int]] = set()  # LISTEN: (peer port, SEG.ACK) of ACKs in

    def check(self, sent: bytes, out: list[tuple[int, int, bytes]]) -> None:
        """After E received `sent` (and its clock moved): E's state and what E put out."""
        conn = self.scene.conn
        if conn is None:
            self._check_listener(sent, out)
            return
        assert conn.una <= conn.nxt <= conn.snd_max, (conn.una, conn.nxt, conn.snd_max)
        assert conn.una >= self.una, f"SND.UNA went back {self.una} -> {conn.una}"
        assert conn.snd_max >= self.snd_max, "SND.MAX went back"
        assert conn.rcv.nxt >= self.rcv_nxt, f"RCV.NXT went back {self.rcv_nxt} -> {conn.rcv.nxt}"
        self.una, self.snd_max, self.rcv_nxt = conn.una, conn.snd_max, conn.rcv.nxt
        stream = bytes(self.scene.read) + conn.recv(1 << 20, peek=True)
        assert stream.startswith(self.stream), "bytes already delivered to the app changed"
        assert stream[:self.legit] == P_DATA[:self.legit]
        self.stream = stream
        for src, dst, seg in out:
            self._check_out(conn, seg)

    def _check_listener(self, sent: bytes, out: list[tuple[int, int, bytes]]) -> None:
        """LISTEN (RFC 9293 3.10.7.2): the listener stays listening with at most `backlog`
        connections queued, and answers only with a SYN-ACK for a SYN it received or a RST
        <SEQ=SEG.ACK> for an ACK it received (<SEQ=0, ACK set> when that had no ACK bit)."""
        lst = self.scene.listener
        assert lst is not None and lst.state is State.LISTEN
        assert lst.pending <= lst.backlog
        if len(sent) >= 20:
            sport, seq, ack, fl = struct.unpack_from("!H2xII1xB", sent)
            if fl & 0x02 and not fl & 0x14:                         # a SYN: may be answered
                self.syns.add((sport, (seq + 1) & MASK))
            if fl & 0x10:                                           # an ACK: may be reset
                self.acks.add((sport, ack))
        opened = {port for port, _ in self.syns}                # peers a SYN may have given a TCB
        for _, _, seg in out:
            assert len(seg) >= 20 and (seg[12] >> 4) * 4 == len(seg), "a reply carrying data"
            dport, seq, ack, fl = struct.unpack_from("!2xHII1xB", seg)
            if fl == 0x12:
                assert (dport, ack) in self.syns, "SYN-ACK for a SYN never received"
            elif dport in opened:                               # the half-open TCB's answers
                assert fl in (0x10, 0x04, 0x14), f"SYN-RECEIVED sent flags {fl:#x}"
            elif fl == 0x04:
                assert (dport, seq) in self.acks, "RST whose SEQ is no received SEG.ACK"
            else:
                assert fl == 0x14 and seq == 0, f"LISTEN sent flags {fl:#x}"

    def _check_out(self, conn: Connection, seg: bytes) -> None:
        assert len(seg) >= 20 and 20 <= (seg[12] >> 4) * 4 <= len(seg)
        sport, dport, seq = struct.unpack_from("!HHI", seg)
        if (sport, dport) != (E_PORT, P_PORT):
            return
        payload = seg[(seg[12] >> 4) * 4:]
        if seg[13] & 0x04:
            assert not payload, "RST carrying data"
            return
        if payload:
            off = (seq - conn.iss) & MASK
            assert off + len(payload) <= conn.snd_max, "data sent beyond SND.MAX"
            assert payload == E_DATA[off - 1:off - 1 + len(payload)], "sent bytes not the app's"


def run_steps(state: State, script: list[Step]) -> None:
    scene = reach(state)
    watch = Watch(scene)
    rng = random.Random(len(script))
    e = scene.e
    for what, advance in script:
        if isinstance(what, Mutation):
            src, dst, seg = build(scene, what, rng)
        elif isinstance(what, Replay):
            src, dst, seg = P_IP, E_IP, replay(scene, what)
        else:
            src, dst, seg = P_IP, E_IP, what
        e.receive(src, dst, seg, scene.now)
        if advance < 0:
            deadline = e.next_deadline()
            scene.now = max(scene.now, deadline) if deadline is not None else scene.now + 1.0
        else:
            scene.now += advance
        out = e.poll(scene.now)
        e.events()
        watch.check(seg, out)


FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
STATES = [s for s in State if s is not State.CLOSED]


def _state_test(state: State) -> Callable[[], None]:
    @FUZZ
    @given(script=steps)
    def test(script: list[Step]) -> None:
        run_steps(state, script)
    test.__name__ = f"test_random_segments_in_{state.name.lower()}"
    test.__doc__ = f"Random and mutated segments in {state.name}: invariants hold."
    return test


for _state in STATES:
    globals()[f"test_random_segments_in_{_state.name.lower()}"] = _state_test(_state)


@FUZZ
@given(segs=st.lists(st.tuples(st.integers(0, MASK), st.integers(0, MASK), st.binary(max_size=80)),
                     min_size=1, max_size=10))
def test_random_segments_to_closed_ports(segs: list[tuple[int, int, bytes]]) -> None:
    """CLOSED (no TCB): anything at all from anywhere; answers are well-formed RSTs only."""
    stack = TcpStack(CONFIG, isn_secret=b"engine-under-test-0")
    for src, dst, data in segs:
        stack.receive(src, dst, data, 1.0)
        for _, _, seg in stack.poll(1.0):
            assert len(seg) == 20 and seg[13] & 0x04, "a stack with no TCB sent a non-RST"
    assert stack.events() == [] and stack.connections == 0


def test_every_state_is_reached() -> None:
    """The scripts really produce the states the fuzz tests claim to cover."""
    for state in STATES:
        scene = reach(state)
        got = scene.listener.state if scene.listener else scene.conn.state
        assert got is state


# -- two engines, random application calls over a hostile network, then a healed one ---------------

Action = tuple[str, int]
actions = st.lists(st.one_of(
    st.tuples(st.sampled_from(["send_a", "send_b", "recv_a", "recv_b"]), st.integers(1, 9000)),
    st.tuples(st.sampled_from(["shut_a", "shut_b"]), st.just(0)),
    st.tuples(st.sampled_from(["deliver_ab", "deliver_ba", "flush_ab", "flush_ba"]),
              st.integers(0, 7)),
    st.tuples(st.sampled_from(["drop_ab", "drop_ba", "dup_ab", "dup_ba", "swap_ab", "swap_ba"]),
              st.integers(0, 7)),
    st.tuples(st.just("tick"), st.sampled_from([0, 1, 50, 300, 1500, -1]))), max_size=40)


class Pair:
    """A (client) and B (server) engines joined by two in-order queues the test manipulates."""

    HEAL_ROUNDS = 20_000

    def __init__(self, rcvbuf: int) -> None:
        config = TcpConfig(rcvbuf=rcvbuf, sndbuf=8192, offload_checksum=True, idle_timeout=0,
                           delayed_ack=0.04)
        self.now = 1.0
        self.a = TcpStack(config, isn_secret=b"pair-engine-a-secret")
        self.b = TcpStack(config, isn_secret=b"pair-engine-b-secret")
        self.listener = self.b.listen(P_IP, P_PORT, 4)
        self.ca: Connection = self.a.connect(E_IP, E_PORT, P_IP, P_PORT, self.now)
        self.cb: Connection | None = None
        self.q = {"ab": [], "ba": []}                    # segments in flight, oldest first
        self.streams = {"a": random.Random(5).randbytes(40_000),
                        "b": random.Random(6).randbytes(40_000)}
        self.sent = {"a": 0, "b": 0}
        self.got = {"a": bytearray(), "b": bytearray()}
        self.shut = {"a": False, "b": False}
        self.aborted: set[str] = set()                  # sides whose application aborted

    def conn(self, side: str) -> Connection | None:
        return self.ca if side == "a" else self.cb

    def pump(self) -> None:
        self.q["ab"] += [seg for _, _, seg in self.a.poll(self.now)]
        self.q["ba"] += [seg for _, _, seg in self.b.poll(self.now)]
        self.a.events()
        self.b.events()
        if self.cb is None:
            self.cb = self.listener.accept()

    def act(self, name: str, arg: int) -> None:
        verb, _, where = name.partition("_")
        if verb == "tick":
            deadline = min((d for d in (self.a.next_deadline(), self.b.next_deadline())
                            if d is not None), default=None)
            if arg >= 0:
                self.now += arg / 1000
            elif deadline is not None:                   # -1: to the next deadline
                self.now = max(self.now, deadline)
        elif verb in ("send", "recv", "shut", "abort"):
            self.app(verb, where, arg)
        else:
            self.net(verb, where, arg)
        self.pump()

    def app(self, verb: str, side: str, n: int) -> None:
        conn = self.conn(side)
        if conn is None:
            return
        if verb == "recv":                 # data stays readable after the TCB is gone
            self.got[side] += conn.recv(n)
            return
        if verb == "abort":                # RST and the TCB is gone, in any state
            conn.abort()
            self.aborted.add(side)
            return
        if conn.state not in (State.ESTABLISHED, State.CLOSE_WAIT):
            return
        if verb == "shut" and not self.shut[side]:
            self.shut[side] = True
            conn.shutdown(socket.SHUT_WR)
        elif verb == "send" and not self.shut[side]:
            pos = self.sent[side]
            self.sent[side] += conn.send(self.streams[side][pos:pos + n])

    def net(self, verb: str, d: str, k: int) -> None:
        q = self.q[d]
        if not q:
            return
        i = k % len(q)
        dst, src_ip, dst_ip = (self.b, E_IP, P_IP) if d == "ab" else (self.a, P_IP, E_IP)
        if verb == "deliver":
            dst.receive(src_ip, dst_ip, q.pop(0), self.now)
        elif verb == "flush":
            while q:
                dst.receive(src_ip, dst_ip, q.pop(0), self.now)
        elif verb == "drop":
            q.pop(i)
        elif verb == "dup":
            q.insert(i, q[i])
        elif verb == "swap" and len(q) > 1:
            j = (i + 1) % len(q)
            q[i], q[j] = q[j], q[i]

    def heal(self) -> None:
        """Perfect network from now on: both apps send the rest, read everything, shut down,
        until both read EOF — or, once a side was reset or timed out, until nothing is in flight
        and no timer is left (the survivor may rightly wait forever, e.g. in FIN-WAIT-2)."""
        for _ in range(self.HEAL_ROUNDS):
            for side in ("a", "b"):
                self.app("recv", side, 1 << 20)
                if self.sent[side] < len(self.streams[side]) // 4:
                    self.app("send", side, 1 << 20)
                elif not self.shut[side]:
                    self.app("shut", side, 0)
            if self.done() or (self.failed() and self.quiet()):
                return
            delivered = False
            for d in ("ab", "ba"):
                while self.q[d]:
                    self.net("deliver", d, 0)
                    delivered = True
            self.pump()
            if not delivered and not self.q["ab"] and not self.q["ba"]:
                self.act("tick", -1)
        raise AssertionError(f"no clean finish: A {self.ca.state}, B "
                             f"{self.cb.state if self.cb else None}, sent {self.sent}, "
                             f"got {({k: len(v) for k, v in self.got.items()})}")

    def done(self) -> bool:
        return all(c is not None and c.eof and not c.readable_bytes
                   for c in (self.ca, self.cb)) and all(self.shut.values())

    def failed(self) -> bool:
        return bool(self.aborted) or any(c is not None and c.error for c in (self.ca, self.cb))

    def quiet(self) -> bool:
        return (not self.q["ab"] and not self.q["ba"]
                and self.a.next_deadline() is None and self.b.next_deadline() is None)


@FUZZ
@given(rcvbuf=st.sampled_from([2048, 8192, 65536]), handshake=st.booleans(), script=actions,
       abort=st.sampled_from([None, None, "a", "b"]), abort_at=st.integers(0, 40))
def test_two_engines_survive_a_hostile_network_then_finish_exactly(
        rcvbuf: int, handshake: bool, script: list[Action], abort: str | None,
        abort_at: int) -> None:
    """Whatever the network did (loss, duplication, reordering, stalls) and whatever the apps
    called, once the network heals each side reads exactly the bytes the other wrote, in order,
    and both reach EOF.  `handshake`: the hostile part starts after a clean handshake (else the
    handshake itself is exposed).  `abort`: that side's application aborts at `abort_at`; then
    (as after a timeout) each side read a prefix of the other's bytes, a failed side is CLOSED
    with a reset/refused/timed-out error, and a side that read EOF read everything."""
    pair = Pair(rcvbuf)
    pair.pump()
    for _ in range(3 if handshake else 0):
        pair.act("flush_ab", 0)
        pair.act("flush_ba", 0)
    if abort is not None:
        script = [*script[:abort_at], (f"abort_{abort}", 0), *script[abort_at:]]
    for name, arg in script:
        pair.act(name, arg)
        for side, other in (("a", "b"), ("b", "a")):
            assert pair.streams[other].startswith(bytes(pair.got[side])), "corrupted stream"
    pair.heal()
    for side, other in (("a", "b"), ("b", "a")):
        conn = pair.conn(side)
        got, wrote = bytes(pair.got[side]), pair.streams[other][:pair.sent[other]]
        if conn is None:                  # B never accepted: A's connect failed or A aborted
            assert "a" in pair.aborted or pair.ca.error in (
                errno.ECONNREFUSED, errno.ETIMEDOUT, errno.ECONNRESET)
            continue
        assert wrote.startswith(got)
        if side in pair.aborted:          # its application is gone, and so is the TCB
            assert conn.state is State.CLOSED
            continue
        assert not conn.readable_bytes
        if conn.error:                    # a reset or a timeout ended it: nothing is left
            assert conn.error in (errno.ECONNREFUSED, errno.ETIMEDOUT, errno.ECONNRESET)
            assert conn.state is State.CLOSED
        if conn.eof:                      # the other's FIN came after everything it wrote
            assert got == wrote

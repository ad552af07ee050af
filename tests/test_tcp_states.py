"""Every state change of a connection is one RFC 9293 figure 5 draws (control/tcp/states.py)."""

from __future__ import annotations

import pytest

from p4mtcp.control.tcp import ACCELERATED, Connection, State, TcpConfig
from p4mtcp.control.tcp.states import TRANSITIONS
from test_tcp_support import ENGINE_IP, PEER_IP, Peer, Wire

S = State
# RFC 9293 section 3.3.2, figure 5, edge by edge; CLOSED also stands for "delete the TCB" after
# RST, ABORT and the timeouts of 3.8.3/3.10.7 from every state that has one.
RFC_FIGURE_5 = {
    (S.CLOSED, S.LISTEN), (S.CLOSED, S.SYN_SENT),
    (S.LISTEN, S.SYN_RECEIVED), (S.LISTEN, S.SYN_SENT), (S.LISTEN, S.CLOSED),
    (S.SYN_SENT, S.SYN_RECEIVED), (S.SYN_SENT, S.ESTABLISHED), (S.SYN_SENT, S.CLOSED),
    (S.SYN_RECEIVED, S.ESTABLISHED), (S.SYN_RECEIVED, S.FIN_WAIT_1),
    (S.SYN_RECEIVED, S.CLOSE_WAIT), (S.SYN_RECEIVED, S.CLOSED),
    (S.ESTABLISHED, S.FIN_WAIT_1), (S.ESTABLISHED, S.CLOSE_WAIT), (S.ESTABLISHED, S.CLOSED),
    (S.FIN_WAIT_1, S.FIN_WAIT_2), (S.FIN_WAIT_1, S.CLOSING), (S.FIN_WAIT_1, S.CLOSED),
    (S.FIN_WAIT_2, S.TIME_WAIT), (S.FIN_WAIT_2, S.CLOSED),
    (S.CLOSE_WAIT, S.LAST_ACK), (S.CLOSE_WAIT, S.CLOSED),
    (S.CLOSING, S.TIME_WAIT), (S.CLOSING, S.CLOSED),
    (S.LAST_ACK, S.CLOSED), (S.TIME_WAIT, S.CLOSED),
}
# How the engine draws a listener's TCBs (states.py): created CLOSED, opened into SYN-RECEIVED,
# or into ESTABLISHED from a SYN cookie.
ENGINE_DRAWING = {(S.CLOSED, S.SYN_RECEIVED), (S.CLOSED, S.ESTABLISHED)}


def test_the_table_is_the_rfc_diagram() -> None:
    table = {(old, new) for old, news in TRANSITIONS.items() for new in news}
    assert table == RFC_FIGURE_5 | ENGINE_DRAWING


@pytest.fixture
def changes(monkeypatch) -> list[tuple[State, State]]:
    """Every (old, new) passing Connection._set_state while the test runs."""
    if ACCELERATED:
        pytest.skip("the compiled engine's methods cannot be wrapped")
    seen: list[tuple[State, State]] = []
    original = Connection._set_state

    def record(self: Connection, new: State) -> None:
        old = self.state
        original(self, new)
        seen.append((old, new))

    monkeypatch.setattr(Connection, "_set_state", record)
    return seen


def _pair(timewait: float = 0.0):
    cfg = TcpConfig(idle_timeout=0, timewait=timewait)
    w = Wire(cfg, cfg)
    lst = w.b.listen(PEER_IP, 80, 4)
    a = w.a.connect(ENGINE_IP, 4000, PEER_IP, 80, w.now)
    w.run()
    b = lst.accept()
    assert a.state is b.state is S.ESTABLISHED
    return w, a, b


def test_a_close_in_turn_walks_both_sides_of_the_diagram(changes) -> None:
    w, a, b = _pair(timewait=1.0)
    a.close()
    w.run()
    b.close()
    w.run(until=w.now + 2.0)
    assert a.state is b.state is S.CLOSED
    assert changes == [
        (S.CLOSED, S.SYN_SENT), (S.CLOSED, S.SYN_RECEIVED), (S.SYN_SENT, S.ESTABLISHED),
        (S.SYN_RECEIVED, S.ESTABLISHED), (S.ESTABLISHED, S.FIN_WAIT_1),
        (S.ESTABLISHED, S.CLOSE_WAIT), (S.FIN_WAIT_1, S.FIN_WAIT_2),
        (S.CLOSE_WAIT, S.LAST_ACK), (S.FIN_WAIT_2, S.TIME_WAIT), (S.LAST_ACK, S.CLOSED),
        (S.TIME_WAIT, S.CLOSED)]


def test_simultaneous_close_goes_through_closing(changes) -> None:
    w, a, b = _pair(timewait=1.0)
    a.close()
    b.close()
    w.run(until=w.now + 2.0)
    assert (S.FIN_WAIT_1, S.CLOSING) in changes and (S.CLOSING, S.TIME_WAIT) in changes
    assert set(changes) <= RFC_FIGURE_5 | ENGINE_DRAWING


def test_simultaneous_open_and_reset(changes) -> None:
    p = Peer()
    p.eport, p.pport = 50000, 80
    conn = p.stack.connect(ENGINE_IP, 50000, PEER_IP, 80, p.now)
    syn = p.one()
    p.send("S", 7000, options=[("MSS", 1460)])
    p.one()
    p.send("SA", 7000, syn.seq + 1, options=[("MSS", 1460)])
    p.send("R", 7001)
    assert conn.state is S.CLOSED
    assert changes == [(S.CLOSED, S.SYN_SENT), (S.SYN_SENT, S.SYN_RECEIVED),
                       (S.SYN_RECEIVED, S.ESTABLISHED), (S.ESTABLISHED, S.CLOSED)]


def test_a_change_the_rfc_does_not_draw_raises_and_changes_nothing() -> None:
    w, a, _ = _pair()
    with pytest.raises(RuntimeError, match="no transition ESTABLISHED -> LAST_ACK"):
        a._set_state(S.LAST_ACK)
    assert a.state is S.ESTABLISHED

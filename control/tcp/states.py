"""RFC 9293's connection state diagram (section 3.3.2, figure 5) as one table.

Every state change of a Connection passes ``Connection._set_state``, which refuses a change this
table does not allow, so a path through the engine that the RFC does not draw fails loudly
instead of half-applying. Two rows are the engine's way of drawing the RFC's: a TCB a listener
creates starts CLOSED and is opened straight into SYN-RECEIVED (the diagram's LISTEN -> SYN-
RECEIVED; the listener itself stays in LISTEN), or, from a valid SYN cookie, into ESTABLISHED
(its SYN-RECEIVED was never stored, RFC 4987 3.6). A passive SYN-RECEIVED that the RFC returns to
LISTEN frees its TCB (CLOSED), the listener being the LISTEN state.
"""

from __future__ import annotations

from .events import State

CLOSED, LISTEN, SYN_SENT, SYN_RECEIVED = State.CLOSED, State.LISTEN, State.SYN_SENT, State.SYN_RECEIVED
ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2 = State.ESTABLISHED, State.FIN_WAIT_1, State.FIN_WAIT_2
CLOSE_WAIT, CLOSING, LAST_ACK, TIME_WAIT = State.CLOSE_WAIT, State.CLOSING, State.LAST_ACK, State.TIME_WAIT

TRANSITIONS: dict[State, frozenset[State]] = {
    CLOSED: frozenset({LISTEN, SYN_SENT,              # passive / active OPEN
                       SYN_RECEIVED, ESTABLISHED}),   # opened by a listener / a SYN cookie
    LISTEN: frozenset({SYN_RECEIVED, SYN_SENT, CLOSED}),
    SYN_SENT: frozenset({SYN_RECEIVED,                # rcv SYN (simultaneous open)
                         ESTABLISHED,                 # rcv SYN,ACK
                         CLOSED}),                    # CLOSE, RST, timeout
    SYN_RECEIVED: frozenset({ESTABLISHED,             # rcv ACK of SYN
                             FIN_WAIT_1,              # CLOSE
                             CLOSE_WAIT,              # rcv FIN (3.10.7.4, eighth check)
                             CLOSED}),                # RST (back to LISTEN), timeout, ABORT
    ESTABLISHED: frozenset({FIN_WAIT_1, CLOSE_WAIT, CLOSED}),
    FIN_WAIT_1: frozenset({FIN_WAIT_2,                # rcv ACK of FIN
                           CLOSING,                   # rcv FIN (simultaneous close)
                           CLOSED}),
    FIN_WAIT_2: frozenset({TIME_WAIT, CLOSED}),       # rcv FIN; RST, ABORT, orphan timeout
    CLOSE_WAIT: frozenset({LAST_ACK, CLOSED}),        # CLOSE; RST, ABORT, timeout
    CLOSING: frozenset({TIME_WAIT, CLOSED}),          # rcv ACK of FIN; RST
    LAST_ACK: frozenset({CLOSED}),                    # rcv ACK of FIN; RST
    TIME_WAIT: frozenset({CLOSED}),                   # timeout = 2 MSL; RST
}

ALLOWED: list[int] = [sum(1 << int(new) for new in TRANSITIONS[State(old)])
                      for old in range(len(State))]
"""ALLOWED[old] >> new & 1: the same table as bit masks, for the engine's one check per change."""

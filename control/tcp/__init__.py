"""Sans-IO TCP engine: segments and time in; segments to send, a deadline and events out.

    stack = TcpStack(TcpConfig(), isn_secret=os.urandom(16))
    conn = stack.connect(local_ip, local_port, remote_ip, remote_port, now)
    stack.receive(src_ip, dst_ip, tcp_bytes, now)     # for every segment of a batch, then
    for src_ip, dst_ip, tcp_bytes in stack.poll(now): ...   # ACKs for the whole batch go out here
    for ev in stack.events(): ...                     # Event(kind, sock)

Events: READABLE and WRITABLE are reported once until events() is drained (edge style; read
``readable_bytes``/``send_space`` for levels). WRITABLE follows CONNECTED and any ACK that frees
space after a send() could not take all its data. A passive connection reports nothing until
accept(); accept() then reports READABLE/EOF for what already arrived. CLOSED means the TCB is
gone (after RESET/ERROR too); a connection never accepted or connected reports nothing.
"""

import sys

from p4mtcp import accel

from .config import TcpConfig
from .connection import Connection
from .events import Event, EventKind, State
from .listener import Listener
from .stack import TcpStack
from .stats import TcpStats

ACCELERATED = accel.is_compiled(sys.modules[TcpStack.__module__])
"""True when the compiled build (``p4mtcp/accel.py``) runs instead of the pure-Python modules."""

__all__ = ["ACCELERATED", "TcpStack", "TcpConfig", "TcpStats", "Connection", "Listener", "Event",
           "EventKind", "State"]

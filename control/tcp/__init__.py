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

from . import accel

ACCELERATED = accel.activate(__path__)
"""True when the compiled build (``accel.py``) was loaded instead of the pure-Python modules."""

from .config import TcpConfig  # noqa: E402  (after activate: may load the compiled build)
from .connection import Connection  # noqa: E402
from .events import Event, EventKind, State  # noqa: E402
from .listener import Listener  # noqa: E402
from .stack import TcpStack  # noqa: E402
from .stats import TcpStats  # noqa: E402

__all__ = ["ACCELERATED", "TcpStack", "TcpConfig", "TcpStats", "Connection", "Listener", "Event",
           "EventKind", "State"]

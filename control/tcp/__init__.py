"""Sans-IO TCP engine: segments and time in; segments to send, a deadline and events out.

    stack = TcpStack(TcpConfig(), isn_secret=os.urandom(16))
    conn = stack.connect(local_ip, local_port, remote_ip, remote_port, now)
    stack.receive(src_ip, dst_ip, tcp_bytes, now); segments = stack.poll(now)
"""

from .config import TcpConfig
from .connection import Connection
from .events import Event, EventKind, State
from .listener import Listener
from .stack import TcpStack, TcpStats

__all__ = ["TcpStack", "TcpConfig", "TcpStats", "Connection", "Listener", "Event", "EventKind",
           "State"]

"""The link layer: frame pipes between the NIC process, the core processes and interfaces.

One home for what both sides of a link share (docs/ARCHITECTURE.md "Ports"): the `Port`
protocol (port.py), UNIX-socket links (unix.py), shared-memory rings (shmring.py, shm.py),
AF_PACKET with PACKET_MMAP (afpacket.py, frames.py) and the spec strings (specs.py).
"""

from .port import BATCH, MAX_FRAME, MAX_MTU, OneFrameSend, Port, PortStats
from .specs import host_side, open_port

__all__ = ["BATCH", "MAX_FRAME", "MAX_MTU", "OneFrameSend", "Port", "PortStats", "host_side",
           "open_port"]

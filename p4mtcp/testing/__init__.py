"""Protocol tests against the real p4mtcp stack in virtual time (docs/testing.md).

``Host`` is one core context with its socket API and TCP engine on a scripted port; the test
injects scapy packets, expects the segments the stack sends, and calls the mTCP API in between.
``p4mtcp.testing.packetdrill`` runs packetdrill scripts on the same host.
"""

from .host import LOCAL_IP, PORT, REMOTE_IP, Flow, Host, VirtualClock
from .match import ANY, Mismatch, compare, describe

__all__ = ["Host", "VirtualClock", "Flow", "Mismatch", "ANY", "compare", "describe",
           "LOCAL_IP", "REMOTE_IP", "PORT"]

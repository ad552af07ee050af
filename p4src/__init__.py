"""The P4_16 program of the NIC, shipped as package data so every target loads the same files.

The names below are the program's (docs/ARCHITECTURE.md, "The P4 program's names"): they live
beside the source so that the Python mirror and the agent spell every table, action and counter
from one list, and a rename in mtcp_nic.p4 is one edit here.
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent
PROGRAM = HERE / "mtcp_nic.p4"
P4INFO = HERE / "mtcp_nic.p4info.txtpb"

CPU_PORT = 255  # v1model port; BMv2 --cpu-port 255

# Tables.
PORT_ROLE = "NicIngress.port_role"
ARP_RESPONDER = "NicIngress.arp_responder"
LOCAL_IPV4 = "NicIngress.local_ipv4"
FLOW_STEER = "NicIngress.flow_steer"
RETA = "NicIngress.reta"
IPV4_LPM = "NicIngress.ipv4_lpm"
NEIGHBOR = "NicIngress.neighbor"
PORT_MAC = "NicIngress.port_mac"

# Actions.
SET_NETWORK_PORT = "NicIngress.set_network_port"
SET_CORE_PORT = "NicIngress.set_core_port"
UNKNOWN_PORT = "NicIngress.unknown_port"
ARP_REPLY = "NicIngress.arp_reply"
ARP_TO_CPU = "NicIngress.arp_to_cpu"
SET_LOCAL = "NicIngress.set_local"
NOT_LOCAL = "NicIngress.not_local"
STEER_TO_CORE = "NicIngress.steer_to_core"
USE_RSS = "NicIngress.use_rss"
NO_CORE = "NicIngress.no_core"
SET_NEXT_HOP = "NicIngress.set_next_hop"
NO_ROUTE = "NicIngress.no_route"
SET_DST_MAC = "NicIngress.set_dst_mac"
NEIGHBOR_MISS = "NicIngress.neighbor_miss"
SET_SRC_MAC = "NicIngress.set_src_mac"
NOP = "NicIngress.nop"
DROP = "NicIngress.drop"        # drop(reason): counted in DROPS, ends ingress
TO_CPU = "NicIngress.to_cpu"    # to_cpu(reason): a packet-in with a PACKET_IN_* reason
ICMP_ECHO_REPLY = "NicIngress.icmp_echo_reply"   # answers an echo request in the data plane

# Counters (indexed) and the direct counter on flow_steer.
RX_PORT = "NicIngress.rx_port"
TX_PORT = "NicEgress.tx_port"
DROPS = "NicIngress.drops"
FLOW_STEER_HITS = "NicIngress.flow_steer_hits"
ICMP_ECHO = "NicIngress.icmp_echo"     # echo replies sent, by port

# packet_in.reason values (p4src/include/headers.p4).
PACKET_IN_ARP = 1
PACKET_IN_NEIGHBOR_MISS = 2
PACKET_IN_ICMP = 3

# NicIngress.drops index -> reason (p4src/include/headers.p4).
DROP_REASONS = ("parser error", "bad IPv4 checksum", "bad TCP checksum", "bad length",
                "unknown port", "not local", "unhandled protocol", "no core", "no route",
                "IPv4 options", "bad ICMP checksum")

"""The P4_16 program of the NIC, shipped as package data so every target loads the same files."""

from pathlib import Path

HERE = Path(__file__).resolve().parent
PROGRAM = HERE / "mtcp_nic.p4"
P4INFO = HERE / "mtcp_nic.p4info.txtpb"

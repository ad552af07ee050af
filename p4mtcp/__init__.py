"""p4mtcp: mTCP's per-core user-level TCP stack on a P4-offloaded NIC."""

__version__ = "0.1.0"

"""p4mtcp: mTCP's per-core user-level TCP stack on a P4-offloaded NIC."""

__version__ = "0.1.0"

from . import accel as _accel  # noqa: E402

_accel.install()  # P4MTCP_ACCEL=1: the compiled build, before any other p4mtcp module loads

"""What a testbed of a given switch kind still lacks on this machine, in words a user can act on.

Tests skip with these reasons; `p4mtcp testbed` refuses to start with them.
"""

from __future__ import annotations

import importlib.util
import os
import shutil

from p4mtcp.bmv2 import mn
from p4mtcp.bmv2.launcher import INSTALL_HINTS, P4C_BM2_SS, SIMPLE_SWITCH_GRPC


def missing(kind: str) -> str | None:
    """None when a Mininet testbed with a `kind` switch can run here, else the reason it cannot."""
    if os.geteuid() != 0:
        return "Mininet needs root (network namespaces, veth links)"
    try:
        mn.load()
    except mn.MininetMissing as e:
        return str(e)
    for tool, package in (("mnexec", "mininet"), ("ethtool", "ethtool"), ("ip", "iproute2")):
        if shutil.which(tool) is None:
            return f"{tool} not found on PATH; install {package}"
    if kind == "embedded":
        if importlib.util.find_spec("p4mtcp.dataplane.nic") is None:
            return "the embedded NIC (p4mtcp.dataplane.nic) is not available"
    elif kind == "bmv2":
        for tool in (SIMPLE_SWITCH_GRPC, P4C_BM2_SS):
            if shutil.which(tool) is None:
                return f"{tool} not found on PATH; install {INSTALL_HINTS[tool]}"
    else:
        return f"unknown switch kind {kind!r}"
    return None

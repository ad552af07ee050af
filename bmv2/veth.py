"""veth pairs in this namespace as wires between software NICs and the processes they serve.

A BMv2 port is a Linux interface, so a fabric of BMv2 NICs wires its NICs to each other and to
their hosts' core processes with veth pairs. Neither end carries an address; IPv6 is off (no
router solicitations or MLD reports the NIC would have to drop and count) and so are the
offloads (a frame arrives as it was sent: checksums as written, no coalescing).
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

OFFLOADS = ("rx", "tx", "sg", "tso", "gso", "gro")
TIMEOUT = 10.0


class VethError(RuntimeError):
    """An `ip`/`ethtool`/`sysctl` command failed; the message has the command and its stderr."""


def _run(argv: Sequence[str], check: bool = True) -> None:
    try:
        done = subprocess.run(list(argv), capture_output=True, timeout=TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VethError(f"{' '.join(argv)}: {exc}") from None
    if check and done.returncode != 0:
        raise VethError(f"{' '.join(argv)}: exit {done.returncode}: "
                        f"{done.stderr.decode(errors='replace').strip()}")


def create(a: str, b: str, mtu: int | None = None) -> None:
    """The pair a <-> b, both up, quiet and without offloads (root); `mtu`: both ends' MTU
    (default the kernel's, 1500)."""
    _run(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
    try:
        for name in (a, b):
            if mtu is not None:
                _run(["ip", "link", "set", name, "mtu", str(mtu)])
            _run(["sysctl", "-qw", f"net.ipv6.conf.{name}.disable_ipv6=1"])
            for feature in OFFLOADS:          # features a veth cannot change are left alone
                _run(["ethtool", "-K", name, feature, "off"], check=False)
            _run(["ip", "link", "set", name, "up"])
    except VethError:
        delete(a)
        raise


def delete(a: str) -> None:
    """Remove the pair that `a` is one end of (no error if it is already gone)."""
    _run(["ip", "link", "del", a], check=False)

"""Port spec strings (`p4mtcp nic -i NUM@SPEC`, `core_links` in mtcp.conf) -> open ports.

  shm:PATH        the NIC's side of a shared-memory link, control socket at PATH (no root)
  shm-host:PATH   the other side: a core context connecting to PATH
  unix:PATH       the NIC's side of a UNIX-socket link, listening at PATH (no root)
  unix-host:PATH  the other side: a core context, or a second NIC, connecting to PATH
  IFNAME          AF_PACKET on a Linux interface (root), with PACKET_MMAP rings when possible
"""

from __future__ import annotations

from .afpacket import open_interface
from .port import Port
from .shm import ShmHostPort, ShmNicPort
from .unix import UnixHostPort, UnixNicPort, check_path

HOST_SIDE = {"shm": "shm-host", "unix": "unix-host"}
"""The connecting kind for each listening kind: a core's spec from its NIC's spec."""


def open_port(spec: str, connect_timeout: float = 0.0) -> Port:
    """The port a spec string names; ValueError says what is wrong with the spec.
    `connect_timeout`: how long a connecting side waits for its NIC to listen."""
    kind, sep, rest = spec.partition(":")
    if sep and kind == "shm":
        return ShmNicPort(check_path(spec, rest))
    if sep and kind == "shm-host":
        return ShmHostPort(check_path(spec, rest), connect_timeout)
    if sep and kind == "unix":
        return UnixNicPort(check_path(spec, rest))
    if sep and kind == "unix-host":
        return UnixHostPort(check_path(spec, rest), connect_timeout)
    if sep:
        raise ValueError(f"port spec {spec!r}: unknown kind {kind!r} (shm:, shm-host:, unix:, "
                         "unix-host: or an interface name)")
    if not spec or len(spec) >= 16 or "/" in spec or spec.strip() != spec:
        raise ValueError(f"port spec {spec!r}: not an interface name")
    return open_interface(spec)


def host_side(spec: str) -> str:
    """The spec a core uses to reach the NIC port `spec` (`shm:P` -> `shm-host:P`); an
    interface name or a connecting spec is returned as it is."""
    kind, sep, rest = spec.partition(":")
    return f"{HOST_SIDE[kind]}:{rest}" if sep and kind in HOST_SIDE else spec

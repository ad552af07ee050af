"""Network-namespace test helpers: a netns joined to the root namespace by a veth pair.

Tests that talk to the Linux kernel's TCP put the kernel peer in a namespace of their own, so
nothing leaves the machine and nothing is left behind: every object created here is torn down by
the context manager that made it, also when the test fails.  The root-namespace end of the veth
carries no IP address (the engine under test owns one there), forwards nothing and has IPv6 off,
so the root kernel neither answers for the engine nor adds router solicitations to the capture.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pytest

#: Upper bound for one `ip`/`tc`/`ethtool` call; they normally take milliseconds.
CMD_TIMEOUT = 10.0

#: Offloads turned off on both veth ends: checksums must be complete on the wire (AF_PACKET sees
#: the frame as sent, and the engine computes its own), and segments must be MTU-sized.
OFFLOADS_OFF = ("rx", "tx", "sg", "tso", "gso", "gro")


class NetnsError(RuntimeError):
    """A namespace, link or qdisc command failed; the message has the command and its stderr."""


class NetemUnavailable(NetnsError):
    """The running kernel has no netem qdisc (CONFIG_NET_SCH_NETEM is off)."""


def run(argv: Sequence[str], timeout: float = CMD_TIMEOUT, check: bool = True,
        input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run argv with a timeout; NetnsError naming the command when it fails and check is set."""
    try:
        done = subprocess.run(list(argv), input=input, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise NetnsError(f"{' '.join(argv)}: timed out after {timeout} s") from exc
    if check and done.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: exit {done.returncode}: "
                         f"{done.stderr.decode(errors='replace').strip()}")
    return done


def ns_argv(ns: str, argv: Sequence[str]) -> list[str]:
    """argv prefixed so that it runs inside namespace ns."""
    return ["ip", "netns", "exec", ns, *argv]


def ns_run(ns: str, argv: Sequence[str], timeout: float = CMD_TIMEOUT, check: bool = True,
           input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run argv inside namespace ns with a timeout."""
    return run(ns_argv(ns, argv), timeout=timeout, check=check, input=input)


@contextlib.contextmanager
def ns_popen(ns: str, argv: Sequence[str], **kwargs) -> Iterator[subprocess.Popen[bytes]]:
    """Start argv inside ns in the background, in a process group of its own; on exit, if it is
    still running, its whole group is killed (a shell's children too)."""
    proc = subprocess.Popen(ns_argv(ns, argv), start_new_session=True, **kwargs)
    try:
        yield proc
    finally:
        if proc.poll() is None:                  # not reaped: the group is certainly ours
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=CMD_TIMEOUT)


def wait_for_listener(ns: str, port: int, timeout: float = 5.0) -> None:
    """Block until a TCP socket listens on port inside ns (seen by `ss`), at most timeout s."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        shown = ns_run(ns, ["ss", "-Hltn", f"sport = :{port}"]).stdout
        if shown.strip():
            return
        time.sleep(0.02)
    raise NetnsError(f"nothing listens on port {port} in {ns} after {timeout} s")


def kernel_counters(ns: str) -> dict[str, int]:
    """The namespace's SNMP/TcpExt counters (`nstat -asz`), e.g. TcpRetransSegs,
    TcpExtTCPSackRecovery: what the kernel's own TCP did in the test."""
    shown = ns_run(ns, ["nstat", "-asz"]).stdout.decode()
    counters = {}
    for line in shown.splitlines():
        fields = line.split()
        if len(fields) >= 2 and not line.startswith("#") and fields[1].isdigit():
            counters[fields[0]] = int(fields[1])
    return counters


def sysctl(key: str, value: str, ns: str | None = None) -> None:
    """Write one sysctl through /proc/sys (inside ns when given)."""
    path = "/proc/sys/" + key.replace(".", "/")
    argv = ["sh", "-c", f"echo {value} > {path}"]
    run(ns_argv(ns, argv) if ns else argv)


def disable_offloads(ifname: str, ns: str | None = None) -> None:
    """Turn off checksum and segmentation offloads; features veth cannot change are skipped."""
    for feature in OFFLOADS_OFF:
        argv = ["ethtool", "-K", ifname, feature, "off"]
        run(ns_argv(ns, argv) if ns else argv, check=False)
    argv = ["ethtool", "-k", ifname]
    shown = run(ns_argv(ns, argv) if ns else argv).stdout.decode()
    for line in shown.splitlines():
        name, _, state = line.strip().partition(": ")
        if name in ("tx-checksumming", "rx-checksumming") and state.startswith("on"):
            raise NetnsError(f"{ifname}: could not turn {name} off ({line.strip()})")


@functools.cache
def netem_available() -> bool:
    """Whether this kernel has the netem qdisc (probed once in a throwaway netns)."""
    ns = f"p4tprobe{uuid.uuid4().hex[:8]}"
    run(["ip", "netns", "add", ns])
    try:
        done = ns_run(ns, ["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
                      check=False)
        return done.returncode == 0
    finally:
        run(["ip", "netns", "del", ns], check=False)


def apply_netem(ifname: str, spec: Sequence[str], ns: str | None = None) -> None:
    """`tc qdisc replace dev IF root netem SPEC...`; NetemUnavailable when the kernel lacks it."""
    argv = ["tc", "qdisc", "replace", "dev", ifname, "root", "netem", *spec]
    done = run(ns_argv(ns, argv) if ns else argv, check=False)
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip()
        if "unknown" in err.lower():
            raise NetemUnavailable(f"{' '.join(argv)}: {err}")
        raise NetnsError(f"{' '.join(argv)}: exit {done.returncode}: {err}")


@dataclass(frozen=True)
class VethNetns:
    """A namespace `ns` holding `ns_if` (address `ns_ip`), and its root-namespace peer `host_if`.

    `engine_ip` is in the same /24 and is meant for the engine driven on `host_if`; the kernel
    reaches it by ARP through ns_if.
    """

    ns: str
    host_if: str
    ns_if: str
    ns_ip: str
    engine_ip: str
    prefix: int = 24

    def run(self, argv: Sequence[str], timeout: float = CMD_TIMEOUT, check: bool = True,
            input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run argv inside the namespace with a timeout."""
        return ns_run(self.ns, argv, timeout=timeout, check=check, input=input)

    def popen(self, argv: Sequence[str], **kwargs) -> contextlib.AbstractContextManager[
            subprocess.Popen[bytes]]:
        """Background process inside the namespace, killed on exit."""
        return ns_popen(self.ns, argv, **kwargs)

    def netem(self, spec: Sequence[str], both: bool = True) -> None:
        """Impair the kernel's egress (ns_if), and the engine's egress (host_if) when both."""
        apply_netem(self.ns_if, spec, ns=self.ns)
        if both:
            apply_netem(self.host_if, spec)


def _ns_prefix() -> str:
    """Namespace names carry the creating process id, so leftovers of a killed run (SIGKILL
    skips every cleanup) can be told apart from a live run's and removed."""
    return f"p4t-{os.getpid()}-"


def sweep_stale_namespaces() -> list[str]:
    """Delete p4t-PID-* namespaces whose creating process is gone; return their names."""
    listed = run(["ip", "netns", "list"]).stdout.decode().split("\n")
    stale = []
    for line in listed:
        name = line.split(" ")[0]
        parts = name.split("-")
        if len(parts) == 3 and parts[0] == "p4t" and parts[1].isdigit():
            try:
                os.kill(int(parts[1]), 0)
            except ProcessLookupError:
                run(["ip", "netns", "del", name], check=False)
                stale.append(name)
            except PermissionError:
                pass                              # alive, owned by someone else
    return stale


def _link_exists(ifname: str) -> bool:
    return run(["ip", "link", "show", "dev", ifname], check=False).returncode == 0


@contextlib.contextmanager
def veth_netns(subnet: int = 1) -> Iterator[VethNetns]:
    """Create netns + veth on 10.231.<subnet>.0/24 (kernel .2, engine .1); always torn down.

    The names carry a random suffix so that parallel or leftover runs never collide.
    """
    if not 0 <= subnet <= 255:
        raise ValueError(f"subnet must be 0..255, got {subnet}")
    tag = uuid.uuid4().hex[:6]
    ns, host_if, ns_if = f"{_ns_prefix()}{tag}", f"p4th{tag}", f"p4tn{tag}"
    net = VethNetns(ns=ns, host_if=host_if, ns_if=ns_if,
                    ns_ip=f"10.231.{subnet}.2", engine_ip=f"10.231.{subnet}.1")
    try:
        run(["ip", "netns", "add", ns])
        run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", ns])
        ns_run(ns, ["ip", "link", "set", "lo", "up"])
        ns_run(ns, ["ip", "addr", "add", f"{net.ns_ip}/{net.prefix}", "dev", ns_if])
        with contextlib.suppress(NetnsError):
            sysctl(f"net.ipv6.conf.{ns_if}.disable_ipv6", "1", ns=ns)
        # The engine, not the root kernel, owns this side: no IPv6 chatter, no forwarding.
        sysctl(f"net.ipv6.conf.{host_if}.disable_ipv6", "1")
        sysctl(f"net.ipv4.conf.{host_if}.forwarding", "0")
        disable_offloads(host_if)
        disable_offloads(ns_if, ns=ns)
        run(["ip", "link", "set", host_if, "up"])
        ns_run(ns, ["ip", "link", "set", ns_if, "up"])
        yield net
    finally:
        if _link_exists(host_if):
            run(["ip", "link", "del", host_if], check=False)
        run(["ip", "netns", "del", ns], check=False)


@contextlib.contextmanager
def linked_netns(subnet: int = 2) -> Iterator[tuple[str, str, str, str]]:
    """Two namespaces joined by a veth on 10.231.<subnet>.0/24: yields (ns_a, ip_a, ns_b, ip_b).

    For kernel-to-kernel baselines and for end-to-end tests that put something between hosts.
    Always torn down."""
    if not 0 <= subnet <= 255:
        raise ValueError(f"subnet must be 0..255, got {subnet}")
    tag = uuid.uuid4().hex[:6]
    ns_a, ns_b = f"{_ns_prefix()}a{tag}", f"{_ns_prefix()}b{tag}"
    if_a, if_b = f"p4ta{tag}", f"p4tb{tag}"
    ip_a, ip_b = f"10.231.{subnet}.1", f"10.231.{subnet}.2"
    try:
        run(["ip", "netns", "add", ns_a])
        run(["ip", "netns", "add", ns_b])
        run(["ip", "link", "add", if_a, "netns", ns_a, "type", "veth", "peer", "name", if_b,
             "netns", ns_b])
        for ns, ifname, ip in ((ns_a, if_a, ip_a), (ns_b, if_b, ip_b)):
            ns_run(ns, ["ip", "link", "set", "lo", "up"])
            ns_run(ns, ["ip", "addr", "add", f"{ip}/24", "dev", ifname])
            disable_offloads(ifname, ns=ns)
            ns_run(ns, ["ip", "link", "set", ifname, "up"])
        yield ns_a, ip_a, ns_b, ip_b
    finally:
        run(["ip", "netns", "del", ns_a], check=False)    # deleting a netns deletes its veth end
        run(["ip", "netns", "del", ns_b], check=False)


def netns_unavailable_reason() -> str | None:
    """Why netns tests cannot run here (not root, no `ip netns`), or None when they can."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces and veth pairs"
    ns = f"p4tprobe{uuid.uuid4().hex[:8]}"
    try:
        run(["ip", "netns", "add", ns])
    except (NetnsError, FileNotFoundError) as exc:
        return f"`ip netns add` does not work here: {exc}"
    run(["ip", "netns", "del", ns], check=False)
    return None


@pytest.fixture
def veth_pair() -> Iterator[VethNetns]:
    """A fresh VethNetns for one test; skips with the reason when namespaces are unavailable.

    One subnet serves every test: names are random and the root end has no address or route, so
    concurrent pairs cannot clash."""
    reason = netns_unavailable_reason()
    if reason:
        pytest.skip(reason)
    sweep_stale_namespaces()
    with veth_netns(1) as net:
        yield net

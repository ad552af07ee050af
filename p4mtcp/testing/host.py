"""A host under test: one real core context on a scripted port, driven in virtual time.

:class:`Host` builds the same :class:`~p4mtcp.control.context.Context` an application gets from
``mtcp_create_context`` — socket table, epoll, the sans-IO TCP engine — but its NIC port is a
:class:`~p4mtcp.testing.links.ScriptedPort` and its clock is a :class:`VirtualClock` that moves
only when the test waits. Nothing runs in the background and nothing depends on the machine's
speed: a retransmission timer of 1 s fires after exactly 1 s of virtual time.

The test plays the peer: :meth:`Host.inject` hands it a scapy packet as the NIC would,
:meth:`Host.expect` waits (in virtual time) for the next segment the stack sends and checks it
against a template (:mod:`p4mtcp.testing.match`), and :attr:`Host.api` is the mTCP API bound to
the context, so socket calls and packets mix in one test::

    h = Host()
    ls = h.listen(8080)
    h.inject(IP() / TCP(flags="S", seq=100, options=[("MSS", 1000)]))
    h.expect(TCP(flags="SA", seq=0, ack=101))
    h.inject(IP() / TCP(flags="A", seq=101, ack=1))
    s = h.api.accept(ls)

``Host(nic=True)`` puts the embedded NIC's P4 pipeline on the path (:mod:`p4mtcp.testing.nic`).
"""

from __future__ import annotations

import dataclasses
import functools
import socket
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Packet

from p4mtcp.control import api as mtcp_api
from p4mtcp.control.config import MtcpConf
from p4mtcp.control.context import Context
from p4mtcp.control.tcp import TcpConfig
from p4mtcp.control.tcp.wire import pseudo_sum
from p4mtcp.hashing import ones_sum

from .links import DirectLink, Link
from .match import MASK, Mismatch, compare, describe, describe_template

LOCAL_IP = "192.168.0.1"     # packetdrill's default local address
REMOTE_IP = "192.0.2.1"      # packetdrill's default remote address
PEER_MAC = "02:00:c0:00:02:01"
PORT = 8080                  # default listen / connect port (packetdrill's bind and connect port)
PEER_PORT = 48000            # the peer's port in injected segments that name none
START = 0.0                  # the virtual clock's reading at time 0 of a test
DEFAULT_TIMEOUT = 10.0       # virtual seconds expect() waits when given no deadline
MAX_STEPS = 200_000          # loop steps one wait may take: a stack asking to run forever fails
ISN_SECRET = b"p4mtcp.testing secret key"  # fixed: the same test sees the same ISNs every run
_SYN, _ACK = 0x02, 0x10


class VirtualClock:
    """The context's clock; time moves only by :meth:`set` (never backwards)."""

    def __init__(self, start: float = START):
        self.t = start

    def __call__(self) -> float:
        return self.t

    def set(self, t: float) -> None:
        if t < self.t:
            raise ValueError(f"virtual time cannot go back from {self.t} to {t}")
        self.t = t


@dataclass
class Flow:
    """One connection as the test sees it: ports and both initial sequence numbers."""

    local_port: int
    remote_port: int
    stack_isn: int | None = None  # from the stack's SYN or SYN-ACK
    peer_isn: int | None = None   # from the test's SYN or SYN-ACK


class BoundApi:
    """The mTCP API bound to one context: ``api.write(s, b"x")`` is
    ``mtcp.mtcp_write(ctx, s, b"x")``; errors raise ``OSError`` exactly as the API does."""

    def __init__(self, ctx: Context):
        self._ctx = ctx

    def __getattr__(self, name: str) -> Callable[..., Any]:
        fn = getattr(mtcp_api, f"mtcp_{name}", None)
        if not callable(fn):
            raise AttributeError(f"the mTCP API has no mtcp_{name}")
        return functools.partial(fn, self._ctx)


def _tcp_config(tcp: TcpConfig | Mapping[str, Any] | None, offload: bool) -> TcpConfig:
    if isinstance(tcp, TcpConfig):
        base = tcp
    else:
        base = TcpConfig(**dict(tcp or {}))
    return dataclasses.replace(base, offload_checksum=offload)


def checksum_errors(frame: bytes) -> list[str]:
    """What is wrong with the IPv4 and TCP checksums of an Ethernet/IPv4/TCP frame."""
    errors = []
    mv = memoryview(frame)[14:]
    ihl = (mv[0] & 0x0F) * 4
    total = int.from_bytes(mv[2:4], "big")
    if ones_sum(mv[:ihl]) != 0xFFFF:
        errors.append("bad IPv4 header checksum")
    tcp = mv[ihl:total]
    src, dst = int.from_bytes(mv[12:16], "big"), int.from_bytes(mv[16:20], "big")
    if ones_sum(tcp, pseudo_sum(src, dst, len(tcp))) != 0xFFFF:
        errors.append("bad TCP checksum")
    return errors


class Host:
    """One core context under test, its scripted port and its virtual clock.

    ``tcp``: a TcpConfig or a dict of TcpConfig fields (e.g. ``{"rto_min": 0.2}``) for this host;
    unset fields keep p4mtcp's defaults. ``nic``: run frames through the embedded NIC's P4
    pipeline. ``link``: a ready link instead (advanced)."""

    def __init__(self, *, tcp: TcpConfig | Mapping[str, Any] | None = None, nic: bool = False,
                 local_ip: str = LOCAL_IP, remote_ip: str = REMOTE_IP,
                 max_concurrency: int = 64, link: Link | None = None):
        self.local_ip = local_ip
        self.remote_ip = remote_ip
        if link is None:
            if nic:
                from .nic import NicLink, one_core_host

                link = NicLink(one_core_host(local_ip, remote_ip, PEER_MAC))
            else:
                link = DirectLink()
        self.link = link
        # The NIC's port MAC when it is on the path; else mtcp.conf's default form (02:00:<ip>).
        self.host_mac = getattr(link, "host_mac", "02:00:" + ":".join(
            f"{b:02x}" for b in socket.inet_aton(local_ip)))
        self.tcp_config = _tcp_config(tcp, link.offload_checksum)
        cfg = self.tcp_config
        conf = MtcpConf(num_cores=1, max_concurrency=max_concurrency,
                        max_num_buffers=max_concurrency, rcvbuf_size=cfg.rcvbuf,
                        sndbuf_size=cfg.sndbuf, tcp_timewait=int(cfg.timewait),
                        tcp_timeout=int(cfg.idle_timeout))
        self.clock = VirtualClock()
        ip = int.from_bytes(socket.inet_aton(local_ip), "big")
        self.ctx = Context(0, conf, link.port, [ip], offload_checksum=link.offload_checksum,
                           clock=self.clock, isn_secret=ISN_SECRET, tcp_config=cfg)
        self.api = BoundApi(self.ctx)
        self.flows: dict[tuple[int, int], Flow] = {}
        self.current: Flow | None = None
        self.sent: deque[Packet] = deque()  # segments the stack sent that no expect() took yet
        self.on_step: Callable[[], None] | None = None  # called after every loop step

    # ------------------------------------------------------------------ time

    @property
    def now(self) -> float:
        """Virtual seconds since the host was created."""
        return self.clock.t - START

    def _step(self) -> None:
        self.ctx.step(0.0)
        for frame in self.link.from_stack():
            eth = Ether(frame)
            if IP not in eth or TCP not in eth:
                continue
            pkt = eth[IP]
            pkt.time = self.now
            pkt.checksum_errors = checksum_errors(frame)
            self._saw_outbound(pkt[TCP])
            self.sent.append(pkt)
        if self.on_step is not None:
            self.on_step()

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` of virtual time pass, running every timer that falls due; segments sent
        meanwhile wait in :attr:`sent` for :meth:`expect`."""
        self.run_until(self.now + seconds)

    def run_until(self, t: float, stop: Callable[[], bool] | None = None) -> None:
        """Run the context until virtual time ``t`` (seconds since start), timers included; stop
        early (at the time it became true) once ``stop()`` holds after a loop step."""
        target = START + t
        self._step()
        for _ in range(MAX_STEPS):
            if stop is not None and stop():
                return
            d = self.ctx.stack.next_deadline()
            if d is None or d > target:
                break
            self.clock.set(max(d, self.clock.t))
            self._step()
        else:
            raise RuntimeError(f"the stack asked for more than {MAX_STEPS} loop steps before "
                               f"t={t:.6f}s")
        if self.clock.t < target:
            self.clock.set(target)
            self._step()

    # ------------------------------------------------------------------ flows

    def flow(self, local_port: int, remote_port: int) -> Flow:
        key = (local_port, remote_port)
        f = self.flows.get(key)
        if f is None:
            f = self.flows[key] = Flow(local_port, remote_port)
        return f

    def _saw_outbound(self, tcp: Packet) -> None:
        flags = int(tcp.flags)
        if flags & _SYN:
            f = self.flow(tcp.sport, tcp.dport)
            f.stack_isn = tcp.seq
            self.current = f

    # ------------------------------------------------------------------ packets in

    def inject(self, pkt: Packet, *, relative: bool = True) -> Packet:
        """Hand ``pkt`` (``TCP()``, ``IP()/TCP()`` or ``Ether()/IP()/TCP()``) to the stack as the
        NIC would, and run one loop step. Filled in when left out: addresses (the peer to the
        host), ports (the current connection's, else PEER_PORT -> PORT), MACs, lengths and
        checksums; set a field explicitly (e.g. ``chksum=0``) to send it as it is. With
        ``relative``, ``ack`` and SACK blocks count from the stack's initial sequence number, as
        :meth:`expect` shows them. Returns the packet as sent (Ether/IP/TCP)."""
        if not isinstance(pkt, Packet) or TCP not in pkt:
            raise TypeError(f"inject: {pkt!r} is not a scapy packet with a TCP layer")
        pkt = pkt.copy()
        if IP not in pkt:
            pkt = IP() / pkt
        ip, tcp = pkt[IP], pkt[TCP]
        ip.fields.setdefault("src", self.remote_ip)
        ip.fields.setdefault("dst", self.local_ip)
        if "sport" not in tcp.fields or "dport" not in tcp.fields:
            cur = self.current
            tcp.fields.setdefault("sport", cur.remote_port if cur else PEER_PORT)
            tcp.fields.setdefault("dport", cur.local_port if cur else PORT)
        f = self.flow(tcp.dport, tcp.sport)
        flags = int(tcp.flags)
        if relative and f.stack_isn is not None:
            if flags & _ACK:
                tcp.ack = (tcp.ack + f.stack_isn) & MASK
            isn = f.stack_isn
            tcp.options = [(n, tuple((x + isn) & MASK for x in v)) if n == "SAck" else (n, v)
                           for n, v in tcp.options]
        if flags & _SYN:
            f.peer_isn = tcp.seq
            self.current = f
        if Ether in pkt:
            eth = pkt[Ether]
            eth.fields.setdefault("src", PEER_MAC)
            eth.fields.setdefault("dst", self.host_mac)
        else:
            pkt = Ether(src=PEER_MAC, dst=self.host_mac) / pkt
        frame = bytes(pkt)
        self.link.to_stack(frame)
        self._step()
        sent = Ether(frame)
        sent.time = self.now
        return sent

    # ------------------------------------------------------------------ packets out

    def next_segment(self, deadline: float | None = None) -> Packet | None:
        """The oldest segment the stack sent and no one took yet, waiting (in virtual time) until
        ``deadline`` (seconds since start; default now + DEFAULT_TIMEOUT); None if none came."""
        if deadline is None:
            deadline = self.now + DEFAULT_TIMEOUT
        if not self.sent:
            self.run_until(deadline, stop=lambda: bool(self.sent))
        return self.sent.popleft() if self.sent else None

    def expect(self, template: Packet | None = None, *, timeout: float = DEFAULT_TIMEOUT,
               within: tuple[float, float] | None = None, relative: bool = True) -> Packet:
        """The next segment the stack sends (IP/TCP, ``.time`` = when), checked against
        ``template``: only the fields it sets are compared; ``seq`` counts from the stack's
        initial sequence number when ``relative``. ``within=(lo, hi)``: it must leave between
        lo and hi seconds from now. Raises :class:`Mismatch` with a field-by-field diff."""
        wanted = describe_template(template) if template is not None else ""  # checks it too
        start = self.now
        deadline = start + (within[1] if within else timeout)
        pkt = self.next_segment(deadline)
        if pkt is None:
            raise Mismatch(f"no segment sent within {deadline - start:.3f} s (until "
                           f"t={deadline:.3f} s)", expected=wanted)
        if pkt.checksum_errors:
            raise Mismatch(f"segment sent at t={pkt.time:.6f} s has a "
                           + " and a ".join(pkt.checksum_errors), actual=self.show(pkt))
        if template is not None:
            f = self.flow(pkt[TCP].sport, pkt[TCP].dport)
            base = f.stack_isn if relative and f.stack_isn is not None else 0
            diffs = compare(pkt, template, base)
            if diffs:
                raise Mismatch(f"segment sent at t={pkt.time:.6f} s differs", diffs, wanted,
                               self.show(pkt))
        if within is not None and pkt.time < start + within[0]:
            raise Mismatch("segment sent too early", [("time", f"{start + within[0]:.6f}"
                                                      f"~{start + within[1]:.6f}",
                                                      f"{pkt.time:.6f}")], wanted, self.show(pkt))
        return pkt

    def expect_silence(self, seconds: float) -> None:
        """Nothing is sent during the next ``seconds`` of virtual time (nor is anything waiting)."""
        self.run_until(self.now + seconds, stop=lambda: bool(self.sent))
        if self.sent:
            pkt = self.sent[0]
            raise Mismatch(f"expected no segment for {seconds} s, one left at t={pkt.time:.6f} s",
                           actual=self.show(pkt))

    def show(self, pkt: Packet) -> str:
        """``pkt`` (sent by the stack) in packetdrill notation, relative numbers."""
        tcp = pkt[TCP]
        f = self.flow(tcp.sport, tcp.dport)
        return describe(pkt, f.stack_isn or 0, 0)

    # ------------------------------------------------------------------ sockets

    def listen(self, port: int = PORT, backlog: int = 16) -> int:
        """A listening socket on ``port`` (any local address); its id."""
        s = self.api.socket(mtcp_api.AF_INET, mtcp_api.SOCK_STREAM, 0)
        self.api.bind(s, ("0.0.0.0", port))
        self.api.listen(s, backlog)
        return s

    def connect(self, port: int = PORT) -> int:
        """A socket whose SYN to the peer (remote_ip:port) is queued; its id."""
        s = self.api.socket(mtcp_api.AF_INET, mtcp_api.SOCK_STREAM, 0)
        self.api.connect(s, (self.remote_ip, port))
        return s

    def close(self) -> None:
        """Destroy the context (FINs go out to the scripted port) and release its port."""
        if not self.ctx.done:
            self.ctx.destroy()

    def __enter__(self) -> "Host":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

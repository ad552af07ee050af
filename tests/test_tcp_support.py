"""Helpers for the TCP engine tests: a scapy-scripted peer facing one engine, and a wire between
two engines. (No tests here; the name keeps it next to the tests that import it.)"""

from __future__ import annotations

import ipaddress

from scapy.layers.inet import IP, TCP
from scapy.packet import Raw

from p4mtcp.control.tcp import TcpConfig, TcpStack

ENGINE_IP_S, PEER_IP_S = "10.0.0.1", "10.0.0.2"
ENGINE_IP = int(ipaddress.IPv4Address(ENGINE_IP_S))
PEER_IP = int(ipaddress.IPv4Address(PEER_IP_S))
M = 0xFFFFFFFF


def tcp_bytes(flags: str, seq: int, ack: int = 0, *, sport: int, dport: int, window: int = 65535,
              options: list | None = None, payload: bytes = b"", src: str = PEER_IP_S,
              dst: str = ENGINE_IP_S, urgptr: int = 0) -> bytes:
    """A TCP segment built by scapy, checksum computed over the pseudo-header."""
    pkt = IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags, seq=seq & M,
                                     ack=ack & M, window=window, options=options or [],
                                     urgptr=urgptr)
    if payload:
        pkt = pkt / Raw(payload)
    return bytes(pkt)[20:]


def flags(seg: TCP) -> str:
    """Flags as a canonical string in FSRPAU order, e.g. 'SA', 'FA', 'R'."""
    return "".join(c for c in "FSRPAU" if c in str(seg.flags))


def opts(seg: TCP) -> dict:
    return {k: v for k, v in seg.options if k not in ("NOP", "EOL")}


def payload(seg: TCP) -> bytes:
    return bytes(seg.payload)


class Peer:
    """Drives one engine from a scripted peer. The engine is ENGINE_IP, the peer PEER_IP."""

    def __init__(self, now: float = 1000.0, **cfg) -> None:
        cfg.setdefault("idle_timeout", 0)
        self.stack = TcpStack(TcpConfig(**cfg), isn_secret=b"conformance-key!")
        self.now = now
        self.eport = 80         # engine port
        self.pport = 40000      # peer port
        self.raw: list[tuple[int, int, bytes]] = []

    def send(self, fl: str, seq: int, ack: int = 0, **kw) -> None:
        kw.setdefault("sport", self.pport)
        kw.setdefault("dport", self.eport)
        self.stack.receive(PEER_IP, ENGINE_IP, tcp_bytes(fl, seq, ack, **kw), self.now)

    def out(self, advance: float = 0.0) -> list[TCP]:
        """Advance the clock and return what the engine transmits, parsed by scapy."""
        self.now += advance
        self.raw = self.stack.poll(self.now)
        return [TCP(b) for _, _, b in self.raw]

    def one(self, advance: float = 0.0) -> TCP:
        segs = self.out(advance)
        assert len(segs) == 1, [s.summary() for s in segs]
        return segs[0]

    def none(self, advance: float = 0.0) -> None:
        segs = self.out(advance)
        assert segs == [], [s.summary() for s in segs]

    def run_timers(self, until: float) -> list[TCP]:
        """Step through every deadline up to ``until``; everything sent, in order."""
        sent: list[TCP] = []
        for _ in range(10_000):
            d = self.stack.next_deadline()
            if d is None or d > until:
                break
            sent += self.out(max(0.0, d - self.now))
        self.now = max(self.now, until)
        sent += self.out()
        return sent

    # -- common openings -------------------------------------------------------------------

    def accept(self, syn_options=None, peer_isn: int = 1000, window: int = 65535):
        """Passive open through the full three-way handshake; returns (conn, synack)."""
        lst = self.stack.listen(ENGINE_IP, self.eport, 16)
        self.send("S", peer_isn, options=syn_options if syn_options is not None
                  else [("MSS", 1460)], window=window)
        synack = self.one()
        assert flags(synack) == "SA"
        self.send("A", peer_isn + 1, synack.seq + 1, window=window)
        assert self.out() == []
        conn = lst.accept()
        assert conn is not None
        self.listener = lst
        return conn, synack

    def connect(self, syn_options=None, peer_isn: int = 5000, window: int = 65535,
                synack_options=None):
        """Active open; returns (conn, syn)."""
        self.eport, self.pport = 50000, 80
        conn = self.stack.connect(ENGINE_IP, self.eport, PEER_IP, self.pport, self.now)
        syn = self.one()
        assert flags(syn) == "S"
        self.send("SA", peer_isn, syn.seq + 1, window=window,
                  options=synack_options if synack_options is not None else [("MSS", 1460)])
        ack = self.one()
        assert flags(ack) == "A" and ack.ack == peer_isn + 1
        return conn, syn


class Wire:
    """Two engines back to back; ``run`` moves segments until both are quiet."""

    def __init__(self, cfg_a: TcpConfig | None = None, cfg_b: TcpConfig | None = None) -> None:
        self.a = TcpStack(cfg_a or TcpConfig(idle_timeout=0), isn_secret=b"engine-a-secret!")
        self.b = TcpStack(cfg_b or TcpConfig(idle_timeout=0), isn_secret=b"engine-b-secret!")
        self.now = 0.0
        self.log: list[tuple[str, TCP]] = []
        self.record = False
        self.drop = None        # optional predicate(direction, TCP) -> bool

    def step(self) -> bool:
        moved = False
        for name, src, dst in (("a>b", self.a, self.b), ("b>a", self.b, self.a)):
            for s_ip, d_ip, seg in src.poll(self.now):
                parsed = TCP(seg) if self.record or self.drop else None
                if self.record:
                    self.log.append((name, parsed))
                if self.drop is not None and self.drop(name, parsed):
                    continue
                dst.receive(s_ip, d_ip, seg, self.now)
                moved = True
        return moved

    def run(self, max_steps: int = 10_000, until: float | None = None) -> None:
        """Exchange segments; when quiet, jump to the next timer until ``until`` (if given)."""
        for _ in range(max_steps):
            if self.step():
                continue
            if until is None:
                return
            ds = [d for d in (self.a.next_deadline(), self.b.next_deadline()) if d is not None]
            if not ds or min(ds) > until:
                self.now = max(self.now, until)
                return
            self.now = max(self.now, min(ds))
        raise AssertionError("wire did not settle")

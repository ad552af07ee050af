"""The engine against the Linux kernel's TCP, over a veth pair into a network namespace.

The kernel peer (curl, nc, python3 -m http.server) runs in a namespace the test creates; the
engine is driven by tests/enginedriver.py on the root-namespace end of the veth.  Each transfer
moves 10 MB byte-exact (sha256 on both sides), clean, under 2% loss and under reordering; the
impairment comes from `tc netem` where the kernel has it, and from the driver otherwise.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP

from enginedriver import EngineDriver, Impairment, StreamApp, int_to_ip, ip_to_int
from netns import VethNetns, netem_available, veth_pair, wait_for_listener  # noqa: F401
from p4mtcp.control.tcp import TcpConfig, TcpStack

pytestmark = pytest.mark.root


class ScriptedStack:
    """Stand-in for TcpStack in the driver's own checks: emits given segments once, keeps what
    arrives.  Lets the driver's ARP, framing and checksums be shown without the engine."""

    def __init__(self, out: list[tuple[int, int, bytes]] | None = None) -> None:
        self.out = list(out or [])
        self.received: list[tuple[int, int, bytes]] = []

    def receive(self, src_ip: int, dst_ip: int, tcp_bytes: bytes, now: float) -> None:
        self.received.append((src_ip, dst_ip, tcp_bytes))

    def poll(self, now: float) -> list[tuple[int, int, bytes]]:
        out, self.out = self.out, []
        return out

    def next_deadline(self) -> float | None:
        return None


def test_driver_answers_arp_and_receives_kernel_syn(veth_pair: VethNetns) -> None:
    """The kernel resolves the engine's address through the driver and its SYN reaches the stack."""
    stack = ScriptedStack()
    with EngineDriver(veth_pair.host_if, stack, veth_pair.engine_ip) as drv:
        with veth_pair.popen(["nc", "-z", "-w", "3", veth_pair.engine_ip, "5555"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
            drv.run(lambda: bool(stack.received), timeout=5)
        neigh = veth_pair.run(["ip", "neigh", "show", veth_pair.engine_ip]).stdout.decode()
    assert drv.stats.arp_replies >= 1
    assert drv.mac.hex(":") in neigh.lower()
    src, dst, tcp = stack.received[0]
    syn = TCP(tcp)
    assert (int_to_ip(src), int_to_ip(dst)) == (veth_pair.ns_ip, veth_pair.engine_ip)
    assert syn.flags == "S" and syn.dport == 5555
    assert drv.stats.rx_bad_tcp_checksum == 0 and drv.stats.rx_bad_ipv4 == 0


def test_driver_resolves_kernel_and_frames_valid_segments(veth_pair: VethNetns) -> None:
    """A SYN the driver frames (ARP for the peer, IPv4 header, no listener there) draws the
    kernel's RST|ACK: proof that its ARP requests, IPv4 header and our checksums are right."""
    eng, peer = ip_to_int(veth_pair.engine_ip), ip_to_int(veth_pair.ns_ip)
    syn = TCP(sport=40000, dport=5556, seq=1000, flags="S", window=8192)
    syn = bytes(IP(src=veth_pair.engine_ip, dst=veth_pair.ns_ip) / syn)[20:]
    stack = ScriptedStack([(eng, peer, syn)])
    with EngineDriver(veth_pair.host_if, stack, veth_pair.engine_ip) as drv:
        drv.run(lambda: bool(stack.received), timeout=5)
    assert drv.stats.arp_requests >= 1 and drv.stats.tx_bad_tcp_checksum == 0
    rst = TCP(stack.received[0][2])
    assert rst.flags == "RA" and rst.ack == 1001 and rst.sport == 5556 and rst.dport == 40000


# -- the engine against the kernel -------------------------------------------------------------

BLOB = random.Random(20261125).randbytes(10 << 20)
BLOB_SHA = hashlib.sha256(BLOB).hexdigest()
ENGINE_CONFIG = TcpConfig(rcvbuf=512 << 10, sndbuf=512 << 10, offload_checksum=False,
                          idle_timeout=0)
RUN_LIMIT = 150.0           # wall-clock seconds for one 10 MB exchange, generous even under loss
NO_NETEM = ("this kernel has no netem qdisc (CONFIG_NET_SCH_NETEM is off); the driver-* "
            "variants apply the same loss/reordering inside the test driver instead")

# name -> (netem arguments, or a driver Impairment, or None for a clean link)
IMPAIRMENTS: dict[str, tuple[str, ...] | Impairment | None] = {
    "clean": None,
    "netem-loss2": ("loss", "2%"),
    "netem-reorder": ("delay", "5ms", "reorder", "25%", "50%"),
    "driver-loss2": Impairment(loss=0.02, seed=5),
    "driver-reorder": Impairment(reorder=0.25, reorder_delay=0.005, seed=6),
}
LOSSY = {"netem-loss2", "driver-loss2"}


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Wire:
    """Everything the tap saw, condensed: the engine's transmissions and the kernel's."""

    SAMPLE = 400

    def __init__(self) -> None:
        self.out_sample: list[bytes] = []         # first segments the engine sent
        self.out_sack: list[bytes] = []           # engine segments long enough to carry SACK
        self.out_data_retx = 0                    # engine payload segments below its high mark
        self._out_high: int | None = None

    def __call__(self, direction: str, now: float, src: int, dst: int, tcp: bytes) -> None:
        if direction != "out":
            return
        if len(self.out_sample) < self.SAMPLE:
            self.out_sample.append(tcp)
        hlen = (tcp[12] >> 4) * 4
        if hlen > 32 and not tcp[13] & 0x02 and len(self.out_sack) < self.SAMPLE:
            self.out_sack.append(tcp)
        if len(tcp) > hlen:
            seq = int.from_bytes(tcp[4:8], "big")
            end = (seq + len(tcp) - hlen) & 0xFFFFFFFF
            if self._out_high is not None and (self._out_high - end) & 0xFFFFFFFF < 0x80000000:
                self.out_data_retx += 1           # ends at or below what was already sent
            else:
                self._out_high = end


def options(tcp: bytes) -> dict[str, object]:
    return {name: value for name, value in TCP(tcp).options}


@contextlib.contextmanager
def engine_on_wire(net: VethNetns, impairment: str) -> Iterator[tuple[TcpStack, EngineDriver,
                                                                    Wire]]:
    """A TcpStack as host net.engine_ip on the veth, with the named impairment applied."""
    spec = IMPAIRMENTS[impairment]
    if isinstance(spec, tuple):
        if not netem_available():
            pytest.skip(NO_NETEM)
        net.netem(spec)
    stack = TcpStack(ENGINE_CONFIG, isn_secret=b"kernel-interop-secret!")
    wire = Wire()
    imp = spec if isinstance(spec, Impairment) else None
    with EngineDriver(net.host_if, stack, net.engine_ip, impairment=imp, tap=wire) as drv:
        yield stack, drv, wire
    assert drv.stats.rx_bad_tcp_checksum == 0, "the kernel sent frames with bad TCP checksums"
    assert drv.stats.tx_bad_tcp_checksum == 0, "the engine computed a wrong TCP checksum"


def check_handshake(drv: EngineDriver, wire: Wire) -> None:
    """Both SYNs carry MSS, WS, SACK-permitted and TS, and the engine then uses what was agreed:
    timestamps on every segment, windows scaled beyond 64 KiB."""
    ours = [options(t) for d, t in drv.syn_segments if d == "out"]
    theirs = [options(t) for d, t in drv.syn_segments if d == "in"]
    assert ours and theirs, f"no handshake captured: {drv.syn_segments}"
    for opts in (ours[0], theirs[0]):
        assert {"MSS", "WScale", "SAckOK", "Timestamp"} <= opts.keys(), opts
    ws = ours[0]["WScale"]
    assert isinstance(ws, int) and ws > 0
    later = [TCP(t) for t in wire.out_sample if not TCP(t).flags.S and not TCP(t).flags.R]
    assert later, "the engine sent nothing after its SYN"
    assert all("Timestamp" in dict(p.options) for p in later), "TS negotiated, but not used"
    assert max(p.window << ws for p in later) > 65535, "window scaling negotiated but unused"


def check_sack_sent(wire: Wire) -> None:
    """Under loss the engine as receiver reports holes with SACK blocks (RFC 2018)."""
    assert any("SAck" in dict(TCP(t).options) for t in wire.out_sack), \
        "the engine received out-of-order data but sent no SACK block"


def check_retransmitted(stack: TcpStack, wire: Wire) -> None:
    assert wire.out_data_retx > 0, "the engine never resent data on a lossy link"
    assert stack.stats.retransmits >= wire.out_data_retx


def run_until_exit(drv: EngineDriver, proc: subprocess.Popen[bytes], app: Callable[[float],
                   None], extra: Callable[[], bool] = lambda: True) -> None:
    drv.run(lambda: proc.poll() is not None and extra(), app=app, timeout=RUN_LIMIT)


@pytest.mark.parametrize("impairment", IMPAIRMENTS)
def test_kernel_curl_downloads_from_engine(veth_pair: VethNetns, tmp_path: Path,
                                           impairment: str) -> None:
    """curl (kernel client) GETs 10 MB from an HTTP responder on the engine."""
    out = tmp_path / "body"
    header = f"HTTP/1.1 200 OK\r\nContent-Length: {len(BLOB)}\r\nConnection: close\r\n\r\n"
    with engine_on_wire(veth_pair, impairment) as (stack, drv, wire):
        listener = stack.listen(ip_to_int(veth_pair.engine_ip), 8080, 8)
        apps: list[StreamApp] = []

        def app(now: float) -> None:
            stack.events()
            conn = listener.accept()
            if conn is not None:
                apps.append(StreamApp(conn, None))
            for a in apps:
                if a.reply_unset and b"\r\n\r\n" in a.incoming:
                    a.set_outgoing(header.encode() + BLOB)
                a.pump()

        url = f"http://{veth_pair.engine_ip}:8080/blob"
        with veth_pair.popen(["curl", "-sS", "--max-time", str(RUN_LIMIT), "-o", str(out), url],
                             stderr=subprocess.PIPE) as proc:
            run_until_exit(drv, proc, app)
            assert proc.returncode == 0, proc.stderr.read().decode() if proc.stderr else ""
        assert len(apps) == 1 and apps[0].incoming.startswith(b"GET /blob HTTP/1.1\r\n")
        assert out.stat().st_size == len(BLOB) and sha256_file(out) == BLOB_SHA
        check_handshake(drv, wire)
        if impairment in LOSSY:
            check_retransmitted(stack, wire)


@pytest.mark.parametrize("impairment", IMPAIRMENTS)
def test_kernel_nc_uploads_to_engine(veth_pair: VethNetns, tmp_path: Path,
                                     impairment: str) -> None:
    """nc (kernel client) sends 10 MB to the engine, then half-closes; the engine reads to EOF."""
    src = tmp_path / "blob"
    src.write_bytes(BLOB)
    with engine_on_wire(veth_pair, impairment) as (stack, drv, wire):
        listener = stack.listen(ip_to_int(veth_pair.engine_ip), 9000, 8)
        apps: list[StreamApp] = []

        def app(now: float) -> None:
            stack.events()
            conn = listener.accept()
            if conn is not None:
                apps.append(StreamApp(conn, close_when_sent=False))
            for a in apps:
                a.pump()

        with open(src, "rb") as stdin, veth_pair.popen(
                ["nc", "-N", "-w", "30", veth_pair.engine_ip, "9000"], stdin=stdin) as proc:
            run_until_exit(drv, proc, app, lambda: bool(apps) and apps[0].closed)
            assert proc.returncode == 0
        got = bytes(apps[0].incoming)
        assert len(got) == len(BLOB) and hashlib.sha256(got).hexdigest() == BLOB_SHA
        check_handshake(drv, wire)
        if impairment in LOSSY:
            check_sack_sent(wire)


@pytest.mark.parametrize("impairment", IMPAIRMENTS)
def test_engine_downloads_from_kernel_http_server(veth_pair: VethNetns, tmp_path: Path,
                                                  impairment: str) -> None:
    """The engine (client) GETs 10 MB from python3 -m http.server (kernel server)."""
    (tmp_path / "blob").write_bytes(BLOB)
    with engine_on_wire(veth_pair, impairment) as (stack, drv, wire), veth_pair.popen(
            ["python3", "-m", "http.server", "8000", "--bind", veth_pair.ns_ip,
             "--directory", str(tmp_path)], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL):
        wait_for_listener(veth_pair.ns, 8000)
        conn = stack.connect(ip_to_int(veth_pair.engine_ip), 40001, ip_to_int(veth_pair.ns_ip),
                             8000, time.monotonic())
        client = StreamApp(conn, b"GET /blob HTTP/1.0\r\nHost: kernel\r\n\r\n",
                           close_when_sent=False)

        def app(now: float) -> None:
            stack.events()
            client.pump()

        drv.run(lambda: client.closed, app=app, timeout=RUN_LIMIT)
        head, _, body = bytes(client.incoming).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200"), head[:200]
        assert len(body) == len(BLOB) and hashlib.sha256(body).hexdigest() == BLOB_SHA
        check_handshake(drv, wire)
        if impairment in LOSSY:
            check_sack_sent(wire)


@pytest.mark.parametrize("impairment", IMPAIRMENTS)
def test_engine_uploads_to_kernel_nc_server(veth_pair: VethNetns, tmp_path: Path,
                                            impairment: str) -> None:
    """The engine (client) sends 10 MB to `nc -l` (kernel server) and closes."""
    out = tmp_path / "received"
    with engine_on_wire(veth_pair, impairment) as (stack, drv, wire), \
            open(out, "wb") as sink, \
            veth_pair.popen(["nc", "-l", "9001"], stdin=subprocess.DEVNULL, stdout=sink) as proc:
        wait_for_listener(veth_pair.ns, 9001)
        conn = stack.connect(ip_to_int(veth_pair.engine_ip), 40002, ip_to_int(veth_pair.ns_ip),
                             9001, time.monotonic())
        client = StreamApp(conn, BLOB)

        def app(now: float) -> None:
            stack.events()
            client.pump()

        run_until_exit(drv, proc, app)
        assert proc.returncode == 0
    assert out.stat().st_size == len(BLOB) and sha256_file(out) == BLOB_SHA
    check_handshake(drv, wire)
    if impairment in LOSSY:
        check_retransmitted(stack, wire)

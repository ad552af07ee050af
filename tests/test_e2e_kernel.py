"""Interop with the Linux kernel's TCP: the embedded NIC's network port is a veth whose peer end
is in a network namespace this test creates, with kernel programs there (curl, wget, nc,
`python3 -m http.server`).

Every transfer is checked byte-exact (SHA-256 of what arrived against what was sent). Each runs
on a clean link and again impaired by `loss 3% delay 5ms reorder 10%`: with `tc netem` on both
veth ends where the kernel has netem, and otherwise with an impairing relay between the veth and
the NIC (the same loss, delay and reordering, applied to every frame in both directions), so the
impaired runs happen on every machine that can create namespaces.
"""

from __future__ import annotations

import hashlib
import heapq
import random
import selectors
import subprocess
import sys
import threading
import time

import pytest

from netns import VethNetns, netem_available, veth_pair  # noqa: F401  (fixture)
from p4mtcp.apps import epserver, epwget, launch, perf
from p4mtcp.apps.fabric import Fabric, Host
from p4mtcp.link import open_port

pytestmark = [pytest.mark.root, pytest.mark.slow]

IMPAIRMENT = ("loss", "3%", "delay", "5ms", "reorder", "10%")
BIG = 50 * 1000 * 1000


class ImpairedRelay:
    """Frames between two ports, each dropped with p=3%, else delayed 5 ms except a random 10%
    sent at once — netem's `loss 3% delay 5ms reorder 10%`, for kernels without netem."""

    def __init__(self, a_spec: str, b_spec: str, seed: int = 7, loss: float = 0.03,
                 delay: float = 0.005, reorder: float = 0.10):
        self.ports = [open_port(a_spec), open_port(b_spec, connect_timeout=10.0)]
        self.rng = random.Random(seed)
        self.loss, self.delay, self.reorder = loss, delay, reorder
        self.queue: list[tuple[float, int, int, bytes]] = []
        self.seq = 0
        self.dropped = self.forwarded = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="impair")

    def __enter__(self) -> "ImpairedRelay":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        for p in self.ports:
            p.close()

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        for i, p in enumerate(self.ports):
            sel.register(p.fileno(), selectors.EVENT_READ, i)
        while not self._stop.is_set():
            now = time.monotonic()
            while self.queue and self.queue[0][0] <= now:
                _, _, out, frame = heapq.heappop(self.queue)
                self.ports[out].send(frame)
                self.forwarded += 1
            wait = min(0.05, self.queue[0][0] - now) if self.queue else 0.05
            for key, _ in sel.select(max(0.0, wait)):
                src = key.data
                for frame in self.ports[src].recv_batch():
                    r = self.rng.random()
                    if r < self.loss:
                        self.dropped += 1
                        continue
                    hold = 0.0 if self.rng.random() < self.reorder else self.delay
                    self.seq += 1
                    heapq.heappush(self.queue, (time.monotonic() + hold, self.seq, 1 - src,
                                                frame))


def ns_mac(net: VethNetns) -> str:
    out = net.run(["ip", "-o", "link", "show", "dev", net.ns_if]).stdout.decode()
    return out.split("link/ether ")[1].split()[0]


@pytest.fixture(params=["clean", "impaired"])
def kernel_peer(request, veth_pair: VethNetns, tmp_path):
    """(veth pair, p4mtcp host on 2 cores) with the link clean or impaired."""
    impaired = request.param == "impaired"
    use_netem = impaired and netem_available()
    fab = Fabric()
    relay = None
    try:
        net_spec = veth_pair.host_if
        if impaired and not use_netem:
            net_spec = f"unix:{fab.dir}/wire"
        host = fab.add_host("p4m", f"{veth_pair.engine_ip}/24", 2, net_spec,
                            {veth_pair.ns_ip: ns_mac(veth_pair)})
        # Windows large enough for a 10 ms round trip: 512 KiB buffers. The impaired runs use
        # CUBIC (mtcp.conf congestion_control), which holds a larger window under random loss.
        fab.start(timeout=60, rcvbuf=512 * 1024, sndbuf=512 * 1024,
                  congestion_control="cubic" if impaired else "newreno")
        if use_netem:
            veth_pair.netem(IMPAIRMENT)
        elif impaired:
            relay = ImpairedRelay(veth_pair.host_if, f"unix-host:{fab.dir}/wire").__enter__()
        yield veth_pair, host
        if relay is not None:
            assert relay.dropped > 0, "the impairment dropped nothing"
    finally:
        if relay is not None:
            relay.__exit__()
        fab.stop()


class Cores:
    """A worker group for a `with` block, started and ready; its messages kept."""

    def __init__(self, target, host: Host, args, n: int | None = None):
        self.workers = launch.CoreWorkers(target, range(n or host.cores), args)
        self.msgs: list[dict] = []

    def __enter__(self) -> "Cores":
        self.workers.start()
        deadline = time.monotonic() + 60
        while sum(m["kind"] == "ready" for m in self.msgs) < len(self.workers.cores):
            assert time.monotonic() < deadline, self.msgs
            self.msgs += self.workers.poll(0.1)
            assert not any(m["kind"] == "exit" for m in self.msgs), self.msgs
        return self

    def wait_for(self, kind: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for m in self.msgs:
                if m["kind"] == kind:
                    return m
            assert time.monotonic() < deadline, f"no {kind!r} within {timeout} s: {self.msgs[-3:]}"
            self.msgs += self.workers.poll(0.1)

    def __exit__(self, *exc) -> None:
        self.workers.finish(self.msgs.append)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_curl_and_wget_fetch_files_from_epserver(kernel_peer, tmp_path):
    net, host = kernel_peer
    www = tmp_path / "www"
    www.mkdir()
    small = hashlib.shake_128(b"small").digest(3000)
    big = hashlib.shake_128(b"big").digest(5 * 1000 * 1000)
    (www / "small.bin").write_bytes(small)
    (www / "big.bin").write_bytes(big)
    args = epserver.ServerArgs(str(www), host.conf, 2, 128, 80, 0.0)
    with Cores(epserver.serve_core, host, args) as srv:
        url = f"http://{net.engine_ip}"
        for i in range(10):          # ten connections: the NIC spreads them over both cores
            out = tmp_path / f"curl{i}"
            net.run(["curl", "-sS", "--max-time", "60", "-o", str(out), f"{url}/small.bin"],
                    timeout=90)
            assert out.read_bytes() == small
        net.run(["curl", "-sS", "--max-time", "200", "-o", str(tmp_path / "cbig"),
                 f"{url}/big.bin"], timeout=220)
        net.run(["wget", "-q", "-T", "200", "-t", "1", "-O", str(tmp_path / "wbig"),
                 f"{url}/big.bin"], timeout=220)
        net.run(["wget", "-q", "-T", "60", "-t", "1", "-O", str(tmp_path / "wsmall"),
                 f"{url}/small.bin"], timeout=90)
        missing = subprocess.run(["ip", "netns", "exec", net.ns, "curl", "-s", "-o", "/dev/null",
                                  "-w", "%{http_code}", "--max-time", "60", f"{url}/nope"],
                                 capture_output=True, timeout=90)
    assert sha((tmp_path / "cbig").read_bytes()) == sha(big)
    assert sha((tmp_path / "wbig").read_bytes()) == sha(big)
    assert (tmp_path / "wsmall").read_bytes() == small
    assert missing.stdout == b"404"
    served = {m["core"]: m["app"]["requests"] for m in srv.msgs if m["kind"] == "stats"}
    assert sum(served.values()) == 14


def test_epwget_fetches_from_a_kernel_http_server(kernel_peer, tmp_path):
    net, host = kernel_peer
    docs = tmp_path / "docs"
    docs.mkdir()
    body = hashlib.shake_128(b"kernel").digest(200 * 1000)
    (docs / "file.bin").write_bytes(body)
    with net.popen([sys.executable, "-m", "http.server", "8080", "--bind", net.ns_ip,
                    "--directory", str(docs)], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL):
        from netns import wait_for_listener
        wait_for_listener(net.ns, 8080, timeout=20)
        args = epwget.WgetArgs(net.ns_ip, 8080, "/file.bin", 40, 2, 4, host.conf,
                               str(tmp_path / "got"), timeout=200)
        msgs: list[dict] = []
        with launch.CoreWorkers(epwget.wget_core, [0, 1], args) as w:
            assert w.pump(msgs.append, lambda: None, timeout=240)
    done = {m["core"]: (m["done"], m["errors"]) for m in msgs if m["kind"] == "done"}
    assert done == {0: (20, 0), 1: (20, 0)}, [m for m in msgs if m["kind"] == "exit"]
    outs = sorted(tmp_path.glob("got.*"))
    assert len(outs) == 40 and all(p.read_bytes() == body for p in outs)


def test_nc_sends_50mb_to_perf(kernel_peer, tmp_path):
    net, host = kernel_peer
    data = hashlib.shake_128(b"to p4mtcp").digest(BIG)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    args = perf.PerfArgs("server", host.conf, 2, "0.0.0.0", 5001, None, 280.0, None,
                         str(tmp_path / "rx"), 1, True)
    with Cores(perf.perf_core, host, args) as srv, open(src, "rb") as stdin:
        with net.popen(["nc", "-N", net.engine_ip, "5001"], stdin=stdin,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as nc:
            watch_progress(net, srv, nc, stall=60, limit=280)
        result = srv.wait_for("result", timeout=30)
    conn = result["connections"][0]
    assert conn["error"] == "" and conn["bytes"] == BIG and conn["sha256"] == sha(data)
    got = tmp_path / f"rx.{result['core']}.0"
    assert sha(got.read_bytes()) == sha(data)


def watch_progress(net: VethNetns, srv: Cores, proc: subprocess.Popen, stall: float,
                   limit: float) -> None:
    """Wait for `proc` (the kernel side) to end while the receiving cores report progress;
    fail with the kernel's view of the connection if no byte arrives for `stall` s."""
    moved, last_move = 0, time.monotonic()
    end = time.monotonic() + limit
    while proc.poll() is None:
        now = time.monotonic()
        new = srv.workers.poll(0.2)
        srv.msgs += new
        got = sum(m["app"]["bytes"] for m in new if m["kind"] == "stats")
        if got:
            moved, last_move = moved + got, now
        if now - last_move > stall or now > end:
            info = net.run(["ss", "-tin"], check=False).stdout.decode()
            raise AssertionError(f"transfer stalled at {moved} bytes for {now - last_move:.0f} s "
                                 f"(limit {limit} s); kernel socket state:\n{info}")
    assert proc.returncode == 0, proc.stderr.read()


def test_perf_sends_50mb_to_nc(kernel_peer, tmp_path):
    net, host = kernel_peer
    data = hashlib.shake_128(b"to the kernel").digest(BIG)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    out = tmp_path / "nc_out.bin"
    with open(out, "wb") as sink, net.popen(["nc", "-l", "-d", "5002"], stdout=sink,
                                            stderr=subprocess.DEVNULL) as nc:
        from netns import wait_for_listener
        wait_for_listener(net.ns, 5002, timeout=20)
        args = perf.PerfArgs("client", host.conf, 1, net.ns_ip, 5002, None, 0.0, str(src),
                             None, 0, True)
        msgs: list[dict] = []
        with launch.CoreWorkers(perf.perf_core, [0], args) as w:
            assert w.pump(msgs.append, lambda: None, timeout=280)
        nc.wait(timeout=30)
    sent = [m for m in msgs if m["kind"] == "result"][0]["connections"][0]
    assert sent["error"] == "" and sent["bytes"] == BIG and sent["sha256"] == sha(data)
    assert out.stat().st_size == BIG and sha(out.read_bytes()) == sha(data)

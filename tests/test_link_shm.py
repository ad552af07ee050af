"""Shared-memory links: the SPSC ring (p4mtcp.link.shmring) and the shm:/shm-host: ports."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import waiting
from p4mtcp.link import open_port
from p4mtcp.link.shm import GONE, ShmHostPort, ShmNicPort
from p4mtcp.link.shmring import _HEAD_W, _TAIL_W, MIN_CAPACITY, Ring, RingError, Role

CHILD_TIMEOUT = 20.0


def frame(seq: int, size: int) -> bytes:
    """A frame that says its own sequence number and length, so a torn or foreign one shows."""
    head = seq.to_bytes(4, "big") + size.to_bytes(4, "big")
    body = bytes((seq + i) & 0xFF for i in range(min(size, 64) - 8)) if size > 8 else b""
    return (head + body + b"\xa5" * size)[:size]


def check(got: bytes) -> int:
    seq = int.from_bytes(got[:4], "big")
    assert got == frame(seq, len(got)), f"frame {seq} of {len(got)} B arrived damaged"
    return seq


def link(path: str, ring_bytes: int = MIN_CAPACITY) -> tuple[ShmNicPort, ShmHostPort]:
    """A NIC port and a core port joined by rings; the NIC side serves the handshake."""
    nic = ShmNicPort(path, ring_bytes)
    result: list = []
    t = threading.Thread(target=lambda: result.append(ShmHostPort(path, connect_timeout=5.0)))
    t.start()
    waiting.wait_for(lambda: nic.recv_batch() == [] and nic.connected and result,
                     what="the core to attach")
    t.join(5.0)
    return nic, result[0]


@pytest.fixture
def shm_link(tmp_path):
    nic, host = link(f"{tmp_path}/c0")
    yield nic, host
    host.close()
    nic.close()


@pytest.fixture
def ring_path():
    path = f"/dev/shm/p4mtcp-test-{os.getpid()}-{time.monotonic_ns()}"
    yield path
    if os.path.exists(path):
        os.unlink(path)


def test_every_frame_size_wraps_around_the_ring_intact(ring_path):
    producer = Ring.create(ring_path, MIN_CAPACITY, Role.PRODUCER)
    consumer = Ring(ring_path, Role.CONSUMER)
    sizes = list(range(14, 9001))  # 39 MiB through a 512 KiB ring: about 80 wraps
    got: list[int] = []
    i = 0
    while i < len(sizes):
        batch = [frame(i + k, s) for k, s in enumerate(sizes[i:i + 40])]
        n, _ = producer.put(batch)
        i += n
        got += [check(f) for f in consumer.get(256)]
        assert n or got, "the ring neither took nor gave a frame"
    got += [check(f) for f in consumer.get(256)]
    assert got == list(range(len(sizes))) and producer.refused == 0
    producer.close()
    consumer.close()


def test_a_tenfold_overload_is_delivered_or_counted_never_lost(shm_link):
    nic, host = shm_link
    per_batch, frame_size = 64, 200
    total = 10 * MIN_CAPACITY // (frame_size + 8)  # ten full rings' worth
    got: list[int] = []
    sent = 0
    for start in range(0, total, per_batch):
        sent += nic.send_batch([frame(start + k, frame_size) for k in range(per_batch)])
        if start % (per_batch * 40) == 0:  # the core reads now and then, far too slowly
            got += [check(f) for f in host.recv_batch()]
    got += [check(f) for f in waiting.drain(host, total, timeout=5.0)]
    offered = -(-total // per_batch) * per_batch
    assert nic.stats.tx_dropped > 0, "the overload never filled the ring"
    assert sent + nic.stats.tx_dropped == offered
    assert len(got) == sent and host.stats.rx_dropped == nic.stats.tx_dropped
    assert got == sorted(set(got)), "frames were reordered or duplicated"


def test_the_doorbell_rings_once_per_sleep(shm_link):
    nic, host = shm_link
    rings = host.rx
    assert rings.arm()  # nothing waiting: the core may sleep
    assert nic.tx.put([b"x" * 60]) == (1, True)  # the NIC sees the sleeper: one doorbell
    assert nic.tx.put([b"y" * 60]) == (1, False)  # ... and only one
    assert not rings.arm()  # frames are waiting: do not sleep
    assert nic.tx.put([b"z" * 60]) == (1, False)  # the flag was withdrawn


def test_a_sleeping_core_is_woken_by_the_doorbell(shm_link):
    import select

    nic, host = shm_link
    assert host.arm()
    assert select.select([host], [], [], 0)[0] == []
    assert nic.send(b"w" * 60)
    assert select.select([host], [], [], 5.0)[0] == [host]
    assert host.recv_batch() == [b"w" * 60]


def test_handshake_leaves_no_ring_files_behind(tmp_path):
    nic, host = link(f"{tmp_path}/c0")
    names = (nic.rx.path, nic.tx.path)
    waiting.wait_for(lambda: nic.recv_batch() == [] and not any(map(os.path.exists, names)),
                     what="the NIC to unlink the ring files once the core holds them")
    assert nic.send(b"still works" * 6) and host.recv_batch() == [b"still works" * 6]
    host.close()
    nic.close()


def test_two_producers_on_one_ring_are_refused(ring_path):
    first = Ring.create(ring_path, MIN_CAPACITY, Role.PRODUCER)
    with pytest.raises(RingError, match=rf"already has a producer \(pid {os.getpid()}\)"):
        Ring(ring_path, Role.PRODUCER)
    consumer = Ring(ring_path, Role.CONSUMER)
    with pytest.raises(RingError, match="already has a consumer"):
        Ring(ring_path, Role.CONSUMER)
    first.close()
    second = Ring(ring_path, Role.PRODUCER)  # the role is free once its holder is gone
    assert second.put([b"a" * 20]) == (1, False) and consumer.get(8) == [b"a" * 20]
    second.close()
    consumer.close()


def test_a_corrupted_header_is_refused_clearly(ring_path):
    Ring.create(ring_path, MIN_CAPACITY, Role.PRODUCER).close()
    with open(ring_path, "r+b") as f:
        f.write(b"garbage!")
    with pytest.raises(RingError, match="bad magic .*not a p4mtcp ring"):
        Ring(ring_path, Role.CONSUMER)
    with open(ring_path, "r+b") as f:
        f.write(b"P4MTRNG1")  # the magic is right again, but the file lost its data area
        f.truncate(4096)
    with pytest.raises(RingError, match="too small|capacity"):
        Ring(ring_path, Role.CONSUMER)


def test_corrupted_indices_in_use_end_the_link_with_a_clear_log(shm_link, caplog):
    nic, host = shm_link
    host.tx._idx[_HEAD_W] = 3 * MIN_CAPACITY + 8  # a scribble over the producer's index
    with pytest.raises(RingError, match="corrupt indices"):
        Ring.get(nic.rx, 8)
    with caplog.at_level(logging.WARNING, logger="p4mtcp.link"):
        assert nic.recv_batch() == []
    assert "corrupt indices" in caplog.text and not nic.connected
    waiting.wait_for(lambda: (host.arm(), host.recv_batch(), host.closed_by_peer)[2],
                     what="the core to see the NIC drop the link")


def test_a_scribbled_consumer_index_stops_the_producer_with_a_clear_log(shm_link, caplog):
    nic, host = shm_link
    host.rx._idx[_TAIL_W] = 5 * MIN_CAPACITY  # past everything the NIC ever wrote
    with caplog.at_level(logging.WARNING, logger="p4mtcp.link"):
        assert nic.send(b"x" * 60) is False
    assert "corrupt indices" in caplog.text and not nic.connected
    assert nic.stats.tx_dropped == 1


def test_a_bad_record_length_is_an_error_not_a_frame(ring_path):
    producer = Ring.create(ring_path, MIN_CAPACITY, Role.PRODUCER)
    consumer = Ring(ring_path, Role.CONSUMER)
    producer.put([b"a" * 100])
    producer._data[0:4] = (200000).to_bytes(4, sys.byteorder)  # longer than any frame
    with pytest.raises(RingError, match="corrupt record of length 200000"):
        consumer.get(8)
    producer.close()
    consumer.close()


# --- either side dying -------------------------------------------------------------------------

_PRODUCER = """
import sys
from p4mtcp.link import open_port
from test_link_shm import frame
host = open_port("shm-host:" + sys.argv[1], connect_timeout=10)
print("attached", flush=True)
seq = 0
while True:  # batches until killed
    seq += host.send_batch([frame(s, 300) for s in range(seq, seq + 32)])
"""

_CONSUMER = """
import sys, select
from p4mtcp.link import open_port
host = open_port("shm-host:" + sys.argv[1], connect_timeout=10)
print("attached", flush=True)
while True:  # reads until killed
    if host.arm():
        select.select([host], [], [], 0.1)
    host.recv_batch()
"""


def _child(code: str, path: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.Popen([sys.executable, "-c", code, path], stdout=subprocess.PIPE, env=env)


def _serve_until_attached(nic: ShmNicPort, proc: subprocess.Popen) -> list[bytes]:
    got: list[bytes] = []
    waiting.wait_for(lambda: got.extend(nic.recv_batch()) or nic.connected, CHILD_TIMEOUT,
                     what="the child core to attach")
    assert proc.stdout.readline() == b"attached\n"
    return got


def test_a_producer_killed_mid_batch_is_noticed_and_leaves_no_torn_frame(tmp_path, caplog):
    nic = ShmNicPort(f"{tmp_path}/c0")
    proc = _child(_PRODUCER, f"{tmp_path}/c0")
    try:
        got = _serve_until_attached(nic, proc)
        got += waiting.drain(nic, 2000, timeout=CHILD_TIMEOUT)  # it is writing flat out
        proc.send_signal(signal.SIGKILL)
        proc.wait(CHILD_TIMEOUT)
        with caplog.at_level(logging.WARNING, logger="p4mtcp.link"):
            waiting.wait_for(lambda: got.extend(nic.recv_batch()) or not nic.connected,
                             what="the NIC to notice its core died")
        assert GONE in caplog.text
        seqs = [check(f) for f in got]  # whole frames only, in order, none twice
        assert len(seqs) >= 2000 and seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        assert nic.send(b"x" * 60) is False and nic.stats.tx_dropped == 1  # counted, no hang
    finally:
        proc.kill()
        proc.wait()
        nic.close()


def test_a_consumer_killed_mid_batch_is_noticed_by_the_producer(tmp_path, caplog):
    nic = ShmNicPort(f"{tmp_path}/c0")
    proc = _child(_CONSUMER, f"{tmp_path}/c0")
    try:
        _serve_until_attached(nic, proc)
        sent = 0
        for k in range(200):  # the child reads as they come
            sent += nic.send_batch([frame(k * 32 + i, 300) for i in range(32)])
        proc.send_signal(signal.SIGKILL)
        proc.wait(CHILD_TIMEOUT)
        with caplog.at_level(logging.WARNING, logger="p4mtcp.link"):
            waiting.wait_for(lambda: nic.recv_batch() == [] and not nic.connected,
                             what="the NIC to notice its core died")
        assert GONE in caplog.text
        assert sent > 0 and nic.send_batch([b"y" * 60] * 4) == 0
        assert nic.stats.tx_dropped >= 4
    finally:
        proc.kill()
        proc.wait()
        nic.close()


def test_the_core_notices_its_nic_die(tmp_path, caplog):
    code = ("import sys, time\nfrom p4mtcp.link import open_port\n"
            "nic = open_port('shm:' + sys.argv[1])\nprint('attached', flush=True)\n"
            "while True:\n    nic.recv_batch(); nic.send_batch([b'n' * 64] * 16)\n"
            "    time.sleep(0.001)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-c", code, f"{tmp_path}/n"], stdout=subprocess.PIPE,
                            env=env)
    try:
        assert proc.stdout.readline() == b"attached\n"
        host = open_port(f"shm-host:{tmp_path}/n", connect_timeout=CHILD_TIMEOUT)
        assert waiting.drain(host, 16, timeout=CHILD_TIMEOUT)[:1] == [b"n" * 64]
        proc.send_signal(signal.SIGKILL)
        proc.wait(CHILD_TIMEOUT)
        with caplog.at_level(logging.WARNING, logger="p4mtcp.link"):
            # as a core's loop does: arm, sleep (here: poll the port), read
            waiting.wait_for(lambda: (host.arm(), host.recv_batch(), host.closed_by_peer)[2],
                             what="the core to notice its NIC died")
        assert GONE in caplog.text
        assert host.send(b"z" * 60) is False and host.arm()  # counted drop; sleeping is safe
        host.close()
    finally:
        proc.kill()
        proc.wait()


def test_shm_specs(tmp_path):
    with pytest.raises(ValueError, match="empty socket path"):
        open_port("shm:")
    with pytest.raises(ConnectionRefusedError, match="shm-host:.*no NIC is listening"):
        open_port(f"shm-host:{tmp_path}/nobody")


def test_a_nic_that_never_answers_is_a_clear_error(tmp_path, monkeypatch):
    import socket

    from p4mtcp.link import shm

    monkeypatch.setattr(shm, "HANDSHAKE_TIMEOUT", 0.2)
    mute = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)  # listens, never serves
    mute.bind(f"{tmp_path}/mute")
    mute.listen(1)
    try:
        with pytest.raises(ConnectionError, match="did not answer within 0.2 s"):
            open_port(f"shm-host:{tmp_path}/mute")
    finally:
        mute.close()


def test_ring_files_of_a_dead_nic_are_swept(tmp_path):
    from p4mtcp.link.shm import SHM_DIR

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = os.path.join(SHM_DIR, f"p4mtcp-{dead.pid}-0-up")
    mine = os.path.join(SHM_DIR, f"p4mtcp-{os.getpid()}-999-up")
    for name in (stale, mine):
        open(name, "wb").close()
    try:
        ShmNicPort(f"{tmp_path}/c0").close()
        assert not os.path.exists(stale) and os.path.exists(mine)
    finally:
        for name in (stale, mine):
            if os.path.exists(name):
                os.unlink(name)

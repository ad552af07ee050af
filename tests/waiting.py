"""Waiting in tests for something another thread or process does: bounded, polled, named."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(pred: Callable[[], T], timeout: float = 5.0, what: str = "condition",
             interval: float = 0.01) -> T:
    """`pred()`'s first truthy value, polled every `interval` s; AssertionError naming `what`
    when none comes within `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def drain(port: Any, want: int, timeout: float, interval: float = 0.001) -> list[bytes]:
    """Frames from `port.recv_batch()` until `want` have come or `timeout` s pass (a test then
    asserts on what did come)."""
    got: list[bytes] = []
    end = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < end:
        batch = port.recv_batch()
        got += batch
        if not batch:
            time.sleep(interval)
    return got


def messages_until(workers: Any, msgs: list[dict], kind: str, count: int,
                   timeout: float) -> None:
    """Poll a CoreWorkers group into `msgs` until `count` of its messages are of `kind`;
    AssertionError with the last messages when that takes more than `timeout` s."""
    deadline = time.monotonic() + timeout
    while sum(m["kind"] == kind for m in msgs) < count:
        assert time.monotonic() < deadline, f"{count} {kind!r} message(s): {msgs[-3:]}"
        msgs += workers.poll(0.1)

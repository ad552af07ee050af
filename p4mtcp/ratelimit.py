"""A log that a flood of bad input cannot flood: the P4Runtime server's undecodable requests,
the agent's ICMP from the network."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable


class RateLimitedLog:
    """At most `burst` warnings per `window` seconds to `logger`; the next one allowed says how
    many were suppressed, so a flood of bad input cannot flood the log."""

    def __init__(self, logger: logging.Logger, burst: int = 10, window: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self._burst, self._window, self._clock = burst, window, clock
        self._log = logger
        self._lock = threading.Lock()
        self._start = -window
        self._sent = self.suppressed = 0

    def warning(self, fmt: str, *args) -> None:
        with self._lock:
            now = self._clock()
            if now - self._start >= self._window:
                self._start, self._sent = now, 0
            if self._sent >= self._burst:
                self.suppressed += 1
                return
            self._sent += 1
            suppressed, self.suppressed = self.suppressed, 0
        if suppressed:
            fmt += " (%d similar ones suppressed before this)"
            args += (suppressed,)
        self._log.warning(fmt, *args)

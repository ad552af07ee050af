"""A core's connection table served on a UNIX socket, for `p4mtcp ss`.

The core process is busy in its run-to-completion loop, so nothing else may read its engine:
the context calls :meth:`SockStatServer.poll` at the end of each loop step, which at most every
:data:`POLL_INTERVAL` seconds accepts queries and answers them from the live connections, with
non-blocking sends only (a slow reader gets the rest at later steps). The loop never waits on it.

Protocol: connect, read until the server closes. The answer is JSON lines, one per connection:
``{"core", "local", "remote", "send_q", "recv_q", "mss"}`` (the MSS the connection sends,
lowered by path MTU discovery) and the fields of
:class:`~p4mtcp.control.tcp.trace.SenderState` (state, cwnd, ssthresh, in_flight, srtt, rttvar,
rto, delivered, retransmits); then one per listener, ``{"core", "state": "LISTEN", "local",
"remote": "0.0.0.0:*", "recv_q", "send_q"}`` with, as Linux ss reports a listener, the accept
queue's length as ``recv_q`` and its limit (the backlog) as ``send_q``.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from p4mtcp.control.tcp.trace import sender_state

POLL_INTERVAL = 0.05
MAX_CLIENTS = 8


def _addr(pair: tuple[int, int]) -> str:
    return f"{socket.inet_ntoa(pair[0].to_bytes(4, 'big'))}:{pair[1]}"


def connection_rows(core: int, conns: list[Any]) -> list[dict[str, Any]]:
    """The answer's records for ``conns`` (engine Connections) of ``core``."""
    rows = []
    for c in conns:
        row = {"core": core, "local": _addr(c.local), "remote": _addr(c.remote),
               "send_q": len(c.sndbuf), "recv_q": c.readable_bytes, "mss": c.eff_mss}
        row.update(sender_state(c)._asdict())
        rows.append(row)
    return rows


def listener_rows(core: int, listeners: list[Any]) -> list[dict[str, Any]]:
    """The answer's records for ``listeners`` (engine Listeners) of ``core``."""
    return [{"core": core, "state": "LISTEN", "local": _addr(lst.local), "remote": "0.0.0.0:*",
             "recv_q": lst.pending, "send_q": lst.backlog} for lst in listeners]


class SockStatServer:
    """Listens at ``path`` for one core's context ``ctx`` (replacing a stale socket file)."""

    def __init__(self, ctx: Any, path: str):
        self.ctx = ctx
        self.path = path
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.sock.bind(path)
        self.sock.listen(MAX_CLIENTS)
        self._pending: list[tuple[socket.socket, memoryview]] = []
        self._next = 0.0

    def poll(self, now: float) -> None:
        if now < self._next:
            return
        self._next = now + POLL_INTERVAL
        for _ in range(MAX_CLIENTS - len(self._pending)):
            try:
                client, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                break
            client.setblocking(False)
            rows = (connection_rows(self.ctx.core, self.ctx.connections())
                    + listener_rows(self.ctx.core, self.ctx.listeners()))
            data = "".join(json.dumps(r) + "\n" for r in rows).encode()
            self._pending.append((client, memoryview(data)))
        self._pending = [p for p in map(self._push, self._pending) if p is not None]

    @staticmethod
    def _push(pending: tuple[socket.socket, memoryview]
              ) -> tuple[socket.socket, memoryview] | None:
        """Send what the client's buffer takes; None once all is sent (or it went away)."""
        client, data = pending
        try:
            while data:
                data = data[client.send(data):]
        except BlockingIOError:
            return client, data
        except OSError:
            pass
        client.close()
        return None

    def close(self) -> None:
        for client, _ in self._pending:
            client.close()
        self._pending = []
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

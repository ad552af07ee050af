"""flow_steer requests from core processes to the process that runs the host's agent.

A core process has no P4Runtime client (the agent is the NIC's one primary and lives in the
parent, e.g. `apps.fabric`). When `mtcp_connect` finds no source port that the RSS hash sends back
to its core, it asks for an exact ``NicIngress.flow_steer`` entry instead, and asks for its
removal when the engine frees the connection. This module is that request line:

- `SteeringServer` runs beside the `NicAgent`: a thread serving a UNIX ``SOCK_SEQPACKET`` socket
  (one message per request, no framing; a stream socket would need it, a datagram socket could
  not tell that a core process died). It forwards requests to the agent, replies to STEER, and
  tracks which connection owns which flow: when a core process goes away (exit or crash) its
  entries are removed, so a dead core leaves nothing behind in the NIC.
- `SteeringClient` is the core process's side. ``steer`` has the signature of the context's
  ``steer_flow`` hook and never raises or hangs: a missing server, a timeout or the agent's
  refusal make it return False (``last_error`` says why), and connect then fails with its
  documented errno. ``unsteer`` does not wait for a reply. After a reconnect the client re-sends
  the flows it still holds, because the server dropped them with the old connection.

Messages (network byte order): request ``seq:u32 op:u8 pad:u8 core:u16 local_ip:u32
local_port:u16 remote_ip:u32 remote_port:u16`` (20 bytes); reply (STEER only) ``seq:u32
errno:u16`` (6 bytes, errno 0 = installed).
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import stat
import struct
import threading
import time
from collections.abc import Collection
from typing import Protocol

from p4mtcp.control.config import MtcpConfig

log = logging.getLogger(__name__)

REQUEST = struct.Struct("!IBxHIHIH")
REPLY = struct.Struct("!IH")
STEER, UNSTEER = 1, 2
TIMEOUT = 1.0
"""Seconds a core waits for the server (connect, send, reply): a connect is delayed, never hung."""
POLL = 0.2
"""Seconds between the server thread's checks of its stop flag."""
MAX_CLIENTS = 256
READ_BURST = 64
"""Requests served from one client before the next client gets a turn."""

Flow = tuple[int, int, int, int]
"""(local_ip, local_port, remote_ip, remote_port) as the core sees the connection."""

# How the agent's refusals reach the core (connect turns any of them into its own errno).
_AGENT_CODES = {"RESOURCE_EXHAUSTED": errno.ENOSPC, "INVALID_ARGUMENT": errno.EINVAL,
                "OUT_OF_RANGE": errno.EINVAL, "UNAVAILABLE": errno.EAGAIN}


class Agent(Protocol):
    """What the server needs of `control.agent.NicAgent`."""

    def steer_flow(self, remote_ip: int, local_ip: int, remote_port: int, local_port: int,
                   core: int) -> None: ...
    def unsteer_flow(self, remote_ip: int, local_ip: int, remote_port: int, local_port: int
                     ) -> None: ...


def _errno_of(exc: Exception) -> int:
    """The errno a core sees for the agent's exception (AgentError carries a canonical code)."""
    if isinstance(exc, ValueError):  # an entry the schema cannot encode
        return errno.EINVAL
    return _AGENT_CODES.get(getattr(exc, "code", ""), errno.EIO)


def _flow_text(flow: Flow) -> str:
    lip, lport, rip, rport = flow
    ntoa = socket.inet_ntoa
    return (f"{ntoa(lip.to_bytes(4, 'big'))}:{lport} <- "
            f"{ntoa(rip.to_bytes(4, 'big'))}:{rport}")


# --- the agent's side ---------------------------------------------------------------------------

class SteeringServer:
    """Serves flow_steer requests for `agent` at `path` (a UNIX socket) from one thread.

    `num_cores` and `local_ips` are the host's: a request naming another core or address is
    refused with EINVAL / EADDRNOTAVAIL before it reaches the agent.
    """

    def __init__(self, agent: Agent, path: str, num_cores: int, local_ips: Collection[int]):
        self.agent = agent
        self.path = path
        self.num_cores = num_cores
        self.local_ips = frozenset(local_ips)
        self.requests = 0
        self.refused = 0
        self.malformed = 0
        self._owner: dict[Flow, tuple[socket.socket, int]] = {}  # flow -> (client, core)
        self._listener: socket.socket | None = None
        self._sel = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- life cycle --

    def start(self) -> "SteeringServer":
        """Bind and listen (a stale socket file of a dead server is replaced), then serve."""
        self._clear_stale()
        lst = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            lst.bind(self.path)
            lst.listen(MAX_CLIENTS)
        except OSError as exc:
            lst.close()
            raise OSError(exc.errno, f"steering socket {self.path}: {exc.strerror}") from None
        lst.setblocking(False)
        self._listener = lst
        self._sel.register(lst, selectors.EVENT_READ)
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name="flow-steer", daemon=True)
        self._thread.start()
        return self

    def _clear_stale(self) -> None:
        try:
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise OSError(errno.EEXIST, f"steering socket {self.path}: exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        probe.settimeout(TIMEOUT)
        try:
            probe.connect(self.path)
        except OSError:
            os.unlink(self.path)  # nobody listens: a dead server's leftover
            return
        finally:
            probe.close()
        raise OSError(errno.EADDRINUSE, f"steering socket {self.path}: another server serves it")

    def stop(self) -> None:
        """Stop serving; every entry still owned by a client is removed first."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        for key in list(self._sel.get_map().values()):
            if key.fileobj is not self._listener:
                self._drop(key.fileobj)  # type: ignore[arg-type]
        if self._listener is not None:
            self._sel.unregister(self._listener)
            self._listener.close()
            self._listener = None
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    def __enter__(self) -> "SteeringServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def owned(self) -> dict[Flow, int]:
        """Flows steered for live clients: flow -> core."""
        return {flow: core for flow, (_, core) in list(self._owner.items())}

    # -- the thread --

    def _serve(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._sel.select(POLL):
                if key.fileobj is self._listener:
                    self._accept()
                else:
                    self._read(key.fileobj)  # type: ignore[arg-type]

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            conn, _ = self._listener.accept()
        except OSError:
            return
        if len(self._sel.get_map()) > MAX_CLIENTS:
            log.warning("steering socket %s: more than %d clients, refusing one", self.path,
                        MAX_CLIENTS)
            conn.close()
            return
        conn.setblocking(False)
        self._sel.register(conn, selectors.EVENT_READ)

    def _read(self, conn: socket.socket) -> None:
        for _ in range(READ_BURST):
            try:
                msg = conn.recv(64)
            except BlockingIOError:
                return
            except OSError:
                msg = b""
            if not msg:
                self._drop(conn)  # the core process closed its side or died
                return
            self._handle(conn, msg)

    def _drop(self, conn: socket.socket) -> None:
        """A client is gone: remove the entries it still owned, then forget it."""
        for flow, (owner, _) in list(self._owner.items()):
            if owner is conn:
                self._unsteer(conn, flow)
        self._sel.unregister(conn)
        conn.close()

    def _handle(self, conn: socket.socket, msg: bytes) -> None:
        self.requests += 1
        if len(msg) != REQUEST.size:
            self.malformed += 1
            log.warning("steering socket %s: %d-byte request, expected %d", self.path, len(msg),
                        REQUEST.size)
            if len(msg) >= 4:
                self._reply(conn, int.from_bytes(msg[:4], "big"), errno.EINVAL)
            return
        seq, op, core, lip, lport, rip, rport = REQUEST.unpack(msg)
        flow = (lip, lport, rip, rport)
        if op == UNSTEER:
            self._unsteer(conn, flow)
            return
        if op != STEER:
            self.malformed += 1
            log.warning("steering socket %s: unknown operation %d", self.path, op)
            self._reply(conn, seq, errno.EINVAL)
            return
        err = self._steer(conn, core, flow)
        if err:
            self.refused += 1
        self._reply(conn, seq, err)

    def _steer(self, conn: socket.socket, core: int, flow: Flow) -> int:
        """0 once the agent holds the entry, else the errno saying why not."""
        lip, lport, rip, rport = flow
        if not 0 <= core < self.num_cores:
            log.warning("flow_steer %s: core %d is not in 0..%d", _flow_text(flow), core,
                        self.num_cores - 1)
            return errno.EINVAL
        if lip not in self.local_ips:
            log.warning("flow_steer %s: the local address is not this host's", _flow_text(flow))
            return errno.EADDRNOTAVAIL
        owner = self._owner.get(flow)
        if owner is not None and owner[0] is not conn and owner[1] != core:
            # Another live core process steers this 4-tuple: taking it would break its flow.
            log.warning("flow_steer %s: core %d asked, core %d holds it", _flow_text(flow), core,
                        owner[1])
            return errno.EADDRINUSE
        try:
            self.agent.steer_flow(rip, lip, rport, lport, core)
        except Exception as exc:  # the agent's refusal goes back as an errno, never kills us
            log.warning("flow_steer %s to core %d refused: %s", _flow_text(flow), core, exc)
            return _errno_of(exc)
        self._owner[flow] = (conn, core)
        return 0

    def _unsteer(self, conn: socket.socket, flow: Flow) -> None:
        owner = self._owner.get(flow)
        if owner is None or owner[0] is not conn:
            return  # not this client's (never steered, or another core took the tuple over)
        del self._owner[flow]
        lip, lport, rip, rport = flow
        try:
            self.agent.unsteer_flow(rip, lip, rport, lport)
        except Exception as exc:
            log.warning("flow_steer %s: removing the entry failed: %s", _flow_text(flow), exc)

    def _reply(self, conn: socket.socket, seq: int, err: int) -> None:
        try:
            conn.send(REPLY.pack(seq, err), socket.MSG_DONTWAIT)
        except OSError:
            pass  # a full or gone client: it times out and connect fails cleanly


# --- the core's side ----------------------------------------------------------------------------

class SteeringClient:
    """A core process's line to its host's `SteeringServer` (connected on first use)."""

    def __init__(self, path: str, timeout: float = TIMEOUT):
        self.path = path
        self.timeout = timeout
        self.last_error: OSError | None = None
        self.failures = 0
        self._sock: socket.socket | None = None
        self._seq = 0
        self._held: dict[Flow, int] = {}  # flows the server installed for us -> core

    def steer(self, core: int, lip: int, lport: int, rip: int, rport: int) -> bool:
        """The context's ``steer_flow`` hook: True once the NIC steers the flow to `core`."""
        flow = (lip, lport, rip, rport)
        try:
            self._request(core, flow)
        except OSError as exc:
            self.failures += 1
            self.last_error = exc
            log.warning("flow_steer %s to core %d: %s", _flow_text(flow), core, exc)
            return False
        self._held[flow] = core
        return True

    def unsteer(self, core: int, lip: int, lport: int, rip: int, rport: int) -> None:
        """The context's ``unsteer_flow`` hook: the connection is freed, drop its entry."""
        flow = (lip, lport, rip, rport)
        if self._held.pop(flow, None) is None:
            return
        try:
            self._send_request(UNSTEER, core, flow)
        except OSError as exc:
            # No server to tell (a failed reconnect) or a send timeout: the server removes the
            # entry anyway once this process's connection closes.
            self.failures += 1
            self.last_error = exc
            log.warning("flow_steer %s: removal not sent: %s", _flow_text(flow), exc)

    def held(self) -> dict[Flow, int]:
        return dict(self._held)

    def close(self) -> None:
        """Hang up: the server removes every entry this client still holds."""
        self._disconnect()
        self._held.clear()

    # -- plumbing --

    def _connected(self) -> socket.socket:
        if self._sock is not None:
            return self._sock
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno or errno.ECONNREFUSED,
                          f"steering server {self.path}: {exc.strerror or exc}") from None
        self._sock = sock
        for flow, core in list(self._held.items()):  # the old connection's entries went with it
            self._send(sock, STEER, core, flow)
        return sock

    def _disconnect(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _send_request(self, op: int, core: int, flow: Flow) -> tuple[socket.socket, int]:
        """Send on the open connection; if the server hung up since (restart), on a new one."""
        reused = self._sock is not None
        sock = self._connected()
        try:
            return sock, self._send(sock, op, core, flow)
        except OSError as exc:
            if not reused or exc.errno == errno.ETIMEDOUT:
                raise
        sock = self._connected()
        return sock, self._send(sock, op, core, flow)

    def _send(self, sock: socket.socket, op: int, core: int, flow: Flow) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        try:
            sock.settimeout(self.timeout)
            sock.send(REQUEST.pack(self._seq, op, core, *flow))
        except socket.timeout:
            raise OSError(errno.ETIMEDOUT, f"steering server {self.path}: send timed out") from None
        except OSError as exc:
            self._disconnect()
            raise OSError(exc.errno or errno.EPIPE,
                          f"steering server {self.path}: {exc.strerror or exc}") from None
        return self._seq

    def _request(self, core: int, flow: Flow) -> None:
        """Ask for the entry and wait for its reply (replies to earlier, timed-out requests are
        skipped by sequence number); OSError with the server's errno or ETIMEDOUT."""
        sock, seq = self._send_request(STEER, core, flow)
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise socket.timeout
                sock.settimeout(left)
                data = sock.recv(64)
            except socket.timeout:
                # The agent may still install it: cancel, so no entry outlives our giving up.
                try:
                    self._send(sock, UNSTEER, core, flow)
                except OSError:
                    pass  # then the connection is gone, and the server drops our entries
                raise OSError(errno.ETIMEDOUT, f"steering server {self.path}: no reply within "
                                               f"{self.timeout} s") from None
            except OSError as exc:
                self._disconnect()
                raise OSError(exc.errno or errno.ECONNRESET,
                              f"steering server {self.path}: {exc.strerror or exc}") from None
            if not data:
                self._disconnect()
                raise OSError(errno.ECONNRESET, f"steering server {self.path} hung up")
            if len(data) != REPLY.size:
                continue
            got, err = REPLY.unpack(data)
            if got == seq:
                if err:
                    raise OSError(err, f"steering server {self.path}: {os.strerror(err)}")
                return


def serve_for(agent: Agent, cfg: MtcpConfig) -> SteeringServer | None:
    """Start the steering server mtcp.conf's ``steer_socket`` names (None when it names none):
    the one call the process that runs `agent` makes."""
    if not cfg.steer_socket:
        return None
    return SteeringServer(agent, cfg.steer_socket, cfg.num_cores,
                          [int(a.ip) for a in cfg.local_ip]).start()

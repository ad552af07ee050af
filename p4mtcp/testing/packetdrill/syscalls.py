"""packetdrill's system calls on the mTCP API of the host under test.

Script file descriptors (the ``= 3`` of ``socket(...)``) name mTCP socket ids. Linux sockets block
unless ``O_NONBLOCK``/``SOCK_NONBLOCK`` is set; mTCP sockets never block, so a call the script
makes on a blocking socket that cannot finish yet is kept pending and retried after every loop
step of the host (``Host.on_step``) until it returns; packetdrill marks such calls with an end
time (``0.1...0.2 accept(...)``), which is then checked. Calls and constants with no mTCP
counterpart raise :class:`Unmapped` (the script is skipped, with the call named).
"""

from __future__ import annotations

import errno as errnos
import os
import select
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from p4mtcp.control import epoll as ep
from p4mtcp.control.api import FIONREAD, MtcpEpollEvent

from ..host import Host
from .script import ELLIPSIS, Call, Failure, Or, Syscall, Unmapped

O_NONBLOCK = os.O_NONBLOCK
F_GETFL, F_SETFL = 3, 4      # Linux fcntl commands
CONSTANTS: dict[str, int] = {
    "AF_INET": socket.AF_INET, "SOCK_STREAM": socket.SOCK_STREAM, "IPPROTO_TCP": socket.IPPROTO_TCP,
    "SOL_TCP": socket.IPPROTO_TCP, "SOCK_NONBLOCK": O_NONBLOCK, "SOL_SOCKET": socket.SOL_SOCKET,
    "IPPROTO_IP": 0,
    "SO_REUSEADDR": socket.SO_REUSEADDR, "SO_KEEPALIVE": socket.SO_KEEPALIVE,
    "SO_LINGER": socket.SO_LINGER, "SO_RCVBUF": socket.SO_RCVBUF, "SO_SNDBUF": socket.SO_SNDBUF,
    "SO_ERROR": socket.SO_ERROR, "TCP_NODELAY": socket.TCP_NODELAY,
    "SHUT_RD": socket.SHUT_RD, "SHUT_WR": socket.SHUT_WR, "SHUT_RDWR": socket.SHUT_RDWR,
    "F_GETFL": F_GETFL, "F_SETFL": F_SETFL, "O_RDWR": os.O_RDWR, "O_RDONLY": os.O_RDONLY,
    "O_WRONLY": os.O_WRONLY, "O_NONBLOCK": O_NONBLOCK, "MSG_PEEK": socket.MSG_PEEK,
    "MSG_DONTWAIT": socket.MSG_DONTWAIT, "FIONREAD": FIONREAD,
    "POLLIN": select.POLLIN, "POLLOUT": select.POLLOUT, "POLLERR": select.POLLERR,
    "POLLHUP": select.POLLHUP, "POLLRDHUP": 0x2000, "POLLPRI": select.POLLPRI,
    "POLLRDNORM": select.POLLRDNORM, "POLLWRNORM": select.POLLWRNORM,
    "EPOLLIN": ep.EPOLLIN, "EPOLLPRI": ep.EPOLLPRI, "EPOLLOUT": ep.EPOLLOUT,
    "EPOLLERR": ep.EPOLLERR,
    "EPOLLHUP": ep.EPOLLHUP, "EPOLLRDHUP": ep.EPOLLRDHUP, "EPOLLET": ep.EPOLLET,
    "EPOLLONESHOT": ep.EPOLLONESHOT, "EPOLL_CTL_ADD": ep.EPOLL_CTL_ADD,
    "EPOLL_CTL_DEL": ep.EPOLL_CTL_DEL, "EPOLL_CTL_MOD": ep.EPOLL_CTL_MOD,
}
# Socket options the mTCP API applies (control/api.py mtcp_setsockopt).
OPTIONS = {(socket.SOL_SOCKET, socket.SO_REUSEADDR), (socket.SOL_SOCKET, socket.SO_KEEPALIVE),
           (socket.SOL_SOCKET, socket.SO_LINGER), (socket.SOL_SOCKET, socket.SO_RCVBUF),
           (socket.SOL_SOCKET, socket.SO_SNDBUF), (socket.IPPROTO_TCP, socket.TCP_NODELAY)}
_POLL_ALWAYS = select.POLLERR | select.POLLHUP   # reported whether asked for or not (poll(2))


class WouldBlock(Exception):
    """The call cannot finish now on a blocking socket; ``retry()`` tries again (it raises
    WouldBlock while it still cannot)."""

    def __init__(self, retry: Callable[[], int]):
        self.retry = retry


def value(arg: Any, what: str = "argument") -> int:
    """An argument as an int: numbers, constant names, A|B, [x], htons(x)."""
    if isinstance(arg, int):
        return arg
    if isinstance(arg, str) and arg in CONSTANTS:
        return CONSTANTS[arg]
    if isinstance(arg, Or):
        out = 0
        for t in arg.terms:
            out |= value(t, what)
        return out
    if isinstance(arg, list) and len(arg) == 1:
        return value(arg[0], what)
    if isinstance(arg, Call) and arg.name in ("htons", "htonl", "ntohs", "ntohl") and arg.args:
        return value(arg.args[0], what)
    raise Unmapped(f"{what} {arg!r} has no mTCP counterpart")


@dataclass
class _Pending:
    line: int
    call: Syscall
    retry: Callable[[], int]
    end: float
    tolerance: float


class Syscalls:
    """The script's sockets on one host; ``run`` executes one call and checks its result."""

    def __init__(self, host: Host, bind_port: int = 8080, connect_port: int = 8080):
        self.host = host
        self.api = host.api
        self.bind_port = bind_port
        self.connect_port = connect_port
        self.fds: dict[int, int] = {}     # script fd -> mTCP socket id
        self.blocking: set[int] = set()   # script fds without O_NONBLOCK
        self.pending: _Pending | None = None

    # ------------------------------------------------------------------ running and checking

    def run(self, line: int, call: Syscall, block_end: float | None, tolerance: float) -> None:
        if self.pending is not None:
            raise Failure(line, f"{call.name}() while {self.pending.call.name}() of line "
                                f"{self.pending.line} is still blocked")
        handler = getattr(self, f"sys_{call.name}", None)
        if handler is None:
            raise Unmapped(f"system call {call.name}() has no mTCP counterpart", line)
        try:
            outcome = self._attempt(lambda: handler(call), line)
        except WouldBlock as wb:
            if block_end is None:
                raise Failure(line, f"{call.name}() would block; write its end time "
                                    "(START...END) or make the socket non-blocking") from None
            self.pending = _Pending(line, call, wb.retry, block_end, tolerance)
            return
        self._check(line, call, outcome)
        if block_end is not None:
            self._check_end(line, call, block_end, tolerance)

    def _attempt(self, fn: Callable[[], int], line: int) -> tuple[int, int | None]:
        """(return value, errno) of one try; WouldBlock passes through."""
        try:
            return fn(), None
        except (Unmapped, Failure) as exc:
            exc.line = exc.line or line
            raise
        except (IndexError, KeyError, TypeError, ValueError) as exc:
            raise Failure(line, f"arguments do not fit the call: {exc!r}") from None
        except OSError as exc:
            return -1, exc.errno or errnos.EIO

    def retry_pending(self) -> None:
        """Try the blocked call again (after a loop step); check it once it returned."""
        p = self.pending
        if p is None:
            return
        try:
            outcome = self._attempt(p.retry, p.line)
        except WouldBlock as wb:
            p.retry = wb.retry
            return
        self.pending = None
        self._check(p.line, p.call, outcome)
        self._check_end(p.line, p.call, p.end, p.tolerance)

    def finish(self) -> None:
        if self.pending is not None:
            raise Failure(self.pending.line, f"{self.pending.call.name}() never returned")

    def _check_end(self, line: int, call: Syscall, end: float, tol: float) -> None:
        now = self.host.now
        if not end - tol <= now <= end + tol:
            raise Failure(line, f"timing error: expected {call.name}() to return at {end:.6f} s, "
                                f"it returned at {now:.6f} s; tolerance {tol:.6f} s")

    @staticmethod
    def _check(line: int, call: Syscall, outcome: tuple[int, int | None]) -> None:
        ret, err = outcome
        got = f"-1 {errnos.errorcode.get(err, err)} ({os.strerror(err)})" if err else str(ret)
        if call.ret == ELLIPSIS:
            return
        want = f"{call.ret}" + (f" {call.errno}" if call.errno else "")
        if err:
            if call.ret != -1 or call.errno != errnos.errorcode.get(err):
                raise Failure(line, f"{call.name}() returned {got}, expected {want}")
        elif ret != call.ret:
            raise Failure(line, f"{call.name}() returned {got}, expected {want}")

    # ------------------------------------------------------------------ helpers

    def _sid(self, fd: Any) -> int:
        fd = value(fd, "file descriptor")
        if fd not in self.fds:
            raise OSError(errnos.EBADF, f"fd {fd} is not open in the script")
        return self.fds[fd]

    def _new_fd(self, call: Syscall, sid: int, blocking: bool) -> int:
        fd = (call.ret if isinstance(call.ret, int) and call.ret >= 0
              else max(self.fds, default=2) + 1)
        self.fds[fd] = sid
        if blocking:
            self.blocking.add(fd)
        else:
            self.blocking.discard(fd)
        return fd

    def _blocking(self, call: Syscall, flags: int = 0) -> bool:
        """Whether the call blocks: its socket lacks O_NONBLOCK and its flags MSG_DONTWAIT."""
        return value(call.args[0]) in self.blocking and not flags & socket.MSG_DONTWAIT

    def _retrying(self, fn: Callable[[], int], blocking: bool) -> int:
        """``fn()``, or WouldBlock(retry) when it says EAGAIN on a blocking socket."""
        try:
            return fn()
        except BlockingIOError:
            if not blocking:
                raise
            raise WouldBlock(lambda: self._retrying(fn, True)) from None

    # ------------------------------------------------------------------ the calls

    def sys_socket(self, call: Syscall) -> int:
        domain, stype = call.args[0], value(call.args[1])
        if domain != ELLIPSIS and value(domain) != socket.AF_INET:
            raise Unmapped(f"socket domain {domain}")
        if stype & ~O_NONBLOCK != socket.SOCK_STREAM:
            raise Unmapped(f"socket type {call.args[1]} (p4mtcp has stream sockets)")
        sid = self.api.socket(socket.AF_INET, socket.SOCK_STREAM, 0)
        return self._new_fd(call, sid, blocking=not stype & O_NONBLOCK)

    def sys_bind(self, call: Syscall) -> int:
        return self.api.bind(self._sid(call.args[0]), ("0.0.0.0", self.bind_port))

    def sys_listen(self, call: Syscall) -> int:
        return self.api.listen(self._sid(call.args[0]), value(call.args[1]))

    def sys_accept(self, call: Syscall) -> int:
        lsid, blocking = self._sid(call.args[0]), self._blocking(call)
        return self._retrying(lambda: self._new_fd(call, self.api.accept(lsid), blocking),
                              blocking)

    sys_accept4 = sys_accept

    def sys_connect(self, call: Syscall) -> int:
        sid = self._sid(call.args[0])
        self.api.connect(sid, (self.host.remote_ip, self.connect_port))
        if not self._blocking(call):
            raise OSError(errnos.EINPROGRESS, "connect: in progress")

        def done() -> int:
            bits = self.host.ctx.readiness(sid)
            if bits & ep.EPOLLERR:
                err = self.api.getsockopt(sid, socket.SOL_SOCKET, socket.SO_ERROR)
                raise OSError(err or errnos.ECONNREFUSED, "connect")
            if bits & ep.EPOLLOUT:
                return 0
            raise WouldBlock(done)

        return done()

    def sys_write(self, call: Syscall) -> int:
        return self._send(call, value(call.args[2]))

    def sys_send(self, call: Syscall) -> int:
        return self._send(call, value(call.args[2]), _flags(call, 3))

    sys_sendto = sys_send  # on a connected stream socket the address is not used (send(2))

    def sys_writev(self, call: Syscall) -> int:
        return self._send(call, _iov_total(call))

    def sys_sendmsg(self, call: Syscall) -> int:
        return self._send(call, *_msghdr(call))

    def _send(self, call: Syscall, n: int, flags: int = 0) -> int:
        sid = self._sid(call.args[0])
        blocking = self._blocking(call, flags)
        sent = 0

        def more() -> int:
            nonlocal sent
            try:
                sent += self.api.write(sid, bytes(n - sent))
            except BlockingIOError:
                if blocking:
                    raise WouldBlock(more) from None
                raise
            if blocking and sent < n:      # Linux's blocking write waits for all of it
                raise WouldBlock(more)
            return sent

        return more()

    def sys_read(self, call: Syscall) -> int:
        sid, n = self._sid(call.args[0]), value(call.args[2])
        return self._retrying(lambda: len(self.api.read(sid, n)), self._blocking(call))

    def sys_readv(self, call: Syscall) -> int:
        sid, n = self._sid(call.args[0]), _iov_total(call)
        return self._retrying(lambda: self.api.readv(sid, [bytearray(n)]), self._blocking(call))

    def sys_recv(self, call: Syscall) -> int:
        return self._recv(call, value(call.args[2]), _flags(call, 3))

    sys_recvfrom = sys_recv  # on a connected stream socket no address is filled in (recv(2))

    def sys_recvmsg(self, call: Syscall) -> int:
        return self._recv(call, *_msghdr(call))

    def _recv(self, call: Syscall, n: int, flags: int) -> int:
        sid = self._sid(call.args[0])
        blocking = self._blocking(call, flags)
        return self._retrying(
            lambda: len(self.api.recv(sid, n, flags & socket.MSG_PEEK)), blocking)

    def sys_close(self, call: Syscall) -> int:
        fd = value(call.args[0])
        self.api.close(self._sid(fd))
        del self.fds[fd]
        self.blocking.discard(fd)
        return 0

    def sys_shutdown(self, call: Syscall) -> int:
        return self.api.shutdown(self._sid(call.args[0]), value(call.args[1]))

    def _option(self, call: Syscall) -> tuple[int, int, int]:
        sid, level = self._sid(call.args[0]), value(call.args[1], "socket option level")
        name = value(call.args[2], "socket option")
        if (level, name) not in OPTIONS and (level, name) != (socket.SOL_SOCKET, socket.SO_ERROR):
            raise Unmapped(f"socket option {call.args[2]} has no mTCP counterpart")
        return sid, level, name

    def sys_setsockopt(self, call: Syscall) -> int:
        sid, level, name = self._option(call)
        raw = call.args[3]
        if isinstance(raw, dict):       # struct linger {l_onoff, l_linger}
            opt: Any = (value(raw.get("l_onoff", 0)), value(raw.get("l_linger", 0)))
        else:
            opt = value(raw)
        return self.api.setsockopt(sid, level, name, opt)

    def sys_getsockopt(self, call: Syscall) -> int:
        sid, level, name = self._option(call)
        got = self.api.getsockopt(sid, level, name)
        want = call.args[3] if len(call.args) > 3 else ELLIPSIS
        if isinstance(want, list) and want and want[0] != ELLIPSIS:
            expected = value(want)
            got_value = got[0] if isinstance(got, tuple) else got
            if got_value != expected:
                raise Failure(0, f"getsockopt {call.args[2]} is {got_value}, expected {expected}")
        return 0

    def sys_fcntl(self, call: Syscall) -> int:
        fd, cmd = value(call.args[0]), value(call.args[1])
        self._sid(fd)
        if cmd == F_GETFL:
            return os.O_RDWR | (0 if fd in self.blocking else O_NONBLOCK)
        if cmd == F_SETFL:
            if value(call.args[2]) & O_NONBLOCK:
                self.blocking.discard(fd)
            else:
                self.blocking.add(fd)
            return 0
        raise Unmapped(f"fcntl command {call.args[1]}")

    def sys_ioctl(self, call: Syscall) -> int:
        sid, req = self._sid(call.args[0]), value(call.args[1])
        if req != FIONREAD:
            raise Unmapped(f"ioctl {call.args[1]}")
        got = self.api.socket_ioctl(sid, FIONREAD)
        if len(call.args) > 2 and isinstance(call.args[2], list) and call.args[2][0] != ELLIPSIS:
            if got != value(call.args[2]):
                raise Failure(0, f"ioctl FIONREAD gave {got}, expected {value(call.args[2])}")
        return 0

    def sys_poll(self, call: Syscall) -> int:
        fds = call.args[0]
        timeout = value(call.args[2])
        start = self.host.now

        def check() -> int:
            ready = []
            for pfd in fds:
                bits = self.host.ctx.readiness(self._sid(pfd["fd"]))
                ready.append(bits & (value(pfd.get("events", 0)) | _POLL_ALWAYS))
            n = sum(1 for r in ready if r)
            if not n and (timeout < 0 or self.host.now < start + timeout / 1000.0):
                if timeout != 0:
                    raise WouldBlock(check)
            for pfd, r in zip(fds, ready):
                want = pfd.get("revents", ELLIPSIS)
                if want != ELLIPSIS and value(want) != r:
                    raise Failure(0, f"poll revents for fd {pfd['fd']}: expected {want}, got "
                                     f"{_bit_names(r, 'POLL')}")
            return n

        return check()

    def sys_epoll_create(self, call: Syscall) -> int:
        return self._new_fd(call, self.api.epoll_create(max(1, value(call.args[0]))), False)

    def sys_epoll_create1(self, call: Syscall) -> int:
        return self._new_fd(call, self.api.epoll_create1(0), False)

    def sys_epoll_ctl(self, call: Syscall) -> int:
        epid, op, fd = self._sid(call.args[0]), value(call.args[1]), value(call.args[2])
        spec = call.args[3] if len(call.args) > 3 and isinstance(call.args[3], dict) else {}
        event = MtcpEpollEvent(value(spec.get("events", 0)), fd)
        return self.api.epoll_ctl(epid, op, self._sid(fd), event)

    def sys_epoll_wait(self, call: Syscall) -> int:
        epid, maxevents = self._sid(call.args[0]), value(call.args[2])
        want = call.args[1]
        events = self.api.epoll_wait(epid, maxevents, 0)
        if isinstance(want, dict) and events:
            first = events[0]
            if "events" in want and value(want["events"]) != first.events:
                raise Failure(0, f"epoll_wait events: expected {want['events']}, got "
                                 f"{_bit_names(first.events, 'EPOLL')}")
            if "fd" in want and value(want["fd"]) != first.data:
                raise Failure(0, f"epoll_wait fd: expected {want['fd']}, got {first.data}")
        return len(events)


def _iov_total(call: Syscall) -> int:
    """The byte count of ``readv``/``writev``'s iovec array, checked against its count argument
    (the contents are the script's ``...``: zeros)."""
    return _iovecs(call.name, call.args[1], value(call.args[2], "iovec count"))


def _iovecs(name: str, iov: Any, count: int | None) -> int:
    """The bytes of an iovec array, ``[{iov_base=..., iov_len=N}, ...]`` or packetdrill's
    positional ``[{..., N}, ...]``, whose length must be ``count`` when one is given."""
    if not isinstance(iov, list) or not all(isinstance(v, dict) and ("iov_len" in v or "1" in v)
                                            for v in iov):
        raise Unmapped(f"{name}() iovec {iov!r}: expected [{{..., N}}, ...] or "
                       "[{iov_base=..., iov_len=N}, ...]")
    if count is not None and count != len(iov):
        raise Failure(0, f"{name}() count {count} for {len(iov)} iovec entries")
    return sum(value(v.get("iov_len", v.get("1")), "iov_len") for v in iov)


def _msghdr(call: Syscall) -> tuple[int, int]:
    """(bytes in msg_iov, flags) of ``sendmsg``/``recvmsg``: ``{msg_name(...)=...,
    msg_iov(1)=[{..., N}], msg_flags=0}``. Ancillary data has no mTCP counterpart."""
    msg = call.args[1]
    if not isinstance(msg, dict) or "msg_iov" not in msg:
        raise Unmapped(f"{call.name}() message {msg!r}: expected {{..., msg_iov(n)=[...], ...}}")
    if "msg_control" in msg:
        raise Unmapped(f"{call.name}() ancillary data (msg_control) has no mTCP counterpart")
    count = msg.get("msg_iov(n)")
    total = _iovecs(call.name, msg["msg_iov"], None if count is None else value(count))
    return total, _flags(call, 2)


def _flags(call: Syscall, at: int) -> int:
    """The flags argument at ``at`` (0 when absent): MSG_PEEK and MSG_DONTWAIT map to mTCP."""
    flags = value(call.args[at], "flags") if len(call.args) > at else 0
    if flags & ~(socket.MSG_PEEK | socket.MSG_DONTWAIT):
        raise Unmapped(f"{call.name}() flags {call.args[at]} have no mTCP counterpart "
                       "(MSG_PEEK and MSG_DONTWAIT do)")
    return flags


def _bit_names(bits: int, prefix: str) -> str:
    """Readiness bits as the script would write them, e.g. ``POLLIN|POLLOUT``."""
    names = [prefix + n for n in ("IN", "PRI", "OUT", "ERR", "HUP", "RDHUP")
             if bits & CONSTANTS[prefix + n]]
    return "|".join(names) or "0"

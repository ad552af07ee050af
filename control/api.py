"""The mTCP API: ``mtcp_*`` functions over per-core contexts (exported as ``p4mtcp.mtcp``).

Each function checks its arguments in mTCP's order and raises ``OSError`` carrying the errno
mTCP sets (the message names the call); the per-core work is done by
:class:`~p4mtcp.control.context.Context`. The Python shapes and every deliberate difference from
mTCP are documented in ``p4mtcp/mtcp.py``.
"""

from __future__ import annotations

import errno
import os
import signal
import socket as _socket
import struct
import termios
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from p4mtcp.control import epoll as _ep
from p4mtcp.control.config import MtcpConf, MtcpConfig, load_host_beside
from p4mtcp.control.context import Context, Pipe, Socket, SockType, apply_option, fail
from p4mtcp.control.epoll import MtcpEpollEvent
from p4mtcp.control.rss import PortSelector, round_robin_reta
from p4mtcp.control.sockstat import SockStatServer
from p4mtcp.control.steering import SteeringClient
from p4mtcp.control.tcp import Connection, State

# ------------------------------------------------------------------------------- constants

AF_INET = _socket.AF_INET
SOCK_STREAM = _socket.SOCK_STREAM
SOL_SOCKET = _socket.SOL_SOCKET
IPPROTO_TCP = _socket.IPPROTO_TCP
SO_REUSEADDR = _socket.SO_REUSEADDR
SO_ERROR = _socket.SO_ERROR
SO_KEEPALIVE = _socket.SO_KEEPALIVE
SO_LINGER = _socket.SO_LINGER
SO_RCVBUF = _socket.SO_RCVBUF
SO_SNDBUF = _socket.SO_SNDBUF
TCP_NODELAY = _socket.TCP_NODELAY
FIONREAD = termios.FIONREAD
FIONBIO = termios.FIONBIO
SHUT_RD = _socket.SHUT_RD
SHUT_WR = _socket.SHUT_WR
SHUT_RDWR = _socket.SHUT_RDWR
MSG_PEEK = _socket.MSG_PEEK
INADDR_ANY = 0
INPORT_ANY = 0
EINPROGRESS = errno.EINPROGRESS
EPOLL_CLOEXEC = 0o2000000

MTCP_SOCK_UNUSED, MTCP_SOCK_STREAM, MTCP_SOCK_PROXY = SockType.UNUSED, SockType.STREAM, SockType.PROXY
MTCP_SOCK_LISTENER, MTCP_SOCK_EPOLL, MTCP_SOCK_PIPE = SockType.LISTENER, SockType.EPOLL, SockType.PIPE
_STREAM, _PIPE = SockType.STREAM, SockType.PIPE  # hot paths: identity tests, no lookups

from p4mtcp.control.epoll import (  # noqa: E402  (re-exported constants)
    EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CTL_MOD, EPOLLERR, EPOLLET, EPOLLHUP, EPOLLIN, EPOLLMSG,
    EPOLLNONE, EPOLLONESHOT, EPOLLOUT, EPOLLPRI, EPOLLRDBAND, EPOLLRDHUP, EPOLLRDNORM,
    EPOLLWRBAND, EPOLLWRNORM,
)

# mTCP's C spellings (enum mtcp_epoll_op, enum mtcp_event_type) name the same values.
MTCP_EPOLL_CTL_ADD, MTCP_EPOLL_CTL_DEL, MTCP_EPOLL_CTL_MOD = EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CTL_MOD
MTCP_EPOLLNONE, MTCP_EPOLLIN, MTCP_EPOLLPRI, MTCP_EPOLLOUT = EPOLLNONE, EPOLLIN, EPOLLPRI, EPOLLOUT
MTCP_EPOLLRDNORM, MTCP_EPOLLRDBAND, MTCP_EPOLLWRNORM = EPOLLRDNORM, EPOLLRDBAND, EPOLLWRNORM
MTCP_EPOLLWRBAND, MTCP_EPOLLMSG, MTCP_EPOLLERR, MTCP_EPOLLHUP = EPOLLWRBAND, EPOLLMSG, EPOLLERR, EPOLLHUP
MTCP_EPOLLRDHUP, MTCP_EPOLLONESHOT, MTCP_EPOLLET = EPOLLRDHUP, EPOLLONESHOT, EPOLLET

NIC_CONNECT_TIMEOUT = 10.0
"""Seconds mtcp_create_context waits for the NIC to listen on the core's link."""
_RECV_STATES = frozenset({State.ESTABLISHED, State.FIN_WAIT_1, State.FIN_WAIT_2})
_SEND_STATES = frozenset({State.ESTABLISHED, State.CLOSE_WAIT})
_LINGER = struct.Struct("ii")
SOCK_BUF_MIN, SOCK_BUF_MAX = 2048, 1 << 30
"""SO_RCVBUF/SO_SNDBUF are clamped into this range instead of failing, as Linux clamps into
[SOCK_MIN_RCVBUF, rmem_max]: from room for one Ethernet-size segment up to RFC 7323's largest
window (2^30 bytes). Sizes count data bytes (Linux doubles them for bookkeeping; these have none)."""
_IPV4 = struct.Struct("!I")

# ------------------------------------------------------------------------------- process state


class _Process:
    """What mtcp_init sets up for this process: the configuration and the live contexts."""

    def __init__(self) -> None:
        self.config: MtcpConfig | None = None
        self.routes: list[tuple[int, int]] = []  # (network, netmask) a connect may reach
        self.contexts: dict[int, Context] = {}
        self.steering: dict[int, SteeringClient] = {}  # core -> its line to the agent's process
        self.handlers: dict[int, Callable[[int], Any]] = {}


_proc = _Process()


def _ctx(mctx: Any, call: str) -> Context:
    """mTCP's GetMTCPManager: EINVAL for something that is not a context, EPERM once destroyed."""
    if not isinstance(mctx, Context):
        fail(errno.EINVAL, call, f"{type(mctx).__name__} is not an mTCP context")
    if mctx.done:
        fail(errno.EPERM, call, f"context of core {mctx.core} was destroyed")
    return mctx


_TEXT_IPS: dict[str, int] = {}
"""Dotted quads already converted (a client connects to the same server over and over);
emptied when it reaches _TEXT_IPS_MAX entries, so it stays small whatever the addresses."""
_TEXT_IPS_MAX = 256


def _ip(value: Any) -> int:
    """An IPv4 address as int from str ("" and "0.0.0.0" are INADDR_ANY) or int."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 32:
        return value
    if isinstance(value, str):
        ip = _TEXT_IPS.get(value)
        if ip is not None:
            return ip
        try:
            ip = _IPV4.unpack(_socket.inet_pton(AF_INET, value or "0.0.0.0"))[0]
        except OSError:
            raise ValueError(f"{value!r} is not a dotted-quad IPv4 address") from None
        if len(_TEXT_IPS) >= _TEXT_IPS_MAX:
            _TEXT_IPS.clear()
        _TEXT_IPS[value] = ip
        return ip
    raise ValueError(f"{value!r} is not an IPv4 address")


def _sockaddr(addr: Any, call: str, err: int, missing: int = errno.EINVAL) -> tuple[int, int]:
    """``(host, port)`` -> (int ip, int port); ``missing`` for None (mTCP's NULL address),
    ``err`` naming what is wrong otherwise."""
    if addr is None:
        fail(missing, call, "no address given")
    try:
        host, port = addr
        ip = _ip(host)
    except (TypeError, ValueError) as exc:
        fail(err, call, f"address {addr!r} is not an AF_INET (host, port) pair: {exc}")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        fail(err, call, f"port {port!r} is not in 0..65535")
    return ip, port


def _addr_out(ip: int, port: int) -> tuple[str, int]:
    return _socket.inet_ntoa(_IPV4.pack(ip)), port


# ------------------------------------------------------------------------------- process setup


def mtcp_init(config_file: str) -> int:
    """Load mtcp.conf, and arp.conf/route.conf when they sit beside it (mTCP reads them from
    ./config/). ``ConfigError`` names file, line and problem. Returns 0."""
    if _proc.contexts:
        fail(errno.EBUSY, "mtcp_init", "contexts exist; mtcp_destroy first")
    host = load_host_beside(config_file)
    _proc.config = host.mtcp
    # connect's "no route" check: route.conf's prefixes and the local subnets
    _proc.routes = [(int(r.network.network_address), int(r.network.netmask))
                    for r in host.all_routes()]
    return 0


def mtcp_destroy() -> None:
    """Destroy every context of this process and forget the configuration."""
    for ctx in list(_proc.contexts.values()):
        mtcp_destroy_context(ctx)
    _proc.config = None


def _config(call: str) -> MtcpConfig:
    if _proc.config is None:
        fail(errno.EINVAL, call, "mtcp_init has not been called")
    return _proc.config


def mtcp_getconf() -> MtcpConf:
    """A copy of ``struct mtcp_conf`` (mTCP fills a caller's struct; Python returns one)."""
    return _config("mtcp_getconf").conf()


def mtcp_setconf(conf: MtcpConf) -> int:
    """Apply ``conf`` to contexts created from now on (EINVAL if a value is out of range)."""
    cfg = _config("mtcp_setconf")
    if not isinstance(conf, MtcpConf):
        fail(errno.EINVAL, "mtcp_setconf", f"{type(conf).__name__} is not an MtcpConf")
    try:
        _proc.config = cfg.with_conf(conf)
    except ValueError as exc:
        fail(errno.EINVAL, "mtcp_setconf", str(exc))
    return 0


def mtcp_core_affinitize(cpu: int) -> int:
    """Pin the calling process to ``cpu`` (mTCP pins the thread; here a core is a process)."""
    try:
        os.sched_setaffinity(0, {cpu})
    except (OSError, TypeError, ValueError) as exc:
        fail(errno.EINVAL, "mtcp_core_affinitize", f"cpu {cpu!r}: {exc}")
    return 0


def mtcp_create_context(cpu: int, port: Any = None, *, offload_checksum: bool = True) -> Context:
    """The context for core ``cpu``: its NIC port (``core_links[cpu]`` unless ``port`` is given,
    e.g. an in-process frame pipe), local addresses and RSS source-port selection."""
    call = "mtcp_create_context"
    cfg = _config(call)
    if not isinstance(cpu, int) or not 0 <= cpu < cfg.num_cores:
        fail(errno.EINVAL, call, f"core {cpu!r} is not in 0..{cfg.num_cores - 1}")
    if cpu in _proc.contexts:
        fail(errno.EEXIST, call, f"core {cpu} already has a context in this process")
    reopen = None
    if port is None:
        if not cfg.core_links:
            fail(errno.EINVAL, call, "mtcp.conf has no core_links to reach the NIC")
        from p4mtcp.link import open_port

        spec = cfg.core_link(cpu)
        reopen = partial(open_port, spec)
        try:
            port = open_port(spec, connect_timeout=NIC_CONNECT_TIMEOUT)
        except ValueError as exc:
            fail(errno.EINVAL, call, str(exc))
        except OSError as exc:
            fail(exc.errno or errno.ECONNREFUSED, call, f"core link {spec}: {exc.strerror}")
    selector = PortSelector(round_robin_reta(cfg.core_ports), cfg.core_port(cpu))
    # connect's flow_steer fallback: requests to the agent's process (connected on first use)
    steering = SteeringClient(cfg.steer_socket) if cfg.steer_socket else None
    try:
        ctx = Context(cpu, cfg.conf(), port, [int(a.ip) for a in cfg.local_ip],
                      offload_checksum=offload_checksum, selector=selector,
                      steer_flow=steering.steer if steering else None,
                      unsteer_flow=steering.unsteer if steering else None,
                      routes=_proc.routes, reopen=reopen, congestion=cfg.congestion_control,
                      mss=cfg.mss)
    except ValueError as exc:  # e.g. buffer sizes the engine cannot honour
        port.close()
        fail(errno.EINVAL, call, str(exc))
    _proc.contexts[cpu] = ctx
    if cfg.ss_dir:  # the core's connection table for p4mtcp ss
        ctx.introspect = SockStatServer(ctx, os.path.join(cfg.ss_dir, f"core{cpu}.sock"))
    if steering is not None:
        _proc.steering[cpu] = steering
    return ctx


def mtcp_destroy_context(mctx: Context) -> None:
    """Close every socket of the context (FINs go out), then its port."""
    ctx = _ctx(mctx, "mtcp_destroy_context")
    ctx.destroy()
    if _proc.contexts.get(ctx.core) is ctx:
        del _proc.contexts[ctx.core]
        steering = _proc.steering.pop(ctx.core, None)
        if steering is not None:
            steering.close()  # the agent's process drops the entries of flows still closing


def mtcp_register_signal(signum: int, handler: Callable[[int], Any] | None
                         ) -> Callable[[int], Any] | None:
    """Call ``handler(signum)`` on the signal after waking every context of this process (their
    blocked calls fail with EINTR, as mTCP's do). Returns the previously registered handler."""
    call = "mtcp_register_signal"
    if handler is not None and not callable(handler):
        fail(errno.EINVAL, call, f"handler {handler!r} is not callable")
    previous = _proc.handlers.get(signum)

    def on_signal(sig: int, _frame: Any) -> None:
        for ctx in _proc.contexts.values():
            ctx.interrupted = True
        handler(sig)  # type: ignore[misc]

    try:
        signal.signal(signum, signal.SIG_DFL if handler is None else on_signal)
    except (TypeError, ValueError, OSError) as exc:
        fail(errno.EINVAL, call, f"signal {signum!r}: {exc}")
    if handler is None:
        _proc.handlers.pop(signum, None)
    else:
        _proc.handlers[signum] = handler
    return previous


# ------------------------------------------------------------------------------- sockets


def mtcp_socket(mctx: Context, domain: int, type: int, protocol: int) -> int:
    call = "mtcp_socket"
    ctx = _ctx(mctx, call)
    if domain != AF_INET:
        fail(errno.EAFNOSUPPORT, call, f"domain {domain!r}: only AF_INET")
    if type != SOCK_STREAM:
        fail(errno.EINVAL, call, f"type {type!r}: only SOCK_STREAM")
    if protocol not in (0, IPPROTO_TCP):  # Linux: 0 picks TCP for SOCK_STREAM
        fail(errno.EPROTONOSUPPORT, call, f"protocol {protocol!r}: only 0 or IPPROTO_TCP")
    return ctx.allocate(SockType.STREAM, call).id


def _stream_or_listener(ctx: Context, sockid: Any, call: str) -> Socket:
    s = ctx.get(sockid, call)
    if s.type not in (SockType.STREAM, SockType.LISTENER):
        fail(errno.ENOTSOCK, call, f"socket {sockid} is a {s.type.name.lower()} socket")
    return s


def _stream(ctx: Context, sockid: Any, call: str) -> Socket:
    s = ctx.get(sockid, call)
    if s.type is not SockType.STREAM:
        fail(errno.ENOTSOCK, call, f"socket {sockid} is a {s.type.name.lower()} socket")
    return s


def mtcp_bind(mctx: Context, sockid: int, addr: tuple[str | int, int]) -> int:
    call = "mtcp_bind"
    ctx = _ctx(mctx, call)
    s = _stream_or_listener(ctx, sockid, call)
    ip, port = _sockaddr(addr, call, errno.EINVAL)
    if s.bound is not None or s.conn is not None:
        fail(errno.EINVAL, call, f"socket {sockid} is already bound")
    if ip and ip not in ctx.local_ips:
        fail(errno.EADDRNOTAVAIL, call, f"{_addr_out(ip, port)[0]} is not a local address")
    s.bound = (ip, port)
    return 0


def mtcp_listen(mctx: Context, sockid: int, backlog: int) -> int:
    call = "mtcp_listen"
    ctx = _ctx(mctx, call)
    s = ctx.get(sockid, call)
    if s.type is SockType.LISTENER:
        return 0
    if s.type is not SockType.STREAM:
        fail(errno.ENOTSOCK, call, f"socket {sockid} is a {s.type.name.lower()} socket")
    if not isinstance(backlog, int) or not 0 < backlog <= ctx.max_concurrency:
        fail(errno.EINVAL, call, f"backlog {backlog!r} not in 1..{ctx.max_concurrency}")
    if s.conn is not None:
        fail(errno.EINVAL, call, f"socket {sockid} is connected")
    if s.bound is None or not s.bound[1]:
        fail(errno.EINVAL, call, f"socket {sockid} is not bound to a port")
    ctx.listen(s, backlog, call)
    return 0


def mtcp_accept(mctx: Context, sockid: int) -> int:
    """The new socket's id (mTCP's addr/addrlen out-parameters: use mtcp_getpeername)."""
    call = "mtcp_accept"
    ctx = _ctx(mctx, call)
    s = ctx.get(sockid, call)
    if s.type is not SockType.LISTENER:
        fail(errno.EINVAL, call, f"socket {sockid} is not listening")
    new = ctx.accept(s, call)
    if new is None and not s.nonblock:
        lst = s.listener
        ctx.run_until(lambda: lst.pending, ctx.block_timeout, call)
        new = ctx.accept(s, call)
    if new is None:
        fail(errno.EAGAIN, call, "no connection to accept")
    return new.id


def mtcp_init_rss(mctx: Context, saddr_base: str | int, num_addr: int, daddr: str | int,
                  dport: int) -> int:
    """Source addresses saddr_base .. +num_addr-1 for connections to (daddr, dport)."""
    call = "mtcp_init_rss"
    if not isinstance(mctx, Context) or mctx.done:
        fail(errno.EACCES, call, "not a live mTCP context")  # mTCP's errno here
    try:
        base, dst = _ip(saddr_base), _ip(daddr)
    except ValueError as exc:
        fail(errno.EINVAL, call, str(exc))
    base = base or mctx.local_ips[0]  # INADDR_ANY: the interface address, as mTCP picks it
    if not isinstance(num_addr, int) or num_addr < 1 or base + num_addr > 1 << 32:
        fail(errno.EINVAL, call, f"num_addr {num_addr!r}")
    if not isinstance(dport, int) or not 0 < dport <= 65535:
        fail(errno.EINVAL, call, f"dport {dport!r}")
    mctx.rss_pool = (range(base, base + num_addr), dst, dport)
    if mctx.selector is not None:
        mctx.selector.prepare(base, dst, dport)  # the first connect takes this address
    return 0


def mtcp_connect(mctx: Context, sockid: int, addr: tuple[str | int, int]) -> int:
    """0 when connected (blocking socket); ``EINPROGRESS`` (the int) when a non-blocking socket's
    handshake has started — mTCP's -1/errno=EINPROGRESS as a return code. Failures raise."""
    call = "mtcp_connect"
    ctx = _ctx(mctx, call)
    s = _stream(ctx, sockid, call)
    rip, rport = _sockaddr(addr, call, errno.EAFNOSUPPORT, errno.EFAULT)
    if s.conn is not None:
        if s.conn.state in (State.SYN_SENT, State.SYN_RECEIVED):
            fail(errno.EALREADY, call, f"socket {sockid} is already connecting")
        fail(errno.EISCONN, call, f"socket {sockid} is already connected")
    if not rip:
        fail(errno.EINVAL, call, f"no route to {_addr_out(rip, rport)}")
    if not rport:  # Linux: nothing listens on port 0, the peer's RST refuses the SYN
        fail(errno.ECONNREFUSED, call, f"port 0 of {_addr_out(rip, rport)[0]}")
    ctx.connect(s, rip, rport, call)
    if s.nonblock:
        return EINPROGRESS
    c = s.conn
    ctx.run_until(lambda: c.state is not State.SYN_SENT or c.error, None, call)
    if c.error or c.state is State.CLOSED:
        s.error_reported = True  # connect reported it, as Linux's connect() clears sk_err
        fail(c.error or errno.ECONNREFUSED, call, f"to {_addr_out(rip, rport)}")
    return 0


def _flush_if_blocking(ctx: Context, s: Socket) -> None:
    """A blocking socket's write/close/shutdown/abort takes effect on the wire before the call
    returns; non-blocking ones wait for the next loop step, so that an event loop's many calls
    leave in one batch (as mTCP's thread picks them up on its next round)."""
    if not s.nonblock:
        ctx.flush()


def mtcp_close(mctx: Context, sockid: int) -> int:
    """Graceful close (FIN) of any socket type; SO_LINGER {on, 0 s} resets instead."""
    call = "mtcp_close"
    ctx = _ctx(mctx, call)
    s = ctx.get(sockid, call)
    ctx.close_socket(s)
    _flush_if_blocking(ctx, s)
    return 0


def mtcp_abort(mctx: Context, sockid: int) -> int:
    """Reset the connection (RST) and close the socket."""
    call = "mtcp_abort"
    ctx = _ctx(mctx, call)
    s = _stream(ctx, sockid, call)
    if s.conn is None:
        fail(errno.ENOTCONN, call, f"socket {sockid} has no connection")
    s.conn.abort()
    ctx.close_socket(s)
    _flush_if_blocking(ctx, s)
    return 0


def mtcp_shutdown(mctx: Context, sockid: int, how: int) -> int:
    """Half-close: SHUT_WR sends FIN once queued data is out; SHUT_RD discards further input."""
    call = "mtcp_shutdown"
    ctx = _ctx(mctx, call)
    s = _stream(ctx, sockid, call)
    if how not in (SHUT_RD, SHUT_WR, SHUT_RDWR):
        fail(errno.EINVAL, call, f"how {how!r}")
    c = s.conn
    if c is None or c.state in (State.SYN_SENT, State.CLOSED):
        fail(errno.ENOTCONN, call, f"socket {sockid} is not connected")
    try:
        c.shutdown(how)
    except OSError as exc:
        fail(exc.errno or errno.ENOTCONN, call, f"socket {sockid}")
    if how != SHUT_WR:
        s.shut_rd = True
    if how != SHUT_RD:
        s.shut_wr = True
    ctx.notify(s.id, _ep.CONDITIONS)
    _flush_if_blocking(ctx, s)
    return 0


def mtcp_getsockname(mctx: Context, sockid: int) -> tuple[str, int]:
    """The local address; for an accepted socket the connection's local address."""
    call = "mtcp_getsockname"
    ctx = _ctx(mctx, call)
    s = _stream_or_listener(ctx, sockid, call)
    if s.conn is not None:
        return _addr_out(*s.conn.local)
    return _addr_out(*(s.bound or (0, 0)))


def mtcp_getpeername(mctx: Context, sockid: int) -> tuple[str, int]:
    call = "mtcp_getpeername"
    ctx = _ctx(mctx, call)
    s = _stream_or_listener(ctx, sockid, call)
    c = s.conn
    if c is None or c.state in (State.SYN_SENT, State.CLOSED):
        fail(errno.ENOTCONN, call, f"socket {sockid} is not connected")
    return _addr_out(*c.remote)


# ------------------------------------------------------------------------------- options


def _option_value(level: int, optname: int, value: Any, call: str) -> Any:
    if (level, optname) == (SOL_SOCKET, SO_LINGER):
        if isinstance(value, (bytes, bytearray)) and len(value) == _LINGER.size:
            value = _LINGER.unpack(value)
        if (not isinstance(value, tuple) or len(value) != 2
                or not all(isinstance(v, int) for v in value) or value[1] < 0):
            fail(errno.EINVAL, call, f"SO_LINGER wants (onoff, seconds), got {value!r}")
        return (int(bool(value[0])), value[1])
    if not isinstance(value, int):
        fail(errno.EINVAL, call, f"option value {value!r} is not an int")
    if optname in (SO_RCVBUF, SO_SNDBUF) and level == SOL_SOCKET:
        if isinstance(value, bool):
            fail(errno.EINVAL, call, f"buffer size {value!r} is not an int")
        # Linux clamps instead of failing, comparing as unsigned: a negative size is huge.
        return SOCK_BUF_MAX if value < 0 else min(max(value, SOCK_BUF_MIN), SOCK_BUF_MAX)
    return int(bool(value))  # on/off options read back as 0 or 1


_SUPPORTED = frozenset({(SOL_SOCKET, SO_REUSEADDR), (SOL_SOCKET, SO_KEEPALIVE),
                        (SOL_SOCKET, SO_LINGER), (SOL_SOCKET, SO_RCVBUF), (SOL_SOCKET, SO_SNDBUF),
                        (IPPROTO_TCP, TCP_NODELAY)})


def _supported(level: Any, optname: Any) -> bool:
    return type(level) is int and type(optname) is int and (level, optname) in _SUPPORTED


def mtcp_setsockopt(mctx: Context, sockid: int, level: int, optname: int, optval: Any) -> int:
    """Applies TCP_NODELAY, SO_KEEPALIVE, SO_LINGER ((onoff, s) or struct linger bytes),
    SO_RCVBUF, SO_SNDBUF and SO_REUSEADDR; others: ENOPROTOOPT."""
    call = "mtcp_setsockopt"
    ctx = _ctx(mctx, call)
    s = _stream_or_listener(ctx, sockid, call)
    if not _supported(level, optname):
        fail(errno.ENOPROTOOPT, call, f"level {level} option {optname}")
    value = _option_value(level, optname, optval, call)
    s.opts[(level, optname)] = value
    if s.conn is not None:
        try:
            apply_option(s.conn, level, optname, value)
        except (ValueError, OSError) as exc:
            fail(errno.EINVAL, call, str(exc))
    return 0


def mtcp_getsockopt(mctx: Context, sockid: int, level: int, optname: int) -> Any:
    """The option's value: an int, or (onoff, seconds) for SO_LINGER. SO_ERROR is the
    connection error (ECONNREFUSED, ECONNRESET, ETIMEDOUT) not yet reported, then 0: reading
    it reports (clears) it, as Linux's sock_error() does, so EPOLLERR goes, reads return b""
    and writes raise EPIPE afterwards, just as after a call that raised it."""
    call = "mtcp_getsockopt"
    ctx = _ctx(mctx, call)
    s = _stream_or_listener(ctx, sockid, call)
    if (level, optname) == (SOL_SOCKET, SO_ERROR):
        err = _pending_error(s)
        if err:
            s.error_reported = True
        return err
    if not _supported(level, optname):
        fail(errno.ENOPROTOOPT, call, f"level {level} option {optname}")
    defaults = {SO_RCVBUF: ctx.rcvbuf_size, SO_SNDBUF: ctx.sndbuf_size, SO_LINGER: (0, 0)}
    default = defaults.get(optname, 0) if level == SOL_SOCKET else 0
    return s.opts.get((level, optname), default)


def mtcp_setsock_nonblock(mctx: Context, sockid: int) -> int:
    call = "mtcp_setsock_nonblock"
    ctx = _ctx(mctx, call)
    ctx.get(sockid, call).nonblock = True
    return 0


def mtcp_socket_ioctl(mctx: Context, sockid: int, request: int, argp: Any = None) -> int:
    """FIONREAD -> bytes readable now; FIONBIO with argp nonzero/zero sets/clears non-blocking."""
    call = "mtcp_socket_ioctl"
    ctx = _ctx(mctx, call)
    s = ctx.get(sockid, call)
    if s.type not in (SockType.STREAM, SockType.LISTENER, SockType.PIPE):
        fail(errno.EBADF, call, f"socket {sockid} is a {s.type.name.lower()} socket")
    if request == FIONREAD:
        if s.type is SockType.PIPE:
            return len(s.pipe.buf) if s.id == s.pipe.read_id else 0
        if s.conn is None:
            fail(errno.EBADF, call, f"socket {sockid} has no connection")
        return s.conn.readable_bytes
    if request == FIONBIO:
        if argp is None:
            fail(errno.EFAULT, call, "FIONBIO needs an argument")
        s.nonblock = bool(argp)
        return 0
    fail(errno.EINVAL, call, f"request {request!r}: only FIONREAD and FIONBIO")


# ------------------------------------------------------------------------------- data


def _pipe_read(ctx: Context, s: Socket, length: int, peek: bool, call: str) -> bytes:
    p = s.pipe
    if s.id != p.read_id:
        fail(errno.EBADF, call, f"socket {s.id} is the write end of its pipe")
    if not p.buf:
        if not p.writer_open:
            return b""
        if s.nonblock or not ctx.run_until(lambda: p.buf or not p.writer_open,
                                           ctx.block_timeout, call):
            fail(errno.EAGAIN, call, "pipe is empty")
    data = bytes(p.buf[:length])
    if not peek:
        full = not p.space()
        del p.buf[:length]
        if full:
            ctx.notify(p.write_id, _ep.EPOLLOUT)
    return data


def _pipe_write(ctx: Context, s: Socket, data: bytes, call: str) -> int:
    p = s.pipe
    if s.id != p.write_id:
        fail(errno.EBADF, call, f"socket {s.id} is the read end of its pipe")
    if not p.reader_open:
        fail(errno.EPIPE, call, "the read end is closed")
    if not data:
        return 0
    if not p.space():
        if s.nonblock or not ctx.run_until(lambda: p.space() or not p.reader_open,
                                           ctx.block_timeout, call):
            fail(errno.EAGAIN, call, "pipe is full")
        if not p.reader_open:
            fail(errno.EPIPE, call, "the read end is closed")
    n = min(len(data), p.space())
    was_empty = not p.buf
    p.buf += memoryview(data)[:n]
    if was_empty:
        ctx.notify(p.read_id, _ep.EPOLLIN)
    return n


def _connected(s: Socket, sockid: Any, call: str) -> Connection:
    """The connection of stream socket `s`, which a read or write needs (ENOTSOCK for another
    type, ENOTCONN before connect)."""
    if s.type is not _STREAM:
        fail(errno.ENOTSOCK, call, f"socket {sockid} is a {s.type.name.lower()} socket")
    if s.conn is None:
        fail(errno.ENOTCONN, call, f"socket {sockid} is not connected")
    return s.conn


def _pending_error(s: Socket) -> int:
    """The connection error not yet reported to the application, in Linux's terms: a reset
    after the peer's FIN (CLOSE-WAIT) is EPIPE, as Linux's tcp_reset() sets it."""
    c = s.conn
    if c is None or not c.error or s.error_reported:
        return 0
    return errno.EPIPE if c.eof and c.error == errno.ECONNRESET else c.error


def _report_error(s: Socket, call: str) -> None:
    """Raise the pending connection error once, as Linux's sock_error() clears it; after that
    reads return b"" and writes raise EPIPE (the connection is shut down both ways)."""
    err = _pending_error(s)
    if err:
        s.error_reported = True
        fail(err, call, f"socket {s.id}")


def _recv(ctx: Context, sockid: Any, length: Any, peek: bool, call: str) -> bytes:
    s = ctx.get(sockid, call)
    if not isinstance(length, int) or length < 0:
        fail(errno.EINVAL, call, f"length {length!r}")
    if s.type is _PIPE:
        return _pipe_read(ctx, s, length, peek, call)
    c = _connected(s, sockid, call)
    while True:
        if s.shut_rd:
            ctx.drop_recv_buffer(s)
            return b""
        data = c.recv(length, peek) if length else b""
        if data or not length:
            return data
        if c.eof:
            ctx.drop_recv_buffer(s)
            return b""
        if c.error:
            _report_error(s, call)
            ctx.drop_recv_buffer(s)
            return b""
        if c.state not in _RECV_STATES:
            fail(errno.ENOTCONN, call, f"socket {sockid} is {c.state.name}")
        if s.nonblock:
            fail(errno.EAGAIN, call, f"socket {sockid}: no data")
        if not ctx.run_until(lambda: c.readable_bytes or c.eof or c.error
                             or c.state not in _RECV_STATES, ctx.block_timeout, call):
            fail(errno.EAGAIN, call, f"socket {sockid}: no data within tcp_timeout")


def mtcp_read(mctx: Context, sockid: int, length: int) -> bytes:
    """Up to ``length`` bytes; ``b""`` at end of stream. Non-blocking and empty: EAGAIN."""
    return _recv(_ctx(mctx, "mtcp_read"), sockid, length, False, "mtcp_read")


def mtcp_recv(mctx: Context, sockid: int, length: int, flags: int) -> bytes:
    """mtcp_read with ``flags`` 0 or MSG_PEEK (data stays queued)."""
    call = "mtcp_recv"
    ctx = _ctx(mctx, call)
    if flags not in (0, MSG_PEEK):
        ctx.get(sockid, call)
        fail(errno.EINVAL, call, f"flags {flags!r}: only 0 and MSG_PEEK")
    return _recv(ctx, sockid, length, flags == MSG_PEEK, call)


def mtcp_readv(mctx: Context, sockid: int, iov: Sequence[bytearray | memoryview]) -> int:
    """Fill the writable buffers in order; returns the byte count (0 at end of stream)."""
    call = "mtcp_readv"
    ctx = _ctx(mctx, call)
    try:
        views = [memoryview(b).cast("B") for b in iov]
    except TypeError as exc:
        fail(errno.EFAULT, call, str(exc))
    if any(v.readonly for v in views):
        fail(errno.EFAULT, call, "a buffer is read-only")
    data = _recv(ctx, sockid, sum(len(v) for v in views), False, call)
    pos = 0
    for v in views:
        n = min(len(v), len(data) - pos)
        v[:n] = data[pos:pos + n]
        pos += n
    return len(data)


def _send(ctx: Context, sockid: Any, data: Any, call: str) -> int:
    s = ctx.get(sockid, call)
    if s.type is _PIPE:
        return _pipe_write(ctx, s, data, call)
    c = _connected(s, sockid, call)
    while True:
        if s.shut_wr:
            fail(errno.EPIPE, call, f"socket {sockid} was shut down for writing")
        if c.error:
            _report_error(s, call)
            fail(errno.EPIPE, call, f"socket {sockid}: the connection failed (error reported)")
        if c.state not in _SEND_STATES:
            fail(errno.ENOTCONN, call, f"socket {sockid} is {c.state.name}")
        if not data:
            return 0
        ctx.take_send_buffer(s, call)
        try:
            n = c.send(data)
        except OSError as exc:  # the state changed under us (engine's own errno)
            fail(exc.errno or errno.EPIPE, call, f"socket {sockid}")
        if n:
            _flush_if_blocking(ctx, s)
            return n
        if s.nonblock:
            fail(errno.EAGAIN, call, f"socket {sockid}: send buffer full")
        if not ctx.run_until(lambda: c.send_space or c.error or c.state not in _SEND_STATES,
                             ctx.block_timeout, call):
            fail(errno.EAGAIN, call, f"socket {sockid}: send buffer full for tcp_timeout")


def mtcp_write(mctx: Context, sockid: int, buf: bytes | bytearray | memoryview) -> int:
    """Queue up to len(buf) bytes; returns how many were taken (it goes out at the next loop
    step). Full send buffer on a non-blocking socket: EAGAIN; no buffer left: ENOMEM."""
    call = "mtcp_write"
    ctx = _ctx(mctx, call)
    try:
        memoryview(buf)
    except TypeError:
        fail(errno.EFAULT, call, f"{type(buf).__name__} is not a bytes-like object")
    return _send(ctx, sockid, buf, call)


def mtcp_writev(mctx: Context, sockid: int, iov: Sequence[bytes | bytearray | memoryview]) -> int:
    """Queue the buffers in order, as much as fits; returns the byte count."""
    call = "mtcp_writev"
    ctx = _ctx(mctx, call)
    try:
        data = b"".join(iov)
    except TypeError as exc:
        fail(errno.EFAULT, call, str(exc))
    return _send(ctx, sockid, data, call)


def mtcp_pipe(mctx: Context) -> tuple[int, int]:
    """``(read end, write end)`` of a new in-context pipe (mTCP fills ``int pipeid[2]``)."""
    call = "mtcp_pipe"
    ctx = _ctx(mctx, call)
    if ctx.free_ids() < 2:
        fail(errno.ENFILE, call, "a pipe needs two free socket ids")
    r = ctx.allocate(SockType.PIPE, call)
    w = ctx.allocate(SockType.PIPE, call)
    r.pipe = w.pipe = Pipe(r.id, w.id)
    return r.id, w.id


# ------------------------------------------------------------------------------- epoll


def mtcp_epoll_create(mctx: Context, size: int) -> int:
    call = "mtcp_epoll_create"
    ctx = _ctx(mctx, call)
    if not isinstance(size, int) or size <= 0:
        fail(errno.EINVAL, call, f"size {size!r} must be > 0")
    return ctx.new_epoll(call).id


def mtcp_epoll_create1(mctx: Context, flags: int) -> int:
    call = "mtcp_epoll_create1"
    ctx = _ctx(mctx, call)
    if flags not in (0, EPOLL_CLOEXEC):
        fail(errno.EINVAL, call, f"flags {flags!r}")
    return ctx.new_epoll(call).id


def _epoll(ctx: Context, epid: Any, call: str) -> _ep.Epoll:
    s = ctx.get(epid, call)
    if s.epoll is None:
        fail(errno.EINVAL, call, f"socket {epid} is not an epoll socket")
    return s.epoll


def mtcp_epoll_ctl(mctx: Context, epid: int, op: int, sockid: int,
                   event: MtcpEpollEvent | tuple[int, Any] | None = None) -> int:
    """ADD/MOD take ``MtcpEpollEvent(events, data)`` (any (events, data) pair); DEL ignores it."""
    call = "mtcp_epoll_ctl"
    ctx = _ctx(mctx, call)
    ep = _epoll(ctx, epid, call)
    s = ctx.get(sockid, call)
    if s.epoll is not None:
        fail(errno.EINVAL, call, f"socket {sockid} is an epoll socket")
    if op == EPOLL_CTL_DEL:
        if sockid not in ep:
            fail(errno.ENOENT, call, f"socket {sockid} is not registered")
        ctx.unwatch(ep, s)
        return 0
    if op not in (EPOLL_CTL_ADD, EPOLL_CTL_MOD):
        fail(errno.EINVAL, call, f"op {op!r}")
    try:
        events, data = event  # type: ignore[misc]
    except (TypeError, ValueError):
        fail(errno.EINVAL, call, f"event {event!r} is not (events, data)")
    if not isinstance(events, int):
        fail(errno.EINVAL, call, f"events {events!r}")
    events &= _ep.VALID  # unknown bits are ignored, as Linux and mTCP do
    if op == EPOLL_CTL_ADD:
        if sockid in ep:
            fail(errno.EEXIST, call, f"socket {sockid} is already registered")
        ctx.watch(ep, s, events, data)
    else:
        if sockid not in ep:
            fail(errno.ENOENT, call, f"socket {sockid} is not registered")
        ep.modify(sockid, events, data)
    return 0


def mtcp_epoll_wait(mctx: Context, epid: int, maxevents: int, timeout: int
                    ) -> list[MtcpEpollEvent]:
    """Run the context's loop until events are ready or ``timeout`` ms pass (-1: no limit; 0:
    one non-blocking step). Returns up to ``maxevents`` ``MtcpEpollEvent(events, data)``."""
    call = "mtcp_epoll_wait"
    ctx = _ctx(mctx, call)
    ep = _epoll(ctx, epid, call)
    if not isinstance(maxevents, int) or maxevents <= 0:
        fail(errno.EINVAL, call, f"maxevents {maxevents!r} must be > 0")
    if not isinstance(timeout, (int, float)) or timeout != timeout:  # NaN never compares
        fail(errno.EINVAL, call, f"timeout {timeout!r} is not a number of milliseconds")
    limit = None if timeout < 0 else timeout / 1000.0
    return ctx.run_until(lambda: ep.collect(maxevents) if ep.pending() else [], limit, call)


__all__ = [n for n in dir() if n.startswith("mtcp_") or (n.isupper() and n[0] != "_")] + [
    "MtcpEpollEvent", "MtcpConf", "Context"]

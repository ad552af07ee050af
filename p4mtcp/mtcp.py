"""The mTCP API in Python: ``from p4mtcp import mtcp``.

Same function names, argument order and errno behaviour as mTCP 3.0 (``mtcp_api.h``,
``mtcp_epoll.h``)::

    from p4mtcp import mtcp
    mtcp.mtcp_init("mtcp.conf")
    mctx = mtcp.mtcp_create_context(0)
    s = mtcp.mtcp_socket(mctx, mtcp.AF_INET, mtcp.SOCK_STREAM, 0)      # -> int socket id
    mtcp.mtcp_bind(mctx, s, ("10.0.0.1", 80))
    mtcp.mtcp_listen(mctx, s, 128)
    ep = mtcp.mtcp_epoll_create(mctx, 1024)
    mtcp.mtcp_epoll_ctl(mctx, ep, mtcp.EPOLL_CTL_ADD, s, mtcp.MtcpEpollEvent(mtcp.EPOLLIN, s))
    for ev in mtcp.mtcp_epoll_wait(mctx, ep, 64, 1000):   # list of MtcpEpollEvent(events, data)
        c = mtcp.mtcp_accept(mctx, ev.data)                # -> new socket id

Errors: a failing call raises ``OSError(errno, "<call>: <strerror> (<detail>)")``; Python maps the
errno to its subclass (``BlockingIOError`` for EAGAIN, ``InterruptedError`` for EINTR, ...). No
call returns -1.

Python shapes (where C passes pointers):

- ``mctx`` is the :class:`Context` object ``mtcp_create_context`` returns.
- Addresses are ``(host, port)`` pairs like the ``socket`` module's; ``host`` is a dotted string
  (``""``/``"0.0.0.0"`` = INADDR_ANY) or an int. ``addrlen`` arguments are dropped.
- ``mtcp_accept(mctx, sockid) -> new_sockid`` (the peer: ``mtcp_getpeername``).
- Constants carry both spellings: ``EPOLLIN`` and mTCP's ``MTCP_EPOLLIN``, ``EPOLL_CTL_ADD`` and
  ``MTCP_EPOLL_CTL_ADD``, and so on; socket constants are Linux's (``AF_INET``, ``SO_ERROR``...).
- ``mtcp_connect(mctx, sockid, addr) -> int``: **0** once connected (blocking socket) or
  **``mtcp.EINPROGRESS``** (the errno value, 115 on Linux) when a non-blocking socket's handshake
  has started — mTCP's ``-1`` with ``errno == EINPROGRESS``, as a return code. Completion is
  reported by ``EPOLLOUT`` (success) or ``EPOLLERR`` (failure); ``mtcp_getsockopt(..., SOL_SOCKET,
  SO_ERROR)`` then says 0 or the errno (ECONNREFUSED, ETIMEDOUT).
- ``mtcp_read(mctx, sockid, length) -> bytes`` (``b""`` at end of stream);
  ``mtcp_recv(mctx, sockid, length, flags)``; ``mtcp_readv(mctx, sockid, buffers) -> int`` fills
  writable buffers; ``mtcp_write(mctx, sockid, data) -> int`` and ``mtcp_writev(mctx, sockid,
  buffers) -> int`` return the bytes taken.
- ``mtcp_epoll_ctl(mctx, epid, op, sockid, MtcpEpollEvent(events, data))``: ``data`` stands for
  ``epoll_data_t`` and may be any object (usually the socket id).
- ``mtcp_epoll_wait(mctx, epid, maxevents, timeout_ms) -> list[MtcpEpollEvent]`` (the C events
  array is the return value; its length is the C return value).
- ``mtcp_getsockopt(...) -> value`` (int; ``(onoff, seconds)`` for SO_LINGER);
  ``mtcp_setsockopt(mctx, sockid, level, optname, value)``.
- ``mtcp_socket_ioctl(mctx, sockid, FIONREAD) -> int``; ``(…, FIONBIO, flag) -> 0``.
- ``mtcp_pipe(mctx) -> (read_id, write_id)``; ``mtcp_getconf() -> MtcpConf``;
  ``mtcp_setconf(MtcpConf)``; ``mtcp_getsockname/getpeername -> (host, port)``.
- ``mtcp_create_context(cpu, port=None, *, offload_checksum=True)``: ``port`` overrides the NIC
  link from mtcp.conf (any frame pipe with send/recv_batch/fileno/close, e.g. for tests).
- Per-core statistics for mTCP-style per-second output: ``mctx.stats`` (rx/tx packets and bytes,
  connects, accepts, flows freed, tx drops; ``.snapshot()`` gives a dict to diff),
  ``mctx.netif.drops`` (frames refused by reason, ``.total()``), ``mctx.stack.stats`` (TCP
  segments, retransmissions, resets...), ``mctx.flows()`` (live (local, remote) pairs).

The run-to-completion model: there is no mTCP thread. Each context does its network work inside
API calls of the thread that owns it — ``mtcp_epoll_wait`` and any call that blocks. On a
non-blocking socket, data written with ``mtcp_write`` (and FINs, RSTs, SYNs) leave at the next
such loop step, the way mTCP's thread picks them up on its next iteration, so an event loop's
calls go out in one batch; call ``mctx.flush()`` to push them out at once. On a blocking socket
write/writev/close/shutdown/abort flush before returning. A context belongs to one thread.

Deliberate differences from mTCP (where mTCP is a stub, buggy, or C-specific):

- setsockopt really applies TCP_NODELAY, SO_KEEPALIVE, SO_LINGER, SO_RCVBUF, SO_SNDBUF and
  SO_REUSEADDR (mTCP's is a no-op); getsockopt reads them back as well as SO_ERROR. Unsupported
  options fail with ENOPROTOOPT (mTCP: ENOSYS). SO_LINGER {1, 0} makes mtcp_close send RST.
  SO_RCVBUF/SO_SNDBUF out of range are clamped into ``SOCK_BUF_MIN..SOCK_BUF_MAX`` bytes as Linux
  clamps (a negative size counts as huge), without Linux's doubling.
  Accepted sockets inherit the listener's options.
- SO_REUSEADDR: mtcp_listen fails EADDRINUSE while connections of this context still use the port
  (e.g. a restarted server's old connections), unless SO_REUSEADDR is set. A second listener on a
  port is always EADDRINUSE (as in mTCP).
- Several epolls per context, and a socket may be in several epolls (mTCP: one epoll).
  ``epoll_ctl`` on an unused socket id is EBADF (mTCP does not check); watching an epoll socket
  is EINVAL; unknown event bits are ignored (as Linux and mTCP). EPOLLHUP/EPOLLERR are always
  reported, as in mTCP.
- mtcp_getsockname on an accepted socket returns the connection's local address (mTCP returns
  the peer's). mtcp_getpeername works in every synchronised state, not only ESTABLISHED.
- mtcp_shutdown is real half-close (SHUT_RD, SHUT_WR, SHUT_RDWR); mTCP lacks it.
- mtcp_connect on a socket that already has a connection: EALREADY while the handshake runs,
  EISCONN afterwards — also once that connection failed or ended (use a new socket).
- A context whose NIC hangs up (NIC restart) re-opens its core link every 0.5 s
  (``mctx.stats.reconnects``); its connections survive and retransmit what was lost.
- A connection's error is reported once, as Linux does (mTCP moves a reset stream to
  CLOSE_WAIT and returns the queued data, then 0, without an error): after the peer's RST
  mtcp_read returns the data still queued, then raises ECONNRESET, then returns ``b""``; if a
  write comes first, it raises ECONNRESET (reads then give the queued data and ``b""``); every
  later write raises EPIPE. A timeout (ETIMEDOUT) is reported once too. A reset after the peer's
  FIN (CLOSE_WAIT, e.g. our write reached the peer's closed socket) is EPIPE, as in Linux.
  SO_ERROR shows the error until a call has raised it (reading it does not clear it, unlike
  Linux); EPOLLERR is reported only until then, EPOLLHUP stays. Reads in
  CLOSING/LAST_ACK/TIME_WAIT return queued data and then ``b""``. Writes after SHUT_WR raise
  EPIPE. A zero-length write returns 0 (mTCP: EAGAIN).
- Blocking sockets (after ``FIONBIO`` 0 — mTCP ignores FIONBIO 0) block by running the context
  loop. connect blocks until the handshake ends (the engine's SYN retries bound it); accept,
  read and write wait at most ``tcp_timeout`` seconds when it is > 0 and then raise EAGAIN (like
  an SO_RCVTIMEO expiry), otherwise without limit.
- Socket ids return to the pool when the application has closed the socket *and* the engine has
  freed the connection (mTCP frees the id at close while the TCB lives on).
- Buffers (two pools of max_num_buffers per context, as in mTCP): a receive buffer is taken at
  connect/accept (ENOMEM if none is left; accept leaves the connection queued) and returned once
  the application has read the end of stream or closed the socket; a send buffer is taken at the
  first write (ENOMEM) and returned when the engine frees the connection (queued data still goes
  out after close). ``mctx.buffers_in_use() -> (send, receive)``, ``mctx.free_ids()``.
- mtcp_bind refuses an address that is not one of the context's (EADDRNOTAVAIL); mtcp_listen on
  an unbound socket is EINVAL; mtcp_listen on a listener is a no-op; mtcp_socket takes protocol
  0 or IPPROTO_TCP (another: EPROTONOSUPPORT, as Linux; mTCP ignores it); mtcp_connect to port 0
  is ECONNREFUSED at once (Linux's answer; there the peer's RST brings it, after EINPROGRESS on a
  non-blocking socket).
- Pipes are one-way: the first id reads, the second writes (wrong end: EBADF); closing the write
  end gives the reader EOF, closing the read end gives the writer EPIPE.
- mtcp_register_signal(signum, handler): ``handler(signum)`` runs after every context of the
  process is marked interrupted; a blocked epoll_wait/read/accept then raises EINTR.
- mtcp_init(path) also reads ``arp.conf`` and ``route.conf`` from mtcp.conf's directory when they
  exist (mTCP: from ./config/); mtcp_connect to an address that neither route.conf nor a local
  subnet covers is EINVAL ("no route", as in mTCP).
- mtcp_create_context(cpu) fails EEXIST for a core that already has a context in this process
  and EINVAL before mtcp_init; mtcp_core_affinitize pins the whole process (one core, one
  process). mtcp_init_rss's source addresses are used for connects to its (daddr, dport).
- mtcp_connect picks a source port (1025-60999) whose replies the NIC's RSS hash sends to the
  calling core. When no free port does, it takes one of 61000-65535 (a range no hash pick uses,
  so it cannot collide with another core's choice; a tuple another core holds is refused and the
  next port tried) with an exact ``flow_steer`` entry in the NIC, asked of the
  process that runs the agent through the UNIX socket mtcp.conf's ``steer_socket`` names
  (``control/steering.py``); the connect waits for the answer, at most 1 s. The entry is removed
  when the engine frees the connection, or when the core process ends. A socket bound to a port
  whose replies would go to another core is steered the same way instead of failing EINVAL as in
  mTCP; EINVAL remains for that case when there is no ``steer_socket`` or the request fails (no
  server, no answer in time, the NIC refused the entry), and an unbound connect then fails EAGAIN
  ("no source port"). The message names the reason.
"""

from p4mtcp.control.api import *  # noqa: F401,F403
from p4mtcp.control.api import __all__  # noqa: F401

"""mTCP epoll semantics: interest lists, level/edge triggering, one-shot.

An :class:`Epoll` is pure bookkeeping: it never touches a socket. Its owner (the per-core
context) tells it when something happened to a socket (:meth:`Epoll.notify`, with the event bits
the happening implies) and lends it a ``readiness(sockid) -> bits`` function that says what is true
*now*. Reporting always uses the current readiness, so a stale notification never yields a false
event:

- level-triggered: a socket stays on the ready list while it is ready (checked at each wait);
- edge-triggered (``EPOLLET``): reported once per notification whose bits it asked for;
- ``EPOLLONESHOT``: after one report the registration is disarmed until ``EPOLL_CTL_MOD``.

``EPOLLERR`` and ``EPOLLHUP`` are always part of a registration, as in mTCP and Linux.
Unlike mTCP (one epoll per context, one per socket) a context may hold several epolls and a socket
may be registered in several of them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple

EPOLLNONE = 0x000
EPOLLIN = 0x001
EPOLLPRI = 0x002
EPOLLOUT = 0x004
EPOLLERR = 0x008
EPOLLHUP = 0x010
EPOLLRDNORM = 0x040
EPOLLRDBAND = 0x080
EPOLLWRNORM = 0x100
EPOLLWRBAND = 0x200
EPOLLMSG = 0x400
EPOLLRDHUP = 0x2000
EPOLLONESHOT = 1 << 30
EPOLLET = 1 << 31

EPOLL_CTL_ADD = 1
EPOLL_CTL_DEL = 2
EPOLL_CTL_MOD = 3

ALWAYS = EPOLLERR | EPOLLHUP
"""Bits every registration includes whether asked for or not."""
CONDITIONS = EPOLLIN | EPOLLPRI | EPOLLOUT | EPOLLERR | EPOLLHUP | EPOLLRDHUP
"""Bits that describe a socket's state (the rest are registration flags)."""
VALID = (CONDITIONS | EPOLLRDNORM | EPOLLRDBAND | EPOLLWRNORM | EPOLLWRBAND | EPOLLMSG
         | EPOLLONESHOT | EPOLLET)


class MtcpEpollEvent(NamedTuple):
    """Python shape of ``struct mtcp_epoll_event``: ``events`` bits and the ``data`` given to
    ``mtcp_epoll_ctl`` (``epoll_data_t`` is a union in C; here it is any Python object, usually
    the socket id)."""

    events: int
    data: Any


_new_event = tuple.__new__
"""Builds an MtcpEpollEvent from (events, data) without the Python-level __new__ a NamedTuple
adds: collect makes one per reported event."""


class _Registration:
    """One socket's registration (a plain class: its ``__init__`` is compiled in the optional
    build, a dataclass's generated one would stay Python)."""

    __slots__ = ("events", "data", "armed", "edges")

    def __init__(self, events: int, data: Any, armed: bool, edges: int):
        self.events = events  # requested bits | ALWAYS, with the ET/ONESHOT flags
        self.data = data
        self.armed = armed  # False once a one-shot registration has reported
        self.edges = edges  # ET: condition bits notified since the last report


class Epoll:
    """One epoll instance's interest list and ready list."""

    __slots__ = ("_readiness", "_regs", "_ready")

    def __init__(self, readiness: Callable[[int], int]):
        self._readiness = readiness
        self._regs: dict[int, _Registration] = {}
        self._ready: OrderedDict[int, None] = OrderedDict()  # candidates, oldest first

    def __contains__(self, sockid: int) -> bool:
        return sockid in self._regs

    def __len__(self) -> int:
        return len(self._regs)

    def sockets(self) -> list[int]:
        return list(self._regs)

    # mTCP raises the events already pending at ADD/MOD time (RaisePendingStreamEvents), in both
    # modes: add and modify treat registration itself as an edge on every condition (what
    # notify(sockid, CONDITIONS) does, written out: this runs once or twice per connection).

    def add(self, sockid: int, events: int, data: Any) -> None:
        """Register ``sockid`` (caller checked it is not registered: EEXIST)."""
        self._regs[sockid] = _Registration(events | ALWAYS, data, True, CONDITIONS)
        self._ready[sockid] = None

    def modify(self, sockid: int, events: int, data: Any) -> None:
        """Replace the registration (re-arms a one-shot); caller checked it exists (ENOENT).
        In place: servers modify once per request, an allocation each would add up."""
        reg = self._regs[sockid]
        reg.events = events | ALWAYS
        reg.data = data
        reg.armed = True
        reg.edges = CONDITIONS
        self._ready[sockid] = None

    def remove(self, sockid: int) -> None:
        self._regs.pop(sockid, None)
        self._ready.pop(sockid, None)

    def notify(self, sockid: int, bits: int) -> None:
        """Something happened to ``sockid`` that may have made ``bits`` true."""
        reg = self._regs.get(sockid)
        if reg is None or not bits & reg.events:
            return
        reg.edges |= bits
        self._ready[sockid] = None

    def pending(self) -> bool:
        """Whether a collect() might return something (cheap; may be a false positive)."""
        return bool(self._ready)

    def collect(self, maxevents: int) -> list[MtcpEpollEvent]:
        """Up to ``maxevents`` events that hold now, in the order they became candidates."""
        out: list[MtcpEpollEvent] = []
        ready = self._ready
        regs = self._regs
        readiness = self._readiness
        for _ in range(len(ready)):
            if len(out) >= maxevents:
                break
            sockid, _none = ready.popitem(last=False)
            reg = regs.get(sockid)
            if reg is None or not reg.armed:
                continue
            mask = reg.events
            if mask & EPOLLET:
                if not reg.edges & mask:
                    continue
                reg.edges = 0
            bits = readiness(sockid) & mask & CONDITIONS
            if not bits:
                continue
            out.append(_new_event(MtcpEpollEvent, (bits, reg.data)))
            if mask & EPOLLONESHOT:
                reg.armed = False
            elif not mask & EPOLLET:
                ready[sockid] = None  # level-triggered: look again at the next wait
        return out

"""Run an asyncio program on each core's own process and context (``launch.CoreWorkers``).

``core_main`` is a ``launch.WorkerFn``: in core ``c``'s process it creates the context from
mtcp.conf, reports ``ready``, runs the coroutine function named by ``AioArgs.app`` on an
:class:`~p4mtcp.aio.MtcpEventLoop` until it returns (its value is reported as ``result``) or the
parent's stop event is set (the program is then cancelled), and destroys the context once its
connections have closed. The program itself is plain asyncio code.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from p4mtcp import mtcp
from p4mtcp.aio import run
from p4mtcp.apps import launch

STOP_POLL = 0.1
"""Seconds between looks at the parent's stop event."""


@dataclass(frozen=True)
class AioArgs:
    conf: str                       # mtcp.conf
    app: str                        # "module:function", an async function
    kwargs: dict[str, Any] = field(default_factory=dict)  # its keyword arguments


def load_app(spec: str) -> Callable[..., Coroutine[Any, Any, Any]]:
    """The async function ``module:function`` names; ValueError saying what is wrong."""
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"app {spec!r}: expected 'module:function'")
    fn = getattr(importlib.import_module(module), name, None)
    if not asyncio.iscoroutinefunction(fn):
        raise ValueError(f"app {spec!r}: {name} is not an async function of {module}")
    return fn


async def until_stopped(main: Coroutine[Any, Any, Any], stop: Any) -> Any:
    """``main``'s result, or None once ``stop`` (a multiprocessing Event) is set first."""
    task = asyncio.create_task(main)
    while not task.done():
        await asyncio.wait({task}, timeout=STOP_POLL)
        if stop.is_set() and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                return None
    return task.result()


def core_main(core: int, args: AioArgs, reporter: launch.Reporter, stop: Any) -> int:
    fn = load_app(args.app)
    mtcp.mtcp_init(args.conf)
    mctx = mtcp.mtcp_create_context(core)
    try:
        reporter.send("ready")
        result = run(until_stopped(fn(**args.kwargs), stop), mctx)
        reporter.send("result", result=result, stats=mctx.stats.snapshot())
    finally:
        launch.destroy_context(mtcp, mctx)
    return 0

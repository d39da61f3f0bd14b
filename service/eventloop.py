"""The event loop the long-running commands run on: uvloop where it is installed.

uvloop (libuv, in C) runs the same asyncio programs with a cheaper event loop:
socket reads and writes, callbacks and timers cost less Python per operation.
For the API that is a measurable part of every request (docs/performance.md,
"Cheaper requests"); the consumer, poller and dispatcher do the same kind of
socket work. It is a dependency on every platform uvloop supports; elsewhere
(Windows) the standard loop runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory, or None for asyncio's default loop."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the loop of :func:`loop_factory`."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)

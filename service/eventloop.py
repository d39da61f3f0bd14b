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
import gc
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


#: Young-generation threshold of the garbage collector once a process has started:
#: a page of 100 rows or a batch of 500 events allocates tens of thousands of
#: objects, which at the default of 700 ran a collection every few rows.
GC_THRESHOLD = (20_000, 20, 20)


def settle_gc() -> None:
    """Tune the garbage collector for a long-running process whose startup is done.

    ``gc.freeze()`` moves every object alive now (modules, SQLAlchemy and
    pydantic metadata, the app) out of the collector's reach, so the
    collections that requests and batches trigger no longer walk them; the
    higher young-generation threshold makes those collections rarer. Under 100
    concurrent API requests the two cut the server's CPU per single-task
    request by about 30% (docs/performance.md). Garbage is still collected,
    only less often; reference counting frees most objects at once anyway.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)

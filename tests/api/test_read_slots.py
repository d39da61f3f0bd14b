"""Requests queue for read connections on the runtime's semaphore, never in the pool."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any

import httpx
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from service.runtime import Runtime
from tests.api import seed


async def test_more_requests_than_connections_queue_and_free_their_slots(
    client: httpx.AsyncClient, engine: AsyncEngine, runtime: Runtime
) -> None:
    await seed.insert_rows(engine, "tasks", [seed.task("prod", f"t{i:02d}") for i in range(5)])
    slots = runtime.read_slots._value  # the read pool's size, pool and overflow
    assert slots == 10  # the test runtime's pool_size=5, doubled
    in_use = 0
    most = 0

    def checkout(*args: Any) -> None:
        nonlocal in_use, most
        in_use += 1
        most = max(most, in_use)

    def checkin(*args: Any) -> None:
        nonlocal in_use
        in_use -= 1

    pool = runtime.read_engine.sync_engine.pool
    event.listen(pool, "checkout", checkout)
    event.listen(pool, "checkin", checkin)
    paths = ["/v1/tasks", "/v1/tasks/t01", "/v1/tasks/missing"] * 20
    try:
        async with AsyncExitStack() as held:
            # Every slot taken: the requests can only wait, on the semaphore.
            for _ in range(slots):
                await held.enter_async_context(runtime.read_connection())
            assert runtime.read_slots.locked()
            pending = [asyncio.create_task(client.get(path)) for path in paths]
            await asyncio.sleep(0.3)
            assert not any(task.done() for task in pending)
            # Every request waits on the semaphore, none in the pool's checkout.
            assert len(runtime.read_slots._waiters or ()) == len(paths)
            assert in_use == slots  # ours only: none of them is waiting in the pool
        responses = await asyncio.gather(*pending)
    finally:
        event.remove(pool, "checkout", checkout)
        event.remove(pool, "checkin", checkin)
    assert sorted({r.status_code for r in responses}) == [200, 404]
    assert [r.status_code for r in responses].count(404) == 20
    # The pool never had more connections out than its size.
    assert most == slots
    # Answers and errors alike gave their slot back.
    assert runtime.read_slots._value == slots

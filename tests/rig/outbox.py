"""Run a dispatcher until the outbox holds no pending row (or the time is up)."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.outbox.dispatcher import Dispatcher

_PENDING = text("SELECT count(*) FROM outbox WHERE status = 'pending'")


async def drain_outbox(dispatcher: Dispatcher, engine: AsyncEngine, within: float = 20.0) -> None:
    """Dispatch until no row is pending; TimeoutError after ``within`` seconds."""
    async with asyncio.timeout(within):
        while True:
            async with engine.connect() as conn:
                if not (await conn.execute(_PENDING)).scalar_one():
                    return
            if not await dispatcher.dispatch_once():
                await asyncio.sleep(0.05)
